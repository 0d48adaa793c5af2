"""KubernetesRuntime's inputs model on its own: what it derives from good inputs, and the Secret's
environment variables it gives the runtime's pods. No Pulumi program runs here."""

from __future__ import annotations

import pytest

from wallaroo_pulumi.cli import build_parser
from wallaroo_pulumi.components.kubernetes_inputs import KubernetesRuntimeArgs
from wallaroo_pulumi.components.kubernetes_runtime import publish_args, secret_env

DB = "postgresql://wallaroo@db:5432/wallaroo"


def test_one_node_defaults() -> None:
    args = KubernetesRuntimeArgs.parse(image="i:1", admin_token="t")
    assert (args.access_mode, args.scale_out, args.several, args.pods) == ("ReadWriteOnce", False, False, True)
    assert secret_env(args) == [("WALLAROO_ADMIN_TOKEN", "token")]


def test_scaled_out_and_autoscaled() -> None:
    args = KubernetesRuntimeArgs.parse(image="i:1", admin_token="t", database_url=DB, object_store_url="s3://b",
                                       secrets_key="k" * 20, object_store_env={"AWS_REGION": "r"},
                                       autoscale_max=4, sidekick_placement="local", cpus=2)
    assert (args.scale_out, args.several, args.pods) == (True, True, False)
    assert isinstance(args.cpus, int)  # "2", not "2.0", in the pods' limits
    assert secret_env(args) == [("WALLAROO_ADMIN_TOKEN", "token"), ("WALLAROO_SECRETS_KEY", "secrets-key"),
                                ("WALLAROO_DATABASE_URL", "database-url"), ("AWS_REGION", "aws-region")]


def test_a_wrong_type_names_the_field() -> None:
    with pytest.raises(ValueError, match="^KubernetesRuntime: replicas: Input should be a valid integer"):
        KubernetesRuntimeArgs.parse(image="i:1", admin_token="t", replicas="many")


def test_publishing_flags_and_the_registry_login_from_the_secret() -> None:
    args = KubernetesRuntimeArgs.parse(image="i:1", admin_token="t", publish_registry="reg.example:5000/team",
                                       publish_base_image="reg.example:5000/team/runtime:1", publish_insecure=True,
                                       public_url="https://wallaroo.example.com", publish_username="ci",
                                       publish_password="pw")
    assert publish_args(args) == ["--publish-registry", "reg.example:5000/team", "--publish-base-image",
                                  "reg.example:5000/team/runtime:1", "--public-url", "https://wallaroo.example.com",
                                  "--publish-insecure"]
    # the login by secretKeyRef only: the password is no flag and no plain env value
    assert secret_env(args)[-2:] == [("WALLAROO_OCI_USERNAME", "oci-username"), ("WALLAROO_OCI_PASSWORD", "oci-password")]
    assert "pw" not in publish_args(args)
    anonymous = args.model_copy(update={"publish_username": None, "publish_password": None})
    assert secret_env(anonymous) == [("WALLAROO_ADMIN_TOKEN", "token")]
    assert publish_args(KubernetesRuntimeArgs.parse(image="i:1", admin_token="t")) == []
    parsed = build_parser().parse_args(["runtime", "serve", "--data-dir", "/data", *publish_args(args)])
    assert (parsed.publish_registry, parsed.public_url, parsed.publish_insecure) == (
        "reg.example:5000/team", "https://wallaroo.example.com", True)
