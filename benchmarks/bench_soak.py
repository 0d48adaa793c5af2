"""Soak benchmark: the quickstart-shaped stack under fixed load for a stated time or request count,
with or without a scheduled listener ticking inside it (issue 29: bounded memory under a day of
traffic; issue 26: no growth per request, p99 flat).

Every process is a real subprocess on this machine:

* the OpenAI stand-in (``python -m wallaroo_pulumi.standins openai``) with a fixed latency;
* the runtime (``wallaroo-pulumi runtime serve``) serving the pipeline ``[llm, validator]``: the
  bundled ``openai_llm`` BYOP model, then the ``validator`` listener model in line, as the quickstart
  deploys them (each in its sidekick);
* unless `--listener-every 0`, a scheduled listener task (the built-in ``combined`` listener, as the quickstart's schedule) over a
  24-hour window, on the cron schedule ``*/N * * * *`` (``--listener-every N`` minutes).

`--clients` asyncio clients send requests back to back through the inference URL for `--minutes`,
or until `--requests` were sent (issue 26's bounded soak). Every 2 s the RSS of the runtime and of
each of its descendants (each step's sidekick worker, listener run processes) is sampled. The report
(`benchmarks/_soak_report.py`): per-minute requests, p50 and p99; p99 of the first and last quarter
after warm-up and its trend; per process and in total the growth per request, the least-squares
slope of RSS over requests answered after warm-up (the first `--warmup` fraction of the requests),
and over the last half of that. With a listener (issue 29): its runs, the runtime's growth from the
first run on, and p99 during runs vs outside them.

`--listener-every 0` leaves the listener out (the data plane's own growth); `--tree REF` runs the
runtime from a git ref (the baseline of a before/after); `--tracemalloc MIN` runs it with
`$WALLAROO_TRACEMALLOC_MINUTES` (snapshots of allocation sites, `--keep DIR` copies them out;
`--runtime-env WALLAROO_TRACEMALLOC_FRAMES=0`: the memory numbers alone, without tracemalloc).

Run: .venv/bin/python benchmarks/bench_soak.py [--minutes 30] [--clients 8] [--listener-every 5]
     issue 26's soak: --minutes 60 --requests 200000 --listener-every 0 (and again with a listener);
     `--minutes 3 --listener-every 1` is a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
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

from benchmarks._harness import checkout, percentile, start_runtime, stop  # noqa: E402
from benchmarks._soak_report import growth_table, minute_table, p99_flatness, slope  # noqa: E402
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
    """The runtime; a sidekick process by its step and module (`llm worker`); a listener run."""
    if pid == root:
        return "runtime"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return str(pid)
    module = args[args.index("-m") + 1].rsplit(".", 1)[-1] if "-m" in args[:-1] else ""
    if module == "task_main":
        return "listener run"
    step = args[args.index("--name") + 1] if "--name" in args[:-1] else ""
    if step or module:
        return f"{step} {module}".strip()
    return " ".join(args)[:34]


class Sampler(threading.Thread):
    """RSS of the runtime and each of its descendants every `every` seconds: [(t, {name: MB})]; a
    progress line each minute (requests answered so far, RSS)."""

    def __init__(self, root: int, done: list, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.root, self.done, self.every = root, done, every
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        t0 = last = time.time()
        while not self.stop_event.is_set():
            row: dict[str, float] = {}
            for pid in _tree(self.root):
                name = _name(pid, self.root)
                if name:  # not one exiting (its command line already gone)
                    row[name] = row.get(name, 0.0) + _rss_mb(pid)
            self.samples.append((time.time(), row))
            if time.time() - last >= 60:
                last = time.time()
                print(f"  {(last - t0) / 60:4.0f} min: {len(self.done):>8,} requests; RSS runtime "
                      f"{row.get('runtime', 0.0):.0f} MB, all {sum(row.values()):.0f} MB", flush=True)
            self.stop_event.wait(self.every)


# -- the stack --------------------------------------------------------------------------
def deploy(work: Path, base_url: str, clients: int, procs: list[subprocess.Popen], source: Path = REPO,
           runtime_env: dict[str, str] | None = None) -> tuple[WallarooClient, str, str, int]:
    runtime = start_runtime(work / "runtime", log=work / "runtime.log", env=runtime_env, source=source)
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


async def load(url: str, token: str, clients: int, seconds: float, requests: int | None,
               done: list[tuple[float, float]]) -> None:
    """Appends (end time, latency s) of every request that succeeded to `done`; failures are counted
    apart. Stops after `seconds`, or once `requests` have been sent when that is given (the bounded soak)."""
    failed = sent = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json; format=pandas-records"}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        async def worker(i: int) -> None:
            nonlocal failed, sent
            n = 0
            while time.monotonic() < deadline and (requests is None or sent < requests):
                sent += 1
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


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def report(args: argparse.Namespace, done: list[tuple[float, float]], samples: list, runs: list, t_start: float) -> None:
    print()
    listener = f"listener every {args.listener_every} min over a 24 h window" if args.listener_every else "no listener"
    bound = f", bounded at {args.requests:,} requests" if args.requests else ""
    print(f"Soak: {args.minutes:g} min{bound}, {args.clients} clients, upstream latency {args.latency_ms:g} ms, "
          f"{listener}; code from {args.tree or 'this tree'}; {os.cpu_count()} CPUs")
    print("\n".join(minute_table(samples, done, t_start)))
    secs = (done[-1][0] - t_start) if done else 1.0
    print(f"\nrequests: {len(done):,} in {secs / 60:.1f} min ({len(done) / secs:.0f}/s)")
    print(p99_flatness(done, t_start, args.warmup))
    print("\n".join(growth_table(samples, done, args.warmup)))
    if args.listener_every:
        _listener_report(done, samples, runs)
    print()


def _listener_report(done: list[tuple[float, float]], samples: list, runs: list) -> None:
    """Issue 29's part: the listener runs, the runtime's growth from the first on, p99 during them."""
    spans = [(s, f if f is not None else time.time()) for s, f in ((_ts(r.started_at), _ts(r.finished_at)) for r in runs)
             if s is not None]
    during = [lt for t, lt in done if any(s <= t - lt and t <= f for s, f in spans)]
    outside = [lt for t, lt in done if not any(s <= t <= f + lt or s <= t - lt <= f for s, f in spans)]
    scored = sum(r.rows_scored for r in runs)
    print("\nlistener runs:")
    for r in runs:
        s, f = _ts(r.started_at), _ts(r.finished_at)
        secs = (f - s) if s and f else float("nan")
        print(f"  {r.status:<9} scored {r.rows_scored:>7} read {r.rows_read:>7} in {secs:6.1f} s"
              f" ({r.rows_scored / secs if secs and secs == secs and secs > 0 else 0:,.0f} rows/s)")
    first_run = min((s for s, _ in spans), default=None)
    before_runs = [row for t, row in samples if first_run is None or t < first_run]
    rt = [row.get("runtime", 0.0) for _, row in samples]
    base = before_runs[-1].get("runtime", 0.0) if before_runs else rt[0]
    growth_mb = rt[-1] - base
    n_req = len([1 for t, _ in done if first_run is None or t >= first_run])
    print(f"rows scored by listener runs: {scored:,}")
    if first_run is None:
        print(f"runtime RSS: {rt[0]:.0f} MB at the start, ceiling {max(rt):.0f} MB, {rt[-1]:.0f} MB at the end "
              "(no listener run)")
    else:
        print(f"runtime RSS: {base:.0f} MB before the first listener run, ceiling {max(rt):.0f} MB, "
              f"{rt[-1]:.0f} MB at the end")
        print(f"runtime growth from the first run on: {growth_mb:+.1f} MB = {growth_mb * 1024 / max(n_req, 1):+.2f} KB "
              f"per request, {growth_mb * 1024 / max(scored, 1):+.2f} KB per scored row")
    _print_late_slope(rt_samples=[(t, row.get("runtime", 0.0)) for t, row in samples], done=done, runs=runs)
    if during and outside:
        p_in, p_out = percentile(during, 99) * 1e3, percentile(outside, 99) * 1e3
        print(f"p99 during listener runs: {p_in:.1f} ms ({len(during):,} requests); outside: {p_out:.1f} ms "
              f"({len(outside):,}); ratio {p_in / p_out:.2f}x (target <= 1.5x)")
        print(f"p50 during: {percentile(during, 50) * 1e3:.1f} ms; outside: {percentile(outside, 50) * 1e3:.1f} ms")
    else:
        print("p99 during vs outside listener runs: no run overlapped the load (run longer, or --listener-every 1)")


def _print_late_slope(rt_samples: list[tuple[float, float]], done: list[tuple[float, float]], runs: list) -> None:
    """The runtime's RSS trend (least squares over time) over the second half of the load, per request
    and per row scored in that half (issue 29's measure)."""
    if not rt_samples or not done:
        return
    half = done[0][0] + (done[-1][0] - done[0][0]) / 2
    late = [(t, mb) for t, mb in rt_samples if t >= half]
    if len(late) < 2:
        return
    seconds = late[-1][0] - late[0][0]
    reqs = sum(1 for t, _ in done if t >= half)
    rows = sum(r.rows_scored for r in runs if (_ts(r.started_at) or 0.0) >= half)
    trend_mb = slope(late) * seconds
    per_row = f", {trend_mb * 1024 / rows:+.3f} KB per scored row" if rows else ""
    print(f"runtime RSS trend over the second half ({seconds / 60:.0f} min, {reqs:,} requests, {rows:,} rows scored): "
          f"{trend_mb:+.1f} MB = {trend_mb * 1024 / max(reqs, 1):+.3f} KB per request{per_row} "
          f"(least squares over {len(late)} samples)")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="how long the load runs at most (default 30)")
    p.add_argument("--requests", type=int, default=None, help="stop once this many requests were sent (issue 26)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients sending back to back (default 8)")
    p.add_argument("--listener-every", type=int, default=5,
                   help="the listener schedule: every N minutes (default 5; 0: no listener, the data plane alone)")
    p.add_argument("--latency-ms", type=float, default=100.0, help="latency the OpenAI stand-in adds (default 100)")
    p.add_argument("--page-size", type=int, default=10_000, help="the listener's page size (default 10000)")
    p.add_argument("--warmup", type=float, default=0.25,
                   help="fraction of the requests left out of the growth trend as warm-up (default 0.25)")
    p.add_argument("--tree", default=None, help="run the runtime from this git ref (a baseline), not this tree")
    p.add_argument("--tracemalloc", type=float, default=None, metavar="MIN",
                   help="run the runtime with $WALLAROO_TRACEMALLOC_MINUTES=MIN (slower: for finding growth)")
    p.add_argument("--runtime-env", action="append", default=[], metavar="NAME=VALUE",
                   help="a variable for the runtime's environment (repeatable), e.g. WALLAROO_TRACEMALLOC_FRAMES=0")
    p.add_argument("--keep", type=Path, default=None, help="copy the runtime's memprofile/ and log here at the end")
    return p.parse_args()


def main() -> int:
    a = _args()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            source = checkout(a.tree, work) if a.tree else REPO
            env = dict(item.split("=", 1) for item in a.runtime_env)
            if a.tracemalloc:
                env["WALLAROO_TRACEMALLOC_MINUTES"] = str(a.tracemalloc)
            base_url = start_upstream(work, a.latency_ms / 1000, procs)
            client, url, token, pid = deploy(work, base_url, a.clients, procs, source=source, runtime_env=env)
            task = client.create_task("soak-listener", {
                "monitored_pipeline": "llm-pipeline", "listener_model": {"name": "combined"},
                "window_seconds": 24 * 3600, "text_field": "out.generated_text", "page_size": a.page_size,
            }, schedule=f"*/{a.listener_every} * * * *", timeout_s=3600) if a.listener_every else None
            done: list[tuple[float, float]] = []
            sampler = Sampler(pid, done)
            sampler.start()
            t_start = time.time()
            bound = f" or {a.requests:,} requests" if a.requests else ""
            print(f"load: {a.clients} clients for {a.minutes:g} min{bound} ...", flush=True)
            asyncio.run(load(url, token, a.clients, a.minutes * 60, a.requests, done))
            time.sleep(4)  # a run that was going gets a last sample
            sampler.stop_event.set()
            sampler.join(5)
            runs = list(reversed(client.list_task_runs(task.id))) if task else []
            report(a, done, sampler.samples, runs, t_start)
            if a.keep:
                _keep(work / "runtime", a.keep)
        finally:
            for proc in reversed(procs):
                stop(proc)
    return 0


def _keep(data_dir: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if (data_dir / "memprofile").is_dir():
        shutil.copytree(data_dir / "memprofile", dest / "memprofile", dirs_exist_ok=True)
    if (data_dir.parent / "runtime.log").exists():
        shutil.copy(data_dir.parent / "runtime.log", dest / "runtime.log")
    print(f"kept the runtime's memprofile/ and log in {dest}")


if __name__ == "__main__":
    raise SystemExit(main())
