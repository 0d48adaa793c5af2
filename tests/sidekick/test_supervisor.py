"""The supervisor of one worker (`Sidekick`), with real subprocesses and real BYOP folders:
round trips, load and predict errors, crashes and restarts, stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import pyarrow as pa
import pytest

from wallaroo_pulumi.runtime.sidekick import (
    LocalPlacement,
    Sidekick,
    SidekickCrashedError,
    SidekickError,
    SidekickLoadError,
    SidekickPredictError,
)

from .sidekick_helpers import ModelFactory, one_row, run, spec_for

ECHO = """
n = len(input_data["text"])
return {
    "upper": np.array([t.upper() for t in input_data["text"]], dtype=object),
    "doubled": input_data["x"] * 2,
    "vec_sum": np.asarray(input_data["vec"]).sum(axis=1),
    "pid": np.full(n, os.getpid(), dtype=np.int64),
}
"""


@pytest.mark.parametrize("builder", ["class", "instance"])
def test_round_trip_strings_numbers_and_lists(model_factory: ModelFactory, builder: str) -> None:
    folder = model_factory(ECHO, builder=builder)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder), LocalPlacement())
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
        sk = Sidekick(spec_for(folder), LocalPlacement())
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


def test_import_error_is_quoted(model_factory: ModelFactory) -> None:
    folder = model_factory("return input_data", prelude="\nvalue = undefined_helper_name + 1\n")

    async def scenario() -> Sidekick:
        sk = Sidekick(spec_for(folder, "broken-model"), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "syntax"), LocalPlacement())
        with pytest.raises(SidekickLoadError) as info:
            await sk.start()
        return str(info.value)

    message = run(scenario)
    assert "failed to import module 'helpers.py'" in message
    assert "SyntaxError" in message


def test_missing_builder(model_factory: ModelFactory) -> None:
    folder = model_factory("return input_data", with_builder=False)

    async def scenario() -> str:
        sk = Sidekick(spec_for(folder, "no-builder"), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "needs-env"), LocalPlacement())
        with pytest.raises(SidekickLoadError) as info:
            await sk.start()
        return str(info.value)

    message = run(scenario)
    assert "MyInferenceBuilder.create() failed: RuntimeError: REQUIRED_SETTING is not set" in message


def test_load_timeout(model_factory: ModelFactory) -> None:
    folder = model_factory("return input_data", create="time.sleep(30)")

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "slow", load_timeout_s=1.0), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "picky"), LocalPlacement())
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
        sk = Sidekick(spec_for(folder), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "fragile-llm"), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "sig"), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "idle"), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "sleepy"), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "chatty"), LocalPlacement())
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


def test_stop_kills_the_process_group(model_factory: ModelFactory, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    folder = model_factory("return input_data", create=f"""
        import subprocess
        child = subprocess.Popen(["sleep", "60"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
    """)

    async def scenario() -> int:
        sk = Sidekick(spec_for(folder, "spawner"), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "lifecycle"), LocalPlacement())
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


def test_large_batches_round_trip(model_factory: ModelFactory) -> None:
    folder = model_factory("""
        return {"text": input_data["text"], "n": np.array([len(t) for t in input_data["text"]], dtype=np.int64)}
    """)
    rows = 3_000
    text = "x" * 10_000  # ~30 MB each way: far beyond any pipe buffer

    async def scenario() -> pa.Table:
        sk = Sidekick(spec_for(folder, "bulk"), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "interrupted"), LocalPlacement())
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
