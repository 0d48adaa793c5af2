"""`wallaroo-pulumi runtime edge`: the runtime as an edge box, started by a published image (its
command): the pipeline in the image served offline, logs shipped to the centre named in $EDGE_BUNDLE."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PERSIST_DIR = "/persist"


def add_command(rsub: argparse._SubParsersAction, size: object, duration: object) -> None:
    edge = rsub.add_parser("edge", help="serve a published pipeline on an edge box ($EDGE_BUNDLE from add_edge)")
    edge.add_argument("--data-dir", default=PERSIST_DIR, help=f"the edge's own state and logs (default {PERSIST_DIR})")
    edge.add_argument("--host", default="0.0.0.0")
    edge.add_argument("--port", type=int, default=8080)
    edge.add_argument("--publish-dir", default=os.environ.get("WALLAROO_PUBLISH_DIR", "/opt/wallaroo/publish"),
                      help="the published pipeline in the image (default $WALLAROO_PUBLISH_DIR)")
    edge.add_argument("--local-inference-storage", type=size, default=None, metavar="SIZE",
                      help="inference log bytes kept while the centre cannot be reached, e.g. 1Gi (default; also "
                      "$LOCAL_INFERENCE_STORAGE); past it the oldest rows are dropped and counted")
    edge.add_argument("--ship-interval", type=duration, default=None, metavar="DURATION",
                      help="how often logs are shipped to the centre, e.g. 10s (default)")
    edge.add_argument("--insecure-sidekicks", action="store_true", help="as `runtime serve --insecure-sidekicks`")
    edge.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args: argparse.Namespace, size: object) -> int:
    from pydantic import ValidationError

    from wallaroo_pulumi.runtime.core.auth import check_admin_token
    from wallaroo_pulumi.runtime.server import serve
    from wallaroo_pulumi.runtime.services.edge import EdgeJoinRefused
    from wallaroo_pulumi.runtime.settings import ADMIN_TOKEN_ENV, RuntimeSettings

    def fail(message: str) -> int:
        print(f"wallaroo-pulumi runtime edge: {message}", file=sys.stderr)
        return 2

    bundle = os.environ.pop("EDGE_BUNDLE", None)  # it holds the join token: no model process inherits it
    if not bundle:
        return fail("$EDGE_BUNDLE is not set: start the container with -e EDGE_BUNDLE=<the bundle add_edge returned>")
    storage = args.local_inference_storage
    if storage is None and os.environ.get("LOCAL_INFERENCE_STORAGE"):
        try:
            storage = size(os.environ["LOCAL_INFERENCE_STORAGE"])  # type: ignore[operator]
        except (ValueError, argparse.ArgumentTypeError) as exc:
            return fail(f"LOCAL_INFERENCE_STORAGE: {exc}")
    edge = {"bundle": bundle, "publish_dir": Path(args.publish_dir),
            **({"storage_bytes": storage} if storage else {}),
            **({"ship_interval_s": args.ship_interval} if args.ship_interval else {})}
    extra = {}
    token = os.environ.pop(ADMIN_TOKEN_ENV, None)
    if token is not None:
        try:
            extra["admin_token"] = check_admin_token(token)
        except ValueError as exc:
            return fail(str(exc))
    try:
        from wallaroo_pulumi.runtime.services.publish.bundle import decode_bundle

        decode_bundle(bundle)
        settings = RuntimeSettings(data_dir=Path(args.data_dir).expanduser(), host=args.host, port=args.port,
                                   log_level=args.log_level, listeners=False, insecure_sidekicks=args.insecure_sidekicks,
                                   edge=edge, **extra)
    except (ValueError, ValidationError) as exc:
        return fail(str(exc))
    try:
        serve(settings)
    except EdgeJoinRefused as exc:
        return fail(str(exc))
    return 0
