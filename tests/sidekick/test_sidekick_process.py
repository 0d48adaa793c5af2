"""Sidekick supervisor + worker, with real subprocesses and real BYOP folders."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from wallaroo_pulumi.runtime.sidekick.process import (
    ScalePolicy,
    Sidekick,
    SidekickCrashedError,
    SidekickError,
    SidekickLoadError,
    SidekickPool,
    SidekickPredictError,
    SidekickSpec,
)

from .sidekick_helpers import run

ModelFactory = Callable[..., Path]

ECHO = """
n = len(input_data["text"])
return {
    "upper": np.array([t.upper() for t in input_data["text"]], dtype=object),
    "doubled": input_data["x"] * 2,
    "vec_sum": np.asarray(input_data["vec"]).sum(axis=1),
    "pid": np.full(n, os.getpid(), dtype=np.int64),
}
"""

ENV_ECHO = """
names = [str(v) for v in input_data["name"]]
return {
    "value": np.array([os.environ.get(v, "<unset>") for v in names], dtype=object),
    "keys": np.array([",".join(sorted(os.environ))] * len(names), dtype=object),
}
"""


def spec_for(folder: Path, name: str = "echo", **kwargs: object) -> SidekickSpec:
    return SidekickSpec(step_name=name, model_version="v1", model_dir=folder, **kwargs)  # type: ignore[arg-type]


def one_row(**columns: object) -> pa.Table:
    return pa.table({k: [v] for k, v in columns.items()})


async def ask_env(sk: Sidekick, *names: str) -> dict[str, str]:
    out = await sk.predict(pa.table({"name": list(names)}))
    return dict(zip(names, out.column("value").to_pylist(), strict=True))


@pytest.mark.parametrize("builder", ["class", "instance"])
def test_round_trip_strings_numbers_and_lists(model_factory: ModelFactory, builder: str) -> None:
    folder = model_factory(ECHO, builder=builder)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder))
        assert sk.state == "stopped" and sk.pid is None
        await sk.start()
        try:
            assert sk.state == "ready" and sk.pid is not None
            table = pa.table({
                "text": ["hello", "wörld", ""],
                "x": pa.array([1.5, -2.0, 0.25], pa.float64()),
                "vec": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.5]], pa.list_(pa.float64())),
            })
            out = await sk.predict(table)
            assert out.column_names == ["upper", "doubled", "vec_sum", "pid"]
            assert out.column("upper").to_pylist() == ["HELLO", "WÖRLD", ""]
            assert out.column("doubled").to_pylist() == [3.0, -4.0, 0.5]
            assert out.column("vec_sum").to_pylist() == [3.0, 7.0, 11.5]
            assert out.column("pid").to_pylist() == [sk.pid] * 3
            assert sk.restarts == 0
        finally:
            await sk.stop()
        assert sk.state == "stopped" and sk.pid is None

    run(scenario)


def test_list_columns_arrive_as_arrays(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        reg = input_data["reg"]
        rag = input_data["rag"]
        return {
            "reg_shape": np.array([str(reg.shape)] * len(reg), dtype=object),
            "rag_lens": np.array([len(r) for r in rag], dtype=np.int64),
            "rag_kind": np.array([type(r).__name__ for r in rag], dtype=object),
            "matrix": np.asarray(reg, dtype=np.float32) * 2,
        }
    """)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder))
        await sk.start()
        try:
            out = await sk.predict(pa.table({
                "reg": pa.array([[1, 2, 3], [4, 5, 6]], pa.list_(pa.int64())),
                "rag": pa.array([[1.0], [2.0, 3.0]], pa.list_(pa.float64())),
            }))
        finally:
            await sk.stop()
        assert out.column("reg_shape").to_pylist() == ["(2, 3)", "(2, 3)"]
        assert out.column("rag_lens").to_pylist() == [1, 2]
        assert out.column("rag_kind").to_pylist() == ["ndarray", "ndarray"]
        assert out.schema.field("matrix").type == pa.list_(pa.float32())
        assert out.column("matrix").to_pylist() == [[2, 4, 6], [8, 10, 12]]

    run(scenario)


def test_env_isolation(model_factory: ModelFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = model_factory(ENV_ECHO)
    monkeypatch.setenv("SERVER_ONLY_SECRET", "server-credential-123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-models")

    async def scenario() -> None:
        a = Sidekick(spec_for(folder, "model-a", env={"MODEL_A_KEY": "key-a", "SHARED_NAME": "from-a"}))
        b = Sidekick(spec_for(folder, "model-b", env={"MODEL_B_KEY": "key-b"}))
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
        sk = Sidekick(spec_for(folder, extra_pythonpath=[deps]))
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
        sk = Sidekick(spec_for(folder, gpus=gpus))
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
        sk = Sidekick(spec_for(folder, gpus=2, gpu_ids=[3, 1]))
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
        sk = Sidekick(spec_for(folder, memory="300Mi"))
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
        sk = Sidekick(spec_for(folder, "hungry", memory="300Mi"))
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
        sk = Sidekick(spec_for(folder, "big", memory="256Mi"))
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
        sk = Sidekick(spec_for(folder, cpus=cpus))
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


def test_import_error_is_quoted(model_factory: ModelFactory) -> None:
    folder = model_factory("return input_data", prelude="\nvalue = undefined_helper_name + 1\n")

    async def scenario() -> Sidekick:
        sk = Sidekick(spec_for(folder, "broken-model"))
        with pytest.raises(SidekickLoadError) as info:
            await sk.start()
        message = str(info.value)
        assert "model 'broken-model' failed to import module 'main.py'" in message
        assert "NameError: name 'undefined_helper_name' is not defined" in message
        assert "value = undefined_helper_name + 1" in message  # the traceback's last line
        assert info.value.step_name == "broken-model"
        return sk

    sk = run(scenario)
    assert sk.state == "failed"
    assert sk.last_error is not None and "NameError" in sk.last_error
    assert sk.pid is None


def test_syntax_error_is_quoted(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "helpers.py").write_text("def broken(:\n    pass\n")

    async def scenario() -> str:
        sk = Sidekick(spec_for(folder, "syntax"))
        with pytest.raises(SidekickLoadError) as info:
            await sk.start()
        return str(info.value)

    message = run(scenario)
    assert "failed to import module 'helpers.py'" in message
    assert "SyntaxError" in message


def test_missing_builder(model_factory: ModelFactory) -> None:
    folder = model_factory("return input_data", with_builder=False)

    async def scenario() -> str:
        sk = Sidekick(spec_for(folder, "no-builder"))
        with pytest.raises(SidekickLoadError) as info:
            await sk.start()
        return str(info.value)

    message = run(scenario)
    assert "no subclass of mac.inference.creation.InferenceBuilder found in" in message
    assert str(folder.resolve()) in message
    assert "main.py" in message


def test_create_failure_is_quoted(model_factory: ModelFactory) -> None:
    folder = model_factory("return input_data", create="""
        if "REQUIRED_SETTING" not in os.environ:
            raise RuntimeError("REQUIRED_SETTING is not set")
    """)

    async def scenario() -> str:
        sk = Sidekick(spec_for(folder, "needs-env"))
        with pytest.raises(SidekickLoadError) as info:
            await sk.start()
        return str(info.value)

    message = run(scenario)
    assert "MyInferenceBuilder.create() failed: RuntimeError: REQUIRED_SETTING is not set" in message


def test_load_timeout(model_factory: ModelFactory) -> None:
    folder = model_factory("return input_data", create="time.sleep(30)")

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "slow", load_timeout_s=1.0))
        t0 = time.monotonic()
        with pytest.raises(SidekickLoadError, match=r"model 'slow' did not finish loading within 1s"):
            await sk.start()
        assert time.monotonic() - t0 < 8
        assert sk.state == "failed" and sk.pid is None

    run(scenario)


def test_predict_error(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        if "boom" in list(input_data["text"]):
            raise ValueError("row says boom")
        if "invalid" in list(input_data["text"]):
            raise InferenceDataValidationError("text must not be 'invalid'")
        return {"pid": np.full(len(input_data["text"]), os.getpid())}
    """)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "picky"))
        await sk.start()
        try:
            pid = sk.pid
            with pytest.raises(SidekickPredictError) as info:
                await sk.predict(one_row(text="boom"))
            assert "ValueError: row says boom" in str(info.value)
            assert 'raise ValueError("row says boom")' in str(info.value)
            assert info.value.error_type == "ValueError" and info.value.step_name == "picky"
            with pytest.raises(SidekickPredictError, match="InferenceDataValidationError: text must not be"):
                await sk.predict(one_row(text="invalid"))
            out = await sk.predict(one_row(text="fine"))
            assert out.column("pid").to_pylist() == [pid] and sk.restarts == 0
        finally:
            await sk.stop()

    run(scenario)


def test_bad_outputs_are_named(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        if len(input_data["x"]) == 3:
            return {"short": np.array([1.0])}
        return {"listy": [1, 2]}
    """)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder))
        await sk.start()
        try:
            with pytest.raises(SidekickPredictError,
                               match=r"output field 'short' has 1 rows but the input batch has 3"):
                await sk.predict(pa.table({"x": [1, 2, 3]}))
            with pytest.raises(SidekickPredictError, match=r"field 'listy' must be a numpy.ndarray; got list"):
                await sk.predict(pa.table({"x": [1, 2]}))
        finally:
            await sk.stop()

    run(scenario)


def test_crash_mid_request_restarts(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        if "crash" in list(input_data["text"]):
            os._exit(1)
        return {"pid": np.full(len(input_data["text"]), os.getpid())}
    """)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "fragile-llm"))
        await sk.start()
        try:
            first_pid = sk.pid
            with pytest.raises(SidekickCrashedError) as info:
                await sk.predict(one_row(text="crash"))
            message = str(info.value)
            assert "'fragile-llm'" in message and "exit code 1" in message
            assert info.value.step_name == "fragile-llm"
            out = await sk.predict(one_row(text="fine"))  # waits for the restart
            assert sk.restarts == 1 and sk.state == "ready"
            assert out.column("pid").to_pylist() == [sk.pid] and sk.pid != first_pid
            assert sk.last_error is not None and "exit code 1" in sk.last_error
        finally:
            await sk.stop()

    run(scenario)


def test_killed_by_signal_is_named(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        os.kill(os.getpid(), 9)
    """)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "sig"))
        await sk.start()
        try:
            with pytest.raises(SidekickCrashedError, match=r"signal 9 \(SIGKILL\)"):
                await sk.predict(one_row(x=1))
        finally:
            await sk.stop()

    run(scenario)


def test_idle_death_is_noticed_and_restarted(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        return {"pid": np.full(len(input_data["x"]), os.getpid())}
    """)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "idle"))
        await sk.start()
        try:
            pid = sk.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            for _ in range(200):
                if sk.restarts == 1 and sk.state == "ready":
                    break
                await asyncio.sleep(0.025)
            assert sk.restarts == 1 and sk.state == "ready" and sk.pid != pid
            assert sk.last_error is not None and "while idle" in sk.last_error
            out = await sk.predict(one_row(x=1))
            assert out.column("pid").to_pylist() == [sk.pid]
        finally:
            await sk.stop()

    run(scenario)


def test_cancelled_caller_leaves_the_worker_alone(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        time.sleep(float(input_data["sleep"][0]))
        return {"sleep": input_data["sleep"]}
    """)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "sleepy"))
        await sk.start()
        try:
            pid = sk.pid
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(sk.predict(one_row(sleep=0.8)), 0.2)
            # the late answer (0.8) is dropped, not mistaken for this one's, and nothing restarted
            out = await sk.predict(one_row(sleep=0.0))
            assert out.column("sleep").to_pylist() == [0.0]
            assert sk.restarts == 0 and sk.pid == pid
        finally:
            await sk.stop()

    run(scenario)


BATCH_ECHO = """
if "bad" in list(input_data["text"]):
    raise ValueError("bad row in this batch")
n = len(input_data["text"])
time.sleep(float(np.max(input_data["sleep"])))
if "short" in list(input_data["text"]) and n > 1:
    n -= 1  # a model that drops a row of a merged batch
return {"text": input_data["text"][:n], "batch_rows": np.full(n, len(input_data["text"]), dtype=np.int64)}
"""


def _rows(texts: list[str], sleep: float = 0.0) -> pa.Table:
    return pa.table({"text": texts, "sleep": [sleep] * len(texts)})


async def merged(sk: Sidekick, texts: list[str]) -> list[pa.Table | BaseException]:
    """One one-row request per text, sent while the worker is busy, so they go as one batch."""
    busy = asyncio.ensure_future(sk.predict(_rows(["first"], sleep=0.4)))
    await asyncio.sleep(0.1)
    results = await asyncio.gather(*(sk.predict(_rows([t])) for t in texts), return_exceptions=True)
    await busy
    return results


def test_waiting_requests_are_merged_and_split_back(model_factory: ModelFactory) -> None:
    folder = model_factory(BATCH_ECHO)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "merging", max_batch_rows=8))
        await sk.start()
        try:
            busy = asyncio.ensure_future(sk.predict(_rows(["first"], sleep=0.5)))
            await asyncio.sleep(0.1)  # the worker is busy: what comes now waits
            texts = [[f"r{i}"] if i % 3 else [f"r{i}a", f"r{i}b"] for i in range(8)]  # 11 rows in all
            outs = await asyncio.gather(*(sk.predict(_rows(t)) for t in texts))
            assert (await busy).column("batch_rows").to_pylist() == [1]  # an idle worker gets it alone
            for t, out in zip(texts, outs, strict=True):
                assert out.column("text").to_pylist() == t  # each caller gets exactly its own rows back
            sizes = [out.column("batch_rows")[0].as_py() for out in outs]
            assert max(sizes) == 8 and all(size <= 8 for size in sizes)  # merged, never over the limit
            assert sk.restarts == 0
        finally:
            await sk.stop()

    run(scenario)


CRASH_ON_BOOM = """
if any(t.startswith("boom") for t in input_data["text"]):
    os._exit(3)
time.sleep(float(np.max(input_data["sleep"])))
return {"text": input_data["text"], "batch_rows": np.full(len(input_data["text"]), len(input_data["text"]), dtype=np.int64)}
"""


def test_a_request_that_crashes_the_worker_fails_alone_in_a_merged_batch(model_factory: ModelFactory) -> None:
    """The merged batch dies with the worker; after the restart each request goes alone, so only
    the poison one fails. A worker that dies on request after request is not restarted per
    request: the second one crashing it alone ends the retries."""
    folder = model_factory(CRASH_ON_BOOM)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "poison"))
        await sk.start()
        try:
            results = await merged(sk, ["ok1", "boom", "ok2"])
            assert isinstance(results[1], SidekickCrashedError) and "exit code 3" in str(results[1])
            assert [r.column("text").to_pylist() for r in (results[0], results[2])] == [["ok1"], ["ok2"]], results
            assert [r.column("batch_rows")[0].as_py() for r in (results[0], results[2])] == [1, 1]  # sent alone
            assert sk.restarts == 2  # the merged batch, then the poison request alone

            results = await merged(sk, ["boom1", "boom2", "boom3", "ok"])
            assert all(isinstance(r, SidekickCrashedError) for r in results), results
            assert "not retried: 2 requests crashed it alone" in str(results[2])
            assert "not retried" in str(results[3])
            assert sk.restarts == 5  # merged + two alone: never one restart per request
        finally:
            await sk.stop()

    run(scenario)


def test_merging_off_sends_each_request_alone(model_factory: ModelFactory) -> None:
    folder = model_factory(BATCH_ECHO)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "alone", max_batch_rows=1))
        await sk.start()
        try:
            outs = await asyncio.gather(*(sk.predict(_rows([f"r{i}"], sleep=0.05)) for i in range(5)))
            assert [o.column("batch_rows")[0].as_py() for o in outs] == [1] * 5
        finally:
            await sk.stop()

    run(scenario)


def test_a_bad_request_fails_alone_in_a_merged_batch(model_factory: ModelFactory) -> None:
    folder = model_factory(BATCH_ECHO)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "isolating"))
        await sk.start()
        try:
            results = await merged(sk, ["ok1", "bad", "ok2", "short", "ok3"])
            assert isinstance(results[1], SidekickPredictError) and "bad row in this batch" in str(results[1])
            ok = [r for i, r in enumerate(results) if i != 1]
            assert all(isinstance(r, pa.Table) for r in ok), ok
            assert [r.column("text").to_pylist() for r in ok] == [["ok1"], ["ok2"], ["short"], ["ok3"]]
            # a merged answer with a row missing: asked again one by one, everyone gets its row
            outs = await merged(sk, ["a", "short", "b"])
            assert [o.column("text").to_pylist() for o in outs] == [["a"], ["short"], ["b"]]
            assert [o.column("batch_rows")[0].as_py() for o in outs] == [1, 1, 1]
        finally:
            await sk.stop()

    run(scenario)


def test_stop_fails_waiting_requests(model_factory: ModelFactory) -> None:
    folder = model_factory(BATCH_ECHO)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "stopping"))
        await sk.start()
        calls = [asyncio.ensure_future(sk.predict(_rows([f"r{i}"], sleep=2.0))) for i in range(3)]
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await sk.stop()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        assert time.monotonic() - t0 < 4
        assert all(isinstance(r, SidekickError) and "stopped" in str(r) for r in results), results

    run(scenario)


def test_model_prints_do_not_corrupt_protocol(model_factory: ModelFactory, caplog: pytest.LogCaptureFixture) -> None:
    folder = model_factory(
        """
        print("predict says hi", list(input_data))
        sys.stdout.write("R\\x00\\x00\\x00\\x05junk" * 100)
        sys.stdout.flush()
        os.write(1, b"raw fd one write\\n")
        return {"ok": np.ones(len(input_data["x"]), dtype=bool)}
        """,
        prelude='\nprint("import-time print")\n',
        create='print("create-time print", config.model_path.name)',
    )

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "chatty"))
        await sk.start()
        try:
            for _ in range(3):
                out = await sk.predict(pa.table({"x": [1, 2]}))
                assert out.column("ok").to_pylist() == [True, True]
        finally:
            await sk.stop()

    with caplog.at_level(logging.INFO, logger="wallaroo.sidekick.chatty"):
        run(scenario)
    lines = [r.getMessage() for r in caplog.records if r.name == "wallaroo.sidekick.chatty"]
    assert "import-time print" in lines
    assert any(line.startswith("create-time print") for line in lines)
    assert any("predict says hi" in line for line in lines)
    assert any("raw fd one write" in line for line in lines)


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
        sk = Sidekick(spec)
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


def test_stop_kills_the_process_group(model_factory: ModelFactory, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    folder = model_factory("return input_data", create=f"""
        import subprocess
        child = subprocess.Popen(["sleep", "60"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
    """)

    async def scenario() -> int:
        sk = Sidekick(spec_for(folder, "spawner"))
        await sk.start()
        child = int(pidfile.read_text())
        os.kill(child, 0)  # alive
        await sk.stop()
        return child

    child = run(scenario)
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # a zombie reparented to init is reaped shortly; check /proc state
        try:
            if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
                break
        except FileNotFoundError:
            break
        time.sleep(0.02)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the model's child process outlived sidekick.stop()")


def test_predict_before_start_and_after_stop(model_factory: ModelFactory) -> None:
    folder = model_factory('return {"x": input_data["x"]}')

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "lifecycle"))
        with pytest.raises(SidekickError, match="not running"):
            await sk.predict(one_row(x=1))
        await sk.start()
        await sk.start()  # idempotent
        assert (await sk.predict(one_row(x=5))).column("x").to_pylist() == [5]
        await sk.stop()
        with pytest.raises(SidekickError, match="not running"):
            await sk.predict(one_row(x=1))
        await sk.start()  # can be started again
        assert (await sk.predict(one_row(x=6))).column("x").to_pylist() == [6]
        await sk.stop()

    run(scenario)


def test_pool_spreads_requests(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        time.sleep(float(input_data["sleep"][0]))
        return {"pid": np.full(len(input_data["sleep"]), os.getpid())}
    """)

    async def scenario() -> None:
        pool = SidekickPool(spec_for(folder, "pooled"), replicas=2)
        await pool.start()
        try:
            pids = {s.pid for s in pool.sidekicks}
            assert len(pids) == 2 and None not in pids
            assert all(s.state == "ready" for s in pool.sidekicks)
            # concurrent: least-busy dispatch puts the two requests on different replicas
            outs = await asyncio.gather(*(pool.predict(one_row(sleep=0.3)) for _ in range(2)))
            assert {o.column("pid")[0].as_py() for o in outs} == pids
            # sequential: round-robin still reaches both
            seq = [(await pool.predict(one_row(sleep=0.0))).column("pid")[0].as_py() for _ in range(4)]
            assert set(seq) == pids
            # four concurrent requests on two workers: serialized per worker, all answered
            t0 = time.monotonic()
            outs = await asyncio.gather(*(pool.predict(one_row(sleep=0.2)) for _ in range(4)))
            assert time.monotonic() - t0 < 0.8 + 0.5
            assert sorted(o.column("pid")[0].as_py() for o in outs) == sorted(list(pids) * 2)
        finally:
            await pool.stop()
        assert all(s.state == "stopped" for s in pool.sidekicks)

    run(scenario)


def test_pool_grows_under_load_and_shrinks_when_idle_without_failing_a_request(model_factory: ModelFactory) -> None:
    """Real workers: steady load saturates the one worker, so the pool grows (to at most its
    maximum); once the load stops it shrinks back to its minimum. The worker that leaves
    answers what it holds first: no request fails while the pool changes size."""
    folder = model_factory("""
        time.sleep(float(input_data["sleep"][0]))
        return {"pid": np.full(len(input_data["sleep"]), os.getpid())}
    """)
    policy = ScalePolicy(minimum=1, maximum=3, interval_s=0.2, up_after=2, down_after=5)

    async def scenario() -> None:
        pool = SidekickPool(spec_for(folder, "scaling"), replicas=1, policy=policy)
        await pool.start()
        served: set[int] = set()
        stop_load = asyncio.Event()

        async def client() -> None:
            while not stop_load.is_set():
                out = await pool.predict(one_row(sleep=0.05))
                served.add(out.column("pid")[0].as_py())

        clients = [asyncio.ensure_future(client()) for _ in range(6)]
        try:
            deadline = time.monotonic() + 30
            while pool.replicas < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert pool.replicas == 3, "the pool did not grow under steady load"
            while len(served) < 3 and time.monotonic() < deadline:  # the new workers take requests
                await asyncio.sleep(0.1)
            assert len(served) == 3
            await asyncio.sleep(1.0)
            assert pool.replicas == 3  # the ceiling holds under load

            stop_load.set()
            await asyncio.gather(*clients)  # raises if any request failed while scaling
            deadline = time.monotonic() + 30
            while pool.replicas > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert pool.replicas == 1, "the pool did not shrink when idle"
            assert (await pool.predict(one_row(sleep=0.0))).num_rows == 1
        finally:
            stop_load.set()
            await asyncio.gather(*clients, return_exceptions=True)
            await pool.stop()
        assert all(s.state == "stopped" for s in pool.sidekicks)

    run(scenario)


def test_pool_start_failure_stops_all(model_factory: ModelFactory) -> None:
    folder = model_factory("return input_data", prelude="\nimport module_that_does_not_exist\n")

    async def scenario() -> None:
        pool = SidekickPool(spec_for(folder, "pool-broken"), replicas=2)
        with pytest.raises(SidekickLoadError, match="ModuleNotFoundError"):
            await pool.start()
        assert all(s.pid is None for s in pool.sidekicks)

    run(scenario)


def _libcuda_available() -> bool:
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


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
        sk = Sidekick(spec_for(folder, gpus=gpus))
        await sk.start()
        try:
            return int((await sk.predict(one_row(x=1))).column("count")[0].as_py())
        finally:
            await sk.stop()

    assert run(lambda: scenario(0)) == 0
    assert run(lambda: scenario(1)) == 1


def test_large_batches_round_trip(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        return {"text": input_data["text"], "n": np.array([len(t) for t in input_data["text"]], dtype=np.int64)}
    """)
    rows = 3_000
    text = "x" * 10_000  # ~30 MB each way: far beyond any pipe buffer

    async def scenario() -> pa.Table:
        sk = Sidekick(spec_for(folder, "bulk"))
        await sk.start()
        try:
            return await sk.predict(pa.table({"text": [text] * rows}))
        finally:
            await sk.stop()

    out = run(scenario)
    assert out.num_rows == rows
    assert out.column("n").to_pylist() == [10_000] * rows
    assert out.column("text")[rows - 1].as_py() == text


def test_stop_during_start(model_factory: ModelFactory) -> None:
    folder = model_factory("return input_data", create="time.sleep(30)")

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "interrupted"))
        starting = asyncio.create_task(sk.start())
        for _ in range(200):
            if sk.pid is not None:
                break
            await asyncio.sleep(0.01)
        pid = sk.pid
        assert pid is not None and sk.state == "starting"
        await sk.stop()
        with pytest.raises(SidekickLoadError, match="stopped while loading"):
            await starting
        assert sk.state == "stopped" and sk.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    run(scenario)
