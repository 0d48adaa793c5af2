"""What the sidekick sandbox costs: worker start time and inference latency, sandboxed vs not.

One BYOP model (y = 2x), started `--starts` times under each placement, the plain `LocalPlacement`
and the runtime's default `SandboxedPlacement` (as root: a uid and a private root of its own, plus
Landlock; as any other user: Landlock), alternating so both see the same machine; then
`--requests` one-row inferences on one worker of each. Printed side by side: start p50/p90
(spawn to READY) and inference p50/p99, with what the sandbox adds.

Run: .venv/bin/python benchmarks/bench_sandbox.py [--starts 8] [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import percentile  # noqa: E402
from wallaroo_pulumi.runtime.sandbox.sandbox import Sandbox  # noqa: E402
from wallaroo_pulumi.runtime.sandbox.support import Support  # noqa: E402
from wallaroo_pulumi.runtime.settings import RuntimeSettings  # noqa: E402
from wallaroo_pulumi.runtime.sidekick import LocalPlacement, Placement, SandboxedPlacement, Sidekick, SidekickSpec  # noqa: E402
from wallaroo_pulumi.testing.byop import byop_source  # noqa: E402


def model_folder(root: Path) -> Path:
    folder = root / "double"
    folder.mkdir()
    (folder / "model.py").write_text(byop_source('return {"y": input_data["x"] * 2.0}'))
    for path in (root, folder):
        path.chmod(0o755)  # as ModelFiles leaves an unpacked model: readable by a worker's own uid
    (folder / "model.py").chmod(0o644)
    return folder


async def start_times(placements: dict[str, Placement], spec: SidekickSpec, starts: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in placements}
    for _ in range(starts):
        for name, placement in placements.items():  # alternating: both see the same machine
            sidekick = Sidekick(spec, placement)
            began = time.perf_counter()
            await sidekick.start()
            times[name].append(time.perf_counter() - began)
            await sidekick.stop()
    return times


async def latencies(placement: Placement, spec: SidekickSpec, requests: int) -> list[float]:
    sidekick = Sidekick(spec, placement)
    await sidekick.start()
    row = pa.table({"x": [1.0]})
    try:
        for _ in range(20):  # warm up
            await sidekick.predict(row)
        out = []
        for _ in range(requests):
            began = time.perf_counter()
            await sidekick.predict(row)
            out.append(time.perf_counter() - began)
        return out
    finally:
        await sidekick.stop()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=8, help="worker starts per placement (default 8)")
    parser.add_argument("--requests", type=int, default=500, help="one-row inferences per placement (default 500)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    data_dir = root / "data"  # what the sandbox hides, as a runtime's data directory
    data_dir.mkdir(mode=0o700)
    try:
        support = Support.detect()
        sandbox = Sandbox(support, uids=RuntimeSettings(data_dir=data_dir).sidekick_uids, protect=[data_dir])
        if sandbox.problems:  # nothing to measure; the runtime here refuses sidekicks or runs them unconfined
            print(f"skipped: this host cannot sandbox sidekicks: {'; '.join(sandbox.problems)}")
            return 0
        how = "own uid + private root + Landlock" if support.private_root else "Landlock"
        print(f"sandbox on this host: {how} (Landlock ABI {support.landlock_abi}, running as uid {os.geteuid()})")
        spec = SidekickSpec(step_name="double", model_version="1", model_dir=model_folder(root))
        placements: dict[str, Placement] = {"plain": LocalPlacement(), "sandboxed": SandboxedPlacement(sandbox)}
        starts = await start_times(placements, spec, args.starts)
        lat = {name: await latencies(placement, spec, args.requests) for name, placement in placements.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows = [
        ("start p50", {n: percentile(v, 50) for n, v in starts.items()}),
        ("start p90", {n: percentile(v, 90) for n, v in starts.items()}),
        ("inference p50", {n: percentile(v, 50) for n, v in lat.items()}),
        ("inference p99", {n: percentile(v, 99) for n, v in lat.items()}),
    ]
    print(f"\n{'':16}{'plain':>11}{'sandboxed':>12}{'added':>12}{'ratio':>8}")
    for label, values in rows:
        plain, boxed = values["plain"], values["sandboxed"]
        print(f"{label:16}{ms(plain):>11}{ms(boxed):>12}{ms(boxed - plain):>12}{boxed / plain:>7.2f}x")
    print(f"\n{args.starts} starts and {args.requests} one-row inferences per placement")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
