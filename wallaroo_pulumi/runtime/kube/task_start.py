"""The first thing a task pod runs (shipped in the run's Secret, so any image with Python and the
Wallaroo SDK runs it; it imports nothing of ours): unpack the orchestration, put the run's key where
the SDK's "orch" auth reads it, fetch the requirement folders the runtime installed at packaging (no
package index needed, D60; pip from the index only where the runtime has none for this Python), then
exec `python main.py`.

usage: python task_start.py RUN_DIR ENTRY  (RUN_DIR: the Secret's files, readable by this pod alone;
ENTRY: the folder in the zip holding main.py, '.' for its top)"""

import json
import os
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path


def fetch_requirements(home: Path, env: dict, token: str) -> list:
    """The runtime's installed requirement folders for this orchestration, unpacked; [] when it has
    none, None when they cannot serve here (another Python, an older runtime, no answer)."""
    orch = env.get("WALLAROO_ORCH_ID")
    if not orch:
        return None
    request = urllib.request.Request(f"{env['WALLAROO_URL']}/v1/api/orchestration/requirements",
                                     data=json.dumps({"id": orch}).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    archive = home / "requirements.tar.gz"
    try:
        with urllib.request.urlopen(request, timeout=600) as answer, open(archive, "wb") as out:
            if answer.status == 204:
                return []
            while chunk := answer.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        print(f"[runtime] the runtime did not give the installed requirements ({exc}); using the package index",
              flush=True)
        return None
    folder = home / "requirements"
    with tarfile.open(archive) as tar:
        tar.extractall(folder, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    archive.unlink()
    built = (folder / "python.txt").read_text().strip()
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if built != here:
        print(f"[runtime] the requirements were installed for Python {built}, this image has {here}; "
              "using the package index", flush=True)
        return None
    paths = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    print(f"[runtime] requirements: the {len(paths)} folder(s) installed at packaging", flush=True)
    return [str(p) for p in paths]


def install_from_index(home: Path, requirements: Path) -> list:
    deps = home / "deps"
    print(f"[runtime] installing {requirements.name}", flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--target", str(deps), "-r", str(requirements)], stdout=sys.stdout, stderr=sys.stderr)
    if done.returncode != 0:
        sys.exit(f"[runtime] pip could not install {requirements.name} (status {done.returncode}); see above")
    return [str(deps)]


def main(run_dir: Path, entry_in_zip: str) -> None:
    home = Path(os.environ.get("HOME", "/tmp"))
    folder = home / "orchestration"
    with zipfile.ZipFile(run_dir / "orchestration.zip") as zf:  # checked at upload: no path leaves the folder
        zf.extractall(folder)
    entry = folder / entry_in_zip
    env = dict(os.environ)
    token = json.loads((run_dir / "keycloak.json").read_text())
    auth = Path(env["XDG_CACHE_HOME"]) / "wallaroo_sdk" / "auth"
    auth.mkdir(parents=True, exist_ok=True)
    fd = os.open(auth / "keycloak.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(token, out)
    requirements = next(iter(folder.rglob("requirements.txt")), None)  # at most one: checked at upload
    if requirements is not None:
        paths = fetch_requirements(home, env, token["access_token"])
        if paths is None:
            paths = install_from_index(home, requirements)
        env["PYTHONPATH"] = os.pathsep.join(paths)
    os.chdir(entry)
    os.execve(sys.executable, [sys.executable, "-u", "main.py"], env)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
