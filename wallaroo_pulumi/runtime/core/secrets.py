"""Sidekick credentials sealed at rest in `runtime.db` (Fernet, under a key kept apart from it: D11)."""

from __future__ import annotations

import base64
import copy
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

KEY_ENV = "WALLAROO_SECRETS_KEY"
KEY_FILE = "secrets.key"
PREFIX = "sealed:v1:"
MIN_KEY_CHARS = 16


class SecretsKeyError(ValueError):
    """The key cannot open what was sealed, or is unusable: says which key and what to do."""


def _fernet_key(text: str) -> bytes:
    """A Fernet key as is, or any other passphrase of 16+ characters hashed into one."""
    raw = text.strip()
    if len(raw) < MIN_KEY_CHARS:
        raise SecretsKeyError(f"{KEY_ENV} must be at least {MIN_KEY_CHARS} characters")
    try:
        if len(base64.urlsafe_b64decode(raw.encode())) == 32:
            return raw.encode()
    except ValueError:
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest())


class SecretBox:
    """Seals and opens the env values of a stored deployment config."""

    def __init__(self, key: bytes, source: str) -> None:
        self._fernet = Fernet(key)
        self.source = source

    @classmethod
    def for_data_dir(cls, data_dir: Path, env_key: str | None) -> SecretBox:
        if env_key:
            return cls(_fernet_key(env_key), f"${KEY_ENV}")
        path = Path(data_dir) / KEY_FILE
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        return cls(path.read_bytes().strip(), str(path))

    def seal(self, value: str) -> str:
        return value if value.startswith(PREFIX) else PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str) -> str:
        if not value.startswith(PREFIX):
            return value  # stored before sealing existed
        try:
            return self._fernet.decrypt(value[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretsKeyError(
                f"the stored sidekick credentials cannot be opened with the key from {self.source}: "
                f"it is not the key they were sealed with. Restore that key, or deploy the pipeline "
                f"again (`pulumi up`) to store its credentials under this one"
            ) from None

    def _map_env(self, config: dict[str, Any], fn: Any) -> dict[str, Any]:
        out = copy.deepcopy(config)
        for sidekick in (out.get("sidekicks") or {}).values():
            env = sidekick.get("env") if isinstance(sidekick, dict) else None
            if env:
                sidekick["env"] = {k: fn(v) for k, v in env.items()}
        return out

    def seal_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """A copy of a deployment config (as stored) with every sidekick env value sealed."""
        return self._map_env(config, self.seal)

    def open_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """A copy with every sealed env value opened; raises :class:`SecretsKeyError`."""
        return self._map_env(config, self.open)

    @staticmethod
    def has_plaintext(config: dict[str, Any]) -> bool:
        return any(not str(v).startswith(PREFIX)
                   for s in (config.get("sidekicks") or {}).values() if isinstance(s, dict)
                   for v in (s.get("env") or {}).values())
