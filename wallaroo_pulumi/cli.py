"""The `wallaroo-pulumi` console script: `runtime serve`, `runtime token`, `status`/`infer`/`logs` (from `cli_ops`)
and `keys` (from `cli_keys`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = "~/.wallaroo-pulumi"


def _size(text: str) -> int:
    from wallaroo_pulumi.deployment import parse_memory_quantity

    try:
        return parse_memory_quantity(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    from wallaroo_pulumi.runtime.settings import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _uid_range(text: str) -> tuple[int, int]:
    start, sep, end = text.partition("-")
    if not (sep and start.isdigit() and end.isdigit() and 1 <= int(start) <= int(end) < 2**32 - 1):
        raise argparse.ArgumentTypeError(f"expected START-END, two uids with 1 <= START <= END < 4294967295; got {text!r}")
    return int(start), int(end)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wallaroo-pulumi", description="Managed LLM inference endpoints as infrastructure code.")
    sub = parser.add_subparsers(dest="command", required=True)
    runtime = sub.add_parser("runtime", help="the bundled MLOps runtime")
    rsub = runtime.add_subparsers(dest="runtime_command", required=True)

    _add_serve(rsub)

    from wallaroo_pulumi import cli_edge

    cli_edge.add_command(rsub, _size, _duration)

    migrate = rsub.add_parser("migrate", help="copy an embedded data dir into a PostgreSQL database and a bucket "
                              "(stop the runtime first; replicas then run with --database and --object-store)")
    migrate.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    migrate.add_argument("--database", default=None, metavar="URL", help="the target (or $WALLAROO_DATABASE_URL), empty")
    migrate.add_argument("--object-store", required=True, metavar="URL", help="the target s3://bucket[/prefix]")

    token = rsub.add_parser("token", help="print the admin token (for `Authorization: Bearer ...`)")
    token.add_argument("--data-dir", default=DEFAULT_DATA_DIR)

    from wallaroo_pulumi import cli_keys, cli_ops

    cli_ops.add_commands(sub, DEFAULT_DATA_DIR)
    cli_keys.add_commands(sub, DEFAULT_DATA_DIR)
    return parser


def _add_serve(rsub: argparse._SubParsersAction) -> None:
    serve = rsub.add_parser("serve", help="serve the Wallaroo-compatible API on one data directory")
    serve.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"where everything is kept (default {DEFAULT_DATA_DIR})")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port (written to DATA_DIR/runtime.json)")
    serve.add_argument("--max-upload-bytes", type=_size, default=None, help="largest model upload, e.g. 10Gi (default)")
    serve.add_argument("--max-request-bytes", type=_size, default=None, help="largest inference body, e.g. 256Mi (default)")
    serve.add_argument("--no-redeploy", action="store_true", help="do not redeploy deployed pipelines at start")
    serve.add_argument("--log-retention", type=_duration, default=None, metavar="DURATION",
                       help="delete inference and score logs older than this, e.g. 30d or 12h (default: keep all)")
    serve.add_argument("--listener-lease", type=_duration, default=None, metavar="DURATION",
                       help="fail a listener run whose process sent no heartbeat for this long, e.g. 30s "
                       "(default); its unscored rows go to the next run")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument(
        "--role", default="all", choices=["all", "serve", "scheduler"],
        help="all (default): one process does everything; serve: API + inference + run-once listener "
        "tasks, never fires cron ticks (any number of replicas); scheduler: the one process firing "
        "listener cron ticks (also answers the API; does not redeploy pipelines)",
    )

    serve.add_argument(
        "--insecure-sidekicks", action="store_true",
        help="start sidekicks even where the kernel lacks a mechanism their sandbox needs (see /health); without "
        "it such a runtime says what is missing and refuses to start them",
    )
    serve.add_argument(
        "--allow-gpu-fallback", action="store_true",
        help="run a step that asks for more GPUs than this machine has on CPU (and the GPUs there are) instead of "
        "failing its deploy with 'Insufficient nvidia.com/gpu' (also $WALLAROO_ALLOW_GPU_FALLBACK=1)",
    )
    serve.add_argument("--sidekick-uids", type=_uid_range, default=None, metavar="START-END",
                       help="as root: the uids sidekick workers run under, one each (default 2000000000-2000065535)")
    serve.add_argument("--task-python", default=None, metavar="PYTHON",
                       help="the Python that runs orchestration tasks, with the wallaroo SDK installed "
                       "(default $WALLAROO_TASK_PYTHON, else this runtime's Python)")
    _add_serve_scaleout(serve)
    _add_serve_publish(serve)


def _add_serve_scaleout(serve: argparse.ArgumentParser) -> None:
    """`runtime serve`'s options for many replicas: shared stores, model steps in Kubernetes pods."""
    serve.add_argument("--database", default=None, metavar="URL",
                       help="PostgreSQL URL of the metadata store shared by replicas on many hosts (or "
                       "$WALLAROO_DATABASE_URL; default: SQLite in DATA_DIR); needs $WALLAROO_SECRETS_KEY")
    serve.add_argument("--object-store", default=None, metavar="URL",
                       help="s3://bucket[/prefix] for artifacts and inference logs (endpoint and credentials from "
                       "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; default: DATA_DIR)")

    serve.add_argument("--sidekick-placement", default="local", choices=["local", "kubernetes"],
                       help="where model steps run: local (default) sandboxed processes, or kubernetes: a "
                       "Deployment of pods of their own per step, in this cluster")
    serve.add_argument("--sidekick-image", default=None, metavar="IMAGE",
                       help="with kubernetes: the sidekick pods' image (default $WALLAROO_SIDEKICK_IMAGE)")
    serve.add_argument("--kube-namespace", default=None, help="with kubernetes: where the step objects go "
                       "(default: this pod's namespace)")
    serve.add_argument("--kube-owner", default=None, metavar="KIND/NAME",
                       help="with kubernetes: Deployment/NAME or ServiceAccount/NAME of the runtime, owner of every "
                       "step Deployment (deleting it deletes them); its NAME also labels them")
    serve.add_argument("--task-image", default=None, metavar="IMAGE",
                       help="with kubernetes: the image of task pods, a Python with the wallaroo SDK (default "
                       "$WALLAROO_TASK_IMAGE, else the sidekick image)")
    serve.add_argument("--task-url", default=None, metavar="URL",
                       help="with kubernetes: where task pods reach this runtime, e.g. its Service's URL (default "
                       "$WALLAROO_TASK_URL, else the address it listens on)")
    serve.add_argument("--sidekick-idle", type=_duration, default=None, metavar="DURATION",
                       help="with kubernetes: a step with autoscale_min 0 scales to zero after this long "
                       "without requests (default 5m)")


def _add_serve_publish(serve: argparse.ArgumentParser) -> None:
    """`runtime serve`'s options for publishing pipeline versions as images, and for edges."""
    serve.add_argument("--publish-registry", default=None, metavar="HOST/PREFIX",
                       help="where pipelines/publish pushes images (credentials from $WALLAROO_OCI_USERNAME and "
                       "$WALLAROO_OCI_PASSWORD); default: publishing is off")
    serve.add_argument("--publish-base-image", default=None, metavar="IMAGE",
                       help="the runtime image in a registry, the base of every published image")
    serve.add_argument("--publish-insecure", action="store_true", help="plain HTTP to the registries (loopback)")
    serve.add_argument("--public-url", default=None, metavar="URL",
                       help="the address edges reach this runtime at (their bundle's OPSCENTER_HOST)")


def _migrate(args: argparse.Namespace) -> int:
    from wallaroo_pulumi.runtime.core.secrets import KEY_ENV, MIN_KEY_CHARS
    from wallaroo_pulumi.runtime.settings import DATABASE_URL_ENV
    from wallaroo_pulumi.runtime.store.db import OperationalError
    from wallaroo_pulumi.runtime.store.migrate import MigrationError, migrate

    database = os.environ.pop(DATABASE_URL_ENV, None) or args.database
    key = os.environ.pop(KEY_ENV, None)
    if not database:
        print(f"wallaroo-pulumi runtime migrate: database: give --database URL or ${DATABASE_URL_ENV}", file=sys.stderr)
        return 2
    if not key or len(key.strip()) < MIN_KEY_CHARS:
        print(f"wallaroo-pulumi runtime migrate: ${KEY_ENV}: the key the replicas will seal credentials with "
              f"(at least {MIN_KEY_CHARS} characters) is required", file=sys.stderr)
        return 2
    try:
        counts = migrate(Path(args.data_dir).expanduser(), database, args.object_store, key)
    except (MigrationError, OperationalError, ValueError) as exc:
        print(f"wallaroo-pulumi runtime migrate: {exc}", file=sys.stderr)
        return 1
    print(f"migrated: {sum(n for k, n in counts.items() if k not in ('artifacts', 'log_rows'))} row(s), "
          f"{counts['artifacts']} artifact(s), {counts['log_rows']} log row(s)")
    return 0


def _gpu_fallback(args: argparse.Namespace) -> bool | None:
    """--allow-gpu-fallback or its environment variable; None (after saying why) when the variable is not a yes/no."""
    from wallaroo_pulumi.runtime.settings import GPU_FALLBACK_ENV

    fallback_env = os.environ.get(GPU_FALLBACK_ENV, "").strip().lower()
    if fallback_env not in ("", "0", "1", "true", "false", "yes", "no"):
        print(f"wallaroo-pulumi runtime serve: {GPU_FALLBACK_ENV}: expected 1/true/yes or 0/false/no, got "
              f"{fallback_env!r}", file=sys.stderr)
        return None
    return args.allow_gpu_fallback or fallback_env in ("1", "true", "yes")


class _UsageError(Exception):
    """Flags or environment `runtime serve` cannot start with; the message says what to give."""


def _secrets_from_env(args: argparse.Namespace) -> dict[str, Any]:
    """The admin token, the secrets key and the database URL, taken out of the environment: no
    child process (pip installing a model's requirements) inherits them."""
    from wallaroo_pulumi.runtime.core.auth import check_admin_token
    from wallaroo_pulumi.runtime.core.secrets import KEY_ENV as SECRETS_KEY_ENV
    from wallaroo_pulumi.runtime.core.secrets import MIN_KEY_CHARS
    from wallaroo_pulumi.runtime.settings import ADMIN_TOKEN_ENV, DATABASE_URL_ENV

    extra: dict[str, Any] = {}
    env_token = os.environ.pop(ADMIN_TOKEN_ENV, None)
    if env_token is not None:
        try:
            extra["admin_token"] = check_admin_token(env_token)
        except ValueError as exc:
            raise _UsageError(str(exc)) from None
    secrets_key = os.environ.pop(SECRETS_KEY_ENV, None)
    if secrets_key is not None:
        if len(secrets_key.strip()) < MIN_KEY_CHARS:
            raise _UsageError(f"{SECRETS_KEY_ENV} must be at least {MIN_KEY_CHARS} characters")
        extra["secrets_key"] = secrets_key
    database = os.environ.pop(DATABASE_URL_ENV, None) or args.database  # it may hold a password
    if database:
        extra["database_url"] = database
    return extra


def _publish_and_placement(args: argparse.Namespace) -> dict[str, Any]:
    """The object store, publishing and Kubernetes placement settings from their flags."""
    extra: dict[str, Any] = {}
    if args.object_store:
        extra["object_store_url"] = args.object_store
    if args.publish_registry or args.publish_base_image:
        if not (args.publish_registry and args.publish_base_image):
            raise _UsageError("--publish-registry and --publish-base-image go together")
        extra["publish"] = {"registry": args.publish_registry, "base_image": args.publish_base_image,
                            "username": os.environ.get("WALLAROO_OCI_USERNAME"),
                            "password": os.environ.pop("WALLAROO_OCI_PASSWORD", None),
                            "insecure": args.publish_insecure, "centre_url": args.public_url}
    if args.sidekick_placement == "kubernetes":
        image = args.sidekick_image or os.environ.get("WALLAROO_SIDEKICK_IMAGE")
        if not image:
            raise _UsageError("--sidekick-image (or $WALLAROO_SIDEKICK_IMAGE) is needed "
                              "with --sidekick-placement kubernetes")
        extra["kubernetes"] = {"image": image, "namespace": args.kube_namespace, "owner": args.kube_owner,
                               "runtime_name": (args.kube_owner or "/wallaroo").split("/")[-1],
                               "task_image": args.task_image or os.environ.get("WALLAROO_TASK_IMAGE"),
                               "task_url": args.task_url or os.environ.get("WALLAROO_TASK_URL"),
                               **({"idle_s": args.sidekick_idle} if args.sidekick_idle else {})}
    return extra


#: `runtime serve` flags (argparse's names) that set a RuntimeSettings field when given
_SERVE_SETTINGS = {"max_upload_bytes": "max_upload_bytes", "max_request_bytes": "max_request_bytes",
                   "log_retention": "log_retention_s", "listener_lease": "listener_lease_s",
                   "sidekick_uids": "sidekick_uids", "task_python": "task_python"}


def _serve(args: argparse.Namespace) -> int:
    """`runtime serve`: the settings from the flags and the environment (secrets taken out of it), then serve."""
    from wallaroo_pulumi.runtime.server import serve
    from wallaroo_pulumi.runtime.settings import RuntimeSettings

    extra: dict[str, Any] = {setting: getattr(args, flag) for flag, setting in _SERVE_SETTINGS.items()
                             if getattr(args, flag)}
    allow_gpu_fallback = _gpu_fallback(args)
    if allow_gpu_fallback is None:
        return 2
    extra["allow_gpu_fallback"] = allow_gpu_fallback
    try:
        extra |= _secrets_from_env(args) | _publish_and_placement(args)
    except _UsageError as exc:
        print(f"wallaroo-pulumi runtime serve: {exc}", file=sys.stderr)
        return 2
    from pydantic import ValidationError

    try:
        settings = RuntimeSettings(
            data_dir=Path(args.data_dir).expanduser(), host=args.host, port=args.port,
            redeploy_on_start=not args.no_redeploy, log_level=args.log_level, role=args.role,
            insecure_sidekicks=args.insecure_sidekicks, **extra,
        )
    except ValidationError as exc:  # e.g. a --database URL that is not PostgreSQL's
        for error in exc.errors(include_url=False, include_input=False):
            print(f"wallaroo-pulumi runtime serve: {error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    from wallaroo_pulumi.runtime.store.db import OperationalError

    try:
        serve(settings)
    except OperationalError as exc:  # e.g. the --database server cannot be reached
        print(f"wallaroo-pulumi runtime serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _token(args: argparse.Namespace) -> int:
    """`runtime token`: print the admin token of a data dir."""
    path = Path(args.data_dir).expanduser() / "admin.token"
    try:
        print(path.read_text().strip())
    except FileNotFoundError:
        print(f"no admin token at {path}: start the runtime once with "
              f"`wallaroo-pulumi runtime serve --data-dir {args.data_dir}`", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("status", "infer", "logs"):
        from wallaroo_pulumi.cli_ops import run

        return run(args)
    if args.command == "keys":
        from wallaroo_pulumi.cli_keys import run as run_keys

        return run_keys(args)
    if args.command == "runtime" and args.runtime_command == "serve":
        return _serve(args)
    if args.command == "runtime" and args.runtime_command == "edge":
        from wallaroo_pulumi import cli_edge

        return cli_edge.run(args, _size)
    if args.command == "runtime" and args.runtime_command == "migrate":
        return _migrate(args)
    if args.command == "runtime" and args.runtime_command == "token":
        return _token(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
