"""Streaming benchmark: time to first token and total time of a streamed chat completion, three
ways to one upstream, side by side in one run.

One loopback OpenAI stand-in (``python -m wallaroo_pulumi.standins openai``) answers with a fixed
latency before its first event and a fixed interval between token events (a model generating):

* **direct**   — ``POST {upstream}/chat/completions`` with ``stream: true``;
* **pipeline** — our runtime's ``{inference url}/openai/v1/chat/completions`` with ``stream: true``
  on a one-step pipeline running the bundled ``openai_llm`` BYOP model, whose version has
  ``openai_config`` enabled: every piece crosses the sidekick's CHUNK frames as it comes;
* **litellm**  — a LiteLLM proxy (see bench_endpoints) for the same upstream, ``stream: true``.

For each: TTFT (request sent to first content delta) and total time (to ``[DONE]``), p50/p99,
sequential, then with concurrent clients; what each chunk adds is the time from the first content
delta to ``[DONE]`` beyond direct's, over the chunks after the first (the end of the answer
included). A streamed call holds a sidekick worker until it ends,
so the pipeline gets ``--replicas`` workers (default: as many as the clients).

Run: .venv/bin/python benchmarks/bench_streaming.py [--quick] [--latency-ms 200] [--token-ms 20] [--concurrency 4]
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
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import percentile, start_runtime, stop  # noqa: E402
from benchmarks.bench_endpoints import API_KEY, LITELLM_KEY, MODEL, start_litellm  # noqa: E402
from wallaroo_pulumi.adapters.schemas import LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA  # noqa: E402
from wallaroo_pulumi.client import WallarooClient  # noqa: E402
from wallaroo_pulumi.packaging import pack  # noqa: E402
from wallaroo_pulumi.ports import free_port  # noqa: E402

PROMPT = "stream a summary of the quarterly report in about thirty words so that the caller sees tokens arrive one at a time"


def start_upstream(work: Path, latency_s: float, token_s: float, procs: list[subprocess.Popen]) -> str:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wallaroo_pulumi.standins", "openai", "--port", str(port), "--api-key", API_KEY,
         "--model", MODEL, "--latency", str(latency_s), "--token-interval", str(token_s)],
        stdout=subprocess.PIPE, stderr=open(work / "upstream.log", "w"), text=True, cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    procs.append(proc)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        raise RuntimeError(f"the OpenAI stand-in did not start: {(work / 'upstream.log').read_text()[-2000:]}")
    return json.loads(line)["env"]["OPENAI_BASE_URL"]


def start_pipeline(work: Path, base_url: str, replicas: int, procs: list[subprocess.Popen]) -> tuple[str, str]:
    runtime = start_runtime(work / "runtime", log=work / "runtime.log")
    procs.append(runtime.proc)
    client = WallarooClient(runtime.url, runtime.token)
    version = client.upload_model("openai-llm", pack(REPO / "components" / "byop" / "openai_llm", work).path,
                                  LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA)
    client.set_openai_config(version.id, {"enabled": True})
    pipeline = client.create_pipeline("bench-stream", steps=[version])
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_MODEL": MODEL, "OPENAI_BASE_URL": base_url, "MAX_TOKENS": "256"}
    deployment = client.deploy("bench-stream", pipeline_id=pipeline.pipeline_id,
                               engine_config={"replica_count": replicas, "sidekicks": {"openai-llm": {"env": env}}})
    client.wait_for_deployment(f"bench-stream-{deployment}", timeout_s=180)
    url = f"{runtime.url}/v1/api/pipelines/infer/bench-stream-{deployment}/bench-stream/openai/v1/chat/completions"
    return url, runtime.token


async def streamed(http: httpx.AsyncClient, url: str, key: str) -> tuple[float, float, int]:
    """One streamed chat completion: (seconds to the first content delta, seconds to [DONE], deltas)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True, "max_tokens": 256}
    t0 = time.perf_counter()
    first, deltas = None, 0
    async with http.stream("POST", url, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("error"):
                raise RuntimeError(f"{url}: {chunk['error']}")
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                deltas += 1
                if first is None:
                    first = time.perf_counter() - t0
    if first is None:
        raise RuntimeError(f"{url}: no content streamed")
    return first, time.perf_counter() - t0, deltas


async def run_load(url: str, key: str, requests: int, concurrency: int) -> list[tuple[float, float, int]]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    results: list[tuple[float, float, int]] = []
    remaining = iter(range(requests))
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        for _ in range(min(3, requests)):  # warm-up
            await streamed(http, url, key)

        async def worker() -> None:
            for _ in remaining:
                results.append(await streamed(http, url, key))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=200.0, help="upstream latency before its first event")
    parser.add_argument("--token-ms", type=float, default=20.0, help="upstream interval between token events")
    parser.add_argument("--sequential", type=int, default=30, help="sequential streamed calls per target")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent clients in the second phase")
    parser.add_argument("--requests", type=int, default=40, help="streamed calls per target in the second phase")
    parser.add_argument("--replicas", type=int, default=None, help="pipeline sidekick workers (default: --concurrency)")
    parser.add_argument("--quick", action="store_true", help="a short run (10 sequential, 12 concurrent)")
    args = parser.parse_args()
    if args.quick:
        args.sequential, args.requests = 10, 12
    replicas = args.replicas or args.concurrency

    work = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    procs: list[subprocess.Popen] = []
    try:
        print(f"starting the OpenAI stand-in ({args.latency_ms:.0f} ms to the first event, {args.token_ms:.0f} ms "
              "between tokens), the runtime and LiteLLM ...", flush=True)
        base_url = start_upstream(work, args.latency_ms / 1000, args.token_ms / 1000, procs)
        pipeline_url, token = start_pipeline(work, base_url, replicas, procs)
        litellm_url = start_litellm(work, base_url, procs)
        targets = {"direct": (f"{base_url}/chat/completions", API_KEY), "pipeline": (pipeline_url, token)}
        if litellm_url:
            targets["litellm"] = (litellm_url, LITELLM_KEY)
        else:
            print("litellm not found (set LITELLM=$(scripts/litellm)): its column is skipped")

        table: dict[str, dict[str, float]] = {}
        for name, (url, key) in targets.items():
            print(f"measuring {name} ...", flush=True)
            seq = asyncio.run(run_load(url, key, args.sequential, 1))
            conc = asyncio.run(run_load(url, key, args.requests, args.concurrency))
            table[name] = {
                "ttft50": percentile([r[0] for r in seq], 50) * 1e3, "ttft99": percentile([r[0] for r in seq], 99) * 1e3,
                "total50": percentile([r[1] for r in seq], 50) * 1e3, "total99": percentile([r[1] for r in seq], 99) * 1e3,
                "cttft50": percentile([r[0] for r in conc], 50) * 1e3, "ctotal50": percentile([r[1] for r in conc], 50) * 1e3,
                "deltas": sum(r[2] for r in seq) / len(seq),
            }

        print(f"\nStreamed chat completions from one OpenAI-compatible upstream on loopback: {args.latency_ms:.0f} ms "
              f"to its first event, {args.token_ms:.0f} ms between tokens; {os.cpu_count()} CPUs; sequential: "
              f"{args.sequential} calls; concurrent: {args.requests} calls from {args.concurrency} clients; "
              f"pipeline: {replicas} sidekick worker(s).\n")
        names = list(table)
        print(f"{'':34}" + "".join(f"{n:>12}" for n in names))
        rows = (("ttft50", "TTFT p50, sequential (ms)"), ("ttft99", "TTFT p99, sequential (ms)"),
                ("total50", "total p50, sequential (ms)"), ("total99", "total p99, sequential (ms)"),
                ("cttft50", f"TTFT p50, {args.concurrency} clients (ms)"),
                ("ctotal50", f"total p50, {args.concurrency} clients (ms)"), ("deltas", "content chunks per answer"))
        for key, label in rows:
            print(f"{label:34}" + "".join(f"{table[n][key]:>12.1f}" for n in names))
        direct = table["direct"]
        for key, label in (("ttft50", "added TTFT p50, sequential (ms)"), ("total50", "added total p50, sequential (ms)"),
                           ("cttft50", f"added TTFT p50, {args.concurrency} clients (ms)")):
            print(f"{label:34}" + "".join(f"{table[n][key] - direct[key]:>+12.1f}" for n in names))
        # from the first content delta to [DONE], over the chunks after the first: what each one adds
        body = {n: table[n]["total50"] - table[n]["ttft50"] for n in names}
        per_chunk = {n: (body[n] - body["direct"]) / max(1.0, table[n]["deltas"] - 1) for n in names}
        print(f"{'added per chunk after the first (ms)':34}" + "".join(f"{per_chunk[n]:>+12.2f}" for n in names))
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
