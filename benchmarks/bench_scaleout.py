"""Scale-out benchmark: inference throughput and log-query time with 1, 2 and 3 serving replicas
on PostgreSQL + an S3-compatible bucket (separate processes, separate data dirs, as on separate
nodes), beside the embedded default (SQLite + one data dir), side by side.

A one-step BYOP pipeline (y = 2x) is deployed through the first replica; `--requests` inferences
are sent round-robin over the replicas by `--concurrency` client threads; then the pipeline's
logs are read whole through one replica, `--page` rows a page. The PostgreSQL server and the
bucket (moto's server) run on this machine too: on few cores the replicas compete with them and
with each other, so the columns compare costs more than they show scaling.

Run: .venv/bin/python benchmarks/bench_scaleout.py [--requests 600] [--concurrency 8] [--page 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import Runtime, percentile, start_runtime, stop  # noqa: E402
from wallaroo_pulumi.client import WallarooClient  # noqa: E402
from wallaroo_pulumi.testing.byop import byop_source  # noqa: E402
from wallaroo_pulumi.testing.postgres import PostgresServer  # noqa: E402
from wallaroo_pulumi.testing.s3 import S3Server  # noqa: E402

ADMIN = "bench-scaleout-admin-token-0123456789"
KEY = "bench-scaleout-sealing-key-0123456789"
X, Y = pa.schema([("x", pa.float64())]), pa.schema([("y", pa.float64())])


def model_zip(folder: Path) -> Path:
    path = folder / "double.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.py", byop_source('return {"y": input_data["x"] * 2.0}'))
    return path


def measure(replicas: list[Runtime], folder: Path, requests: int, concurrency: int, page: int) -> dict[str, float]:
    first = WallarooClient(replicas[0].url, ADMIN, timeout=120)
    mv = first.upload_model("double", model_zip(folder), X, Y)
    created = first.create_pipeline("bench", steps=[mv])
    first.deploy("bench", pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
    for r in replicas:
        WallarooClient(r.url, ADMIN, timeout=120).wait_for_deployment("bench", timeout_s=180)
    body = [{"x": 1.0}]
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json; format=pandas-records"}
    latencies: list[float] = []
    lock = threading.Lock()
    clients = [httpx.Client(base_url=r.url, headers=headers, timeout=60) for r in replicas]

    def one(i: int) -> None:
        t0 = time.perf_counter()
        answer = clients[i % len(clients)].post("/v1/api/pipelines/infer/bench", json=body)
        answer.raise_for_status()
        with lock:
            latencies.append(time.perf_counter() - t0)

    for i in range(20):  # warm every replica's path
        one(i)
    latencies.clear()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - t0
    total = requests + 20
    reader = httpx.Client(base_url=replicas[-1].url, timeout=120,
                          headers={"Authorization": f"Bearer {ADMIN}", "Accept": "application/vnd.apache.arrow.file"})

    def read_all() -> tuple[int, float, float]:
        rows, cursor, first_page = 0, None, 0.0
        start = time.perf_counter()
        while True:
            answer = reader.post("/v1/api/pipelines/get_logs",
                                 json={"pipeline_name": "bench", "workspace_id": 1, "page_size": page, "cursor": cursor})
            answer.raise_for_status()
            rows += pa.ipc.open_file(pa.py_buffer(answer.content)).read_all().num_rows
            first_page = first_page or time.perf_counter() - start
            cursor = answer.headers.get("x-iteration-cursor")
            if not cursor:
                return rows, time.perf_counter() - start, first_page

    deadline = time.monotonic() + 60
    while read_all()[0] < total and time.monotonic() < deadline:  # other writers' rows: shipped within a second
        time.sleep(0.2)
    runs = [read_all() for _ in range(3)]
    for c in (*clients, reader):
        c.close()
    return {"rps": requests / elapsed, "p50": percentile(latencies, 50) * 1000, "p99": percentile(latencies, 99) * 1000,
            "rows": runs[0][0], "read_s": statistics.median(r[1] for r in runs),
            "first_page_ms": statistics.median(r[2] for r in runs) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--replicas", default="1,2,3", help="replica counts on PostgreSQL + bucket")
    args = parser.parse_args()
    env = {"WALLAROO_ADMIN_TOKEN": ADMIN, "WALLAROO_SECRETS_KEY": KEY}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        embedded = start_runtime(root / "embedded", args=["--role", "all"], env=env)
        try:
            results["embedded"] = measure([embedded], root, args.requests, args.concurrency, args.page)
        finally:
            stop(embedded.proc)
        postgres, s3 = PostgresServer().start(), S3Server().start()
        try:
            for n in (int(v) for v in args.replicas.split(",")):
                database, bucket = postgres.new_database(), s3.new_bucket()
                shared = ["--role", "serve", "--database", database, "--object-store", bucket]
                started: list[Runtime] = []
                try:
                    for i in range(n):
                        started.append(start_runtime(root / f"pg{n}-node{i}", args=shared, env={**env, **s3.env}))
                    results[f"PG+S3 x{n}"] = measure(started, root, args.requests, args.concurrency, args.page)
                finally:
                    for r in started:
                        stop(r.proc)
        finally:
            postgres.stop()
            s3.stop()
    names = list(results)
    print(textwrap.dedent(f"""
        {args.requests} inferences, {args.concurrency} client threads, round-robin over the replicas;
        then every logged row read through one replica, {args.page} rows a page (median of 3)
    """))
    print(f"{'':24}" + "".join(f"{n:>14}" for n in names))
    for label, key, fmt in (("throughput (req/s)", "rps", "{:.0f}"), ("latency p50 (ms)", "p50", "{:.1f}"),
                            ("latency p99 (ms)", "p99", "{:.1f}"), ("rows logged", "rows", "{:.0f}"),
                            ("read all logs (s)", "read_s", "{:.3f}"), ("first log page (ms)", "first_page_ms", "{:.1f}")):
        print(f"{label:24}" + "".join(f"{fmt.format(results[n][key]):>14}" for n in names))
    base = results["embedded"]["rps"]
    print(f"{'throughput vs embedded':24}" + "".join(f"{results[n]['rps'] / base:>13.2f}x" for n in names))


if __name__ == "__main__":
    main()
