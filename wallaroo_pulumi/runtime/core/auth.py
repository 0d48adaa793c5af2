"""Bearer tokens: their format, their sha256 (all the database keeps), and private files for
the admin token. Where the admin token comes from: docs/runtime-api.md ("Auth"); the keys
themselves: `runtime/access/keys.py`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import string
from pathlib import Path

ADMIN_TOKEN_FILE = "admin.token"
MIN_ADMIN_TOKEN_CHARS = 16
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + string.punctuation)


def check_admin_token(token: str) -> str:
    """A token given from outside (WALLAROO_ADMIN_TOKEN): printable ASCII, no spaces, >= 16 chars.

    The message never quotes the token."""
    token = token.strip()
    if not token:
        raise ValueError("WALLAROO_ADMIN_TOKEN: is set but empty; unset it to mint a token, or set a secret token")
    if any(ch not in _TOKEN_CHARS for ch in token):
        raise ValueError(
            "WALLAROO_ADMIN_TOKEN: expected printable ASCII without spaces (it travels in an "
            "'Authorization: Bearer <token>' header)"
        )
    if len(token) < MIN_ADMIN_TOKEN_CHARS:
        raise ValueError(
            f"WALLAROO_ADMIN_TOKEN: expected at least {MIN_ADMIN_TOKEN_CHARS} characters, got {len(token)} "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh secret: `wlr_` and 256 random bits."""
    return "wlr_" + secrets.token_urlsafe(32)


def write_private(path: Path, text: str) -> None:
    """Atomically write `text` to `path` with mode 0600."""
    # pid + random: replicas on a shared volume may all be pid 1 in their containers
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
