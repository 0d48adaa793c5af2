"""The keys and certificates a throwaway control plane needs: a CA, the API server's loopback
serving certificate, and the service-account signing key pair."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, sans: list[x509.GeneralName]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_pki(folder: Path) -> dict[str, Path]:
    """Write `ca.crt`, `apiserver.crt/.key` (127.0.0.1, localhost, kubernetes.default) and
    `sa.key`/`sa.pub` into `folder`; returns their paths by those names."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("wallaroo-test-ca", ca_key, None, ca_key, ca=True, sans=[])
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                    x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
                                    *(x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default",
                                                                "kubernetes.default.svc"))]
    serving = _cert("kube-apiserver", key, ca.subject, ca_key, ca=False, sans=sans)
    sa_key = ec.generate_private_key(ec.SECP256R1())
    paths = {n: folder / n for n in ("ca.crt", "apiserver.crt", "apiserver.key", "sa.key", "sa.pub")}
    paths["ca.crt"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["apiserver.crt"].write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    _write_key(key, paths["apiserver.key"])
    _write_key(sa_key, paths["sa.key"])
    paths["sa.pub"].write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    return paths
