"""`wallaroo-pulumi keys list | create | revoke | usage`: real CLI subprocesses against a real
runtime, judged by exit status and output."""

from __future__ import annotations

import json

import httpx

from .conftest import Server
from .test_cli_ops import cli


def test_keys_create_list_use_revoke(server: Server, double_pipeline: str) -> None:
    dd = ["--data-dir", str(server.data_dir)]
    made = cli("keys", "create", "cli-web", "--role", "inference", "--pipeline", double_pipeline, "--rpm", "50",
               "--expires-in", "30d", *dd)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("wlr_") and "shown this once" in made.stderr and secret not in made.stderr

    # the secret infers, and lists nothing
    r = httpx.post(f"{server.url}/infer/{double_pipeline}", json=[{"x": 1.0}], timeout=30,
                   headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json; format=pandas-records"})
    assert r.status_code == 200, r.text
    denied = cli("keys", "list", "--token", secret, *dd)
    assert denied.returncode == 1 and "lacks the 'admin' permission" in denied.stderr

    table = cli("keys", "list", *dd)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:5] == ["ID", "NAME", "ROLE", "SCOPE", "LIMITS"]
    row = next(line for line in rows if " cli-web " in line)
    assert f"ws 1: {double_pipeline}" in row and "rpm=50" in row and "active" in row and secret not in table.stdout
    listed = {k["name"]: k for k in json.loads(cli("keys", "list", "--json", *dd).stdout)}
    key_id = listed["cli-web"]["id"]
    assert listed["cli-web"]["last_used_at"] is not None and listed["admin"]["role"] == "admin"

    usage = cli("keys", "usage", "--json", "--since", "1h", *dd)
    assert usage.returncode == 0, usage.stderr
    mine = [json.loads(line) for line in usage.stdout.splitlines() if json.loads(line)["key_id"] == key_id]
    assert [(u["pipeline"], u["requests"], u["rows"]) for u in mine] == [(double_pipeline, 1, 1)]
    assert cli("keys", "usage", "--by", "color", *dd).returncode == 2

    revoked = cli("keys", "revoke", str(key_id), *dd)
    assert revoked.returncode == 0 and f"key {key_id} (cli-web) revoked" in revoked.stdout
    assert "cli-web" not in cli("keys", "list", *dd).stdout
    assert "revoked" in next(line for line in cli("keys", "list", "--all", *dd).stdout.splitlines() if "cli-web" in line)
    bad = cli("keys", "create", "x", "--role", "deployer", *dd)
    assert bad.returncode == 1 and "workspace_id: a deployer key needs the workspace" in bad.stderr
