"""The quickstart, as `make quickstart` runs it: the example's program through the real
engine against a local OpenAI-compatible stand-in, then `try_it.py` (one real inference,
one listener run and its scores), read from the stack's outputs as a user's shell would."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from wallaroo_pulumi.standins import OpenAIStandin
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
KEY = "sk-quickstart-test-key"


def try_it(stack: PulumiStack) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(QUICKSTART / "try_it.py"), "--stack", stack.stack],
                          cwd=stack.workdir, env=stack.env, capture_output=True, text=True, timeout=300)


def test_quickstart_answers_validates_and_scores(pulumi_stack: PulumiStack, tmp_path: Path) -> None:
    with OpenAIStandin(api_keys=[KEY], models=["gpt-4o-mini"]) as upstream:
        pulumi_stack.write_program((QUICKSTART / "__main__.py").read_text())
        pulumi_stack.config_set("data_dir", str(tmp_path / "runtime"))
        pulumi_stack.config_set("openai_base_url", upstream.openai_base_url)
        pulumi_stack.config_set("openai_api_key", KEY, secret=True)
        up = pulumi_stack.up()
        assert up.change_summary == {"create": 8}, up.change_summary  # as README shows: "+ 8 created"
        assert pulumi_stack.preview().change_summary == {"same": 8}  # running it again changes nothing

        first = try_it(pulumi_stack)
        assert first.returncode == 0, first.stderr
        # the documented curl and try_it infer with the pipeline's inference-only key, which can do nothing else
        outs = pulumi_stack.outputs(show_secrets=True)
        assert "stack output inference_key --show-secrets" in outs["curl"]
        denied = httpx.post(f"{outs['runtime_url']}/v1/api/keys/list", json={},
                            headers={"Authorization": f"Bearer {outs['inference_key']}"})
        assert denied.status_code == 403, denied.text
        assert "answer : echo: Summarise in one sentence why the sky is blue." in first.stdout, first.stdout
        assert re.search(r"in-line validation: .*toxicity=0\.\d{3}", first.stdout), first.stdout
        assert re.search(r"listener run \S+: success, 1 rows scored", first.stdout), first.stdout
        assert "out.toxicity" in first.stdout and "out.sentiment_compound" in first.stdout

        # a second try scores only the new inference, and shows only its own run's row
        second = try_it(pulumi_stack)
        assert re.search(r"listener run \S+: success, 1 rows scored", second.stdout), second.stdout
        table = second.stdout.split("rows scored", 1)[1].split("curl:", 1)[0]
        assert len([line for line in table.strip().splitlines() if line.strip()]) == 2, table  # header + 1 row

        assert upstream.stats.snapshot()["by_status"] == {"200": 2}
        exported = pulumi_stack.run("stack", "export").stdout
        for text in (exported, up.stdout, up.stderr, first.stdout, first.stderr):
            assert KEY not in text
        pulumi_stack.destroy()
