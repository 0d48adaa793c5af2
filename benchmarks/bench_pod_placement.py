"""What placing a step in a pod of its own adds: a local worker vs the same model behind the
sidekick link (D35), side by side.

One BYOP model (y = 2x). "local": a `Sidekick` worker on pipes, as the runtime runs it without
Kubernetes. "pod": what a sidekick pod runs (`python -m wallaroo_pulumi.runtime.sidekick.serve`, a
relay in front of the same worker) reached by `RemoteSidekick` over TCP on loopback, as the runtime
reaches a pod; a cluster's network round trip comes on top. Measured, alternating so both see the
same machine: start (spawn to READY; for the pod, connect + send the model + load, the server
already listening as in a Ready pod) and `--requests` inferences of 1 and of 64 rows.

Run: .venv/bin/python benchmarks/bench_pod_placement.py [--starts 5] [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import percentile  # noqa: E402
from wallaroo_pulumi.ports import free_port  # noqa: E402
from wallaroo_pulumi.runtime.sidekick import LocalPlacement, Sidekick, SidekickSpec  # noqa: E402
from wallaroo_pulumi.runtime.sidekick.remote import ModelBundle, RemoteSidekick  # noqa: E402
from wallaroo_pulumi.runtime.sidekick.serve import TOKEN_ENV  # noqa: E402
from wallaroo_pulumi.testing.byop import byop_source  # noqa: E402

TOKEN = "bench-link-token"


class Pod:
    """A sidekick server process, as a pod runs it, and the runtime's client of it."""

    def __init__(self, root: Path, bundle: ModelBundle) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wallaroo_pulumi.runtime.sidekick.serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--name", "double", "--workdir", str(root / f"pod-{self.port}")],
            env={**os.environ, TOKEN_ENV: TOKEN}, stderr=subprocess.DEVNULL)
        self.remote = RemoteSidekick("bench-pod", "double", "127.0.0.1", self.port, TOKEN, bundle)

    async def listening(self) -> None:
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        await self.remote.stop()
        self.proc.terminate()
        self.proc.wait(10)


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    began = time.perf_counter()
    await fn()
    return time.perf_counter() - began


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=5, help="starts per placement (default 5)")
    parser.add_argument("--requests", type=int, default=500, help="inferences per size and placement (default 500)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-pods-"))
    try:
        folder = root / "double"
        folder.mkdir()
        (folder / "model.py").write_text(byop_source('return {"y": input_data["x"] * 2.0}'))
        artifact = root / "double.zip"
        with zipfile.ZipFile(artifact, "w") as zf:
            zf.write(folder / "model.py", "model.py")
        bundle = ModelBundle(hashlib.sha256(artifact.read_bytes()).hexdigest(), artifact)
        spec = SidekickSpec(step_name="double", model_version="1", model_dir=folder)

        starts: dict[str, list[float]] = {"local": [], "pod": []}
        for _ in range(args.starts):
            local = Sidekick(spec, LocalPlacement())
            starts["local"].append(await timed(local.start))
            await local.stop()
            pod = Pod(root, bundle)
            await pod.listening()
            starts["pod"].append(await timed(pod.remote.start))
            await pod.stop()

        local, pod = Sidekick(spec, LocalPlacement()), Pod(root, bundle)
        await local.start()
        await pod.listening()
        await pod.remote.start()
        lat: dict[tuple[str, int], list[float]] = {}
        try:
            for rows in (1, 64):
                table = pa.table({"x": [1.0] * rows})
                for target in (local, pod.remote):
                    for _ in range(20):  # warm up
                        await target.predict(table)
                lat[("local", rows)], lat[("pod", rows)] = [], []
                for _ in range(args.requests):  # alternating
                    for name, target in (("local", local), ("pod", pod.remote)):
                        lat[(name, rows)].append(await timed(lambda t=target, b=table: t.predict(b)))
        finally:
            await local.stop()
            await pod.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:9.2f} ms"

    table_rows = [("start p50", percentile(starts["local"], 50), percentile(starts["pod"], 50))]
    for rows in (1, 64):
        for pct in (50, 99):
            table_rows.append((f"{rows:>2} rows p{pct}", percentile(lat[("local", rows)], pct),
                               percentile(lat[("pod", rows)], pct)))
    print(f"{'':16}{'local':>12}{'pod (link)':>13}{'added':>12}{'ratio':>8}")
    for label, here, there in table_rows:
        print(f"{label:16}{ms(here):>12}{ms(there):>13}{ms(there - here):>12}{there / here:>7.2f}x")
    print(f"\n{args.starts} starts and {args.requests} inferences per size and placement, on loopback "
          "(a cluster adds its network round trip)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
