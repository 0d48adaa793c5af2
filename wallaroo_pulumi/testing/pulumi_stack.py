"""Drive the real Pulumi CLI on a throwaway project: for our tests, benchmarks and users' CI (D18)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class PulumiCommandError(RuntimeError):
    """A pulumi command exited non-zero; carries its full output for the test report."""

    def __init__(self, args: list[str], code: int, stdout: str, stderr: str) -> None:
        self.args_ = args
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"`pulumi {' '.join(args)}` exited {code}\n--- stdout ---\n{stdout[-6000:]}\n--- stderr ---\n{stderr[-4000:]}")


@dataclass
class Result:
    """One engine operation: its steps, change counts, diagnostics and the raw output."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    change_summary: dict[str, int] = field(default_factory=dict)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""

    def ops(self, type_filter: str | None = None) -> dict[str, str]:
        """`{resource name: op}` for steps, optionally only those whose type contains `type_filter`."""
        out = {}
        for step in self.steps:
            urn = step["urn"]
            if type_filter and type_filter not in urn.split("::")[-2]:
                continue
            out[urn.rsplit("::", 1)[-1]] = step["op"]
        return out

    @property
    def changed(self) -> bool:
        return any(op != "same" for op in self.change_summary)

    def step(self, name: str) -> dict[str, Any]:
        return next(s for s in self.steps if s["urn"].endswith("::" + name))


def _json_documents(text: str) -> list[Any]:
    """`pulumi up --json` prints one JSON document per phase: decode them all."""
    decoder = json.JSONDecoder()
    docs, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return docs
        try:
            doc, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            nl = text.find("\n", i)
            if nl < 0:
                return docs
            i = nl + 1
            continue
        docs.append(doc)


def pulumi_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `scripts/env.sh` sets up, for running pulumi from Python."""
    out = subprocess.run(
        ["bash", "-c", f". '{REPO}/scripts/env.sh' && env -0"],
        capture_output=True, check=True, env=os.environ.copy(),
    ).stdout.decode()
    env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    env.update(extra or {})
    return env


class PulumiStack:
    """A Pulumi project + stack in `workdir`, on its own file backend."""

    def __init__(self, workdir: Path, project: str = "wptest", stack: str = "test",
                 env: dict[str, str] | None = None, timeout_s: float = 300) -> None:
        self.workdir = Path(workdir)
        self.project = project
        self.stack = stack
        self.timeout_s = timeout_s
        self.workdir.mkdir(parents=True, exist_ok=True)
        backend = self.workdir / ".backend"
        backend.mkdir(exist_ok=True)
        self.env = pulumi_env({"PULUMI_BACKEND_URL": f"file://{backend}", **(env or {})})
        (self.workdir / "Pulumi.yaml").write_text(f"name: {project}\nruntime: python\n")
        self._initialised = False

    # -- program -----------------------------------------------------------
    def write_program(self, source: str) -> None:
        """Set the program (`__main__.py`) the next operation runs."""
        (self.workdir / "__main__.py").write_text(textwrap.dedent(source))

    # -- commands ------------------------------------------------------------
    def run(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        if not self._initialised and args[:2] != ("stack", "init"):
            self._initialised = True
            self.run("stack", "init", self.stack, "--non-interactive")
        args_ = list(args)
        if args[:2] != ("stack", "init") and args[0] != "version":
            # before any `--`, after which flags would be read as values
            cut = args_.index("--") if "--" in args_ else len(args_)
            args_[cut:cut] = ["--stack", self.stack]
        cmd = [shutil.which("pulumi", path=self.env["PATH"]) or "pulumi", *args_]
        proc = subprocess.run(cmd, cwd=self.workdir, env=self.env, capture_output=True, text=True,
                              timeout=self.timeout_s, input=stdin)
        if check and proc.returncode != 0:
            raise PulumiCommandError(list(args), proc.returncode, proc.stdout, proc.stderr)
        return proc

    def _op(self, *args: str, check: bool = True) -> Result:
        proc = self.run(*args, "--json", "--non-interactive", check=check)
        docs = [d for d in _json_documents(proc.stdout) if isinstance(d, dict)]
        result = Result(stdout=proc.stdout, stderr=proc.stderr)
        for doc in docs:
            if "steps" in doc:  # a preview's plan document
                result.steps = doc["steps"]
                result.change_summary = doc.get("changeSummary", {})
                result.diagnostics += doc.get("diagnostics", [])
            elif "resourcePreEvent" in doc:  # an update's event stream
                result.steps.append(doc["resourcePreEvent"]["metadata"])
            elif "summaryEvent" in doc:
                result.change_summary = doc["summaryEvent"].get("resourceChanges") or {}
            elif "diagnosticEvent" in doc and doc["diagnosticEvent"].get("severity") != "debug":
                result.diagnostics.append(doc["diagnosticEvent"])
        return result

    def up(self, *extra: str, check: bool = True) -> Result:
        return self._op("up", "--yes", "--skip-preview", *extra, check=check)

    def preview(self, *extra: str, check: bool = True) -> Result:
        return self._op("preview", "--diff", *extra, check=check)

    def refresh(self, *extra: str, check: bool = True) -> Result:
        return self._op("refresh", "--yes", "--skip-preview", *extra, check=check)

    def destroy(self, *extra: str, check: bool = True) -> Result:
        return self._op("destroy", "--yes", "--skip-preview", *extra, check=check)

    def import_(self, type_token: str, name: str, resource_id: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`pulumi import` (no generated code: the program is the source of truth)."""
        return self.run("import", type_token, name, resource_id, "--yes", "--non-interactive",
                        "--skip-preview", "--protect=false", "--generate-code=false", check=check)

    def config_set(self, key: str, value: str, secret: bool = False) -> None:
        self.run("config", "set", key, *(["--secret"] if secret else []), "--", value)

    def outputs(self, show_secrets: bool = False) -> dict[str, Any]:
        args = ["stack", "output", "--json", *(["--show-secrets"] if show_secrets else [])]
        return json.loads(self.run(*args).stdout or "{}")

    def export(self) -> dict[str, Any]:
        """The stack's state as `pulumi stack export` writes it (secrets stay encrypted)."""
        return json.loads(self.run("stack", "export").stdout)

    def resources(self, type_filter: str = "") -> list[dict[str, Any]]:
        state = self.export().get("deployment", {}).get("resources") or []
        return [r for r in state if type_filter in r["type"]]
