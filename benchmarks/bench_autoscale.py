"""Autoscaling benchmark: one step under steady load, a fixed single worker vs an autoscaled pool.

The step is what a first BYOP LLM model often is: it calls its upstream one row at a time and
blocks on each call (simulated by a `--row-ms` sleep per row, so the numbers do not depend on
an upstream). Merging requests into batches (D8) cannot help such a model; more workers can.
Both pipelines run in one runtime and get the same load, one after the other: `--clients`
threads sending 1-row requests for `--seconds`. Printed side by side: throughput over the whole
window and its second half (after the pool has grown), latency p50/p99, workers reached and
when, and how long the autoscaled pool takes to shrink back once the load stops (D12: 30 s of
low utilization).

Run: .venv/bin/python benchmarks/bench_autoscale.py [--seconds 20] [--clients 8] [--max-workers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

from benchmarks._harness import percentile, start_runtime, stop  # noqa: E402
from wallaroo_pulumi.client import WallarooClient  # noqa: E402

ROW_AT_A_TIME = textwrap.dedent(
    '''
    import os
    import time
    import numpy as np
    from mac.config.inference import CustomInferenceConfig
    from mac.inference import Inference
    from mac.inference.creation import InferenceBuilder
    from mac.types import InferenceData


    class RowAtATime(Inference):
        @property
        def expected_model_types(self):
            return {float}

        @Inference.model.setter
        def model(self, model):
            self._raise_error_if_model_is_wrong_type(model)
            self._model = model

        def _predict(self, input_data: InferenceData):
            answers = []
            for prompt in input_data["text"]:
                time.sleep(self.model)  # a blocking call to the LLM, one row after another
                answers.append(str(prompt)[::-1])
            return {"generated_text": np.array(answers)}


    class RowAtATimeBuilder(InferenceBuilder):
        @property
        def inference(self):
            return RowAtATime()

        def create(self, config: CustomInferenceConfig):
            inference = self.inference
            inference.model = float(os.environ["ROW_SECONDS"])
            return inference
    '''
)


def workers(http: httpx.Client, url: str, pipeline: str) -> int:
    prefix = f'wallaroo_sidekick_replicas{{pipeline="{pipeline}",step="row-at-a-time"}} '
    for line in http.get(url + "/metrics").text.splitlines():
        if line.startswith(prefix):
            return int(float(line[len(prefix):]))
    return 0


def drive(http: httpx.Client, runtime_url: str, pipeline: str, infer_url: str, seconds: float,
          clients: int) -> dict[str, float]:
    """Steady load for `seconds`; returns throughput, latency and the pool's size over time."""
    body = json.dumps([{"text": "Summarise the quarterly report in one sentence."}])
    done: list[tuple[float, float]] = []  # (finished at, latency)
    lock = threading.Lock()
    start = time.perf_counter()
    end = start + seconds

    def client() -> None:
        while (t0 := time.perf_counter()) < end:
            r = http.post(infer_url, content=body, headers={"Content-Type": "application/json; format=pandas-records"})
            r.raise_for_status()
            t1 = time.perf_counter()
            with lock:
                done.append((t1 - start, t1 - t0))

    sizes: list[tuple[float, int]] = []
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client) for _ in range(clients)]
        while time.perf_counter() < end:
            sizes.append((time.perf_counter() - start, workers(http, runtime_url, pipeline)))
            time.sleep(0.5)
        for f in futures:
            f.result()
    latencies = [lat for _, lat in done]
    second_half = [t for t, _ in done if t >= seconds / 2]
    peak = max(n for _, n in sizes)
    return {
        "rps": len(done) / seconds,
        "rps_second_half": len(second_half) / (seconds / 2),
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "workers": peak,
        "peak_at_s": next(t for t, n in sizes if n == peak),
    }


def deploy(client: WallarooClient, name: str, model_zip: Path, engine_config: dict) -> str:
    ins = pa.schema([("text", pa.string())])
    outs = pa.schema([("generated_text", pa.string())])
    mv = client.upload_model("row-at-a-time", model_zip, ins, outs)
    created = client.create_pipeline(name, steps=[mv])
    dep = client.deploy(name, pipeline_id=created.pipeline_id, engine_config=engine_config)
    client.wait_for_deployment(f"{name}-{dep}", timeout_s=120)
    return f"/v1/api/pipelines/infer/{name}-{dep}/{name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="load per pipeline")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients, 1 row per request")
    parser.add_argument("--row-ms", type=float, default=40.0, help="the model's blocking time per row")
    parser.add_argument("--max-workers", type=int, default=4, help="autoscale_max of the autoscaled pipeline")
    parser.add_argument("--shrink-timeout", type=float, default=150.0,
                        help="how long to watch the idle pool shrink (0: do not watch)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-autoscale-"))
    runtime = start_runtime(work / "data")
    try:
        client = WallarooClient(runtime.url, runtime.token)
        model_zip = work / "row-at-a-time.zip"
        with zipfile.ZipFile(model_zip, "w") as zf:
            zf.writestr("model.py", ROW_AT_A_TIME)
        env = {"sidekicks": {"row-at-a-time": {"env": {"ROW_SECONDS": str(args.row_ms / 1000)}}}}
        fixed_url = deploy(client, "fixed", model_zip, {"replica_count": 1, **env})
        scaled_url = deploy(client, "autoscaled", model_zip,
                            {"autoscale_min": 1, "autoscale_max": args.max_workers, **env})
        http = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {runtime.token}"})
        print(f"==> {args.seconds:.0f} s of load on each: {args.clients} clients, 1 row per request, "
              f"{args.row_ms:.0f} ms per row; {os.cpu_count()} CPUs", flush=True)
        fixed = drive(http, runtime.url, "fixed", runtime.url + fixed_url, args.seconds, args.clients)
        scaled = drive(http, runtime.url, "autoscaled", runtime.url + scaled_url, args.seconds, args.clients)

        shrink = "not watched"
        if args.shrink_timeout > 0:
            idle_since = time.perf_counter()
            while workers(http, runtime.url, "autoscaled") > 1 and time.perf_counter() - idle_since < args.shrink_timeout:
                time.sleep(0.5)
            left = workers(http, runtime.url, "autoscaled")
            shrink = (f"{time.perf_counter() - idle_since:.1f} s" if left == 1
                      else f"still {left} after {args.shrink_timeout:.0f} s")

        print(f"\n{'':28}{'fixed, 1 worker':>18}{f'autoscaled 1-{args.max_workers}':>18}{'ratio':>10}")
        for key, label, fmt in (("rps", "throughput (req/s)", ".1f"),
                                ("rps_second_half", "  second half (req/s)", ".1f"),
                                ("p50_ms", "latency p50 (ms)", ".0f"), ("p99_ms", "latency p99 (ms)", ".0f"),
                                ("workers", "workers reached", "d")):
            a, b = fixed[key], scaled[key]
            print(f"{label:28}{a:>18{fmt}}{b:>18{fmt}}{b / a if a else float('nan'):>10.2f}")
        print(f"{'reached at (s into load)':28}{'-':>18}{scaled['peak_at_s']:>18.1f}")
        print(f"{'back to 1 worker when idle':28}{'-':>18}{shrink:>18}")
        return 0
    finally:
        stop(runtime.proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
