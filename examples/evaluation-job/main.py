"""An evaluation job (a Wallaroo orchestration): read the answers a pipeline logged, score them
against references and write the scores as the inference logs of a score pipeline, where
listener scores and assays are read. Run it with WallarooTask (README, "Your own orchestrations")."""

import pandas as pd
import wallaroo

wl = wallaroo.Client()                 # inside a task: the task's own key, found by the SDK
if not wl.in_task():
    raise SystemExit("run me as a task (WallarooTask, or an orchestration's run_once): my arguments come from it")
args = wl.task_args()                  # the task's args and secret_args
answers = wl.get_pipeline(args["pipeline"]).logs(limit=10_000)
references = pd.read_csv("references.csv")          # shipped in the folder beside main.py
joined = answers.merge(references, left_on="in.text", right_on="prompt")
exact = (joined["out.generated_text"].str.strip() == joined["reference"].str.strip()).astype(float)
wl.get_pipeline(args["scores"]).infer(pd.DataFrame({"exact_match": exact.tolist()}))
print(f"evaluated {len(joined)} answers: exact match {exact.mean():.1%}")   # the run's log
