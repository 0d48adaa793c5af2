"""A stream's settled segments (D63): a run skips the sealed segments earlier runs settled every row of,
reads what is new (late segments with old times too), and leaves a segment unsettled while another run
holds one of its rows. Real LogStore (sealed Parquet, compaction) + SQLite, the real scorers."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.listeners.listener_helpers import BAD, GOOD, llm_rows, now_ms
from tests.listeners.test_runs import _once, _svc, all_rows
from wallaroo_pulumi.runtime.services.listeners.engine import stream_id
from wallaroo_pulumi.runtime.services.listeners.row_keys import row_keys
from wallaroo_pulumi.runtime.services.listeners.store import TaskStore
from wallaroo_pulumi.runtime.store.logs import LogStore
from wallaroo_pulumi.runtime.store.logs import query as logquery

TOX = {"listener_model": {"name": "toxicity"}}
STREAM = stream_id("llm", "llm-toxicity-scores")


def _sealed(logstore, texts, t0):
    """Rows logged, then sealed into a Parquet segment of their own."""
    logstore.append("llm", llm_rows(texts, t0))
    logstore.pipeline_log("llm").cut()


def _scored_keys(logstore) -> list[str]:
    return all_rows(logstore, "llm-toxicity-scores").column("in.source_key").to_pylist()


def test_a_run_reads_only_what_its_stream_has_not_settled(db, logstore):
    t0 = now_ms() - 600_000
    _sealed(logstore, GOOD + BAD, t0)
    _sealed(logstore, GOOD, t0 + 1000)

    async def go():
        svc = await _svc(db, logstore)
        try:
            _, r1 = await _once(svc, **TOX)
            assert (r1["rows_read"], r1["rows_scored"]) == (8, 8), r1
            logquery.count_reads(True)
            _, r2 = await _once(svc, **TOX)
            assert (r2["status"], r2["rows_read"], r2["rows_scored"]) == ("succeeded", 0, 0), r2
            assert logquery.READS == [], "a settled segment was read again"
            assert any("settled 2 sealed segments" in x["line"] for x in svc.run_logs(r1["id"]))
            # new rows, sealed and still being written: only they are read
            _sealed(logstore, BAD, t0 + 2000)
            logstore.append("llm", llm_rows(GOOD[:1], t0 + 3000))
            _, r3 = await _once(svc, **TOX)
            assert (r3["rows_read"], r3["rows_scored"]) == (3, 3), r3
            # the segment still being written is read again until it is sealed (its claims say it is scored)
            _, r4 = await _once(svc, **TOX)
            assert (r4["rows_read"], r4["rows_scored"]) == (1, 0), r4
        finally:
            await svc.stop()
            logquery.count_reads(False)

    asyncio.run(go())
    keys = _scored_keys(logstore)
    assert len(keys) == 11 and len(set(keys)) == 11


def test_a_late_segment_with_old_times_is_scored(db, logstore):
    """An edge ships rows logged long ago: their segment is new, so the next run reads it."""
    t0 = now_ms() - 600_000
    _sealed(logstore, GOOD, t0 + 5000)

    async def go():
        svc = await _svc(db, logstore)
        try:
            _, r1 = await _once(svc, **TOX)
            assert r1["rows_scored"] == 3
            assert logstore.append_once("llm", "edge-1/segment-7", llm_rows(BAD, t0))
            _, r2 = await _once(svc, **TOX)
            assert (r2["rows_read"], r2["rows_scored"]) == (2, 2), r2
        finally:
            await svc.stop()

    asyncio.run(go())
    assert len(set(_scored_keys(logstore))) == 5


def test_a_segment_stays_unsettled_while_another_run_holds_one_of_its_rows(db, logstore):
    """That run may give its claim back (it fails): the row must still be scored by a later run."""
    t0 = now_ms() - 600_000
    _sealed(logstore, GOOD + BAD, t0)
    rows = logstore.query("llm", None, None, 100, "Asc", None).table
    keys = row_keys(rows, Counter())
    store = TaskStore(db)

    async def go():
        svc = await _svc(db, logstore)  # (claims of runs that are gone are settled as it starts)
        try:
            assert store.claim(STREAM, "other-run", keys[:1], [t0]).mine == [0]
            _, r1 = await _once(svc, **TOX)
            assert (r1["rows_read"], r1["rows_scored"]) == (5, 4), r1
            store.release(STREAM, keys[:1], "other-run")  # the other run failed
            _, r2 = await _once(svc, **TOX)
            assert (r2["rows_read"], r2["rows_scored"]) == (5, 1), r2
            _, r3 = await _once(svc, **TOX)
            assert (r3["rows_read"], r3["rows_scored"]) == (0, 0), r3
        finally:
            await svc.stop()

    asyncio.run(go())
    assert sorted(_scored_keys(logstore)) == sorted(keys)


def test_segments_merged_after_they_were_settled_stay_skipped(db, data_dir):
    logstore = LogStore(data_dir / "logs", compact_min_files=0)
    t0 = now_ms() - 600_000
    try:
        for i in range(4):
            _sealed(logstore, [GOOD[i % 3]], t0 + i * 1000)

        async def go():
            svc = await _svc(db, logstore)
            try:
                _, r1 = await _once(svc, **TOX)
                assert r1["rows_scored"] == 4
                plog = logstore.pipeline_log("llm")
                plog.compact_min_files = 4
                assert plog.compact() == 3  # four files are one now
                _, r2 = await _once(svc, **TOX)
                assert (r2["rows_read"], r2["rows_scored"]) == (0, 0), r2
                # new segments after the merged one: read, scored
                for i in range(2):
                    _sealed(logstore, [BAD[i]], t0 + 10_000 + i * 1000)
                _, r3 = await _once(svc, **TOX)
                assert (r3["rows_read"], r3["rows_scored"]) == (2, 2), r3
            finally:
                await svc.stop()

        asyncio.run(go())
    finally:
        logstore.close()
