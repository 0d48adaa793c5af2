"""Names that become part of a URL, a host or an image reference (edges): DNS labels, checked the
same way by the provider and the runtime."""

from __future__ import annotations

import re

DNS_LABEL = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
DNS_LABEL_HELP = "must be 1-63 lowercase letters, digits or '-', starting with a letter or digit"


def dns_label(value: str) -> str:
    """`value` if it is a DNS label; ValueError saying what is expected otherwise (for pydantic validators)."""
    if not DNS_LABEL.match(value):
        raise ValueError(DNS_LABEL_HELP)
    return value
