"""`MergingQueue` driven by a fake worker (an async function, table in, table out): requests that
wait are merged and split back by rows, a bad request fails alone, crash retries are bounded."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest

from wallaroo_pulumi.runtime.core.errors import BadRequest
from wallaroo_pulumi.runtime.sidekick import SidekickCrashedError, SidekickError, SidekickPredictError
from wallaroo_pulumi.runtime.sidekick.batching import DynamicBatching, check_dynamic_batching
from wallaroo_pulumi.runtime.sidekick.merging import MergingQueue

from .sidekick_helpers import run


class FakeWorker:
    """Answers each row with its text and the size of the batch it came in. ``hold`` waits for
    the gate (the worker is busy), ``bad`` is a model error, ``boom*`` crashes the worker,
    ``short`` drops a row of a merged batch, ``gone`` is any other sidekick failure."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()

    async def __call__(self, table: pa.Table) -> pa.Table:
        texts = table.column("text").to_pylist()
        self.batches.append(texts)
        if "hold" in texts:
            await self.gate.wait()
        if any(t.startswith("boom") for t in texts):
            raise SidekickCrashedError(f"crashed on {','.join(texts)}", step_name="s")
        if "bad" in texts:
            raise SidekickPredictError("bad row in this batch", step_name="s", error_type="ValueError")
        if "gone" in texts:
            raise SidekickError("sidekick of step 's' is not running", step_name="s")
        n = len(texts) - 1 if "short" in texts and len(texts) > 1 else len(texts)
        return pa.table({"text": texts[:n], "batch_rows": [len(texts)] * n})


def rows(*texts: str) -> pa.Table:
    return pa.table({"text": list(texts)})


async def while_busy(queue: MergingQueue, worker: FakeWorker, *requests: pa.Table) -> list[pa.Table | BaseException]:
    """Send ``requests`` while the worker answers another one, so they wait together."""
    busy = asyncio.ensure_future(queue.submit(rows("hold")))
    await asyncio.sleep(0)
    calls = [asyncio.ensure_future(queue.submit(r)) for r in requests]
    await asyncio.sleep(0)
    assert queue.waiting == len(requests)
    worker.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert (await busy).column("batch_rows").to_pylist() == [1]  # an idle worker got it alone
    return results


def texts_of(results: list[pa.Table | BaseException]) -> list[list[str] | BaseException]:
    return [r.column("text").to_pylist() if isinstance(r, pa.Table) else r for r in results]


def test_waiting_requests_are_merged_and_split_back_by_rows() -> None:
    async def scenario() -> None:
        worker = FakeWorker()
        queue = MergingQueue(worker, step_name="s", max_batch_rows=8)
        results = await while_busy(queue, worker, rows("a"), rows("b1", "b2", "b3"), rows("c"))
        assert texts_of(results) == [["a"], ["b1", "b2", "b3"], ["c"]]
        assert worker.batches == [["hold"], ["a", "b1", "b2", "b3", "c"]]
        assert queue.waiting == 0

    run(scenario)


def test_a_batch_never_exceeds_max_batch_rows_and_keeps_the_order() -> None:
    async def scenario() -> None:
        worker = FakeWorker()
        queue = MergingQueue(worker, step_name="s", max_batch_rows=3)
        requests = [rows("a"), rows("b"), rows("c1", "c2"), rows("d"), rows("e"), rows("f")]
        results = await while_busy(queue, worker, *requests)
        assert texts_of(results) == [r.column("text").to_pylist() for r in requests]
        assert worker.batches[1:] == [["a", "b"], ["c1", "c2", "d"], ["e", "f"]]

    run(scenario)


def test_only_requests_of_one_schema_are_merged() -> None:
    async def scenario() -> None:
        worker = FakeWorker()
        queue = MergingQueue(worker, step_name="s", max_batch_rows=8)
        other = pa.table({"text": ["x"], "extra": [1]})
        results = await while_busy(queue, worker, rows("a"), other, rows("b"))
        assert texts_of(results) == [["a"], ["x"], ["b"]]
        assert worker.batches[1:] == [["a", "b"], ["x"]]

    run(scenario)


def test_a_bad_request_fails_alone() -> None:
    async def scenario() -> None:
        worker = FakeWorker()
        queue = MergingQueue(worker, step_name="s", max_batch_rows=8)
        results = await while_busy(queue, worker, rows("ok1"), rows("bad"), rows("ok2"))
        assert isinstance(results[1], SidekickPredictError) and results[1].error_type == "ValueError"
        assert texts_of([results[0], results[2]]) == [["ok1"], ["ok2"]]
        assert worker.batches[1:] == [["ok1", "bad", "ok2"], ["ok1"], ["bad"], ["ok2"]]  # merged, then one by one

    run(scenario)


def test_an_answer_with_a_row_missing_is_asked_again_one_by_one() -> None:
    async def scenario() -> None:
        worker = FakeWorker()
        queue = MergingQueue(worker, step_name="s", max_batch_rows=8)
        results = await while_busy(queue, worker, rows("a"), rows("short"), rows("b"))
        assert texts_of(results) == [["a"], ["short"], ["b"]]
        assert [r.column("batch_rows").to_pylist() for r in results] == [[1], [1], [1]]  # type: ignore[union-attr]

    run(scenario)


def test_crash_retries_stop_at_the_second_request_that_crashes_alone() -> None:
    async def scenario() -> None:
        worker = FakeWorker()
        queue = MergingQueue(worker, step_name="s", max_batch_rows=8)
        results = await while_busy(queue, worker, rows("ok1"), rows("boom1"), rows("ok2"))
        assert texts_of([results[0], results[2]]) == [["ok1"], ["ok2"]]  # only the poison request fails
        assert isinstance(results[1], SidekickCrashedError) and str(results[1]) == "crashed on boom1"

        worker.gate.clear()
        worker.batches.clear()
        results = await while_busy(queue, worker, rows("boom1"), rows("boom2"), rows("boom3"), rows("ok"))
        assert all(isinstance(r, SidekickCrashedError) for r in results), results
        assert worker.batches[1:] == [["boom1", "boom2", "boom3", "ok"], ["boom1"], ["boom2"]]  # the rest unsent
        assert str(results[2]) == str(results[3]) == "crashed on boom2 (not retried: 2 requests crashed it alone)"

    run(scenario)


def test_any_other_failure_of_a_merged_batch_fails_all_of_it_unretried() -> None:
    async def scenario() -> None:
        worker = FakeWorker()
        queue = MergingQueue(worker, step_name="s", max_batch_rows=8)
        results = await while_busy(queue, worker, rows("a"), rows("gone"))
        assert all(isinstance(r, SidekickError) and "not running" in str(r) for r in results)
        assert worker.batches[1:] == [["a", "gone"]]

    run(scenario)


def test_a_caller_that_gave_up_is_not_sent() -> None:
    async def scenario() -> None:
        worker = FakeWorker()
        queue = MergingQueue(worker, step_name="s", max_batch_rows=8)
        busy = asyncio.ensure_future(queue.submit(rows("hold")))
        await asyncio.sleep(0)
        gives_up = asyncio.ensure_future(queue.submit(rows("late")))
        stays = asyncio.ensure_future(queue.submit(rows("b")))
        await asyncio.sleep(0)
        gives_up.cancel()
        worker.gate.set()
        assert (await stays).column("text").to_pylist() == ["b"]
        await busy
        assert worker.batches == [["hold"], ["b"]]

    run(scenario)


def test_cancelling_the_sender_fails_the_batch_in_flight_and_fail_waiting_the_rest() -> None:
    async def scenario() -> None:
        worker = FakeWorker()
        queue = MergingQueue(worker, step_name="s", max_batch_rows=8)
        in_flight = asyncio.ensure_future(queue.submit(rows("hold")))
        await asyncio.sleep(0)
        queued = asyncio.ensure_future(queue.submit(rows("b")))
        await asyncio.sleep(0)
        sender = queue.sender
        assert sender is not None
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender
        queue.fail_waiting(SidekickError("stopped", step_name="s"))
        with pytest.raises(SidekickError, match="sidekick of step 's' was stopped during a request"):
            await in_flight
        with pytest.raises(SidekickError, match="^stopped$"):
            await queued

    run(scenario)


# -- dynamic batching (a model version's dynamic_batching_config) ----------------------------
def test_dynamic_batching_holds_an_idle_workers_batch_until_its_target() -> None:
    """Requests arriving one after another at an idle worker go as one batch once the target is
    reached, well before the delay; alone, a request waits the whole delay, then goes."""
    async def scenario() -> None:
        worker = FakeWorker()
        queue = MergingQueue(worker, step_name="s", max_batch_rows=64,
                             batching=DynamicBatching(max_batch_delay_ms=5000, batch_size_target=3))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first = asyncio.ensure_future(queue.submit(rows("a")))
        await asyncio.sleep(0.05)  # the sender is holding "a" for more
        assert worker.batches == []
        rest = [asyncio.ensure_future(queue.submit(rows(t))) for t in ("b", "c")]
        results = await asyncio.gather(first, *rest)
        assert loop.time() - t0 < 2.5  # sent at the target, not at the 5 s delay
        assert worker.batches == [["a", "b", "c"]]
        assert [r.column("batch_rows").to_pylist() for r in results] == [[3], [3], [3]]

        worker.batches.clear()
        queue = MergingQueue(worker, step_name="s", max_batch_rows=64,
                             batching=DynamicBatching(max_batch_delay_ms=300, batch_size_target=3))
        t0 = loop.time()
        alone = await queue.submit(rows("z"))
        assert 0.29 <= loop.time() - t0 < 3.0 and alone.column("batch_rows").to_pylist() == [1]

    run(scenario)


def test_dynamic_batching_never_exceeds_its_limit() -> None:
    async def scenario() -> None:
        worker = FakeWorker()
        queue = MergingQueue(worker, step_name="s", max_batch_rows=64,
                             batching=DynamicBatching(max_batch_delay_ms=50, batch_size_target=2, batch_size_limit=2))
        results = await asyncio.gather(*(queue.submit(rows(t)) for t in "abcde"))
        assert [r.column("text").to_pylist() for r in results] == [[t] for t in "abcde"]
        assert worker.batches == [["a", "b"], ["c", "d"], ["e"]]

    run(scenario)


def test_dynamic_batching_config_is_checked_by_field() -> None:
    with pytest.raises(BadRequest, match=r"dynamic_batching_config\.batch_size_target: Input should be greater than 0"):
        check_dynamic_batching({"batch_size_target": 0})
    with pytest.raises(BadRequest, match=r"dynamic_batching_config\.max_batch_delay: Extra inputs are not permitted"):
        check_dynamic_batching({"max_batch_delay": 5})
    with pytest.raises(BadRequest, match=r"dynamic_batching_config: batch_size_limit \(2\) is below batch_size_target \(4\)"):
        check_dynamic_batching({"batch_size_limit": 2})
    assert check_dynamic_batching({}) == DynamicBatching(max_batch_delay_ms=10, batch_size_target=4)  # the SDK's defaults
