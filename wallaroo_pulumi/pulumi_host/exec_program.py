"""Run one Pulumi Python program against the engine: the language host's helper, one process per `Run` (D2)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import runpy
import sys
import traceback
from pathlib import Path

EXIT_REPORTED = 32


def _settings_from_env() -> object:
    import pulumi.runtime

    return pulumi.runtime.Settings(
        project=os.environ["PULUMI_PROJECT"],
        stack=os.environ["PULUMI_STACK"],
        monitor=os.environ["PULUMI_MONITOR"],
        engine=os.environ.get("PULUMI_ENGINE") or None,
        parallel=int(os.environ.get("PULUMI_PARALLEL", "16")),
        dry_run=os.environ.get("PULUMI_DRY_RUN") == "true",
        organization=os.environ.get("PULUMI_ORGANIZATION") or "organization",
        root_directory=os.environ.get("PULUMI_ROOT_DIRECTORY") or None,
    )


def _entry_point(program: Path) -> Path:
    """The file to run: `program` itself, or the `__main__.py` of a program folder."""
    if program.is_dir():
        main = program / "__main__.py"
        if not main.exists():
            raise FileNotFoundError(
                f"{program} has no __main__.py; a Pulumi Python project runs its __main__.py "
                "(set `main:` in Pulumi.yaml to point elsewhere)"
            )
        return main
    return program


def main(argv: list[str]) -> int:
    import grpc
    import pulumi
    import pulumi.runtime
    from pulumi.errors import RunError

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    program = Path(argv[1]).resolve()
    pulumi.runtime.configure(_settings_from_env())
    config = json.loads(os.environ.get("PULUMI_CONFIG", "{}"))
    secret_keys = json.loads(os.environ.get("PULUMI_CONFIG_SECRET_KEYS", "[]"))
    pulumi.runtime.set_all_config(config, secret_keys or None)

    entry = _entry_point(program)
    sys.path.insert(0, str(entry.parent))
    sys.argv = [str(entry)]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(
            pulumi.runtime.run_in_stack(lambda: runpy.run_path(str(entry), run_name="__main__"))
        )
        return 0
    except RunError as exc:
        pulumi.log.error(str(exc))
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return 0  # the engine is shutting down (e.g. cancelled); nothing to report
        pulumi.log.error(f"RPC error: {exc.details()}")
    except Exception:  # noqa: BLE001 - every program error must reach the engine's output
        pulumi.log.error("Program failed with an unhandled exception:\n" + traceback.format_exc())
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
        sys.stdout.flush()
        sys.stderr.flush()
    return EXIT_REPORTED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
