"""Request merging through a real worker (`test_merging.py` drives the queue with a fake one)."""

from __future__ import annotations

import asyncio
import time

import pyarrow as pa

from wallaroo_pulumi.runtime.sidekick import LocalPlacement, Sidekick, SidekickCrashedError, SidekickError, SidekickPredictError

from .sidekick_helpers import ModelFactory, run, spec_for

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
        sk = Sidekick(spec_for(folder, "merging", max_batch_rows=8), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "poison"), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "alone", max_batch_rows=1), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "isolating"), LocalPlacement())
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
        sk = Sidekick(spec_for(folder, "stopping"), LocalPlacement())
        await sk.start()
        calls = [asyncio.ensure_future(sk.predict(_rows([f"r{i}"], sleep=2.0))) for i in range(3)]
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await sk.stop()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        assert time.monotonic() - t0 < 4
        assert all(isinstance(r, SidekickError) and "stopped" in str(r) for r in results), results

    run(scenario)
