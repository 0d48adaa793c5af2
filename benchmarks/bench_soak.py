"""Soak benchmark: the quickstart-shaped stack under fixed load for a stated time, with a
scheduled listener ticking inside it (issue 29: bounded memory under a day of traffic).

Every process is a real subprocess on this machine:

* the OpenAI stand-in (``python -m wallaroo_pulumi.standins openai``) with a fixed latency;
* the runtime (``wallaroo-pulumi runtime serve``) serving the pipeline ``[llm, validator]``: the
  bundled ``openai_llm`` BYOP model, then the ``validator`` listener model in line, as the quickstart
  deploys them (each in its sidekick);
* a scheduled listener task (the built-in ``combined`` listener, as the quickstart's schedule) over a
  24-hour window, on the cron schedule ``*/N * * * *`` (``--listener-every N`` minutes).

`--clients` asyncio clients send requests back to back through the inference URL for
`--minutes`. Every 2 s the RSS of the runtime and of each of its descendants (sidekicks) is
sampled. The report: per-minute requests, p50 and p99; the runtime's RSS after warm-up, its
ceiling and at the end; its growth per request and per scored row; p99 of requests that ran
while a listener run was going vs those that did not.

Run: .venv/bin/python benchmarks/bench_soak.py [--minutes 30] [--clients 8] [--listener-every 5]
     (the issue's acceptance run is the default: 30 minutes, 8 clients; `--minutes 3
     --listener-every 1` is a quick look)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import percentile, start_runtime, stop  # noqa: E402
from benchmarks.bench_endpoints import API_KEY, MODEL, start_upstream  # noqa: E402
from wallaroo_pulumi.adapters.schemas import LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA  # noqa: E402
from wallaroo_pulumi.client import WallarooClient  # noqa: E402
from wallaroo_pulumi.packaging import pack  # noqa: E402
from wallaroo_pulumi.scorers.schemas import listener_schemas  # noqa: E402

BYOP = REPO / "components" / "byop"
PROMPTS = [
    "Summarise the quarterly report in one sentence.",
    "Write a polite reply to a customer asking about a late delivery.",
    "Explain what a listener model does, briefly.",
    "Give three ideas for a team offsite.",
]


# -- processes --------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _name(pid: int, root: int) -> str:
    if pid == root:
        return "runtime"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return str(pid)
    text = " ".join(a.decode(errors="replace") for a in args if a)
    for key in ("openai-llm", "validator", "listener-combined", "combined"):
        if key in text:
            return f"sidekick {key}"
    return "sidekick" if "sidekick" in text else text[:40]


class Sampler(threading.Thread):
    """RSS of the runtime and its descendants every `every` seconds: [(t, {name: MB})]."""

    def __init__(self, root: int, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            row: dict[str, float] = {}
            for pid in _tree(self.root):
                name = _name(pid, self.root)
                row[name] = row.get(name, 0.0) + _rss_mb(pid)
            self.samples.append((time.time(), row))
            self.stop_event.wait(self.every)


# -- the stack --------------------------------------------------------------------------
def deploy(work: Path, base_url: str, clients: int,
           procs: list[subprocess.Popen]) -> tuple[WallarooClient, str, str, int]:
    runtime = start_runtime(work / "runtime", log=work / "runtime.log")
    procs.append(runtime.proc)
    client = WallarooClient(runtime.url, runtime.token)
    llm = client.upload_model("llm", pack(BYOP / "openai_llm", work).path, LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA)
    v_in, v_out = listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA)
    validator = client.upload_model("validator", pack(BYOP / "listeners" / "validator", work).path, v_in, v_out)
    pipeline = client.create_pipeline("llm-pipeline", steps=[llm, validator])
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_MODEL": MODEL, "OPENAI_BASE_URL": base_url,
           "MAX_CONCURRENCY": str(clients)}
    deployment = client.deploy("llm-pipeline", pipeline_id=pipeline.pipeline_id,
                               engine_config={"replica_count": 1, "sidekicks": {"llm": {"env": env}}})
    client.wait_for_deployment(f"llm-pipeline-{deployment}", timeout_s=300)
    url = f"{runtime.url}/v1/api/pipelines/infer/llm-pipeline-{deployment}/llm-pipeline"
    return client, url, runtime.token, runtime.pid


async def load(url: str, token: str, clients: int, seconds: float) -> list[tuple[float, float]]:
    """(end time, latency s) of every request that succeeded; failures are counted apart."""
    done: list[tuple[float, float]] = []
    failed = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json; format=pandas-records"}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        async def worker(i: int) -> None:
            nonlocal failed
            n = 0
            while time.monotonic() < deadline:
                body = json.dumps([{"text": f"{PROMPTS[(i + n) % len(PROMPTS)]} ({i}-{n})"}])
                n += 1
                t0 = time.perf_counter()
                try:
                    r = await http.post(url, content=body, headers=headers)
                    r.raise_for_status()
                    done.append((time.time(), time.perf_counter() - t0))
                except httpx.HTTPError:
                    failed += 1

        await asyncio.gather(*(worker(i) for i in range(clients)))
    if failed:
        print(f"  {failed} requests failed", flush=True)
    return done


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def report(args: argparse.Namespace, done: list[tuple[float, float]], samples: list, runs: list, t_start: float) -> None:
    print()
    print(f"Soak: {args.minutes:g} min, {args.clients} clients, upstream latency {args.latency_ms:g} ms, listener "
          f"every {args.listener_every} min over a 24 h window; {os.cpu_count()} CPUs")
    print(f"{'minute':>6} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'runtime MB':>11}")
    minutes = int((done[-1][0] - t_start) // 60) + 1 if done else 0
    for m in range(minutes):
        lat = [lt for t, lt in done if t_start + 60 * m <= t < t_start + 60 * (m + 1)]
        rss = [row.get("runtime", 0.0) for t, row in samples if t_start + 60 * m <= t < t_start + 60 * (m + 1)]
        if lat:
            print(f"{m + 1:>6} {len(lat):>9} {percentile(lat, 50) * 1e3:>8.1f} {percentile(lat, 99) * 1e3:>8.1f} "
                  f"{max(rss) if rss else 0:>11.0f}")
    spans = [(s, f if f is not None else time.time()) for s, f in ((_ts(r.started_at), _ts(r.finished_at)) for r in runs)
             if s is not None]
    during = [lt for t, lt in done if any(s <= t - lt and t <= f for s, f in spans)]
    outside = [lt for t, lt in done if not any(s <= t <= f + lt or s <= t - lt <= f for s, f in spans)]
    scored = sum(r.rows_scored for r in runs)
    print()
    print("listener runs:")
    for r in runs:
        s, f = _ts(r.started_at), _ts(r.finished_at)
        secs = (f - s) if s and f else float("nan")
        print(f"  {r.status:<9} scored {r.rows_scored:>7} read {r.rows_read:>7} in {secs:6.1f} s"
              f" ({r.rows_scored / secs if secs and secs == secs and secs > 0 else 0:,.0f} rows/s)")
    print()
    names = sorted({n for _, row in samples for n in row})
    warm = [row for t, row in samples if t >= t_start + min(60.0, args.minutes * 60 / 4)]
    first_run = min((s for s, _ in spans), default=None)
    before_runs = [row for t, row in samples if first_run is None or t < first_run]
    print(f"{'process':<28} {'start MB':>9} {'warm MB':>9} {'max MB':>9} {'end MB':>9}")
    for n in names:
        vals = [row.get(n, 0.0) for _, row in samples]
        w = warm[0].get(n, 0.0) if warm else vals[0]
        print(f"{n:<28} {vals[0]:>9.0f} {w:>9.0f} {max(vals):>9.0f} {vals[-1]:>9.0f}")
    rt = [row.get("runtime", 0.0) for _, row in samples]
    base = before_runs[-1].get("runtime", 0.0) if before_runs else rt[0]
    growth_mb = rt[-1] - base
    n_req = len([1 for t, _ in done if first_run is None or t >= first_run])
    print()
    print(f"requests: {len(done):,} ({len(done) / (args.minutes * 60):.0f}/s); rows scored by listener runs: {scored:,}")
    if first_run is None:
        print(f"runtime RSS: {rt[0]:.0f} MB at the start, ceiling {max(rt):.0f} MB, {rt[-1]:.0f} MB at the end "
              "(no listener run)")
    else:
        print(f"runtime RSS: {base:.0f} MB before the first listener run, ceiling {max(rt):.0f} MB, "
              f"{rt[-1]:.0f} MB at the end")
        print(f"runtime growth from the first run on: {growth_mb:+.1f} MB = {growth_mb * 1024 / max(n_req, 1):+.2f} KB "
              f"per request, {growth_mb * 1024 / max(scored, 1):+.2f} KB per scored row")
    _print_late_slope(t_start, rt_samples=[(t, row.get("runtime", 0.0)) for t, row in samples], done=done,
                      runs=runs)
    if during and outside:
        p_in, p_out = percentile(during, 99) * 1e3, percentile(outside, 99) * 1e3
        print(f"p99 during listener runs: {p_in:.1f} ms ({len(during):,} requests); outside: {p_out:.1f} ms "
              f"({len(outside):,}); ratio {p_in / p_out:.2f}x (target <= 1.5x)")
        print(f"p50 during: {percentile(during, 50) * 1e3:.1f} ms; outside: {percentile(outside, 50) * 1e3:.1f} ms")
    else:
        print("p99 during vs outside listener runs: no run overlapped the load (run longer, or --listener-every 1)")
    print()


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points (0.0 for fewer than two distinct x)."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def _print_late_slope(t_start: float, rt_samples: list[tuple[float, float]], done: list[tuple[float, float]],
                      runs: list) -> None:
    """Growth after warm-up: the runtime's RSS trend (least squares) over the second half of the load,
    per request and per row scored in that half. A plateau reads ~0 whatever the warm-up cost."""
    if not rt_samples or not done:
        return
    half = t_start + (done[-1][0] - t_start) / 2
    late = [(t, mb) for t, mb in rt_samples if t >= half]
    if len(late) < 2:
        return
    mb_per_s = _slope(late)
    seconds = late[-1][0] - late[0][0]
    reqs = sum(1 for t, _ in done if t >= half)
    rows = sum(r.rows_scored for r in runs if (_ts(r.started_at) or 0.0) >= half)
    trend_mb = mb_per_s * seconds
    per_row = f", {trend_mb * 1024 / rows:+.3f} KB per scored row" if rows else ""
    print(f"runtime RSS trend over the second half ({seconds / 60:.0f} min, {reqs:,} requests, {rows:,} rows scored): "
          f"{trend_mb:+.1f} MB = {trend_mb * 1024 / max(reqs, 1):+.3f} KB per request{per_row} "
          f"(least squares over {len(late)} samples)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="how long the load runs (default 30, the issue's soak)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients sending back to back (default 8)")
    p.add_argument("--listener-every", type=int, default=5, help="the listener schedule: every N minutes (default 5)")
    p.add_argument("--latency-ms", type=float, default=100.0, help="latency the OpenAI stand-in adds (default 100)")
    p.add_argument("--page-size", type=int, default=10_000, help="the listener's page size (default 10000)")
    a = p.parse_args()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            base_url = start_upstream(work, a.latency_ms / 1000, procs)
            client, url, token, pid = deploy(work, base_url, a.clients, procs)
            task = client.create_task("soak-listener", {
                "monitored_pipeline": "llm-pipeline", "listener_model": {"name": "combined"},
                "window_seconds": 24 * 3600, "text_field": "out.generated_text", "page_size": a.page_size,
            }, schedule=f"*/{a.listener_every} * * * *", timeout_s=3600)
            sampler = Sampler(pid)
            sampler.start()
            t_start = time.time()
            print(f"load: {a.clients} clients for {a.minutes:g} min ...", flush=True)
            done = asyncio.run(load(url, token, a.clients, a.minutes * 60))
            time.sleep(4)  # a run that was going gets a last sample
            sampler.stop_event.set()
            sampler.join(5)
            runs = [r for r in client.list_task_runs(task.id)]
            runs.reverse()
            report(a, done, sampler.samples, runs, t_start)
        finally:
            for proc in reversed(procs):
                stop(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
