"""The runtime answers keys from an in-memory copy (no database read on the request path), and
that copy never lets a revoked key through for long: revoked here, the very next request is
refused; revoked by another replica (a write to the shared database, as its KeyStore.update
does), the background refresh refuses it within REFRESH_S."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from tests.runtime.conftest import Server
from wallaroo_pulumi.runtime.services.access.keys import REFRESH_S, STALE_S

pytestmark = pytest.mark.security


def status(server: Server, secret: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/api/keys/list", json={}, headers={"Authorization": f"Bearer {secret}"},
                      timeout=30)


def test_a_key_revoked_here_is_refused_at_the_next_request(server: Server) -> None:
    with server.client() as admin:
        created = admin.create_key("cache-here", "admin")
        secret = created.secret.get_secret_value()
        assert status(server, secret).status_code == 200  # now in the cache
        admin.revoke_key(created.key.id)
    refused = status(server, secret)
    assert refused.status_code == 401 and "revoked" in refused.text


def test_a_key_revoked_by_another_replica_is_refused_within_the_refresh(server: Server) -> None:
    with server.client() as admin:
        created = admin.create_key("cache-elsewhere", "admin")
    secret = created.secret.get_secret_value()
    assert status(server, secret).status_code == 200
    with sqlite3.connect(server.data_dir / "runtime.db", timeout=30) as db:  # what a peer's revoke writes
        db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (time.time(), created.key.id))
    revoked_at = time.monotonic()
    while (answer := status(server, secret)).status_code == 200 and time.monotonic() - revoked_at < 3 * STALE_S:
        time.sleep(0.1)
    took = time.monotonic() - revoked_at
    assert answer.status_code == 401 and "revoked" in answer.text, answer.text
    # the background refresh noticed (a copy left to go stale would have let it through for STALE_S)
    assert took < REFRESH_S + 1.5, f"refused only after {took:.1f} s"
