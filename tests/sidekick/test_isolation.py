"""What a worker may see and use, with real subprocesses: its own env only, its GPUs, its
CPUs and thread counts, its memory limit; and no env value in errors or logs."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from wallaroo_pulumi.runtime.sidekick import LocalPlacement, Sidekick, SidekickCrashedError, SidekickLoadError, SidekickPredictError

from .sidekick_helpers import ModelFactory, one_row, run, spec_for

pytestmark = pytest.mark.security

ENV_ECHO = """
names = [str(v) for v in input_data["name"]]
return {
    "value": np.array([os.environ.get(v, "<unset>") for v in names], dtype=object),
    "keys": np.array([",".join(sorted(os.environ))] * len(names), dtype=object),
}
"""


async def ask_env(sk: Sidekick, *names: str) -> dict[str, str]:
    out = await sk.predict(pa.table({"name": list(names)}))
    return dict(zip(names, out.column("value").to_pylist(), strict=True))


def test_env_isolation(model_factory: ModelFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = model_factory(ENV_ECHO)
    monkeypatch.setenv("SERVER_ONLY_SECRET", "server-credential-123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-models")

    async def scenario() -> None:
        a = Sidekick(spec_for(folder, "model-a", env={"MODEL_A_KEY": "key-a", "SHARED_NAME": "from-a"}), LocalPlacement())
        b = Sidekick(spec_for(folder, "model-b", env={"MODEL_B_KEY": "key-b"}), LocalPlacement())
        await asyncio.gather(a.start(), b.start())
        try:
            seen_a = await ask_env(a, "MODEL_A_KEY", "SHARED_NAME", "MODEL_B_KEY", "SERVER_ONLY_SECRET",
                                   "AWS_SECRET_ACCESS_KEY", "PYTHONUNBUFFERED")
            seen_b = await ask_env(b, "MODEL_A_KEY", "MODEL_B_KEY", "SERVER_ONLY_SECRET")
            keys = set((await a.predict(pa.table({"name": ["x"]}))).column("keys")[0].as_py().split(","))
        finally:
            await asyncio.gather(a.stop(), b.stop())
        assert seen_a == {
            "MODEL_A_KEY": "key-a", "SHARED_NAME": "from-a", "MODEL_B_KEY": "<unset>",
            "SERVER_ONLY_SECRET": "<unset>", "AWS_SECRET_ACCESS_KEY": "<unset>", "PYTHONUNBUFFERED": "1",
        }
        assert seen_b == {"MODEL_A_KEY": "<unset>", "MODEL_B_KEY": "key-b", "SERVER_ONLY_SECRET": "<unset>"}
        base = {
            "PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
            "NVIDIA_VISIBLE_DEVICES",
        }
        # The interpreter itself may add LC_CTYPE when it coerces the C locale.
        assert keys - {"LC_CTYPE"} == base | {"MODEL_A_KEY", "SHARED_NAME"}

    run(scenario)


def test_extra_pythonpath_is_importable(model_factory: ModelFactory, tmp_path: Path) -> None:
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "my_private_dep.py").write_text("ANSWER = 42\n")
    folder = model_factory("""
        import my_private_dep
        return {"answer": np.full(len(input_data["x"]), my_private_dep.ANSWER)}
    """)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, extra_pythonpath=[deps]), LocalPlacement())
        await sk.start()
        try:
            out = await sk.predict(one_row(x=1))
        finally:
            await sk.stop()
        assert out.column("answer").to_pylist() == [42]

    run(scenario)


@pytest.mark.parametrize("gpus", [0, 1, 2])
def test_cuda_visible_devices(model_factory: ModelFactory, monkeypatch: pytest.MonkeyPatch, gpus: int) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")  # the server's own devices
    folder = model_factory(ENV_ECHO)

    async def scenario() -> dict[str, str]:
        sk = Sidekick(spec_for(folder, gpus=gpus), LocalPlacement())
        await sk.start()
        try:
            return await ask_env(sk, "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
        finally:
            await sk.stop()

    seen = run(scenario)
    ids = [d for d in seen["CUDA_VISIBLE_DEVICES"].split(",") if d]
    assert len(ids) == gpus and len(set(ids)) == gpus
    assert set(ids) <= {"4", "5", "6"}
    assert seen["NVIDIA_VISIBLE_DEVICES"] == seen["CUDA_VISIBLE_DEVICES"]
    if gpus == 0:
        assert seen["CUDA_VISIBLE_DEVICES"] == ""


def test_explicit_gpu_ids(model_factory: ModelFactory) -> None:
    folder = model_factory(ENV_ECHO)

    async def scenario() -> dict[str, str]:
        sk = Sidekick(spec_for(folder, gpus=2, gpu_ids=[3, 1]), LocalPlacement())
        await sk.start()
        try:
            return await ask_env(sk, "CUDA_VISIBLE_DEVICES")
        finally:
            await sk.stop()

    assert run(scenario) == {"CUDA_VISIBLE_DEVICES": "3,1"}
    with pytest.raises(ValueError, match="gpu_ids lists 1 device"):
        spec_for(folder, gpus=2, gpu_ids=[0])


def test_memory_limit_counts_resident_memory_not_address_space(model_factory: ModelFactory) -> None:
    # 1 GiB reserved but never touched, as allocators and CUDA do: Kubernetes would not
    # charge it against a 300Mi limit, and neither may we (an address-space cap would).
    folder = model_factory("""
        import mmap, resource
        reserved = mmap.mmap(-1, 2**30)
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f)
        kib = lambda key: int(status[key].split()[0]) * 1024
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        return {"vm_size": np.array([kib("VmSize")], dtype=np.int64), "rss": np.array([kib("VmRSS")], dtype=np.int64),
                "as_limited": np.array([soft != resource.RLIM_INFINITY])}
    """)

    async def scenario() -> pa.Table:
        sk = Sidekick(spec_for(folder, memory="300Mi"), LocalPlacement())
        await sk.start()
        try:
            out = await sk.predict(one_row(x=1))
            await asyncio.sleep(0.2)  # a few samples of the guard: still alive, same worker
            assert sk.state == "ready" and sk.restarts == 0
            return out
        finally:
            await sk.stop()

    out = run(scenario)
    assert out.column("vm_size")[0].as_py() > 300 * 2**20 > out.column("rss")[0].as_py()
    assert out.column("as_limited").to_pylist() == [False]


def test_memory_limit_oom_kills_the_worker_and_it_comes_back(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        block = bytearray(int(input_data["mb"][0]) * 2**20)
        return {"got": np.array([len(block)], dtype=np.int64)}
    """)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "hungry", memory="300Mi"), LocalPlacement())
        await sk.start()
        try:
            assert (await sk.predict(one_row(mb=16))).column("got").to_pylist() == [16 * 2**20]
            first = sk.pid
            with pytest.raises(SidekickCrashedError) as info:
                await sk.predict(one_row(mb=2048))
            message = str(info.value)
            assert "'hungry'" in message and "OOMKilled" in message and "memory limit of 300Mi" in message, message
            assert "sidekick memory" in message  # says what to do
            assert (await sk.predict(one_row(mb=8))).column("got").to_pylist() == [8 * 2**20]
            assert sk.pid != first and sk.restarts == 1
        finally:
            await sk.stop()

    run(scenario)


def test_model_that_cannot_load_within_its_memory_limit_fails_to_deploy(model_factory: ModelFactory) -> None:
    folder = model_factory("return {}", prelude="BALLAST = bytearray(1024 * 2**20)\n")

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "big", memory="256Mi"), LocalPlacement())
        with pytest.raises(SidekickLoadError) as info:
            await sk.start()
        assert "before it was ready" in str(info.value) and "OOMKilled" in str(info.value), str(info.value)
        assert "256Mi" in str(info.value)
        await sk.stop()

    run(scenario)


def test_bad_memory_quantity_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Kubernetes memory quantity"):
        spec_for(tmp_path, memory="lots")


def test_cpu_affinity_and_thread_counts(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        n = len(input_data["x"])
        return {
            "cores": np.full(n, len(os.sched_getaffinity(0)), dtype=np.int64),
            "omp": np.array([os.environ["OMP_NUM_THREADS"]] * n, dtype=object),
            "blas": np.array([os.environ["OPENBLAS_NUM_THREADS"]] * n, dtype=object),
            "mkl": np.array([os.environ["MKL_NUM_THREADS"]] * n, dtype=object),
        }
    """)
    available = len(os.sched_getaffinity(0))

    async def scenario(cpus: float) -> pa.Table:
        sk = Sidekick(spec_for(folder, cpus=cpus), LocalPlacement())
        await sk.start()
        try:
            return await sk.predict(one_row(x=1))
        finally:
            await sk.stop()

    one = run(lambda: scenario(0.5))
    assert one.column("cores").to_pylist() == [1]
    assert one.column("omp").to_pylist() == one.column("blas").to_pylist() == one.column("mkl").to_pylist() == ["1"]
    many = run(lambda: scenario(1.5))
    expected = min(2, available)
    assert many.column("cores").to_pylist() == [expected]
    assert many.column("omp").to_pylist() == [str(expected)]
    huge = run(lambda: scenario(available + 7))
    assert huge.column("cores").to_pylist() == [available]


def test_every_thread_of_the_worker_runs_on_its_cores(model_factory: ModelFactory) -> None:
    """The worker pins itself before numpy and pyarrow start their threads (OpenBLAS, jemalloc),
    so those run on its cores too: nothing it imports before pinning may start a thread."""
    folder = model_factory("""
        import glob
        allowed = set()
        for status in glob.glob("/proc/self/task/*/status"):
            with open(status) as f:
                allowed |= {line.split(":", 1)[1].strip() for line in f if line.startswith("Cpus_allowed_list:")}
        return {"allowed": np.array([",".join(sorted(allowed))] * len(input_data["x"]), dtype=object),
                "threads": np.full(len(input_data["x"]), len(glob.glob("/proc/self/task/*")))}
    """)

    async def scenario() -> pa.Table:
        sk = Sidekick(spec_for(folder, "pinned", cpus=1, env={"OPENBLAS_NUM_THREADS": "2"}), LocalPlacement())
        await sk.start()
        try:
            out = await sk.predict(one_row(x=1))
            return out.append_column("cpu", pa.array([str(sk.cpu_ids[0])]))
        finally:
            await sk.stop()

    out = run(scenario)
    assert out.column("threads")[0].as_py() > 1  # the check means something
    assert out.column("allowed").to_pylist() == out.column("cpu").to_pylist()


def test_the_package_a_worker_imports_before_pinning_stays_light() -> None:
    code = "import sys, wallaroo_pulumi.runtime.sidekick; print(sorted({'numpy', 'pyarrow', 'asyncio'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_env_values_never_in_errors_or_logs(model_factory: ModelFactory, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-test-Zx9qLmN0pQrStUv"
    folder = model_factory("""
        key = os.environ["LLM_API_KEY"]
        print("debug: calling with", key)
        raise PermissionError(f"upstream rejected key {key}")
    """)
    spec = spec_for(folder, "leaky", env={"LLM_API_KEY": secret, "LISTENER_TEXT_FIELD": "text"})
    assert secret not in repr(spec) and secret not in str(spec)

    async def scenario() -> str:
        sk = Sidekick(spec, LocalPlacement())
        await sk.start()
        try:
            with pytest.raises(SidekickPredictError) as info:
                await sk.predict(one_row(text="hi"))
            return str(info.value)
        finally:
            await sk.stop()

    with caplog.at_level(logging.DEBUG):
        message = run(scenario)
    assert "PermissionError: upstream rejected key [REDACTED]" in message
    assert secret not in message
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "debug: calling with [REDACTED]" in logged
    assert secret not in logged


def _libcuda_available() -> bool:
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


@pytest.mark.hardware("gpu")
@pytest.mark.skipif(not _libcuda_available(), reason="needs an NVIDIA GPU and driver (libcuda)")
def test_cuda_sees_only_assigned_gpus(model_factory: ModelFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a real driver: the CUDA runtime inside the sidekick sees exactly `gpus` devices."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    folder = model_factory("""
        import ctypes
        lib = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(-1)
        rc = lib.cuInit(0)
        if rc == 0:
            lib.cuDeviceGetCount(ctypes.byref(count))
        return {"count": np.full(len(input_data["x"]), count.value if rc == 0 else 0)}
    """)

    async def scenario(gpus: int) -> int:
        sk = Sidekick(spec_for(folder, gpus=gpus), LocalPlacement())
        await sk.start()
        try:
            return int((await sk.predict(one_row(x=1))).column("count")[0].as_py())
        finally:
            await sk.stop()

    assert run(lambda: scenario(0)) == 0
    assert run(lambda: scenario(1)) == 1
