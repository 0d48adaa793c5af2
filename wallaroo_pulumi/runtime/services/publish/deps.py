"""A publish's requirements, installed into its image: every requirement line of each step
pip-installed at the centre (`--target`, confined as at a deploy: a setup.py is the model's code),
so an edge, which may have no network, installs nothing (D56)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from wallaroo_pulumi.runtime.core.errors import WallarooError
from wallaroo_pulumi.runtime.engine.model_files import ModelFiles
from wallaroo_pulumi.runtime.sandbox.sandbox import SandboxRefused
from wallaroo_pulumi.runtime.sidekick.requirements import ensure_requirements, read_requirements


def bake_requirements(model_files: ModelFiles, steps: list[dict[str, Any]], work: Path,
                      progress: Callable[[str], None]) -> dict[str, Path]:
    """{artifact sha: the folder its requirements were installed into}, for the steps that have any.
    `work` keeps the installs, so publishing the same model again installs nothing."""
    baked: dict[str, Path] = {}
    for step in steps:
        if step["sha"] in baked:
            continue
        model_dir = model_files.unpack(step["sha"])
        lines = read_requirements(model_dir, step.get("requirements") or [])
        if not [line for line in lines if not line.startswith("-")]:
            continue
        progress(f"installing the requirements of model {step['name']!r} into the image: {lines}")
        # pip's scratch beside the installs, on the data volume: a runtime pod's /tmp is small (1Gi)
        try:
            [folder] = ensure_requirements(lines, work, sandbox=model_files.sandbox, cwd=model_dir, every=True,
                                           what=f"model {step['name']!r}", scratch_under=work.parent / "scratch")
        except SandboxRefused as exc:  # e.g. a non-root pod on a kernel without Landlock (D31, D49)
            raise WallarooError(
                f"model {step['name']!r}: its requirements {lines} are installed at publish inside this runtime's "
                f"sandbox (a setup.py is the model's code), and this runtime cannot sandbox: {exc}. Publish from a "
                "runtime on a kernel with Landlock (Linux 5.13+, 'landlock' in its LSM list), or from one started with "
                "--insecure-sidekicks") from None
        baked[step["sha"]] = folder
    return baked
