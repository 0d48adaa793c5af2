"""EDGE_BUNDLE: what an edge box is started with, as Wallaroo writes it: base64 of `export NAME=value`
lines (BUNDLE_VERSION, CONFIG_CPUS, EDGE_NAME, OPSCENTER_HOST, PIPELINE_URL, JOIN_TOKEN, OCI_REGISTRY)."""

from __future__ import annotations

import base64
import binascii
import re
import shlex

from pydantic import BaseModel, Field

BUNDLE_VERSION = "1"
_LINE = re.compile(r"^export ([A-Z_][A-Z0-9_]*)=(.*)$")


class EdgeBundle(BaseModel):
    edge_name: str = Field(alias="EDGE_NAME")
    opscenter_host: str = Field(alias="OPSCENTER_HOST", description="the centre: host[:port] (https) or a URL")
    pipeline_url: str = Field(alias="PIPELINE_URL", description="the published image")
    join_token: str = Field(alias="JOIN_TOKEN")
    oci_registry: str = Field(alias="OCI_REGISTRY")
    config_cpus: str = Field(default="1", alias="CONFIG_CPUS")
    bundle_version: str = Field(default=BUNDLE_VERSION, alias="BUNDLE_VERSION")

    model_config = {"populate_by_name": True}

    def encode(self) -> str:
        fields = self.model_dump(by_alias=True)
        order = ("BUNDLE_VERSION", "CONFIG_CPUS", "EDGE_NAME", "OPSCENTER_HOST", "PIPELINE_URL", "JOIN_TOKEN",
                 "OCI_REGISTRY")
        text = "".join(f"export {name}={shlex.quote(str(fields[name]))}\n" for name in order)
        return base64.b64encode(text.encode()).decode()

    @property
    def centre_url(self) -> str:
        host = self.opscenter_host.rstrip("/")
        return host if "://" in host else f"https://{host}"


def decode_bundle(text: str) -> EdgeBundle:
    """An EDGE_BUNDLE value; ValueError saying what is wrong with it."""
    try:
        lines = base64.b64decode(text.strip(), validate=True).decode().splitlines()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("EDGE_BUNDLE: expected the base64 bundle add_edge returned (it is not base64)") from None
    values: dict[str, str] = {}
    for line in lines:
        match = _LINE.match(line.strip())
        if match is not None:
            parts = shlex.split(match.group(2))
            values[match.group(1)] = parts[0] if parts else ""
    missing = [n for n in ("EDGE_NAME", "OPSCENTER_HOST", "PIPELINE_URL", "JOIN_TOKEN", "OCI_REGISTRY") if not values.get(n)]
    if missing:
        raise ValueError(f"EDGE_BUNDLE: lacks {', '.join(missing)}; use the whole bundle add_edge returned")
    if values.get("BUNDLE_VERSION", BUNDLE_VERSION) != BUNDLE_VERSION:
        raise ValueError(f"EDGE_BUNDLE: version {values['BUNDLE_VERSION']} is not {BUNDLE_VERSION}, the one this "
                         "runtime reads; publish again with this runtime's centre")
    return EdgeBundle.model_validate(values)
