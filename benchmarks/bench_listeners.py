"""Listener throughput: rows/s of a whole listener run (read logged inferences from the log
store, key + claim rows in SQLite, score, append the scores as logs) for each scorer, over 10k,
30k and 100k logged rows, and how run time grows with the row count. One table, one run.

    python benchmarks/bench_listeners.py [--sizes 10000,30000,100000] [--executor auto|sidekick|inprocess|scorer]
                                         [--batch-size 512] [--scorers toxicity,...]

`score-only rows/s` is the scorer called directly on the same texts (no log store, no process
boundary), to show where the time goes.

`--executor task`: every run through a real runtime, as the runtime runs it (D58): a task of its own
process with a key of its own, so the times include each run's cold start (process, imports, listener
model), reported as `load s` (a run over no rows); `runtime MB` and `run MB` are the peak RSS of the
serving process above idle and of the run's process during the largest run.

Window mode (issue 29): one listener run over a 24-hour window of N logged rows, for each N:

    python benchmarks/bench_listeners.py --window-rows 50000,100000,500000 [--scorers toxicity]
                                         [--executor scorer] [--page-size 10000]

reports the process's peak RSS above idle during the run (sampled every 20 ms), the seconds and
rows/s, and how time grows with rows (linear: time x == rows x); then the next run of the same stream
after ten minutes of new traffic: what it read and how long it took (D63: only what is new).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402

from benchmarks._harness import start_runtime, stop  # noqa: E402
from wallaroo_pulumi import scorers as S  # noqa: E402
from wallaroo_pulumi.runtime.services.listeners import ListenerService  # noqa: E402
from wallaroo_pulumi.runtime.services.listeners.service import parse_args  # noqa: E402
from wallaroo_pulumi.runtime.store.db import SqliteDatabase  # noqa: E402
from wallaroo_pulumi.runtime.store.logs import LogStore  # noqa: E402

WORDS = (
    "the a model answer report quarterly revenue growth customer support team helpful summary "
    "please thanks great terrible awful love hate idea project deadline meeting weather data "
    "analysis result improve problem solution question clearly maybe definitely sorry happy sad "
    "angry calm policy update release feature bug fix performance latency cost region market"
).split()
TOXIC = [
    "shut up you stupid idiot", "this is complete bullshit", "what the fuck is wrong with you",
    "you are a worthless moron", "I hate those people, they are disgusting",
]


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(20, 60))
        text = " ".join(words).capitalize() + "."
        if rng.random() < 0.05:
            text += " " + rng.choice(TOXIC) + "!"
        out.append(text)
    return out


def llm_table(texts: list[str], t0_ms: int) -> pa.Table:
    n = len(texts)
    return pa.table({
        "time": pa.array([t0_ms + i for i in range(n)], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "in.text": pa.array([f"prompt {i}" for i in range(n)], pa.string()),
        "out.generated_text": pa.array(texts, pa.string()),
        "anomaly.count": pa.array([0] * n, pa.int64()),
        "metadata.pipeline_version": pa.array(["v1"] * n, pa.string()),
        "metadata.last_model": pa.array([json.dumps({"model_name": "llm", "model_sha": "x"})] * n, pa.string()),
        "metadata.elapsed": pa.array([[1000]] * n, pa.list_(pa.int64())),
        "metadata.partition": pa.array(["engine-0"] * n, pa.string()),
        "metadata.error": pa.nulls(n, pa.string()),
    })


async def one_run(svc: ListenerService, pipeline: str, scorer: str, batch: int) -> dict:
    t = await svc.create_task(
        name=f"bench-{scorer}-{pipeline}", workspace_id=1, timeout=3600,
        json_args={"monitored_pipeline": pipeline, "listener_model": {"name": scorer},
                   "window_seconds": 30 * 86400, "batch_size": batch, "page_size": 20000},
    )
    run = svc.list_runs(t["id"])[0]
    t0 = time.perf_counter()
    run = await svc.wait_run(run["id"])
    run["wall"] = time.perf_counter() - t0
    if run["status"] != "succeeded":
        raise SystemExit(f"{scorer} on {pipeline}: run {run['status']}: {run['error']}")
    return run


async def main_async(a: argparse.Namespace) -> None:
    if a.executor == "task":
        return task_mode(a)
    sizes = [int(x) for x in a.sizes.split(",")]
    names = a.scorers.split(",")
    mode = "sidekick" if a.executor == "auto" else a.executor
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        db = SqliteDatabase(data / "runtime.db")
        logs = LogStore(data / "logs")
        t0 = int(time.time() * 1000) - 86400_000
        texts_by_size = {}
        for n in sizes:
            texts_by_size[n] = corpus(n, seed=n)
            for i in range(0, n, 50_000):  # like an engine logging its batches
                logs.append(f"llm-{n}", llm_table(texts_by_size[n][i : i + 50_000], t0 + i))
        svc = ListenerService(db, logs, executor=mode, tick_seconds=1.0, executor_idle_seconds=3600)
        await svc.start()
        rows = []
        try:
            for name in names:
                # warm: model load / sidekick start is reported separately, not in rows/s
                w0 = time.perf_counter()
                ref = await svc.resolve(1, parse_args({"monitored_pipeline": "x", "listener_model": {"name": name}}))
                key, executor = await svc.executors.acquire(ref)
                svc.executors.release(key, executor, False)
                load_s = time.perf_counter() - w0
                sample = texts_by_size[sizes[-1]][:20_000]
                s0 = time.perf_counter()
                S.get_scorer(name)(sample)
                score_only = len(sample) / (time.perf_counter() - s0)
                per = {}
                for n in sizes:
                    r = await one_run(svc, f"llm-{n}", name, a.batch_size)
                    assert r["rows_scored"] == n, r
                    per[n] = r["wall"]
                rows.append((name, load_s, score_only, per))
        finally:
            await svc.stop()
            logs.close()
            db.close()
    n_lo, n_hi = sizes[0], sizes[-1]
    print()
    print(f"Listener throughput (executor={mode}, batch_size={a.batch_size}, "
          f"{os.cpu_count()} CPUs, texts 20-60 words, 5% toxic)")
    head = f"{'listener':<10} {'load s':>7} {'score-only r/s':>15}"
    for n in sizes:
        size = f"{n // 1000}k" if n % 1000 == 0 else str(n)
        head += f" {f'{size} s':>8} {f'{size} r/s':>10}"
    head += f" {f'time x ({n_hi // n_lo}x rows)':>18}"
    print(head)
    print("-" * len(head))
    for name, load_s, score_only, per in rows:
        line = f"{name:<10} {load_s:>7.2f} {score_only:>15,.0f}"
        for n in sizes:
            line += f" {per[n]:>8.2f} {n / per[n]:>10,.0f}"
        line += f" {per[n_hi] / per[n_lo]:>18.2f}"
        print(line)
    print()


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def window_async(a: argparse.Namespace) -> None:
    import gc
    import threading

    try:
        from wallaroo_pulumi.runtime.core.memory import trim
    except ImportError:  # a tree from before issue 29, for the before/after numbers
        def trim() -> None:
            pass

    sizes = [int(x) for x in a.window_rows.split(",")]
    name = a.scorers.split(",")[0]
    mode = "sidekick" if a.executor == "auto" else a.executor
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        db = SqliteDatabase(data / "runtime.db")
        now = int(time.time() * 1000)
        for n in sizes:  # logged like a day of traffic: batches of 500 rows spread over 24 h
            fill = LogStore(data / "logs")
            step = max(1, 86_000_000 // n)
            texts = corpus(min(n, 50_000), seed=n)
            for i in range(0, n, 500):
                t = llm_table([texts[(i + j) % len(texts)] for j in range(min(500, n - i))], 0)
                times = pa.array([now - 86_000_000 + (i + j) * step for j in range(t.num_rows)], pa.int64())
                fill.append(f"llm-{n}", t.set_column(0, "time", times.cast(pa.timestamp("ms", tz="UTC"))))
            fill.close()
            del texts, fill
        logs = LogStore(data / "logs")
        svc = ListenerService(db, logs, executor=mode, tick_seconds=1.0, executor_idle_seconds=3600)
        await svc.start()
        try:
            ref = await svc.resolve(1, parse_args({"monitored_pipeline": "x", "listener_model": {"name": name}}))
            key, executor = await svc.executors.acquire(ref)
            svc.executors.release(key, executor, False)
            for n in sizes:
                gc.collect()
                trim()
                await asyncio.sleep(0.5)
                idle = _rss_mb()
                peak = [idle]
                stop = threading.Event()

                def sample(peak: list[float] = peak, stop: threading.Event = stop) -> None:
                    while not stop.wait(0.02):
                        peak[0] = max(peak[0], _rss_mb())

                th = threading.Thread(target=sample, daemon=True)
                th.start()
                t = await svc.create_task(
                    name=f"window-{n}", workspace_id=1, timeout=7200,
                    json_args={"monitored_pipeline": f"llm-{n}", "listener_model": {"name": name},
                               "window_seconds": 86_400, "batch_size": a.batch_size, "page_size": a.page_size},
                )
                run = svc.list_runs(t["id"])[0]
                t0 = time.perf_counter()
                run = await svc.wait_run(run["id"])
                secs = time.perf_counter() - t0
                stop.set()
                th.join()
                await asyncio.sleep(0.5)
                after = _rss_mb()
                if run["status"] != "succeeded" or run["rows_scored"] != n:
                    raise SystemExit(f"window {n}: run {run['status']} scored {run['rows_scored']}: {run['error']}")
                # the next scheduled run: ten minutes of new traffic (a 144th of the day) on top of the window
                new = max(1, n // 144)
                logs.append(f"llm-{n}", llm_table(corpus(new, seed=n + 1), int(time.time() * 1000) - new - 1000))
                t = await svc.create_task(
                    name=f"window-{n}-next", workspace_id=1, timeout=7200,
                    json_args={"monitored_pipeline": f"llm-{n}", "listener_model": {"name": name},
                               "window_seconds": 86_400, "batch_size": a.batch_size, "page_size": a.page_size},
                )
                t1 = time.perf_counter()
                nxt = await svc.wait_run(svc.list_runs(t["id"])[0]["id"])
                secs_next = time.perf_counter() - t1
                if nxt["status"] != "succeeded" or nxt["rows_scored"] != new:
                    raise SystemExit(f"window {n}, next run: {nxt['status']} scored {nxt['rows_scored']} of {new}")
                results.append((n, idle, peak[0] - idle, after - idle, secs, new, nxt["rows_read"], secs_next))
                print(f"  {n:,} rows: {secs:.1f} s, peak +{peak[0] - idle:.0f} MB; next run over {new:,} new rows "
                      f"read {nxt['rows_read']:,} in {secs_next:.2f} s", flush=True)
        finally:
            await svc.stop()
            logs.close()
            db.close()
    print()
    print(f"Listener window runs ({name}, executor={mode}, page_size={a.page_size}, batch_size={a.batch_size}, "
          f"{os.cpu_count()} CPUs; 24 h window, logs sealed in Parquet)")
    head = (f"{'rows':>9} {'idle MB':>8} {'peak above idle MB':>19} {'after MB':>9} {'seconds':>8} {'rows/s':>8} "
            f"{'time x':>7}              {'next: new':>9} {'read':>9} {'seconds':>8}")
    print(head)
    print("-" * len(head))
    n0, s0 = results[0][0], results[0][4]
    for n, idle, peak, after, secs, new, read, secs_next in results:
        print(f"{n:>9,} {idle:>8.0f} {peak:>19.0f} {after:>+9.0f} {secs:>8.1f} {n / secs:>8,.0f} "
              f"{secs / s0:>5.2f}x (rows {n / n0:.0f}x) {new:>9,} {read:>9,} {secs_next:>8.2f}")
    print("next: the following run of the same stream after ten minutes of new traffic (a 144th of the rows): "
          "the rows it read and its seconds")
    print()


def _rss_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(x.split()[1]) / 1024 for x in f if x.startswith("VmRSS:")), 0.0)
    except OSError:
        return 0.0


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def task_run(rt, pipeline: str, scorer: str, batch: int, page_size: int = 20_000) -> tuple[dict, float, float, float]:
    """One run through the runtime: (run, wall s, runtime peak MB above idle, run process peak MB)."""
    import threading

    import httpx

    h = {"Authorization": f"Bearer {rt.token}"}
    idle = _rss_of(rt.pid)
    peaks = [idle, 0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peaks[0] = max(peaks[0], _rss_of(rt.pid))
            peaks[1] = max(peaks[1], sum(_rss_of(p) for p in _descendants(rt.pid)))

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    t = httpx.post(f"{rt.url}/v1/api/task/run_once", headers=h, timeout=60, json={
        "name": f"bench-{scorer}-{pipeline}", "workspace_id": 1, "timeout": 7200,
        "json": {"monitored_pipeline": pipeline, "listener_model": {"name": scorer}, "window_seconds": 30 * 86400,
                 "batch_size": batch, "page_size": page_size}}).json()
    while True:
        runs = httpx.post(f"{rt.url}/v1/api/task/list_task_runs", headers=h, json={"task_id": t["id"]}).json()
        if runs and runs[0]["status"] != "running":
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    if runs[0]["status"] != "success":
        raise SystemExit(f"{scorer} on {pipeline}: run {runs[0]['status']}: {runs[0]['error']}")
    return runs[0], wall, peaks[0] - idle, peaks[1]


def task_mode(a: argparse.Namespace) -> None:
    sizes = [int(x) for x in a.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        logs = LogStore(data / "logs")
        t0 = int(time.time() * 1000) - 86400_000
        for n in sizes:
            texts = corpus(n, seed=n)
            for i in range(0, n, 50_000):
                logs.append(f"llm-{n}", llm_table(texts[i : i + 50_000], t0 + i))
        logs.close()
        rt = start_runtime(data, log=Path(tmp) / "runtime.log")
        try:
            for name in a.scorers.split(","):
                _, load_s, _, _ = task_run(rt, "no-rows", name, a.batch_size)
                per, mem = {}, (0.0, 0.0)
                for n in sizes:
                    run, per[n], runtime_mb, run_mb = task_run(rt, f"llm-{n}", name, a.batch_size)
                    assert run["rows_scored"] == n, run
                    mem = (runtime_mb, run_mb)
                rows.append((name, load_s, per, mem))
        finally:
            stop(rt.proc)
    print(f"\nListener throughput (executor=task: each run a process of its own, batch_size={a.batch_size}, "
          f"{os.cpu_count()} CPUs)")
    head = f"{'listener':<10} {'load s':>7}" + "".join(f" {f'{n // 1000}k s':>8} {f'{n // 1000}k r/s':>10}" for n in sizes)
    head += f" {'runtime MB':>11} {'run MB':>7}"
    print(head)
    print("-" * len(head))
    for name, load_s, per, (runtime_mb, run_mb) in rows:
        print(f"{name:<10} {load_s:>7.2f}" + "".join(f" {per[n]:>8.2f} {n / per[n]:>10,.0f}" for n in sizes)
              + f" {runtime_mb:>+11.0f} {run_mb:>7.0f}")
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,30000,100000")
    p.add_argument("--window-rows", default=None,
                   help="window mode: one run per window of N rows, e.g. 50000,100000,500000")
    p.add_argument("--page-size", type=int, default=10_000, help="window mode: the run's page size")
    p.add_argument("--scorers", default="toxicity,sentiment,profanity,hate,combined")
    p.add_argument("--executor", default="auto", help="auto|sidekick|inprocess|scorer (in this process) or task "
                   "(through a real runtime, each run a process of its own)")
    p.add_argument("--batch-size", type=int, default=512)
    a = p.parse_args()
    asyncio.run(window_async(a) if a.window_rows else main_async(a))


if __name__ == "__main__":
    main()
