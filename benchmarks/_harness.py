"""What every benchmark needs: a real runtime subprocess on loopback, ports, percentiles.

Kept apart from the benchmarks so each of them reads as what it measures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (values need not be sorted)."""
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 60, log: Path | None = None) -> None:
    """Until `url` answers below 500; fail early (with the log's tail) if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready\n{tail}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} was not ready at {url} after {timeout:.0f} s")


@dataclass
class Runtime:
    """A `wallaroo-pulumi runtime serve` subprocess and how to reach it."""

    proc: subprocess.Popen
    data_dir: Path
    url: str
    token: str
    pid: int


def start_runtime(data_dir: Path, log: Path | None = None, args: list[str] | None = None,
                  env: dict[str, str] | None = None, source: Path = REPO) -> Runtime:
    """Start the runtime on a free port with its own data dir (plus `args`, and `env` over ours);
    return once `/health` answers. `source`: the tree whose code runs (a `checkout` of a baseline)."""
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "serve", "--data-dir", str(data_dir),
         "--port", "0", "--log-level", "warning", *(args or [])],
        env={**os.environ, "PYTHONPATH": str(source), **(env or {})}, cwd=str(source), stdout=out,
        stderr=subprocess.STDOUT,
    )
    info = data_dir / "runtime.json"
    deadline = time.monotonic() + 60
    while not (info.exists() and (data_dir / "admin.token").exists()):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"the runtime did not start\n{tail}")
        time.sleep(0.05)
    details = json.loads(info.read_text())
    wait_http(details["url"] + "/health", proc, "the runtime", log=log)
    return Runtime(proc, data_dir, details["url"], (data_dir / "admin.token").read_text().strip(), details["pid"])


def stop(proc: subprocess.Popen) -> None:
    """Terminate a started process (its whole session when it leads one, as LiteLLM does)."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def checkout(ref: str, into: Path) -> Path:
    """The tree of git `ref` (e.g. a commit before a change) extracted under `into`, to run as a
    baseline beside this tree in the same benchmark run."""
    dest = into / f"baseline-{ref.replace('/', '_')}"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as fh:
        subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref], stdout=fh, check=True)
        fh.seek(0)
        with tarfile.open(fileobj=fh) as tar:
            tar.extractall(dest, filter="data")
    return dest


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (its sidekick workers, their sandbox launchers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
