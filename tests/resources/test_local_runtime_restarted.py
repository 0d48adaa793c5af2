"""LocalRuntime finds its runtime by what it serves (its data dir and URL), not by the pid in the
stack's state: a runtime restarted by hand on the same data dir and port is the stack's runtime
(no change planned) and `destroy` stops it; a runtime of another data dir is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.runtime.conftest import server_env
from wallaroo_pulumi.testing.pulumi_stack import PulumiStack
from wallaroo_pulumi.testing.waiting import wait_until

from .test_local_runtime import PROGRAM, alive, healthy


def serve_by_hand(cwd: Path, data_dir: str, port: int, log: Path) -> subprocess.Popen:
    """`wallaroo-pulumi runtime serve` as a user types it: from a shell, no process group of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "serve", "--data-dir", data_dir,
         "--port", str(port)],
        cwd=cwd, env=server_env(), stdout=open(log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_destroy_stops_a_runtime_restarted_by_hand(pulumi_stack: PulumiStack, tmp_path: Path) -> None:
    data_dir = tmp_path / "runtime"
    pulumi_stack.write_program(PROGRAM)
    pulumi_stack.config_set("data_dir", str(data_dir))
    pulumi_stack.up()
    url = pulumi_stack.outputs()["url"]
    port = int(url.rsplit(":", 1)[1])
    first = int((data_dir / "runtime.pid").read_text())
    assert healthy(url)

    # restarted by hand: same data dir (given relative to where it is typed), same port
    os.kill(first, signal.SIGTERM)
    wait_until(lambda: not alive(first) and not healthy(url), 30, "the first runtime to stop")
    by_hand = serve_by_hand(tmp_path, "runtime", port, tmp_path / "by-hand.log")
    other = serve_by_hand(tmp_path, "other-data", 0, tmp_path / "other.log")  # not the stack's
    try:
        wait_until(lambda: healthy(url), 30, "the runtime started by hand",
                   detail=(tmp_path / "by-hand.log").read_text)
        wait_until(lambda: (tmp_path / "other-data" / "runtime.json").exists(), 30, "the other runtime's runtime.json")
        # it serves the stack's data dir at the stack's URL: the stack's runtime, nothing to change
        assert pulumi_stack.preview().change_summary == {"same": 3}

        pulumi_stack.destroy()
        by_hand.wait(timeout=20)  # stopped (the pid in the state was the first runtime's)
        assert not healthy(url)
        assert other.poll() is None  # another data dir's runtime is not the stack's
    finally:
        for proc in (by_hand, other):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)
