"""Rollout step benchmark (loopback only): the latency a split, a shadow and a fallback step add
next to a plain model step, in one run, on one runtime. Every model is a BYOP model answering at
once (y = x * k), so what differs is the step's own work: routing rows, running models side by
side, reassembling answers, reading the rows' errors.

Pipelines: plain [a]; split RandomSplit(a: 50, b: 50); shadow Shadow(a, [b]); fallback-hit
Fallback([a, b]) with a answering; fallback-miss Fallback([f, b]) with f failing every row (HTTP 503),
so each call runs two models one after the other.

Run: .venv/bin/python benchmarks/bench_rollout.py [--requests 200] [--rows 1,100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import percentile, start_runtime, stop  # noqa: E402
from wallaroo_pulumi.client import WallarooClient  # noqa: E402
from wallaroo_pulumi.testing.byop import byop_source  # noqa: E402

X = pa.schema([("x", pa.float64())])
YE = pa.schema([("y", pa.float64()), ("error", pa.string())])
MODELS = {
    "a": 'return {"y": input_data["x"], "error": np.array([""] * len(input_data["x"]))}',
    "b": 'return {"y": input_data["x"] * 10.0, "error": np.array([""] * len(input_data["x"]))}',
    "f": 'return {"y": input_data["x"] * 0.0, '
         '"error": np.array(["f: HTTP 503 Service Unavailable after 1 attempt"] * len(input_data["x"]))}',
}


def steps(refs: dict[str, dict]) -> dict[str, list]:
    return {
        "plain": [{"ModelInference": {"models": [refs["a"]]}}],
        "split": [{"RandomSplit": {"weights": [{"model": refs["a"], "weight": 50}, {"model": refs["b"], "weight": 50}]}}],
        "shadow": [{"ModelInference": {"models": [refs["a"], refs["b"]]}}, {"AuditResults": {"from": 1}}, {"MultiOut": {}}],
        "fallback-hit": [{"Fallback": {"models": [refs["a"], refs["b"]]}}],
        "fallback-miss": [{"Fallback": {"models": [refs["f"], refs["b"]]}}],
    }


def measure(http: httpx.Client, url: str, rows: int, requests: int) -> list[float]:
    body = json.dumps([{"x": float(i)} for i in range(rows)])
    for _ in range(20):  # warm-up
        http.post(url, content=body).raise_for_status()
    latencies = []
    for _ in range(requests):
        t0 = time.perf_counter()
        http.post(url, content=body).raise_for_status()
        latencies.append(time.perf_counter() - t0)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per pipeline and batch size")
    parser.add_argument("--rows", default="1,100", help="rows per request, comma-separated")
    args = parser.parse_args()
    sizes = [int(r) for r in args.rows.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rt = start_runtime(root / "data", log=root / "runtime.log")
        try:
            with WallarooClient(rt.url, rt.token, timeout=120) as api:
                refs = {}
                for name, body in MODELS.items():
                    path = root / f"{name}.zip"
                    with zipfile.ZipFile(path, "w") as zf:
                        zf.writestr("model.py", byop_source(body))
                    mv = api.upload_model(f"bench-{name}", path, X, YE)
                    refs[name] = {"name": mv.name, "version": mv.version, "sha": mv.sha}
                urls = {}
                for name, pipeline_steps in steps(refs).items():
                    created = api.create_pipeline(name, steps=pipeline_steps)
                    dep = api.deploy(name, pipeline_id=created.pipeline_id, engine_config={"replica_count": 1})
                    api.wait_for_deployment(f"{name}-{dep}", timeout_s=180)
                    urls[name] = f"{rt.url}/v1/api/pipelines/infer/{name}-{dep}/{name}"
                    print(f"deployed {name}", file=sys.stderr)
            headers = {"Authorization": f"Bearer {rt.token}", "Content-Type": "application/json; format=pandas-records"}
            results: dict[tuple[str, int], list[float]] = {}
            with httpx.Client(timeout=60, headers=headers) as http:
                for rows in sizes:
                    for name, url in urls.items():
                        results[name, rows] = measure(http, url, rows, args.requests)
                        print(f"measured {name} x{rows}", file=sys.stderr)
        finally:
            stop(rt.proc)
    print(f"\n{args.requests} sequential requests per cell, loopback; p50 / p99 in ms; 'added' = p50 minus plain's p50\n")
    head = "| step | " + " | ".join(f"{r} row{'s' if r > 1 else ''}: p50 | p99 | added | x plain" for r in sizes) + " |"
    print(head)
    print("|" + "---|" * (1 + 4 * len(sizes)))
    for name in urls:
        cells = []
        for rows in sizes:
            lat, base = results[name, rows], percentile(results["plain", rows], 50)
            p50 = percentile(lat, 50)
            cells += [f"{p50 * 1e3:.2f}", f"{percentile(lat, 99) * 1e3:.2f}", f"{(p50 - base) * 1e3:+.2f}", f"{p50 / base:.2f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
