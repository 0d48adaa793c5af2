"""`pulumi preview` time with nothing to change: 50 models + 25 pipelines vs an empty stack.

What a platform team pays on every CI plan of a large stack. Both stacks run on the real
engine against one real runtime on loopback, side by side in one run; the large one is
brought up first (models uploaded, pipelines created undeployed: preview never calls the
runtime, so deploying 50 sidekicks would only slow the setup), then each stack is
previewed `--repeat` times, alternating. A 1-model stack separates our fixed cost (the
provider plugin and its imports) from the cost of each further resource.

Run: .venv/bin/python benchmarks/bench_preview.py [--models 50] [--pipelines 25] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._harness import start_runtime, stop  # noqa: E402
from wallaroo_pulumi.testing.byop import byop_source  # noqa: E402
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack  # noqa: E402

LARGE = """
import pulumi, pyarrow as pa
from wallaroo_pulumi import WallarooModel, WallarooPipeline

cfg = pulumi.Config()
root, n_models, n_pipelines = cfg.require("models_dir"), cfg.require_int("models"), cfg.require_int("pipelines")
schema = dict(input_schema=pa.schema([("x", pa.float64())]), output_schema=pa.schema([("y", pa.float64())]))
models = [WallarooModel(f"m{i}", path=f"{root}/m{i}", **schema) for i in range(n_models)]
per = max(1, n_models // n_pipelines)
for p in range(n_pipelines):
    steps = models[p * per:(p + 1) * per] or models[:1]
    WallarooPipeline(f"p{p}", steps=steps, deploy=False,
                     deployment={"cpus": 1, "memory": "512Mi",
                                 "sidekicks": {m: {"cpus": 0.5, "env": {"API_KEY": cfg.require_secret("key")}}
                                               for m in steps}})
"""

EMPTY = "import pulumi\n"


def timed_preview(stack: PulumiStack) -> float:
    t0 = time.perf_counter()
    result = stack.preview()
    elapsed = time.perf_counter() - t0
    if result.changed:
        raise SystemExit(f"expected no changes, got {result.change_summary}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--pipelines", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-preview-") as tmp:
        root = Path(tmp)
        runtime = start_runtime(root / "runtime")
        url, token = runtime.url, runtime.token
        try:
            stacks = {}
            for name, program in (("empty", EMPTY), ("small", LARGE), ("large", LARGE)):
                stack = PulumiStack(root / name, project=f"bench{name}", timeout_s=1800)
                stack.write_program(program)
                stack.config_set("wallaroo:url", url)
                stack.config_set("wallaroo:token", token, secret=True)
                stacks[name] = stack
            for i in range(args.models):
                (root / "models" / f"m{i}").mkdir(parents=True)
                (root / "models" / f"m{i}" / "model.py").write_text(byop_source(f'return {{"y": input_data["x"] * {i}}}'))
            for name, models, pipelines in (("small", 1, 1), ("large", args.models, args.pipelines)):
                stack = stacks[name]
                stack.config_set("models_dir", str(root / "models"))
                stack.config_set("models", str(models))
                stack.config_set("pipelines", str(pipelines))
                stack.config_set("key", "sk-bench-not-a-real-key", secret=True)
                print(f"setting up {name}: {models} models, {pipelines} pipelines ...", flush=True)
                t0 = time.perf_counter()
                stack.up()
                print(f"  pulumi up (create all): {time.perf_counter() - t0:.1f} s", flush=True)
            stacks["empty"].up()

            times: dict[str, list[float]] = {name: [] for name in stacks}
            for _ in range(args.repeat):
                for name in stacks:
                    times[name].append(timed_preview(stacks[name]))
            for stack in stacks.values():
                stack.destroy()
        finally:
            stop(runtime.proc)

    median = {name: statistics.median(t) for name, t in times.items()}
    labels = {"empty": "empty", "small": "1 model + 1 pipeline",
              "large": f"{args.models} models + {args.pipelines} pipelines"}
    print(f"\npulumi preview, nothing changed (median of {args.repeat}, same machine, same run)")
    print(f"{'stack':<34}{'median s':>10}{'min s':>10}{'vs empty':>10}")
    for name, label in labels.items():
        print(f"{label:<34}{median[name]:>10.2f}{min(times[name]):>10.2f}{median[name] / median['empty']:>10.2f}")
    extra = args.models + args.pipelines - 2
    print(f"fixed cost of our provider (small - empty): {median['small'] - median['empty']:.2f} s; "
          f"each further resource (large - small): {(median['large'] - median['small']) / extra * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
