"""Where one request's time goes: CPU time per request of the runtime and of the sidekick worker
(from /proc/<pid>/stat deltas over N sequential requests), latency p50/p99, and with ``--py-spy``
a flame graph (SVG) and a text summary of each process, written to benchmarks/profiles/.

The pipeline is one step of an echo model (its ``_predict`` returns its input), so what is
measured is the data plane itself: HTTP, auth, parse, the hop to the sandboxed worker and back,
log, metrics, encode. The same runs on the tree of git ``--baseline REF`` beside this one, in
alternating rounds on one machine, so a change is judged by the ratio, not by a noisy absolute. The
default baseline is the data plane before issue 26 (asyncio + h11: uvloop and httptools hidden from
it); ``--baseline none`` measures this tree alone.

Run: .venv/bin/python benchmarks/bench_dataplane.py [--requests 600] [--rounds 3] [--baseline REF] [--py-spy]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import (  # noqa: E402
    Runtime,
    checkout,
    cpu_seconds,
    descendants,
    percentile,
    start_runtime,
    stop,
)
from wallaroo_pulumi.client import WallarooClient  # noqa: E402

PROFILES = REPO / "benchmarks" / "profiles"
BEFORE = "a80e44c"  # the commit before issue 26's changes (the data plane on asyncio + h11)

ECHO = textwrap.dedent(
    '''
    import numpy as np
    from mac.config.inference import CustomInferenceConfig
    from mac.inference import Inference
    from mac.inference.creation import InferenceBuilder
    from mac.types import InferenceData


    class Echo(Inference):
        @property
        def expected_model_types(self):
            return {dict}

        @Inference.model.setter
        def model(self, model):
            self._model = model

        def _predict(self, input_data: InferenceData):
            return {"generated_text": input_data["text"]}


    class EchoBuilder(InferenceBuilder):
        @property
        def inference(self):
            return Echo()

        def create(self, config: CustomInferenceConfig):
            inference = self.inference
            inference.model = {}
            return inference
    '''
)
PROMPT = "Summarise the quarterly report in one sentence."


@dataclass
class Target:
    """One runtime (this tree or a baseline) serving the echo pipeline."""

    name: str
    runtime: Runtime
    url: str
    http: httpx.Client
    worker: int
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"runtime": [], "sidekick": [], "client": []})
    latencies: list[float] = field(default_factory=list)
    concurrent: dict[str, list[float]] = field(default_factory=lambda: {"rps": [], "cpu": [], "p50": [], "p99": []})
    timings: list[dict[str, float]] = field(default_factory=list)

    def call(self) -> None:
        r = self.http.post(self.url, content=json.dumps([{"text": PROMPT}]))
        r.raise_for_status()
        parts = {}
        for item in r.headers.get("server-timing", "").split(","):
            if "dur=" in item:
                parts[item.split(";")[0].strip()] = float(item.split("dur=")[1])
        self.timings.append(parts)


def worker_pid(runtime_pid: int) -> int:
    for pid in descendants(runtime_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"sidekick.worker" in cmdline:
            return pid
    raise RuntimeError("no sidekick worker process found below the runtime")


def hiding(modules: list[str], work: Path) -> Path:
    """A folder of stand-ins for `modules` that raise ImportError: first on a runtime's PYTHONPATH,
    its Python cannot import them (a baseline without uvloop, say)."""
    folder = work / "hidden"
    folder.mkdir(exist_ok=True)
    for module in modules:
        (folder / f"{module}.py").write_text(f"raise ImportError('{module} hidden for this baseline')\n")
    return folder


def start_target(name: str, source: Path, work: Path, hidden: Path | None = None) -> Target:
    runtime = start_runtime(work / name / "data", log=work / f"{name}.log", source=source,
                            env={"PYTHONPATH": f"{hidden}{os.pathsep}{source}"} if hidden else None)
    try:
        return _serve_echo(name, runtime, work)
    except BaseException:  # not yet a target main() stops: stop it here
        stop(runtime.proc)
        raise


def _serve_echo(name: str, runtime: Runtime, work: Path) -> Target:
    client = WallarooClient(runtime.url, runtime.token)
    model_zip = work / name / "echo.zip"
    with zipfile.ZipFile(model_zip, "w") as zf:
        zf.writestr("model.py", ECHO)
    version = client.upload_model("echo", model_zip, pa.schema([("text", pa.string())]),
                                  pa.schema([("generated_text", pa.string())]))
    created = client.create_pipeline("echo", steps=[version])
    dep = client.deploy("echo", pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
    client.wait_for_deployment(f"echo-{dep}", timeout_s=120)
    http = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {runtime.token}",
                                             "Content-Type": "application/json; format=pandas-records"})
    url = f"{runtime.url}/v1/api/pipelines/infer/echo-{dep}/echo"
    target = Target(name, runtime, url, http, worker_pid(runtime.pid))
    for _ in range(50):  # warm-up: connections, imports, caches
        target.call()
    target.timings.clear()
    return target


def measure_round(target: Target, requests: int) -> None:
    """`requests` sequential calls; CPU per request of each process appended."""
    pids = {"runtime": target.runtime.pid, "sidekick": target.worker}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    client_before = time.process_time()
    for _ in range(requests):
        t0 = time.perf_counter()
        target.call()
        target.latencies.append(time.perf_counter() - t0)
    for name, pid in pids.items():
        target.cpu[name].append((cpu_seconds(pid) - before[name]) / requests * 1e3)
    target.cpu["client"].append((time.process_time() - client_before) / requests * 1e3)


def measure_concurrent(target: Target, requests: int, clients: int) -> None:
    """`requests` calls from `clients` threads at once: throughput, latency, CPU per request."""
    pids = (target.runtime.pid, target.worker)
    before = sum(cpu_seconds(pid) for pid in pids)
    latencies: list[float] = []
    sequential = len(target.timings)  # the server-side breakdown reports the sequential phase

    def timed(_: int) -> None:
        t0 = time.perf_counter()
        target.call()
        latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(timed, range(requests)))
    wall = time.perf_counter() - t0
    del target.timings[sequential:]
    target.concurrent["rps"].append(requests / wall)
    target.concurrent["cpu"].append((sum(cpu_seconds(pid) for pid in pids) - before) / requests * 1e3)
    target.concurrent["p50"].append(percentile(latencies, 50) * 1e3)
    target.concurrent["p99"].append(percentile(latencies, 99) * 1e3)


def record_profiles(target: Target, seconds: float, prefix: str) -> None:
    """py-spy flame graphs (SVG) and collapsed stacks of the runtime and the worker while
    `target` serves sequential requests for `seconds`; a text summary of each, as
    benchmarks/profiles/<prefix>-<process>.svg and <prefix>-<process>-summary.txt."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    PROFILES.mkdir(parents=True, exist_ok=True)
    recorders = []
    for proc, pid in (("runtime", target.runtime.pid), ("sidekick", target.worker)):
        for fmt, ext in (("flamegraph", "svg"), ("raw", "txt")):
            out = PROFILES / f"{prefix}-{proc}.{ext}" if fmt == "flamegraph" else Path(tempfile.mktemp(suffix=".raw"))
            recorders.append((proc, fmt, out, subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "--rate", "250", "--duration", str(int(seconds)),
                 "--nonblocking", "--format", fmt, "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    time.sleep(1.0)  # let the recorders attach
    deadline = time.monotonic() + seconds
    calls = 0
    while time.monotonic() < deadline:
        target.call()
        calls += 1
    for proc, fmt, out, recorder in recorders:
        _, err = recorder.communicate(timeout=60)
        if recorder.returncode != 0:
            raise RuntimeError(f"py-spy ({proc}, {fmt}) failed: {err.decode()[-500:]}")
        if fmt == "raw":
            (PROFILES / f"{prefix}-{proc}-summary.txt").write_text(summarize(out.read_text(), f"{proc} ({target.name})", calls))
            out.unlink()


def summarize(collapsed: str, proc: str, calls: int, top: int = 30) -> str:
    """Sample shares from py-spy's collapsed stacks: inclusive per function of ours (the
    wallaroo_pulumi package), and self per function of any code. Threads waiting are left out."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = idle = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        leaf = frames[-1]
        if any(w in leaf for w in ("Condition.wait", "select (selectors", "poll (selectors", "_read_exact (")):
            idle += n
            continue
        total += n
        for frame in dict.fromkeys(frames):
            if "wallaroo_pulumi" in frame:
                inclusive[_short(frame)] += n
        own[_short(leaf)] += n
    share = lambda n: f"{100 * n / max(total, 1):>11.1f}%"  # noqa: E731
    lines = [f"py-spy samples of the {proc} process over {calls} sequential echo requests "
             f"(250 Hz; {total} busy samples, {idle} of threads waiting left out).",
             "", "inclusive share, functions of wallaroo_pulumi"]
    lines += [f"{share(n)}  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "self share, any function (syscalls count as their caller's self time)"]
    lines += [f"{share(n)}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (file.py)'."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.split(':')[0].rsplit('/', 1)[-1].rstrip(')')})" if where else func


def chunk_cost(chunks: int = 3000) -> None:
    """Python time per streamed chunk of one token on each side of the worker's pipe, in this process:
    the worker's numpy -> Arrow -> IPC, and the runtime's IPC -> Arrow -> rows -> OpenAI SSE event."""
    import numpy as np

    from wallaroo_pulumi.runtime.sidekick import protocol
    from wallaroo_pulumi.runtime.wire.openai_shapes import Answer

    chunk = {"delta": np.array(["tok "], dtype=object), "finish_reason": np.array([None], dtype=object)}
    answer = Answer("chat", "gpt-4o-mini")
    payload = bytes(protocol.table_to_ipc(protocol.inference_data_to_table(chunk, None)))

    def worker() -> None:
        protocol.table_to_ipc(protocol.inference_data_to_table(chunk, None))

    def runtime() -> None:
        table = protocol.ipc_to_table(payload)
        for delta, _reason in zip(table.column("delta").to_pylist(), table.column("finish_reason").to_pylist(),
                                  strict=True):
            answer.delta(delta, first=False, include_usage=False)

    results = {}
    for name, step in (("worker", worker), ("runtime", runtime)):
        rounds = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(chunks):
                step()
            rounds.append((time.perf_counter() - t0) / chunks * 1e6)
        results[name] = min(rounds)
    print(f"\nPython time per streamed chunk (one token, best of 3 x {chunks}): worker {results['worker']:.0f} us "
          f"(numpy -> Arrow -> IPC), runtime {results['runtime']:.0f} us (IPC -> Arrow -> rows -> SSE event).")


def report(targets: list[Target], requests: int, rounds: int) -> None:
    print(f"\nEcho pipeline (1 step, 1 replica), {requests} sequential requests x {rounds} rounds per tree, "
          f"alternating, then as many rounds from concurrent clients; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}.")
    print("CPU ms per request: the median of the rounds (each round's value in brackets).")
    print(f"{'':28}" + "".join(f"{t.name:>24}" for t in targets))
    for proc in ("runtime", "sidekick", "client"):
        print(f"{'CPU ms/request, ' + proc:28}" + "".join(
            f"{statistics.median(t.cpu[proc]):>8.3f} [{' '.join(f'{v:.2f}' for v in t.cpu[proc])}]".rjust(24)
            for t in targets))
    print(f"{'CPU ms/request, rt+sidekick':28}" + "".join(
        f"{statistics.median(t.cpu['runtime']) + statistics.median(t.cpu['sidekick']):>24.3f}" for t in targets))
    for pct in (50, 99):
        print(f"{f'latency p{pct} (ms)':28}" + "".join(
            f"{percentile(t.latencies, pct) * 1e3:>24.3f}" for t in targets))
    clients = "concurrent"
    for key, label in (("rps", "throughput (req/s)"), ("cpu", "CPU ms/request rt+sk"), ("p50", "latency p50 (ms)"),
                       ("p99", "latency p99 (ms)")):
        print(f"{clients + ' ' + label:28}" + "".join(
            f"{statistics.median(t.concurrent[key]):>24.3f}" if t.concurrent[key] else f"{'-':>24}" for t in targets))
    keys = list(dict.fromkeys(k for t in targets for s in t.timings for k in s))
    for key in keys:
        print(f"{'server ' + key + ' p50 (ms)':28}" + "".join(
            f"{statistics.median([s.get(key, 0.0) for s in t.timings] or [0.0]):>24.3f}" for t in targets))
    if len(targets) == 2:
        a, b = targets
        ratio = ((statistics.median(b.cpu["runtime"]) + statistics.median(b.cpu["sidekick"]))
                 / max(1e-9, statistics.median(a.cpu["runtime"]) + statistics.median(a.cpu["sidekick"])))
        print(f"{'CPU ratio ' + b.name + '/' + a.name:28}{ratio:>48.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=600, help="sequential requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients of the throughput phase (0: none)")
    parser.add_argument("--baseline", metavar="REF", default=BEFORE,
                        help=f"also run the tree of this git ref, side by side (default {BEFORE}, before issue 26; "
                             "'none': this tree alone)")
    parser.add_argument("--baseline-hide", default=None, metavar="MODULES",
                        help="comma-separated modules the baseline may not import (default with the default "
                             "baseline: uvloop,httptools, which it did not use)")
    parser.add_argument("--py-spy", action="store_true",
                        help="record flame graphs of each tree's processes (prefixes: baseline, current)")
    parser.add_argument("--py-spy-seconds", type=float, default=15.0)
    parser.add_argument("--chunk-cost", action="store_true", help="only the Python time per streamed chunk, in this process")
    args = parser.parse_args()
    if args.chunk_cost:
        chunk_cost()
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-dataplane-"))
    targets: list[Target] = []
    try:
        if args.baseline == BEFORE and args.baseline_hide is None:
            args.baseline_hide = "uvloop,httptools"
        if args.baseline != "none":
            hide = [m for m in (args.baseline_hide or "").split(",") if m]
            name = f"baseline {args.baseline[:10]}" + (f" -{'-'.join(hide)}" if hide else "")
            targets.append(start_target(name, checkout(args.baseline, work), work, hiding(hide, work) if hide else None))
        targets.append(start_target("this tree", REPO, work))
        for _ in range(args.rounds):  # the sequential rounds first: a concurrent phase leaves them no backlog
            for target in targets:
                measure_round(target, args.requests)
        for _ in range(args.rounds if args.clients else 0):
            for target in targets:
                measure_concurrent(target, args.requests, args.clients)
        report(targets, args.requests, args.rounds)
        if args.py_spy:
            for target in targets:
                record_profiles(target, args.py_spy_seconds, "current" if target.name == "this tree" else "baseline")
            print(f"\nflame graphs and summaries: {PROFILES.relative_to(REPO)}/")
        return 0
    finally:
        for target in targets:
            stop(target.runtime.proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
