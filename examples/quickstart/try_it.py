"""Try the quickstart stack: one inference through its endpoint, then one listener run.

    python examples/quickstart/try_it.py [--stack quickstart] [--prompt "..."]

Reads the stack's outputs (`pulumi stack output`), so it works on whatever the stack
points at: the local stand-in or the real OpenAI API.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import httpx
import pandas as pd

from wallaroo_pulumi import WallarooClient


def stack_outputs(stack: str) -> dict[str, object]:
    out = subprocess.run(["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="quickstart")
    parser.add_argument("--prompt", default="Summarise in one sentence why the sky is blue.")
    args = parser.parse_args()
    outputs = stack_outputs(args.stack)
    token = str(outputs["token"])

    # The documented curl call, made with httpx with the pipeline's inference-only key: pandas-records JSON in and out.
    response = httpx.post(str(outputs["inference_url"]), json=[{"text": args.prompt}], timeout=120,
                          headers={"Authorization": f"Bearer {outputs['inference_key']}",
                                   "Content-Type": "application/json; format=pandas-records"})
    if response.status_code != 200:
        print(f"inference failed ({response.status_code}): {response.text}", file=sys.stderr)
        return 1
    row = response.json()[0]
    print(f"\nprompt : {args.prompt}\nanswer : {row['out'].get('generated_text')}")
    scores = {k: v for k, v in row["out"].items() if k != "generated_text"}
    print("in-line validation: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in sorted(scores.items())))

    # One run of the listener now (the schedule runs it every 10 minutes): a management call, with the admin token.
    with WallarooClient(str(outputs["runtime_url"]), token) as api:
        scheduled = api.get_task(str(outputs["listener_task_id"]))
        task = api.create_task(f"{scheduled.name}-now", scheduled.json_args, timeout_s=300)
        run = api.wait_for_run(task.id, timeout_s=300)
        print(f"\nlistener run {run.id}: {run.status}, {run.rows_scored} rows scored"
              + (f" ({run.error})" if run.error else ""))
        if run.status != "success":
            return 1
        # this run's rows, newest first (earlier runs' stay stored too, from before the stack was re-created)
        scores = api.listener_results(str(scheduled.monitored_pipeline),
                                      listener=str((scheduled.listener_model or {}).get("name")),
                                      run_id=run.id, limit=5)
        columns = [c for c in scores.columns if c.startswith("out.")]
        with pd.option_context("display.width", 160, "display.max_columns", 12):
            print(scores[columns].to_string(index=False) if columns else "(no rows scored by this run)")
    print(f"\ncurl: {outputs['curl']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
