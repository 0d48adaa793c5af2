"""The first thing a task pod runs (shipped in the run's Secret, so any image with Python and the
Wallaroo SDK runs it; it imports nothing of ours): unpack the orchestration, install its
requirements, put the run's key where the SDK's "orch" auth reads it, then exec `python main.py`.

usage: python task_start.py RUN_DIR ENTRY  (RUN_DIR: the Secret's files, readable by this pod alone;
ENTRY: the folder in the zip holding main.py, '.' for its top)"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path


def main(run_dir: Path, entry_in_zip: str) -> None:
    home = Path(os.environ.get("HOME", "/tmp"))
    folder = home / "orchestration"
    with zipfile.ZipFile(run_dir / "orchestration.zip") as zf:  # checked at upload: no path leaves the folder
        zf.extractall(folder)
    entry = folder / entry_in_zip
    env = dict(os.environ)
    requirements = next(iter(folder.rglob("requirements.txt")), None)  # at most one: checked at upload
    if requirements is not None:
        deps = home / "deps"
        print(f"[runtime] installing {requirements.name}", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "--target", str(deps), "-r", str(requirements)], stdout=sys.stdout, stderr=sys.stderr)
        if done.returncode != 0:
            sys.exit(f"[runtime] pip could not install {requirements.name} (status {done.returncode}); see above")
        env["PYTHONPATH"] = str(deps)
    auth = Path(env["XDG_CACHE_HOME"]) / "wallaroo_sdk" / "auth"
    auth.mkdir(parents=True, exist_ok=True)
    token = auth / "keycloak.json"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(json.loads((run_dir / "keycloak.json").read_text()), out)
    os.chdir(entry)
    os.execve(sys.executable, [sys.executable, "-u", "main.py"], env)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
