"""Start servers for listener tests: the REAL runtime (our CLI) or, where the runtime can't run
yet, a bare server with only the listener router (listener_server.py). Both on loopback, as
subprocesses that tests may `kill -9`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from wallaroo_pulumi.testing.processes import launch, log_tail, stop_process, wait_ready

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@dataclass
class Proc:
    kind: str  # "runtime" | "bare"
    data: Path
    proc: subprocess.Popen | None = None
    url: str = ""
    token: str = ""
    log_path: Path = field(default=Path("/dev/null"))

    def start(self, timeout: float = 60) -> Proc:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.log_path = self.data.parent / f"{self.data.name}-{self.kind}.log"
        if self.kind == "runtime":
            info = self.data / "runtime.json"
            cmd = [sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "serve", "--data-dir", str(self.data),
                   "--host", "127.0.0.1", "--port", "0"]
        else:
            self.data.mkdir(parents=True, exist_ok=True)
            info = self.data / "listener_server.json"
            cmd = [sys.executable, str(HERE / "listener_server.py"), str(self.data)]
        self.proc = launch(cmd, log_path=self.log_path, env=env, cwd=str(REPO), info=info)
        self.url = wait_ready(self.proc, info, self._answers, timeout=timeout, what=f"{self.kind} server",
                              log_path=self.log_path)
        return self

    def _answers(self, url: str) -> bool:
        self.url = url
        if self.kind == "runtime":
            self.token = (self.data / "admin.token").read_text().strip()
        return self.post_raw("/v1/api/task/list", {}).status_code == 200

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def post_raw(self, path: str, body: dict, timeout: float = 60) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=self.headers, timeout=timeout)

    def post(self, path: str, body: dict, timeout: float = 60):
        r = self.post_raw(path, body, timeout)
        assert r.is_success, f"{path}: {r.status_code} {r.text}"
        return r.json()

    def log_tail(self, n: int = 4000) -> str:
        return log_tail(self.log_path, n)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc, grace_s=30)

    def wait_runs(self, task_id: str, n: int = 1, timeout: float = 120) -> list[dict]:
        deadline = time.monotonic() + timeout
        runs: list[dict] = []
        while time.monotonic() < deadline:
            runs = self.post("/v1/api/task/list_task_runs", {"task_id": task_id})
            if len(runs) >= n and all(r["status"] != "running" for r in runs):
                return runs
            time.sleep(0.1)
        raise AssertionError(f"runs did not finish: {runs}\n{self.log_tail()}")
