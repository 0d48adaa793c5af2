"""`python -m wallaroo_pulumi.runtime.services.listeners.task_main SPEC`: one run of the built-in
`llm-listener` in a process of its own (sandboxed locally, a Job's pod on Kubernetes), the listener
model loaded here, the logs read and the scores written through the listener run API with the run's
own key. Its stdout is the run's log; a failure ends it with status 1 and a last line `failed: why`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from .engine import ListenerArgs, RunStats, run_listener
from .executor import Executor, InProcessExecutor, ListenerModelRef, ScorerExecutor, builtin_resolver
from .remote import RunClient

#: Where the Wallaroo SDK's "orch" auth caches a task's token (under XDG_CACHE_HOME), as the runner writes it.
TOKEN = Path("wallaroo_sdk") / "auth" / "keycloak.json"


def run_key() -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(json.loads((cache / TOKEN).read_text())["access_token"])


def model_ref(spec: dict[str, Any]) -> ListenerModelRef:
    """The listener model the runtime resolved; a built-in is found again in this install (its folder
    may be elsewhere here, as in a Job's image)."""
    m = spec["model"]
    if m.get("scorer"):
        return builtin_resolver(0, m["name"], m["version"])
    return ListenerModelRef(name=m["name"], version=m["version"], model_dir=Path(m["model_dir"]), sha=m["sha"],
                            env=m.get("env") or {}, extra_pythonpath=[Path(p) for p in m.get("extra_pythonpath", [])])


def say(line: str) -> None:
    print(line, flush=True)


async def run(spec: dict[str, Any], client: RunClient) -> RunStats:
    ref = model_ref(spec)
    executor: Executor = ScorerExecutor(ref) if spec["mode"] == "scorer" else InProcessExecutor(ref)
    say(f"starting listener model {ref.name} version {ref.version} (in this run's process, pid {os.getpid()})")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await executor.start()
    say(f"listener model ready in {loop.time() - t0:.2f}s")
    try:
        return await run_listener(run_id=spec["run_id"], task=spec["task"], args=ListenerArgs.model_validate(
            spec["task"]["args"]), ref=ref, executor=executor, logstore=client,  # type: ignore[arg-type]
            store=client, log=say)  # type: ignore[arg-type]
    finally:
        await executor.stop()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    client = RunClient(os.environ["WALLAROO_URL"], run_key())
    try:
        asyncio.run(run(spec, client))
    except Exception as exc:  # noqa: BLE001 - the run's status says why
        print(f"failed: {getattr(exc, 'message', None) or f'{type(exc).__name__}: {exc}'}", file=sys.stderr, flush=True)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
