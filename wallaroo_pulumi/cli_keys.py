"""`wallaroo-pulumi keys list | create | revoke | usage`: API keys from a shell (an admin key's work).

Exit status: 0 ok, 1 the runtime answered with an error, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from wallaroo_pulumi.cli_ops import connect, connection

if TYPE_CHECKING:
    from wallaroo_pulumi.client import ApiKey, WallarooClient


SHORT = {"requests_per_minute": "rpm", "tokens_per_minute": "tpm", "tokens_per_day": "tpd"}


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _duration(text: str) -> float:
    from wallaroo_pulumi.runtime.settings import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(sub: Any, default_data_dir: str) -> None:
    keys = sub.add_parser("keys", help="API keys: list, create, revoke, usage (needs an admin key)")
    ksub = keys.add_subparsers(dest="keys_command", required=True)

    listing = ksub.add_parser("list", help="keys with role, scope, limits, status and last use")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    connection(listing, default_data_dir)

    create = ksub.add_parser("create", help="create a key; prints its secret, which is shown this once")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=["admin", "deployer", "inference"],
                        help="admin: everything; deployer: models, pipelines, listeners, logs and inference of "
                        "--workspace-id; inference: infer on --pipeline (or every pipeline of the workspace)")
    create.add_argument("--workspace-id", type=_positive, help="the key's workspace (inference keys: default 1)")
    create.add_argument("--pipeline", action="append", dest="pipelines", metavar="NAME",
                        help="an inference key's pipeline (repeat for more; default: all of the workspace)")
    create.add_argument("--read-logs", action="store_true", help="an inference key may read its pipelines' logs")
    create.add_argument("--rpm", type=_positive, help="requests per minute")
    create.add_argument("--tpm", type=_positive, help="LLM tokens (prompt + completion) per minute")
    create.add_argument("--tpd", type=_positive, help="LLM tokens per day")
    create.add_argument("--expires-in", type=_duration, metavar="DURATION", help="e.g. 90d, 12h")
    connection(create, default_data_dir)

    revoke = ksub.add_parser("revoke", help="revoke a key: from now on it gets 401")
    revoke.add_argument("id", type=_positive)
    connection(revoke, default_data_dir)

    usage = ksub.add_parser("usage", help="requests, rows and LLM tokens by key and pipeline")
    usage.add_argument("--since", type=_duration, metavar="DURATION", help="only the last DURATION, e.g. 24h")
    usage.add_argument("--by", default="key,pipeline", help="comma-separated: key, pipeline, hour (default key,pipeline)")
    usage.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    connection(usage, default_data_dir)


def run(args: argparse.Namespace) -> int:
    from wallaroo_pulumi.client import WallarooError

    command = f"keys {args.keys_command}"
    try:
        with connect(args) as client:
            return {"list": _list, "create": _create, "revoke": _revoke, "usage": _usage}[args.keys_command](client, args)
    except WallarooError as exc:
        print(f"wallaroo-pulumi {command}: {exc}", file=sys.stderr)
        return 1
    except SystemExit as exc:
        print(f"wallaroo-pulumi {command}: {exc}", file=sys.stderr)
        return 2


def _scope(key: ApiKey) -> str:
    if key.role == "admin":
        return "*"
    where = f"ws {key.workspace_id}"
    return f"{where}: {','.join(key.pipelines)}" if key.pipelines else where


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else "-"


def _list(client: WallarooClient, args: argparse.Namespace) -> int:
    keys = client.list_keys(include_revoked=args.all)
    if args.json:
        print(json.dumps([k.model_dump(mode="json") for k in keys], indent=2))
        return 0
    rows = [(str(k.id), k.name, k.role + ("+logs" if k.read_logs else ""), _scope(k),
             " ".join(f"{SHORT[n]}={v}" for n, v in k.limits.items() if v) or "-",
             k.status, _when(k.expires_at), _when(k.last_used_at)) for k in keys]
    header = ("ID", "NAME", "ROLE", "SCOPE", "LIMITS", "STATUS", "EXPIRES", "LAST USED")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _create(client: WallarooClient, args: argparse.Namespace) -> int:
    expires = datetime.now(UTC) + timedelta(seconds=args.expires_in) if args.expires_in else None
    created = client.create_key(args.name, args.role, workspace_id=args.workspace_id, pipelines=args.pipelines,
                                read_logs=args.read_logs, requests_per_minute=args.rpm, tokens_per_minute=args.tpm,
                                tokens_per_day=args.tpd, expires_at=expires)
    print(f"key {created.key.id} ({created.key.name}, {created.key.role} on {_scope(created.key)}): its secret "
          "follows, shown this once", file=sys.stderr)
    print(created.secret.get_secret_value())
    return 0


def _revoke(client: WallarooClient, args: argparse.Namespace) -> int:
    key = client.revoke_key(args.id)
    print(f"key {key.id} ({key.name}) revoked")
    return 0


def _usage(client: WallarooClient, args: argparse.Namespace) -> int:
    groups = [g.strip() for g in args.by.split(",") if g.strip()]
    unknown = [g for g in groups if g not in ("key", "pipeline", "hour")]
    if unknown:
        raise SystemExit(f"--by: expected key, pipeline and/or hour, got {', '.join(unknown)}")
    start = datetime.now(UTC) - timedelta(seconds=args.since) if args.since else None
    frame = client.usage(start=start, group_by=groups)  # type: ignore[arg-type]
    if args.json:
        for line in frame.to_json(orient="records", lines=True, date_format="iso").splitlines():
            print(line)
    else:
        print(frame.to_string(index=False) if not frame.empty else "(no usage)")
    return 0
