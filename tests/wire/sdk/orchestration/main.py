"""An orchestration written against the real Wallaroo SDK, as a user writes one: inside its task,
read a pipeline's logs, compute each answer's length and write the lengths as the score
pipeline's inference logs (where listener scores go)."""

import pandas as pd
import wallaroo

wl = wallaroo.Client()  # in a task: WALLAROO_TASK_ID makes it use the task's own key
args = wl.task_args()
print("in_task", wl.in_task(), "args", sorted(args))
logs = wl.get_pipeline(args["pipeline"]).logs(limit=1000)
lengths = [float(len(text)) for text in logs["out.generated_text"]]
scores = wl.get_pipeline(args["scores"])
scores.infer(pd.DataFrame({"text_length": lengths}))
print(f"scored {len(lengths)} answers, mean length {sum(lengths) / max(len(lengths), 1):.1f}")
