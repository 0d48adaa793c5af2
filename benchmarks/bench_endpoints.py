"""Managed-endpoint benchmark: one OpenAI-compatible upstream, three ways to reach it.

One loopback OpenAI stand-in (``python -m wallaroo_pulumi.standins openai``) with a fixed
injected latency serves all three, side by side in one run:

* **direct**   — ``POST {upstream}/chat/completions`` with the API key;
* **pipeline** — our runtime's inference URL for a one-step pipeline running the bundled
  ``openai_llm`` BYOP model (``components/byop/openai_llm``) in its sidekick, configured
  only by sidekick env (the same thing `examples/openai-managed-endpoint` deploys);
* **litellm**  — a LiteLLM proxy (``$LITELLM``, else ``litellm`` on PATH; ``make bench`` sets it from ``scripts/litellm``)
  configured for the same upstream, same model, same key.

For each: latency p50/p99 of sequential single requests (the added latency over direct is
what a gateway costs), then latency and throughput with a fixed number of concurrent
clients, and the gateway's CPU time per request (the runtime with its sidekick workers, or
LiteLLM's processes, from /proc). Every process is a subprocess on this machine; the client is one asyncio loop.

Run: .venv/bin/python benchmarks/bench_endpoints.py [--quick] [--latency-ms 50] [--concurrency 16]
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
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import cpu_seconds, descendants, percentile, start_runtime, stop, wait_http  # noqa: E402
from wallaroo_pulumi.adapters.schemas import LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA  # noqa: E402
from wallaroo_pulumi.client import WallarooClient  # noqa: E402
from wallaroo_pulumi.packaging import pack  # noqa: E402
from wallaroo_pulumi.ports import free_port  # noqa: E402

MODEL = "gpt-4o-mini"
API_KEY = "sk-bench-upstream-0123456789"
LITELLM_KEY = "sk-litellm-bench-0123456789abcdef"
PROMPT = "Summarise the quarterly report in one sentence."
MAX_TOKENS = 64


Call = Callable[[httpx.AsyncClient], Awaitable[None]]


async def run_load(call: Call, requests: int, concurrency: int) -> tuple[list[float], float]:
    """`requests` calls spread over `concurrency` workers: (latencies in s, wall seconds)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    remaining = iter(range(requests))
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        async def worker() -> None:
            for _ in remaining:
                t0 = time.perf_counter()
                await call(http)
                latencies.append(time.perf_counter() - t0)

        for _ in range(min(10, requests)):  # warm-up: connections, sidekick, proxy caches
            await call(http)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - t0


# -- the three targets --------------------------------------------------------------------
def start_upstream(work: Path, latency_s: float, procs: list[subprocess.Popen]) -> str:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wallaroo_pulumi.standins", "openai", "--port", str(port), "--api-key", API_KEY,
         "--model", MODEL, "--latency", str(latency_s)],
        stdout=subprocess.PIPE, stderr=open(work / "upstream.log", "w"), text=True, cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    procs.append(proc)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        raise RuntimeError(f"the OpenAI stand-in did not start: {(work / 'upstream.log').read_text()[-2000:]}")
    return json.loads(line)["env"]["OPENAI_BASE_URL"]


def start_pipeline(work: Path, base_url: str, concurrency: int, replicas: int,
                   procs: list[subprocess.Popen], model_concurrency: int | None = None) -> tuple[str, str]:
    runtime = start_runtime(work / "runtime", log=work / "runtime.log")
    procs.append(runtime.proc)
    client = WallarooClient(runtime.url, runtime.token)
    artifact = pack(REPO / "components" / "byop" / "openai_llm", work)
    version = client.upload_model("openai-llm", artifact.path, LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA)
    pipeline = client.create_pipeline("bench-openai", steps=[version])
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_MODEL": MODEL, "OPENAI_BASE_URL": base_url,
           "MAX_TOKENS": str(MAX_TOKENS), "MAX_CONCURRENCY": str(concurrency)}
    side = {"model_concurrency": model_concurrency} if model_concurrency else {}
    deployment = client.deploy("bench-openai", pipeline_id=pipeline.pipeline_id,
                               engine_config={"replica_count": replicas,
                                              "sidekicks": {"openai-llm": {"env": env, **side}}})
    client.wait_for_deployment(f"bench-openai-{deployment}", timeout_s=120)
    return f"{runtime.url}/v1/api/pipelines/infer/bench-openai-{deployment}/bench-openai", runtime.token


def start_litellm(work: Path, base_url: str, procs: list[subprocess.Popen]) -> str | None:
    exe = os.environ.get("LITELLM") or shutil.which("litellm")
    if exe is None:
        return None
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": base_url, "api_key": API_KEY}}],
        "litellm_settings": {"telemetry": False},
    }))
    log = work / "litellm.log"
    env = {**os.environ, "LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR", "NO_DOCS": "True"}
    proc = subprocess.Popen([exe, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=str(work),
                            start_new_session=True)
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health/liveliness", proc, "the LiteLLM proxy", timeout=120, log=log)
    return url + "/v1/chat/completions"


def chat_call(url: str, key: str) -> Call:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def call(http: httpx.AsyncClient) -> None:
        r = await http.post(url, content=body, headers=headers)
        r.raise_for_status()
        if not r.json()["choices"][0]["message"]["content"]:
            raise RuntimeError(f"{url}: empty completion")

    return call


def pipeline_call(url: str, token: str) -> Call:
    body = json.dumps([{"text": PROMPT}])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json; format=pandas-records"}

    async def call(http: httpx.AsyncClient) -> None:
        r = await http.post(url, content=body, headers=headers)
        r.raise_for_status()
        row = r.json()[0]
        if row["out"].get("error") or not row["out"]["generated_text"]:
            raise RuntimeError(f"pipeline row failed: {row['out'].get('error')!r}")

    return call


# -- report -------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=50.0, help="latency the upstream adds to every request")
    parser.add_argument("--sequential", type=int, default=200, help="sequential requests per target")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients in the throughput phase")
    parser.add_argument("--requests", type=int, default=800, help="requests per target in the throughput phase")
    parser.add_argument("--replicas", type=int, default=1, help="sidekick replicas of the pipeline step")
    parser.add_argument("--model-concurrency", type=int, default=None,
                        help="batches the sidekick answers at once (default: the adapter's own, its MAX_CONCURRENCY)")
    parser.add_argument("--quick", action="store_true", help="a short run (50 sequential, 200 concurrent)")
    args = parser.parse_args()
    if args.quick:
        args.sequential, args.requests = 50, 200

    work = Path(tempfile.mkdtemp(prefix="bench-endpoints-"))
    procs: list[subprocess.Popen] = []
    try:
        print(f"starting the OpenAI stand-in ({args.latency_ms:.0f} ms injected latency), the runtime and "
              "LiteLLM ...", flush=True)
        base_url = start_upstream(work, args.latency_ms / 1000, procs)
        infer_url, token = start_pipeline(work, base_url, args.concurrency, args.replicas, procs,
                                          args.model_concurrency)
        litellm_url = start_litellm(work, base_url, procs)
        targets: dict[str, Call] = {
            "direct": chat_call(f"{base_url}/chat/completions", API_KEY),
            "pipeline": pipeline_call(infer_url, token),
        }
        if litellm_url:
            targets["litellm"] = chat_call(litellm_url, LITELLM_KEY)
        else:
            print("litellm not found (set LITELLM=$(scripts/litellm)): its column is skipped")

        # the gateway's processes (the runtime and its sidekick workers, LiteLLM and its children): CPU per request
        gateways = {"direct": None, "pipeline": procs[1].pid, "litellm": procs[2].pid if litellm_url else None}

        def gateway_cpu(name: str) -> float:
            root = gateways[name]
            return 0.0 if root is None else sum(cpu_seconds(p) for p in [root, *descendants(root)])

        results: dict[str, dict[str, float]] = {}
        for name, call in targets.items():
            print(f"measuring {name} ...", flush=True)
            asyncio.run(run_load(call, 20, 1))  # first calls: imports, caches, connections (not per request)
            # (each phase's own 10 warm-up calls are ordinary calls by now: counted with it)
            c0 = gateway_cpu(name)
            seq, _ = asyncio.run(run_load(call, args.sequential, 1))
            c1 = gateway_cpu(name)
            conc, wall = asyncio.run(run_load(call, args.requests, args.concurrency))
            c2 = gateway_cpu(name)
            results[name] = {
                "seq_p50": percentile(seq, 50) * 1e3, "seq_p99": percentile(seq, 99) * 1e3,
                "conc_p50": percentile(conc, 50) * 1e3, "conc_p99": percentile(conc, 99) * 1e3,
                "rps": args.requests / wall,
                "cpu_seq": (c1 - c0) * 1e3 / (args.sequential + min(10, args.sequential)),
                "cpu_conc": (c2 - c1) * 1e3 / (args.requests + min(10, args.requests)),
            }

        print(f"\nOne OpenAI-compatible upstream on loopback, {args.latency_ms:.0f} ms injected latency, "
              f"{os.cpu_count()} CPUs; sequential: {args.sequential} requests; concurrent: {args.requests} "
              f"requests from {args.concurrency} clients; pipeline: {args.replicas} sidekick replica(s), "
              f"MAX_CONCURRENCY={args.concurrency}, model_concurrency={args.model_concurrency or 'its own'}.\n")
        names = list(results)
        print(f"{'':30}" + "".join(f"{n:>12}" for n in names))
        rows = (("seq_p50", "latency p50, sequential (ms)"), ("seq_p99", "latency p99, sequential (ms)"),
                ("conc_p50", f"latency p50, {args.concurrency} clients (ms)"),
                ("conc_p99", f"latency p99, {args.concurrency} clients (ms)"), ("rps", "throughput (req/s)"))
        for key, label in rows:
            print(f"{label:30}" + "".join(f"{results[n][key]:>12.1f}" for n in names))
        direct = results["direct"]
        for key, label in (("seq_p50", "added p50, sequential (ms)"), ("seq_p99", "added p99, sequential (ms)")):
            print(f"{label:30}" + "".join(f"{results[n][key] - direct[key]:>+12.1f}" for n in names))
        print(f"{'throughput vs direct':30}" + "".join(f"{results[n]['rps'] / direct['rps']:>12.2f}" for n in names))
        for key, label in (("cpu_seq", "gateway CPU ms/req, sequential"), ("cpu_conc", f"gateway CPU ms/req, {args.concurrency} cl.")):
            print(f"{label:30}" + "".join(f"{results[n][key]:>12.3f}" for n in names))
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
