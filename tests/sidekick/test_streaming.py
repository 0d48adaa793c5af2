"""Streamed answers through a real worker (`Sidekick.predict_stream`, `SidekickPool.predict_stream`):
CHUNK frames arrive as the model yields them, the whole answer comes last, a model without
`predict_stream` answers in one part, errors and abandoned streams leave the worker in step."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pyarrow as pa
import pytest

from wallaroo_pulumi.runtime.sidekick import (
    LocalPlacement,
    Sidekick,
    SidekickCrashedError,
    SidekickPool,
    SidekickPredictError,
)

from .sidekick_helpers import ModelFactory, one_row, run, spec_for

ECHO = """
return {"out": np.array([t.upper() for t in input_data["text"]], dtype=object)}
"""

# Yields each word of each row as a chunk; before the second chunk it waits for the file named by
# the row's `gate` (so a test proves the first chunk reached it while the model was still running).
STREAMING = '''

def _predict_stream(self, input_data):
    words = []
    for row, text in enumerate(input_data["text"]):
        for i, word in enumerate(str(text).split()):
            gate = input_data["gate"][row] if "gate" in input_data else ""
            if i == 1 and gate:
                deadline = time.time() + 60
                while not os.path.exists(gate) and time.time() < deadline:
                    time.sleep(0.01)
            if word == "boom":
                raise ValueError("the model failed mid-stream")
            if word == "die":
                os._exit(7)
            yield {"row": np.array([row]), "delta": np.array([word], dtype=object)}
        words.append(str(text).upper())
    return {"out": np.array(words, dtype=object)}


MyInference.predict_stream = _predict_stream
'''


def streaming_model(model_factory: ModelFactory) -> Path:
    folder = model_factory(ECHO)
    with (folder / "main.py").open("a") as fh:
        fh.write(STREAMING)
    return folder


async def collect(parts) -> tuple[list[pa.Table], pa.Table]:  # noqa: ANN001 - an async iterator of StreamPart
    chunks, final = [], None
    async for part in parts:
        if part.final:
            final = part.table
        else:
            chunks.append(part.table)
    assert final is not None
    return chunks, final


def test_chunks_arrive_while_the_model_runs_then_the_whole_answer(model_factory: ModelFactory, tmp_path: Path) -> None:
    folder = streaming_model(model_factory)
    gate = tmp_path / "gate"

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder), LocalPlacement())
        await sk.start()
        try:
            parts = sk.predict_stream(pa.table({"text": ["one two three"], "gate": [str(gate)]}))
            first = await anext(parts)
            assert not first.final and first.table.to_pylist() == [{"row": 0, "delta": "one"}]
            gate.touch()  # the model waited for this before its second chunk
            chunks, final = await collect(parts)
            assert [c.column("delta").to_pylist() for c in chunks] == [["two"], ["three"]]
            assert final.to_pylist() == [{"out": "ONE TWO THREE"}]
            # the plain path still answers, in step
            assert (await sk.predict(one_row(text="after"))).to_pylist() == [{"out": "AFTER"}]
        finally:
            await sk.stop()

    run(scenario, timeout=60)


def test_a_model_without_predict_stream_answers_in_one_part(model_factory: ModelFactory) -> None:
    folder = model_factory(ECHO)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder), LocalPlacement())
        await sk.start()
        try:
            chunks, final = await collect(sk.predict_stream(one_row(text="whole")))
            assert chunks == [] and final.to_pylist() == [{"out": "WHOLE"}]
        finally:
            await sk.stop()

    run(scenario, timeout=60)


def test_an_error_mid_stream_fails_that_request_only(model_factory: ModelFactory) -> None:
    folder = streaming_model(model_factory)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder), LocalPlacement())
        await sk.start()
        try:
            parts = sk.predict_stream(one_row(text="fine boom"))
            first = await anext(parts)
            assert first.table.column("delta").to_pylist() == ["fine"]
            with pytest.raises(SidekickPredictError, match="the model failed mid-stream"):
                await anext(parts)
            chunks, final = await collect(sk.predict_stream(one_row(text="a b")))
            assert len(chunks) == 2 and final.to_pylist() == [{"out": "A B"}]
            assert sk.restarts == 0
        finally:
            await sk.stop()

    run(scenario, timeout=60)


def test_an_abandoned_stream_is_drained_and_requests_wait_for_it_unmerged(model_factory: ModelFactory) -> None:
    folder = streaming_model(model_factory)

    async def scenario() -> None:
        pool = SidekickPool(spec_for(folder), 1, None, LocalPlacement())
        await pool.start()
        try:
            async with contextlib.aclosing(pool.predict_stream(one_row(text="x " * 200))) as parts:
                first = await anext(parts)
                assert first.table.column("delta").to_pylist() == ["x"]
            # the rest of that answer is read and dropped; this request gets its own answer
            assert (await pool.predict(one_row(text="next"))).to_pylist() == [{"out": "NEXT"}]
            chunks, final = await collect(pool.predict_stream(pa.table({"text": ["a b", "c"]})))
            assert [(c.column("row")[0].as_py(), c.column("delta")[0].as_py()) for c in chunks] == [
                (0, "a"), (0, "b"), (1, "c")]
            assert final.column("out").to_pylist() == ["A B", "C"]
            assert pool.sidekicks[0].restarts == 0
        finally:
            await pool.stop()

    run(scenario, timeout=60)


def test_a_worker_that_dies_mid_stream_is_reported_and_restarted(model_factory: ModelFactory) -> None:
    folder = streaming_model(model_factory)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder), LocalPlacement())
        await sk.start()
        try:
            parts = sk.predict_stream(one_row(text="hello die"))
            assert (await anext(parts)).table.column("delta").to_pylist() == ["hello"]
            with pytest.raises(SidekickCrashedError, match="died while streaming an answer: exit code 7"):
                await anext(parts)
            # restarted: the next request waits for the new worker and is answered
            assert (await sk.predict(one_row(text="again"))).to_pylist() == [{"out": "AGAIN"}]
            assert sk.restarts == 1
        finally:
            await sk.stop()

    run(scenario, timeout=90)
