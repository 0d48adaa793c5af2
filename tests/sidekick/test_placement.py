"""`LocalPlacement` alone (no processes): CPU and GPU round-robin per placement, the autoscale
bounds of GPU steps, and the command and environment a worker is launched with."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from wallaroo_pulumi.runtime.sidekick import LocalPlacement, SidekickSpec, placement
from wallaroo_pulumi.runtime.sidekick.autoscale import ScalePolicy
from wallaroo_pulumi.runtime.sidekick.placement import Reservation


def spec(tmp_path: Path, **kwargs: object) -> SidekickSpec:
    return SidekickSpec(step_name="s", model_version="v1", model_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def reserve(where: LocalPlacement, step: SidekickSpec) -> Reservation:
    return asyncio.run(where.reserve(step))


def test_cpus_go_round_robin_per_placement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "available_cpus", lambda: [0, 1, 2, 3])
    local = LocalPlacement()
    assert [reserve(local, spec(tmp_path, cpus=1)).cpu_ids for _ in range(5)] == [(0,), (1,), (2,), (3,), (0,)]
    assert reserve(local, spec(tmp_path, cpus=1.5)).cpu_ids == (1, 2)  # ceil(cpus) cores
    assert reserve(local, spec(tmp_path, cpus=2)).cpu_ids == (0, 3)  # wraps around, sorted
    assert reserve(local, spec(tmp_path, cpus=0.25)).cpu_ids == (1,)
    assert reserve(local, spec(tmp_path, cpus=40)).cpu_ids == (0, 1, 2, 3)  # never more than there are
    assert reserve(LocalPlacement(), spec(tmp_path)).cpu_ids == (0,)  # a placement has cursors of its own


def test_gpus_go_round_robin_over_the_visible_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    local = LocalPlacement()
    assert [reserve(local, spec(tmp_path, gpus=1)).gpu_ids for _ in range(4)] == [("4",), ("5",), ("6",), ("4",)]
    assert reserve(local, spec(tmp_path, gpus=2)).gpu_ids == ("5", "6")
    assert reserve(local, spec(tmp_path, gpus=2, gpu_ids=[3, 1])).gpu_ids == ("3", "1")  # the caller's, as given
    assert reserve(local, spec(tmp_path, gpus=1)).gpu_ids == ("4",)  # which moved no cursor
    assert reserve(local, spec(tmp_path)).gpu_ids == ()
    with pytest.raises(placement.InsufficientGPUs, match=r"0/1 nodes are available: 1 Insufficient nvidia.com/gpu"):
        reserve(local, spec(tmp_path, gpus=4))  # more than visible: refused, never a device that is not there
    fallback = LocalPlacement(allow_gpu_fallback=True)
    assert reserve(fallback, spec(tmp_path, gpus=4)).gpu_ids == ("4", "5", "6")  # the ones there are, CPU for the rest
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(placement.InsufficientGPUs, match=r"asks for 1 GPU\(s\) and this machine has 0 visible"):
        reserve(local, spec(tmp_path, gpus=1))
    assert reserve(fallback, spec(tmp_path, gpus=1)).gpu_ids == ()  # CPU only


def test_a_gpu_step_grows_only_onto_gpus_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second copy of a model on a GPU that holds one would run it out of memory."""
    bounds = ScalePolicy(minimum=1, maximum=4)
    local = LocalPlacement()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert local.fit(spec(tmp_path, gpus=1), bounds) == ScalePolicy(minimum=1, maximum=3)
    assert local.fit(spec(tmp_path, gpus=2), bounds) is None  # room for one worker only: no autoscaling
    assert local.fit(spec(tmp_path, gpus=1, gpu_ids=[2]), bounds) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    assert local.fit(spec(tmp_path, gpus=1), bounds) == bounds  # enough GPUs: the maximum stands
    assert local.fit(spec(tmp_path), bounds) == bounds


def test_launch_runs_the_worker_pinned_with_a_clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVER_ONLY_SECRET", "server-credential-123")
    step = spec(tmp_path, env={"MODEL_KEY": "model-key-value", "OMP_NUM_THREADS": "1"}, gpus=1, gpu_ids=[7])
    launch = LocalPlacement().launch(step, Reservation(cpu_ids=(2, 3), gpu_ids=("7",)))
    assert launch.argv == [sys.executable, "-P", "-m", "wallaroo_pulumi.runtime.sidekick.worker",
                           "--model-dir", str(tmp_path), "--name", "s", "--cpu-affinity", "2,3",
                           "--env-names", "MODEL_KEY,OMP_NUM_THREADS"]
    assert launch.cwd == str(tmp_path)
    assert "SERVER_ONLY_SECRET" not in launch.env and launch.env["MODEL_KEY"] == "model-key-value"
    assert (launch.env["OMP_NUM_THREADS"], launch.env["MKL_NUM_THREADS"]) == ("1", "2")  # the model's own wins
    assert launch.env["CUDA_VISIBLE_DEVICES"] == launch.env["NVIDIA_VISIBLE_DEVICES"] == "7"
    assert "model-key-value" not in repr(launch)
    assert LocalPlacement().launch(spec(tmp_path / "gone"), Reservation()).cwd is None


def test_pods_get_ephemeral_storage_and_a_size_limited_scratch_from_the_step(tmp_path: Path) -> None:
    """Issue 28: the scratch emptyDir has the step's scratch_size as its sizeLimit, the container
    an ephemeral-storage request and limit of that plus room for its logs (no cluster needed)."""
    from wallaroo_pulumi.runtime.kube.objects import EPHEMERAL_OVERHEAD, StepObjects
    from wallaroo_pulumi.runtime.sidekick.steps import StepTarget

    target = StepTarget(deployment_id=1, pipeline_name="p", pipeline_version="v", pipeline_version_id=1,
                        model_name="s", model_version="v1", sha="ab" * 32)
    objects = StepObjects(target, spec(tmp_path, cpus=0.5, memory="512Mi", scratch_size="256Mi"), "ns", "rt", "img")
    pod = objects.deployment(1, [])["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": str(256 * 2**20)}}]
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    storage = str(256 * 2**20 + EPHEMERAL_OVERHEAD)
    assert container["resources"]["requests"]["ephemeral-storage"] == storage
    assert container["resources"]["limits"] == container["resources"]["requests"] == {
        "cpu": "0.5", "memory": str(512 * 2**20), "ephemeral-storage": storage}
    assert container["args"][-2:] == ["--scratch-size", "256Mi"]  # named in the model's error when it is full
    bigger = StepObjects(target, spec(tmp_path, cpus=0.5, memory="512Mi", scratch_size="1Gi"), "ns", "rt", "img")
    assert bigger.name != objects.name  # a changed scratch_size is a new Deployment
    wide = StepObjects(target, spec(tmp_path, scratch_size="256Mi", concurrency=3), "ns", "rt", "img")
    [wide_container] = wide.deployment(1, [])["spec"]["template"]["spec"]["containers"]
    assert wide_container["args"][-2:] == ["--concurrency", "3"]  # the step's model_concurrency, for its pod's worker
    assert "--concurrency" not in container["args"]  # none set: the model's own predict_concurrency


def test_launch_names_the_scratch_size_to_the_worker(tmp_path: Path) -> None:
    launch = LocalPlacement().launch(spec(tmp_path, scratch_size="64Mi"), Reservation(cpu_ids=(0,)))
    assert launch.argv[-2:] == ["--scratch-size", "64Mi"]
