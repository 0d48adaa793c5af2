"""Guardrails benchmark: what each policy adds to a call, next to the same pipeline without one.

One runtime, one loopback OpenAI stand-in, one deployed pipeline (the bundled `openai_llm` step,
then the in-line validator that scores the answer). The policies are swapped in place between
rounds (`pipelines/set_guardrails`: no redeploy), and the rounds are interleaved so that a busy
machine weighs on every variant alike. Each call sends a ~90-word prompt holding an email and a
card number (so the PII policy masks on every call) and the upstream echoes it back.

Variants: none; pii (mask, request and answer); threshold (toxicity, refuse above 0.99: checked,
never fires); keywords (10 banned words, 2 patterns, a blocked and an allowed topic); all three.
Then streamed chat calls: none vs the threshold policy checked every 8 pieces (each check runs
the validator on the text so far). Last, each variant's own CPU time per call in this process
(request and answer screened, no HTTP): on a busy machine the end-to-end p50s move by more than
a policy costs, and this column does not.

Run: .venv/bin/python benchmarks/bench_guardrails.py [--calls 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import percentile, start_runtime, stop  # noqa: E402
from wallaroo_pulumi import BYOP_DIR, LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA, DeploymentConfigBuilder, packaging  # noqa: E402
from wallaroo_pulumi.client import WallarooClient  # noqa: E402
from wallaroo_pulumi.guardrails import Guardrails  # noqa: E402
from wallaroo_pulumi.runtime.services.guardrails.screen import Guard  # noqa: E402
from wallaroo_pulumi.scorers.schemas import listener_schemas  # noqa: E402
from wallaroo_pulumi.standins import OpenAIStandin  # noqa: E402

KEY = "sk-bench-guardrails-0123456789"
JSON = "application/json; format=pandas-records"
PROMPT = ("Please summarise the following customer note for the billing team. " * 6
          + "The customer wrote from jo.doe@example.com and paid with 4111 1111 1111 1111 last week; "
          + "they ask whether the refund for the duplicate invoice has been issued yet.")
PII = {"kind": "pii", "name": "pii", "action": "mask"}
THRESHOLD = {"kind": "threshold", "name": "toxic", "score": "toxicity", "above": 0.99}
KEYWORDS = {"kind": "keywords", "name": "words", "blocked": ["acme", "globex", "initech", "umbrella", "hooli", "wonka",
                                                           "stark", "wayne", "tyrell", "cyberdyne"],
            "patterns": [r"PRJ-\d{4}", r"(?i)internal only"], "blocked_topics": {"medical": ["diagnosis", "prescription"]},
            "allowed_topics": {"billing": ["invoice", "refund", "payment"]}}
VARIANTS = {"none": [], "pii": [PII], "threshold": [THRESHOLD], "keywords": [KEYWORDS], "all three": [PII, THRESHOLD, KEYWORDS]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streamed", type=int, default=15, help="streamed calls per variant per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-guardrails-") as tmp, OpenAIStandin(api_keys=[KEY], models=["m"]) as upstream:
        work = Path(tmp)
        runtime = start_runtime(work / "data", log=work / "runtime.log")
        try:
            url = deploy(runtime.url, runtime.token, upstream.openai_base_url, work)
            measure(runtime.url, runtime.token, url, args)
        finally:
            stop(runtime.proc)


def deploy(base: str, token: str, upstream_url: str, work: Path) -> str:
    print("deploying the pipeline (llm + validator) ...", file=sys.stderr)
    with WallarooClient(base, token, timeout=120) as api:
        llm = api.upload_model("llm", packaging.pack(BYOP_DIR / "openai_llm", work).path, LLM_INPUT_SCHEMA, LLM_OUTPUT_SCHEMA)
        httpx.post(f"{base}/v1/api/models/insert_model_config", headers={"Authorization": f"Bearer {token}"},
                   json={"model_version_id": llm.id, "openai_config": {"enabled": True}}, timeout=30).raise_for_status()
        vin, vout = listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA)
        validator = api.upload_model("validator", packaging.pack(BYOP_DIR / "listeners" / "validator", work).path, vin, vout)
        created = api.create_pipeline("bench", steps=[llm, validator])
        env = {"OPENAI_BASE_URL": upstream_url, "OPENAI_API_KEY": KEY, "OPENAI_MODEL": "m"}
        dep = api.deploy("bench", pipeline_id=created.pipeline_id,
                         engine_config=DeploymentConfigBuilder().sidekick_env("llm", env).build())
        api.wait_for_deployment(f"bench-{dep}", timeout_s=300)
    return f"{base}/v1/api/pipelines/infer/bench-{dep}/bench"


def measure(base: str, token: str, url: str, args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    streamed: dict[str, list[float]] = {"none": [], "threshold": []}
    body = json.dumps([{"text": PROMPT}])
    chat = {"model": "", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    with httpx.Client(timeout=120) as http:
        def use(policies: list[dict]) -> None:
            http.post(f"{base}/v1/api/pipelines/set_guardrails", headers=headers, json={
                "pipeline_id": "bench", "guardrails": {"policies": policies} if policies else None}).raise_for_status()

        for _ in range(5):  # warm-up: connections, the sidekicks' first calls
            http.post(url, content=body, headers={**headers, "Content-Type": JSON}).raise_for_status()
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
            for name, policies in VARIANTS.items():
                use(policies)
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    http.post(url, content=body, headers={**headers, "Content-Type": JSON}).raise_for_status()
                    times[name].append(time.perf_counter() - t0)
            for name in streamed:
                use(VARIANTS[name])
                for _ in range(args.streamed):
                    t0 = time.perf_counter()
                    with http.stream("POST", f"{url}/openai/v1/chat/completions", headers=headers, json=chat) as answer:
                        answer.raise_for_status()
                        text = "".join(answer.iter_text())
                    streamed[name].append(time.perf_counter() - t0)
                    assert "content_filter" not in text, "a policy fired in the benchmark"
        use([])
    report("inference (JSON), sequential", times, args.calls * args.rounds)
    report("OpenAI chat, streamed, whole answer", streamed, args.streamed * args.rounds)
    in_process(500)


def in_process(calls: int) -> None:
    """Each variant's screening alone: the request row, then the answer row with its scores."""
    request = pa.table({"text": [PROMPT]})
    answer = pa.table({"generated_text": [f"echo: {PROMPT}"], "error": [""], "toxicity": [0.01]})
    print(f"\nscreening alone, in process: {calls} calls per variant")
    print(f"{'policy':<12} {'us/call':>8}")
    for name, policies in VARIANTS.items():
        guard = Guard(Guardrails.model_validate({"policies": policies}))
        t0 = time.perf_counter()
        for _ in range(calls):
            guard.table("response", answer, [])
            guard.table("request", request, [])
        print(f"{name:<12} {(time.perf_counter() - t0) / calls * 1e6:>8.0f}")


def report(title: str, times: dict[str, list[float]], n: int) -> None:
    base = percentile(times["none"], 50) * 1e3
    print(f"\n{title}: {n} calls per variant")
    print(f"{'policy':<12} {'p50 ms':>8} {'p99 ms':>8} {'added p50 ms':>13} {'ratio':>6}")
    for name, values in times.items():
        p50, p99 = percentile(values, 50) * 1e3, percentile(values, 99) * 1e3
        print(f"{name:<12} {p50:>8.2f} {p99:>8.2f} {p50 - base:>+13.2f} {p50 / base:>6.2f}")


if __name__ == "__main__":
    main()
