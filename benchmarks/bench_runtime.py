"""Runtime benchmark (loopback only, bounded request counts).

1. Latency p50/p99 and throughput of a pass-through pipeline (a BYOP model whose
   `_predict` calls a loopback upstream with httpx) vs calling that same upstream
   directly: the runtime's overhead per request.
2. Server RSS growth while uploading a 2 GiB artifact (a generated stored-zip
   stream; nothing is kept: the model is deleted afterwards).

Run: .venv/bin/python benchmarks/bench_runtime.py [--requests 300] [--concurrency 8] [--upload-gib 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import percentile, start_runtime, stop, wait_http  # noqa: E402
from wallaroo_pulumi.client import WallarooClient, schema_to_b64  # noqa: E402
from wallaroo_pulumi.ports import free_port  # noqa: E402

UPSTREAM = textwrap.dedent(
    """
    import json, sys
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    import uvicorn

    async def generate(request):
        body = await request.json()
        return JSONResponse({"generated_text": [p[::-1] for p in body["prompts"]]})

    app = Starlette(routes=[Route("/generate", generate, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
    """
)

PASS_THROUGH = textwrap.dedent(
    '''
    import os
    import httpx
    import numpy as np
    from mac.config.inference import CustomInferenceConfig
    from mac.inference import Inference
    from mac.inference.creation import InferenceBuilder
    from mac.types import InferenceData


    class PassThrough(Inference):
        @property
        def expected_model_types(self):
            return {httpx.Client}

        @Inference.model.setter
        def model(self, model):
            self._raise_error_if_model_is_wrong_type(model)
            self._model = model

        def _predict(self, input_data: InferenceData):
            prompts = [str(p) for p in input_data["text"]]
            r = self.model.post(os.environ["UPSTREAM_URL"], json={"prompts": prompts})
            r.raise_for_status()
            return {"generated_text": np.array(r.json()["generated_text"])}


    class PassThroughBuilder(InferenceBuilder):
        @property
        def inference(self):
            return PassThrough()

        def create(self, config: CustomInferenceConfig):
            inference = self.inference
            inference.model = httpx.Client(timeout=30)
            return inference
    '''
)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(call, requests: int, concurrency: int) -> dict[str, float]:
    for _ in range(20):  # warm-up
        call()
    latencies = []
    for _ in range(requests):
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: call(), range(requests * 2)))
    wall = time.perf_counter() - t0
    return {
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "mean_ms": statistics.fmean(latencies) * 1e3,
        "rps": requests * 2 / wall,
    }


# -- a generated 2 GiB stored zip (model.py + zero-filled weights), streamed -----------
def _local_header(name: bytes, crc: int, size: int, descriptor: bool) -> bytes:
    flags = 0x08 if descriptor else 0
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, 0, 0, 0x21, 0 if descriptor else crc,
                       0 if descriptor else size, 0 if descriptor else size, len(name), 0) + name


def _central(name: bytes, crc: int, size: int, offset: int, descriptor: bool) -> bytes:
    flags = 0x08 if descriptor else 0
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, 0, 0, 0x21, crc, size, size,
                       len(name), 0, 0, 0, 0, 0o644 << 16, offset) + name


def big_zip_stream(total_weights: int, chunk: int = 1 << 20):
    """(length, generator) of a valid stored zip holding model.py and `total_weights` zero bytes."""
    code = PASS_THROUGH.encode()
    zeros = bytes(chunk)
    crc = 0
    full, rest = divmod(total_weights, chunk)
    for _ in range(full):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(zeros[:rest], crc)
    code_crc = zlib.crc32(code)
    h1 = _local_header(b"model.py", code_crc, len(code), False)
    h2 = _local_header(b"weights.bin", crc, total_weights, True)
    descriptor = struct.pack("<IIII", 0x08074B50, crc, total_weights, total_weights)
    off2 = len(h1) + len(code)
    cd_offset = off2 + len(h2) + total_weights + len(descriptor)
    cd = _central(b"model.py", code_crc, len(code), 0, False) + _central(b"weights.bin", crc, total_weights, off2, True)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 2, 2, len(cd), cd_offset, 0)
    length = cd_offset + len(cd) + len(end)

    def gen():
        yield h1 + code + h2
        for _ in range(full):
            yield zeros
        if rest:
            yield zeros[:rest]
        yield descriptor + cd + end

    return length, gen


def upload_rss(client: WallarooClient, server_pid: int, gib: float) -> dict[str, float]:
    size = int(gib * 2**30)
    length, gen = big_zip_stream(size)
    meta = json.dumps({
        "name": "big-artifact", "visibility": "private", "workspace_id": 1,
        "conversion": {"framework": "custom", "python_version": "3.8", "requirements": []},
        "input_schema": schema_to_b64(pa.schema([("text", pa.string())])),
        "output_schema": schema_to_b64(pa.schema([("generated_text", pa.string())])),
    })
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n"
            f"{meta}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.zip\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield head
        yield from gen()
        yield tail

    baseline = rss_bytes(server_pid)
    peak = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes(server_pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    r = httpx.post(
        client.url + "/v1/api/models/upload_and_convert", content=body(),
        headers={"Authorization": f"Bearer {client._transport._token}",
                 "Content-Type": f"multipart/form-data; boundary={boundary}",
                 "Content-Length": str(len(head) + length + len(tail))},
        timeout=httpx.Timeout(600, connect=10),
    )
    took = time.perf_counter() - t0
    stop.set()
    sampler.join()
    r.raise_for_status()
    version = client.get_model_version(r.json()["insert_models"]["returning"][0]["models"][0]["id"])
    client.delete_model(version.name)  # don't keep 2 GiB around
    return {"bytes": length, "seconds": took, "baseline_mb": baseline / 2**20, "peak_mb": peak[0] / 2**20,
            "growth_mb": (peak[0] - baseline) / 2**20, "mb_per_s": length / 2**20 / took}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--upload-gib", type=float, default=2.0)
    parser.add_argument("--replicas", type=int, default=2, help="sidekick replicas of the pass-through step")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    procs: list[subprocess.Popen] = []
    try:
        up_port = free_port()
        (work / "upstream.py").write_text(UPSTREAM)
        upstream_proc = subprocess.Popen([sys.executable, str(work / "upstream.py"), str(up_port)])
        procs.append(upstream_proc)
        upstream = f"http://127.0.0.1:{up_port}/generate"
        runtime = start_runtime(work / "data")
        procs.append(runtime.proc)
        wait_http(f"http://127.0.0.1:{up_port}/", upstream_proc, "the upstream")
        client = WallarooClient(runtime.url, runtime.token)

        model_zip = work / "pass.zip"
        with zipfile.ZipFile(model_zip, "w") as zf:
            zf.writestr("model.py", PASS_THROUGH)
        ins = pa.schema([("text", pa.string())])
        outs = pa.schema([("generated_text", pa.string())])
        mv = client.upload_model("pass-through", model_zip, ins, outs)
        created = client.create_pipeline("pass-through", steps=[mv])
        dep = client.deploy("pass-through", pipeline_id=created.pipeline_id,
                            engine_config={"replica_count": args.replicas,
                                           "sidekicks": {"pass-through": {"env": {"UPSTREAM_URL": upstream}}}})
        client.wait_for_deployment(f"pass-through-{dep}", timeout_s=120)

        prompt = "Summarise the quarterly report in one sentence."
        direct_http = httpx.Client(timeout=30)
        infer_http = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {client._transport._token}",
                                                       "Content-Type": "application/json; format=pandas-records"})
        infer_url = f"{runtime.url}/v1/api/pipelines/infer/pass-through-{dep}/pass-through"
        direct_body = json.dumps({"prompts": [prompt]})
        infer_body = json.dumps([{"text": prompt}])

        def direct():
            r = direct_http.post(upstream, content=direct_body, headers={"Content-Type": "application/json"})
            r.raise_for_status()

        timings: list[dict[str, float]] = []

        def through():
            r = infer_http.post(infer_url, content=infer_body)
            r.raise_for_status()
            parts = {}
            for item in r.headers.get("server-timing", "").split(","):
                if "dur=" in item:
                    parts[item.split(";")[0].strip()] = float(item.split("dur=")[1])
            timings.append(parts)

        through()
        d = measure(direct, args.requests, args.concurrency)
        p = measure(through, args.requests, args.concurrency)
        print(f"\nPass-through latency ({args.requests} sequential requests, 1 row each; throughput with "
              f"{args.concurrency} concurrent clients, {args.requests * 2} requests; {args.replicas} sidekick "
              f"replica(s)), loopback, {os.cpu_count()} CPUs:")
        print(f"{'':24}{'upstream direct':>18}{'via pipeline':>18}{'overhead':>14}")
        for key, label, unit in (("p50_ms", "latency p50", "ms"), ("p99_ms", "latency p99", "ms"),
                                 ("mean_ms", "latency mean", "ms"), ("rps", "throughput", "req/s")):
            delta = p[key] - d[key]
            print(f"{label + ' (' + unit + ')':24}{d[key]:>18.2f}{p[key]:>18.2f}{delta:>+14.2f}")

        seq = timings[20:20 + args.requests]  # the sequential phase (after warm-up)
        if seq and all(seq):
            print("server-side breakdown, p50 ms (Server-Timing): " + ", ".join(
                f"{k} {statistics.median(t.get(k, 0.0) for t in seq):.2f}" for k in seq[0]))

        if args.upload_gib > 0:
            u = upload_rss(client, runtime.pid, args.upload_gib)
            print(f"\nUpload of a {u['bytes'] / 2**30:.2f} GiB artifact (generated stream, deleted after):")
            print(f"{'server RSS before':24}{u['baseline_mb']:>12.1f} MB")
            print(f"{'server RSS peak':24}{u['peak_mb']:>12.1f} MB")
            print(f"{'RSS growth':24}{u['growth_mb']:>12.1f} MB   (target: < 100 MB)")
            print(f"{'upload time':24}{u['seconds']:>12.1f} s    ({u['mb_per_s']:.0f} MB/s)")
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
