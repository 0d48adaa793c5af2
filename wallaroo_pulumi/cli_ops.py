"""`wallaroo-pulumi status | infer | logs`: a deployed stack checked from a shell or a CI job.

Exit status: 0 ok, 1 a check failed or the runtime answered with an error, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the client (pyarrow, pandas) loads only when a command runs
    from wallaroo_pulumi.client import Pipeline, WallarooClient


def connection(parser: argparse.ArgumentParser, default_data_dir: str) -> None:
    """The options every command that talks to a runtime takes."""
    parser.add_argument("--url", help="runtime URL (default: $WALLAROO_URL, else the local runtime of --data-dir)")
    parser.add_argument("--token", help="bearer token (default: $WALLAROO_TOKEN, else DATA_DIR/admin.token)")
    parser.add_argument("--data-dir", default=default_data_dir, help=f"local runtime (default {default_data_dir})")


def add_commands(sub: Any, default_data_dir: str) -> None:
    status = sub.add_parser("status", help="pipelines and their deployment status; exit 1 unless all are Running")
    status.add_argument("pipelines", nargs="*", help="only these (default: every deployed pipeline)")
    status.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    connection(status, default_data_dir)

    infer = sub.add_parser("infer", help="one inference, answered as pandas-records JSON")
    infer.add_argument("pipeline")
    source = infer.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help='pandas-records JSON, e.g. \'[{"text": "hello"}]\'')
    source.add_argument("--file", help="a .json (pandas records) or .arrow file, sent as the docs' curl does")
    connection(infer, default_data_dir)

    logs = sub.add_parser("logs", help="the newest logged inferences, one JSON object per line")
    logs.add_argument("pipeline")
    logs.add_argument("--limit", type=int, default=20)
    connection(logs, default_data_dir)


def connect(args: argparse.Namespace) -> WallarooClient:
    from wallaroo_pulumi.client import WallarooClient

    data_dir = Path(args.data_dir).expanduser()
    url = args.url or os.environ.get("WALLAROO_URL")
    if not url:
        try:
            url = json.loads((data_dir / "runtime.json").read_text())["url"]
        except (OSError, ValueError, KeyError):
            raise SystemExit(f"no runtime to talk to: pass --url, set WALLAROO_URL, or start one with "
                             f"`wallaroo-pulumi runtime serve --data-dir {args.data_dir}`") from None
    token = args.token or os.environ.get("WALLAROO_TOKEN")
    if not token:
        try:
            token = (data_dir / "admin.token").read_text().strip()
        except OSError:
            raise SystemExit("no token: pass --token, set WALLAROO_TOKEN, or point --data-dir at the "
                             "runtime's data directory") from None
    return WallarooClient(url, token)


def run(args: argparse.Namespace) -> int:
    from wallaroo_pulumi.client import WallarooError

    try:
        with connect(args) as client:
            return {"status": _status, "infer": _infer, "logs": _logs}[args.command](client, args)
    except WallarooError as exc:
        print(f"wallaroo-pulumi {args.command}: {exc}", file=sys.stderr)
        return 1
    except SystemExit as exc:
        print(f"wallaroo-pulumi {args.command}: {exc}", file=sys.stderr)
        return 2


def _status(client: WallarooClient, args: argparse.Namespace) -> int:
    pipelines = {p.name: p for p in client.list_pipelines()}
    missing = [name for name in args.pipelines if name not in pipelines]
    names = args.pipelines or sorted(name for name, p in pipelines.items() if p.deployed)
    rows = [{"pipeline": name, "version": None, "status": "missing", "reason": "no such pipeline", "workers": {}}
            if name in missing else
            {"pipeline": name, "version": pipelines[name].version, "status": pipelines[name].status,
             "reason": pipelines[name].reason, "workers": _workers(client, pipelines[name])} for name in names]
    healthy = all(row["status"] == "Running" for row in rows)
    if args.json:
        print(json.dumps({"healthy": healthy, "pipelines": rows}, indent=2))
    else:
        width = max([len("PIPELINE")] + [len(r["pipeline"]) for r in rows])
        cells = {r["pipeline"]: " ".join(f"{step}={n}" for step, n in r["workers"].items()) or "-" for r in rows}
        wide = max([len("WORKERS")] + [len(c) for c in cells.values()])
        print(f"{'PIPELINE':<{width}}  {'STATUS':<11}  VERSION   {'WORKERS':<{wide}}  REASON")
        for r in rows:
            print(f"{r['pipeline']:<{width}}  {r['status']:<11}  {(r['version'] or '-')[:8]:<8}  "
                  f"{cells[r['pipeline']]:<{wide}}  {r['reason'] or ''}")
        if not rows:
            print("(no deployed pipelines)")
    return 0 if healthy else 1


def _workers(client: WallarooClient, pipeline: Pipeline) -> dict[str, int]:
    """Running sidekick workers per step (autoscaled steps move); empty when not deployed."""
    if not pipeline.deployed:
        return {}
    counts: dict[str, int] = {}
    for sidekick in client.deployment_status(pipeline.name).sidekicks:
        if sidekick.step is not None:
            counts[sidekick.step] = counts.get(sidekick.step, 0) + (sidekick.status == "Running")
    return counts


def _infer(client: WallarooClient, args: argparse.Namespace) -> int:
    import pandas as pd

    if args.file:
        answer = client.infer_from_file(args.pipeline, args.file)
        frame = answer if isinstance(answer, pd.DataFrame) else answer.to_pandas()
    else:
        try:
            records = json.loads(args.data)
        except ValueError as exc:
            raise SystemExit(f"--data is not JSON ({exc}); expected pandas records like '[{{\"text\": \"hi\"}}]'") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise SystemExit("--data must be a JSON list of objects (pandas records), e.g. '[{\"text\": \"hi\"}]'")
        frame = client.infer(args.pipeline, pd.DataFrame.from_records(records))
    print(frame.to_json(orient="records", date_format="iso"))
    return 0


def _logs(client: WallarooClient, args: argparse.Namespace) -> int:
    frame = client.logs(args.pipeline, limit=args.limit)
    for line in frame.to_json(orient="records", lines=True, date_format="iso").splitlines():
        print(line)
    return 0
