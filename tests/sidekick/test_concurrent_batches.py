"""Several batches in flight on one worker (D61), with real worker processes: a model that
declares `predict_concurrency` (or a step whose `concurrency` says so) answers K batches at once,
answers find their callers by request id, crashes and cancellations with several in flight."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pyarrow as pa
import pytest

from wallaroo_pulumi.runtime.sidekick import LocalPlacement, Sidekick, SidekickCrashedError, SidekickLoadError

from .sidekick_helpers import ModelFactory, one_row, run, spec_for
from .test_streaming import STREAMING, collect

# Each row sleeps its `sleep`; a row whose `text` is "crash" ends the worker first.
SLEEPY = """
for text in input_data["text"]:
    if text == "crash":
        time.sleep(0.2)
        os._exit(1)
time.sleep(float(max(input_data["sleep"])))
return {"text": input_data["text"], "pid": np.full(len(input_data["text"]), os.getpid())}
"""


def declaring(model_factory: ModelFactory, predict: str, concurrency: object) -> Path:
    """A model whose inference class declares `predict_concurrency` (set as it is created)."""
    return model_factory(predict, create=f"MyInference.predict_concurrency = {concurrency!r}\n")


def req(text: str, sleep: float = 0.0) -> pa.Table:
    return pa.table({"text": [text], "sleep": [sleep]})


async def timed(sk: Sidekick, tables: list[pa.Table]) -> tuple[float, list[pa.Table | BaseException]]:
    start = time.monotonic()
    out = await asyncio.gather(*(sk.predict(t) for t in tables), return_exceptions=True)
    return time.monotonic() - start, out


def test_k_slow_predicts_take_one_latency_not_k(model_factory: ModelFactory) -> None:
    folder = declaring(model_factory, SLEEPY, 4)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "wide", max_batch_rows=1), LocalPlacement())
        await sk.start()
        try:
            assert sk.concurrency == 4
            took, out = await timed(sk, [req(f"r{i}", 0.5) for i in range(4)])
            assert [t.column("text").to_pylist() for t in out] == [["r0"], ["r1"], ["r2"], ["r3"]]
            assert took < 1.5, f"4 predicts of 0.5 s on 4 slots took {took:.2f} s (one at a time: 2 s)"
        finally:
            await sk.stop()

    run(scenario)


def test_one_slot_keeps_order_and_one_batch_at_a_time(model_factory: ModelFactory) -> None:
    folder = model_factory(SLEEPY)  # declares nothing: one at a time

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "narrow", max_batch_rows=1), LocalPlacement())
        await sk.start()
        try:
            assert sk.concurrency == 1
            took, out = await timed(sk, [req(f"r{i}", 0.3) for i in range(4)])
            assert [t.column("text").to_pylist() for t in out] == [["r0"], ["r1"], ["r2"], ["r3"]]
            assert took >= 1.2, f"4 predicts of 0.3 s on one slot took only {took:.2f} s"
        finally:
            await sk.stop()

    run(scenario)


def test_the_steps_setting_overrides_the_models_declaration(model_factory: ModelFactory) -> None:
    folder = declaring(model_factory, SLEEPY, 4)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "capped", max_batch_rows=1, concurrency=2), LocalPlacement())
        await sk.start()
        try:
            assert sk.concurrency == 2
            took, _ = await timed(sk, [req(f"r{i}", 0.5) for i in range(4)])
            assert 0.95 <= took < 1.8, f"4 predicts of 0.5 s on 2 slots took {took:.2f} s (1 slot: 2 s, 4: 0.5 s)"
        finally:
            await sk.stop()

    run(scenario)


@pytest.mark.parametrize("bad", [0, "8", 2.5])
def test_a_bad_declaration_is_a_load_error_naming_it(model_factory: ModelFactory, bad: object) -> None:
    folder = declaring(model_factory, SLEEPY, bad)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "bad"), LocalPlacement())
        try:
            with pytest.raises(SidekickLoadError, match=r"predict_concurrency must be an integer >= 1; got"):
                await sk.start()
        finally:
            await sk.stop()

    run(scenario)


def test_a_crash_fails_every_request_in_flight_then_the_worker_serves_again(model_factory: ModelFactory) -> None:
    folder = declaring(model_factory, SLEEPY, 3)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "fragile", max_batch_rows=1), LocalPlacement())
        await sk.start()
        try:
            pid = sk.pid
            _, out = await timed(sk, [req("slow-a", 2.0), req("slow-b", 2.0), req("crash")])
            assert all(isinstance(o, SidekickCrashedError) for o in out), out
            assert all("died while handling a request" in str(o) and "exit code 1" in str(o) for o in out)
            after = await sk.predict(req("fine"))
            assert after.column("text").to_pylist() == ["fine"]
            assert sk.restarts == 1 and sk.pid != pid
        finally:
            await sk.stop()

    run(scenario)


def test_a_merged_batch_that_crashes_beside_others_is_retried_one_by_one(model_factory: ModelFactory) -> None:
    folder = declaring(model_factory, SLEEPY, 2)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "merged", max_batch_rows=8), LocalPlacement())
        await sk.start()
        try:
            held = []
            for i in range(2):  # one batch on each slot
                held.append(asyncio.ensure_future(sk.predict(req(f"hold-{i}", 0.5))))
                await asyncio.sleep(0.05)
            queued = [asyncio.ensure_future(sk.predict(req(t))) for t in ("crash", "fine-1", "fine-2")]
            assert [t.column("text").to_pylist() for t in await asyncio.gather(*held)] == [["hold-0"], ["hold-1"]]
            out = await asyncio.gather(*queued, return_exceptions=True)
            assert isinstance(out[0], SidekickCrashedError)
            assert [o.column("text").to_pylist() for o in out[1:]] == [["fine-1"], ["fine-2"]]  # type: ignore[union-attr]
            assert sk.restarts == 2  # the merged batch, then "crash" alone
        finally:
            await sk.stop()

    run(scenario)


def test_a_cancelled_caller_no_longer_restarts_the_worker(model_factory: ModelFactory) -> None:
    folder = declaring(model_factory, SLEEPY, 2)

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "patient", max_batch_rows=1), LocalPlacement())
        await sk.start()
        try:
            pid = sk.pid
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(sk.predict(req("given-up", 1.0)), 0.1)
            start = time.monotonic()
            out = await sk.predict(req("next"))  # on the other slot, while the first still runs
            assert out.column("text").to_pylist() == ["next"]
            assert time.monotonic() - start < 0.8  # not behind the given-up one (0.9 s more)
            await asyncio.sleep(1.0)  # the late answer comes and is dropped
            assert (await sk.predict(req("last"))).column("text").to_pylist() == ["last"]
            assert sk.restarts == 0 and sk.pid == pid
        finally:
            await sk.stop()

    run(scenario)


def test_a_stream_and_requests_share_one_worker(model_factory: ModelFactory, tmp_path: Path) -> None:
    folder = model_factory("""
        return {"out": np.array([t.upper() for t in input_data["text"]], dtype=object)}
    """)
    with (folder / "main.py").open("a") as fh:
        fh.write(STREAMING)
    gate = tmp_path / "gate"

    async def scenario() -> None:
        sk = Sidekick(spec_for(folder, "mixed", concurrency=2), LocalPlacement())
        await sk.start()
        try:
            stream = sk.predict_stream(pa.table({"text": ["one two three"], "gate": [str(gate)]}))
            first = await anext(stream)  # the model now waits for the gate before its second chunk
            assert first.table.column("delta").to_pylist() == ["one"]
            # the stream holds one slot; requests pass it on the other
            answers = await asyncio.gather(*(sk.predict(one_row(text=t)) for t in ("a", "b", "c")))
            assert [a.column("out").to_pylist() for a in answers] == [["A"], ["B"], ["C"]]
            gate.touch()
            chunks, final = await collect(stream)
            assert [c.column("delta").to_pylist() for c in chunks] == [["two"], ["three"]]
            assert final.column("out").to_pylist() == ["ONE TWO THREE"]
            assert sk.restarts == 0
        finally:
            await sk.stop()

    run(scenario)
