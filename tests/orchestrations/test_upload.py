"""Upload, check, package and list orchestrations against the real runtime: a zip without
main.py, with two requirements.txt or an escaping entry is refused naming `file`; requirements
are installed once (pip, confined) into a folder cached by their hash; a missing package ends in
status error naming the requirement and pip's reason."""

from __future__ import annotations

import httpx
import pytest

from tests.orchestrations.conftest import tiny_wheel, upload, zip_of
from tests.runtime.conftest import Server
from wallaroo_pulumi.client import WallarooClient
from wallaroo_pulumi.client.errors import WallarooError
from wallaroo_pulumi.orchestration import ORCHESTRATION_ID


def _raw_upload(srv: Server, content: bytes, metadata: str = '{"workspace_id": 1, "name": "bad"}') -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/api/orchestration/upload", headers=srv.headers, timeout=30,
                      files={"file": ("o.zip", content, "application/octet-stream"),
                             "metadata": (None, metadata, "application/json")})


@pytest.mark.parametrize(("files", "expected"), [
    ({"task.py": "print(1)"}, "file: no main.py in the zip (it holds task.py)"),
    ({"main.py": "", "requirements.txt": "", "sub/requirements.txt": ""},
     "file: the zip holds 2 requirements.txt files (requirements.txt, sub/requirements.txt); at most one is allowed"),
    ({"main.py": "", "../evil.py": ""}, "file: entry '../evil.py' would land outside the orchestration's folder"),
    ({"main.py": "", "/etc/evil": ""}, "file: entry '/etc/evil' would land outside the orchestration's folder"),
])
def test_a_zip_that_is_no_orchestration_is_refused_naming_the_file(orch_server: Server, files: dict,
                                                                     expected: str) -> None:
    answer = _raw_upload(orch_server, zip_of(files))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith(expected) or expected in answer.json()["error"]


def test_not_a_zip_and_bad_metadata_are_refused(orch_server: Server) -> None:
    answer = _raw_upload(orch_server, b"not a zip at all")
    assert answer.status_code == 400 and answer.json()["error"].startswith("file: expected a zip archive holding main.py")
    answer = _raw_upload(orch_server, zip_of({"main.py": ""}), '{"workspace_id": "one"}')
    assert answer.status_code == 400 and answer.json()["error"].startswith("metadata.workspace_id: expected")


def test_main_py_in_a_folder_is_the_entry_and_the_upload_is_listed(orch_client: WallarooClient) -> None:
    orch = upload(orch_client, {"job/main.py": "print('in a folder')", "job/data.txt": "x"}, "in-folder")
    assert (orch.status, orch.file_name, len(orch.sha)) == ("ready", "in-folder.zip", 64)
    listed = orch_client.list_orchestrations()
    assert listed[0].id == ORCHESTRATION_ID and listed[0].name == "llm-listener" and listed[0].status == "ready"
    assert orch.id in [o.id for o in listed]
    task = orch_client.create_task("folder-run", {}, orch_id=orch.id)
    run = orch_client.wait_for_run(task.id, timeout_s=60)
    assert run.status == "success", orch_client.task_run_logs(run.id)
    assert any(line.endswith("stdout F in a folder") for line in orch_client.task_run_logs(run.id))


def test_requirements_are_installed_once_and_the_task_imports_them(orch_client: WallarooClient,
                                                                   orch_server: Server) -> None:
    wheel_name, wheel = tiny_wheel(value="from the wheel")
    files = zip_of({"main.py": "import tinydep\nprint('tinydep says', tinydep.VALUE)\n",
                    "requirements.txt": "--no-index\n--find-links wheels\ntinydep==1.0\n", f"wheels/{wheel_name}": wheel})
    first = upload(orch_client, files, "with-deps")
    deps = [p for p in (orch_server.data_dir / "deps").iterdir() if not p.name.startswith(".")]
    assert len(deps) == 1 and (deps[0] / "tinydep" / "__init__.py").exists()
    installed = (deps[0] / ".complete").stat().st_mtime_ns
    second = upload(orch_client, files, "with-deps-again")  # same content: the same environment, no pip
    assert second.sha == first.sha and second.id != first.id
    assert [p for p in (orch_server.data_dir / "deps").iterdir() if not p.name.startswith(".")] == deps
    assert (deps[0] / ".complete").stat().st_mtime_ns == installed  # not installed again
    run = orch_client.wait_for_run(orch_client.create_task("deps-run", {}, orch_id=second.id).id, timeout_s=60)
    assert run.status == "success" and "stdout F tinydep says from the wheel" in " ".join(
        orch_client.task_run_logs(run.id))


def test_a_missing_package_ends_in_error_naming_it_and_pips_reason(orch_client: WallarooClient) -> None:
    orch = upload(orch_client, {"main.py": "", "requirements.txt": "--no-index\nno-such-package-xyz==1.2\n"},
                  "missing-dep", wait=False)
    with pytest.raises(WallarooError) as failed:
        orch_client.wait_for_orchestration(orch.id, timeout_s=120)
    got = orch_client.get_orchestration(orch.id)
    assert got.status == "error"
    assert "no-such-package-xyz==1.2" in got.error
    assert "Could not find a version that satisfies the requirement no-such-package-xyz==1.2" in got.error
    assert got.error in str(failed.value)
    with pytest.raises(WallarooError) as refused:  # a task of it is refused, saying why
        orch_client.create_task("never", {}, orch_id=orch.id)
    assert refused.value.status_code == 409 and "is error" in refused.value.message
    assert "no-such-package-xyz" in refused.value.message


def test_deleting_an_upload_removes_its_zip_and_files_once_no_upload_holds_them(orch_client: WallarooClient,
                                                                                orch_server: Server) -> None:
    content = zip_of({"main.py": "import time\ntime.sleep(600)\n"})
    first, second = upload(orch_client, content, "twin-a"), upload(orch_client, content, "twin-b")
    unpacked = orch_server.data_dir / "orchestrations" / first.sha
    assert unpacked.is_dir()
    task = orch_client.create_task("holds-it", {}, orch_id=first.id, continuous=True)
    with pytest.raises(WallarooError) as refused:
        orch_client.delete_orchestration(first.id)
    assert refused.value.status_code == 409 and task.id in refused.value.message
    orch_client.kill_task(task.id)
    assert orch_client.delete_orchestration(first.id) == 0  # twin-b holds the same zip
    assert unpacked.is_dir()
    assert orch_client.delete_orchestration(second.id) == second.file_size
    assert not unpacked.exists()
    with pytest.raises(WallarooError) as gone:
        orch_client.get_orchestration(first.id)
    assert gone.value.status_code == 404
