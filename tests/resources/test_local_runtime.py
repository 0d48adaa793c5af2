"""LocalRuntime through the real engine: started by `up`, started again after it died,
stopped by `destroy`; its token stays secret."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from wallaroo_pulumi.testing.pulumi_stack import PulumiStack

from .conftest import changed, plaintext_in_state

PROGRAM = """
import pulumi
from wallaroo_pulumi.components.local_runtime import LocalRuntime

runtime = LocalRuntime("rt", data_dir=pulumi.Config().require("data_dir"))
pulumi.export("url", runtime.url)
pulumi.export("token", runtime.token)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_local_runtime_lifecycle(pulumi_stack: PulumiStack, tmp_path: Path) -> None:
    data_dir = tmp_path / "runtime"
    pulumi_stack.write_program(PROGRAM)
    pulumi_stack.config_set("data_dir", str(data_dir))
    pulumi_stack.up()
    out = pulumi_stack.outputs(show_secrets=True)
    assert healthy(out["url"])
    assert out["token"] == (data_dir / "admin.token").read_text().strip()
    assert plaintext_in_state(pulumi_stack, out["token"]) == []
    assert pulumi_stack.preview().change_summary == {"same": 3}

    # it died: the plan says so and `up` starts it again on the same URL, same data
    pid = int((data_dir / "runtime.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert changed(pulumi_stack.preview()) == {"rt-process": "update"}
    pulumi_stack.up()
    assert healthy(out["url"])
    new_pid = int((data_dir / "runtime.pid").read_text())
    assert new_pid != pid and pulumi_stack.outputs(show_secrets=True)["token"] == out["token"]

    pulumi_stack.destroy()
    deadline = time.monotonic() + 15
    while alive(new_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(new_pid) and not healthy(out["url"])
    assert (data_dir / "admin.token").exists()  # data is kept unless keep_data=False
