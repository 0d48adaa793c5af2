"""Listener runs over real logged inferences (real LogStore + SQLite), scored by the real scorers."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from tests.listeners.listener_helpers import BAD, GOOD, llm_rows, now_ms
from wallaroo_pulumi import scorers as S
from wallaroo_pulumi.runtime.core.metrics import Metrics
from wallaroo_pulumi.runtime.services.listeners import ListenerService
from wallaroo_pulumi.runtime.services.listeners.engine import reconcile, stream_id
from wallaroo_pulumi.runtime.services.listeners.row_keys import row_keys

MODE = "scorer"  # the run engine under test; test_runtime.py covers sidekick processes


def args(**kw):
    a = {"monitored_pipeline": "llm", "listener_model": {"name": "combined"}, "window_seconds": 3600, "batch_size": 4}
    a.update(kw)
    return a


def all_rows(logstore, pipeline):
    page = logstore.query(pipeline, None, None, 1_000_000, "Asc", None)
    return page.table


async def _svc(db, logstore, **kw):
    svc = ListenerService(db, logstore, executor=kw.pop("executor", MODE), tick_seconds=0.05, **kw)
    await svc.start()
    return svc


async def _once(svc, **kw):
    t = await svc.create_task(name="l", workspace_id=1, json_args=args(**kw))
    runs = svc.list_runs(t["id"])
    return t, await svc.wait_run(runs[0]["id"])


def test_run_scores_logged_inferences_and_stores_them_as_logs(db, logstore):
    t0 = now_ms() - 60_000
    texts = GOOD + BAD + [None]
    logstore.append("llm", llm_rows(texts, t0, errors=[None] * 5 + ["llm step failed"]))

    async def go():
        svc = await _svc(db, logstore)
        try:
            task, r = await _once(svc)
            assert r["status"] == "succeeded", r
            assert (r["rows_read"], r["rows_scored"], r["rows_skipped"]) == (6, 5, 1)
            assert task["status"] == "started" and svc.get_task(task["id"])["last_run_status"] == "succeeded"
            logs = [x["line"] for x in svc.run_logs(r["id"])]
            assert any("progress" in line for line in logs) and any(line.startswith("done") for line in logs)
        finally:
            await svc.stop()

    asyncio.run(go())
    out = all_rows(logstore, "llm-combined-scores")
    assert out.num_rows == 5
    expect = S.score_all(GOOD + BAD)
    for col, vals in expect.items():
        np.testing.assert_allclose(out.column(f"out.{col}").to_numpy(), vals, atol=1e-12)
    assert out.column("in.text").to_pylist() == GOOD + BAD
    src_times = [t0 + i * 10 for i in range(5)]
    assert out.column("time").cast(pa.int64()).to_pylist() == src_times
    assert out.column("in.source_time").cast(pa.int64()).to_pylist() == src_times
    assert len(set(out.column("in.source_key").to_pylist())) == 5
    assert set(out.column("metadata.step").to_pylist()) == {"combined"}
    assert set(out.column("metadata.partition").to_pylist()) == {"engine-0"}
    # the toxic rows are the toxic ones
    tox = out.column("out.toxicity").to_numpy()
    assert (tox[:3] < 0.3).all() and (tox[3:] > 0.9).all()


def test_second_run_scores_only_new_rows_even_identical_ones(db, logstore):
    t0 = now_ms() - 60_000
    logstore.append("llm", llm_rows(GOOD + BAD, t0))

    async def go():
        svc = await _svc(db, logstore)
        try:
            _, r1 = await _once(svc, listener_model={"name": "toxicity"})
            assert r1["rows_scored"] == 5
            _, r2 = await _once(svc, listener_model={"name": "toxicity"})
            assert (r2["status"], r2["rows_read"], r2["rows_scored"]) == ("succeeded", 5, 0)
            # new rows: two identical to an old one but at a new time, plus two identical to each other
            logstore.append("llm", llm_rows([GOOD[0], BAD[0]], t0 + 10_000))
            logstore.append("llm", llm_rows([GOOD[1]], t0 + 20_000))
            logstore.append("llm", llm_rows([GOOD[1]], t0 + 20_000))
            _, r3 = await _once(svc, listener_model={"name": "toxicity"})
            assert (r3["rows_read"], r3["rows_scored"]) == (9, 4)
        finally:
            await svc.stop()

    asyncio.run(go())
    out = all_rows(logstore, "llm-toxicity-scores")
    assert out.num_rows == 9
    assert out.column_names.count("out.toxicity") == 1 and "out.hate" not in out.column_names
    keys = out.column("in.source_key").to_pylist()
    assert len(set(keys)) == 9


def test_overlapping_runs_score_each_row_exactly_once(db, logstore):
    t0 = now_ms() - 600_000
    rng = np.random.default_rng(1)
    texts = [(GOOD + BAD)[i] for i in rng.integers(0, 5, 3000)]
    logstore.append("llm", llm_rows(texts, t0, step_ms=1))

    async def go():
        svc = await _svc(db, logstore)
        try:
            tasks = [await svc.create_task(name=f"l{i}", workspace_id=1, json_args=args(batch_size=50))
                     for i in range(3)]
            runs = [svc.list_runs(t["id"])[0] for t in tasks]
            done = [await svc.wait_run(r["id"]) for r in runs]
            assert all(r["status"] == "succeeded" for r in done), done
            assert sum(r["rows_scored"] for r in done) == 3000
        finally:
            await svc.stop()

    asyncio.run(go())
    out = all_rows(logstore, "llm-combined-scores")
    keys = out.column("in.source_key").to_pylist()
    assert len(keys) == 3000 and len(set(keys)) == 3000


def test_claims_of_a_dead_run_are_reconciled(db, logstore):
    """A crash after the append but before the commit must not score the rows again; a crash
    before the append must score them."""
    from wallaroo_pulumi.runtime.services.listeners.store import TaskStore

    t0 = now_ms() - 60_000
    logstore.append("llm", llm_rows(GOOD + BAD, t0))

    async def first():
        svc = await _svc(db, logstore)
        try:
            _, r = await _once(svc, listener_model={"name": "sentiment"})
            assert r["rows_scored"] == 5
        finally:
            await svc.stop()

    asyncio.run(first())
    store = TaskStore(db)
    stream = stream_id("llm", "llm-sentiment-scores")
    out = all_rows(logstore, "llm-sentiment-scores")
    keys = out.column("in.source_key").to_pylist()
    times = out.column("time").cast(pa.int64()).to_pylist()
    # pretend a dead run had claimed rows 0-1 (appended) and 2-4 (never appended)
    store.forget_stream(stream)
    assert store.claim(stream, "dead-run", keys, times).mine == [0, 1, 2, 3, 4]
    # rows 0-4 are in the score pipeline; make 2-4 unknown there by re-keying their claims
    fake = [k + "-never-appended" for k in keys[2:]]
    store.release(stream, keys[2:])
    store.claim(stream, "dead-run", fake, times[2:])
    n = reconcile(store, logstore, live_runs=set())
    assert n == 5
    assert store.scored_count(stream) == 2
    assert store.stale_claims(set()) == {}


def test_a_run_whose_process_stops_heartbeating_is_failed_and_its_rows_rescored(db, logstore):
    """A serving replica killed mid-run leaves its run `running` with claims held: the scheduler
    fails it once its lease lapses and settles its claims, so the next run scores those rows.
    A run elsewhere that keeps heartbeating is left alone, claims and all."""
    from wallaroo_pulumi.runtime.services.listeners.store import TaskStore

    t0 = now_ms() - 60_000
    logstore.append("llm", llm_rows(GOOD + BAD, t0))
    store = TaskStore(db)
    stream = stream_id("llm", "llm-sentiment-scores")
    keys = row_keys(all_rows(logstore, "llm"), Counter())

    async def go():
        svc = await _svc(db, logstore, role="scheduler", lease_seconds=0.5, metrics=metrics)
        beating: asyncio.Task[None] | None = None
        try:
            t = await svc.create_task(name="l", workspace_id=1, schedule="0 0 1 1 *",
                                      json_args=args(listener_model={"name": "sentiment"}))
            dead = store.create_run(t["id"], "killed-replica", None)
            alive = store.create_run(t["id"], "live-replica", None)
            store.claim(stream, dead["id"], keys[:3], [t0] * 3)
            store.claim(stream, alive["id"], keys[3:], [t0] * 2)
            deadline = asyncio.get_running_loop().time() + 10
            while store.get_run(dead["id"])["status"] == "running":
                store.beat([alive["id"]])  # the live replica's heartbeat
                assert asyncio.get_running_loop().time() < deadline, "the dead run was never settled"
                await asyncio.sleep(0.05)
            async def live_replica() -> None:  # heartbeats on, however long the rerun below takes
                while True:
                    await asyncio.to_thread(store.beat, [alive["id"]])
                    await asyncio.sleep(0.05)

            beating = asyncio.create_task(live_replica())
            await asyncio.sleep(1.0)  # well past the lease: the live one stays
            claims = store.stale_claims(set())
            assert sorted(k for k, _ in claims[stream]) == sorted(keys[3:]), claims  # only the live run's remain
            _, rerun = await _once(svc, listener_model={"name": "sentiment"})
            return store.get_run(dead["id"]), store.get_run(alive["id"]), svc.run_logs(dead["id"]), rerun
        finally:
            if beating is not None:
                beating.cancel()
            await svc.stop()

    metrics = Metrics()
    dead, alive, logs, rerun = asyncio.run(go())
    assert dead["status"] == "failed" and "no heartbeat" in dead["error"], dead
    assert any("no heartbeat" in line["line"] for line in logs)
    assert alive["status"] == "running"
    assert rerun["status"] == "succeeded" and rerun["rows_scored"] == 3, rerun  # the dead run's 3 rows
    labels = {"monitored_pipeline": "llm", "listener": "sentiment"}
    runs = metrics.registry.get_sample_value("wallaroo_listener_runs_total", {**labels, "status": "failed"})
    assert runs == 1  # the dead run, counted by the process that settled it
    assert metrics.registry.get_sample_value("wallaroo_listener_runs_total", {**labels, "status": "succeeded"}) == 1
    assert metrics.registry.get_sample_value("wallaroo_listener_rows_scored_total", labels) == 3
    # and a lease that lapsed on a live run: its late cleanup leaves others' claims alone
    store.claim(stream, "next-run", keys[:1], [t0])
    store.release(stream, keys[:1], "killed-replica")
    assert store.claim(stream, "third-run", keys[:1], [t0]).mine == []


def test_failing_listener_marks_the_run_failed_with_its_error(db, logstore, tmp_path):
    from wallaroo_pulumi.runtime.services.listeners.executor import ListenerModelRef

    logstore.append("llm", llm_rows(GOOD, now_ms() - 1000))

    def broken(ws, name, version):
        if name != "broken":
            raise LookupError(name)
        return ListenerModelRef(name="broken", version="1", model_dir=tmp_path, scorer="nope")

    async def go():
        svc = await _svc(db, logstore, resolver=broken)
        try:
            _, r = await _once(svc, listener_model={"name": "broken"})
            assert r["status"] == "failed"
            assert "broken" in r["error"] and "nope" in r["error"]
            logs = " ".join(x["line"] for x in svc.run_logs(r["id"]))
            assert "failed" in logs
            # the rows stay unscored, so a fixed listener still gets them
            _, r2 = await _once(svc, listener_model={"name": "hate"})
            assert r2["rows_scored"] == 3
        finally:
            await svc.stop()

    asyncio.run(go())


def test_unknown_listener_and_bad_json_are_rejected_up_front(db, logstore):
    from wallaroo_pulumi.runtime.services.listeners.errors import BadListenerRequest

    async def go():
        svc = await _svc(db, logstore)
        try:
            with pytest.raises(BadListenerRequest, match="listener_model: no model named 'nope'.*toxicity"):
                await svc.create_task(name="x", workspace_id=1, json_args=args(listener_model={"name": "nope"}))
            with pytest.raises(BadListenerRequest, match="json.monitored_pipeline"):
                await svc.create_task(name="x", workspace_id=1, json_args={"listener_model": {"name": "toxicity"}})
            with pytest.raises(BadListenerRequest, match="json.batch_size"):
                await svc.create_task(name="x", workspace_id=1, json_args=args(batch_size=0))
        finally:
            await svc.stop()

    asyncio.run(go())


def test_missing_text_field_fails_naming_it(db, logstore):
    logstore.append("llm", llm_rows(GOOD, now_ms() - 1000))

    async def go():
        svc = await _svc(db, logstore)
        try:
            _, r = await _once(svc, text_field="out.answer")
            assert r["status"] == "failed" and "text_field 'out.answer'" in r["error"]
            assert "out.generated_text" in r["error"]
        finally:
            await svc.stop()

    asyncio.run(go())


def test_timeout_and_kill(db, logstore):
    from wallaroo_pulumi.runtime.services.listeners import executor as ex

    logstore.append("llm", llm_rows(GOOD * 40, now_ms() - 60_000))

    class Slow(ex.ScorerExecutor):
        async def predict(self, table):
            await asyncio.sleep(0.5)  # 60 batches of 2: a full run takes 30 s, far past the timeout
            return await super().predict(table)

    orig = ex.make_executor

    def make(ref, mode, placement):
        return Slow(ref)

    async def go():
        import wallaroo_pulumi.runtime.services.listeners.executor_cache as cache_mod

        cache_mod.make_executor = make
        svc = await _svc(db, logstore)
        try:
            # 8 s: room to load the scorer on a busy machine, still a quarter of a whole run
            t = await svc.create_task(name="slow", workspace_id=1, json_args=args(batch_size=2), timeout=8)
            r = await svc.wait_run(svc.list_runs(t["id"])[0]["id"])
            assert r["status"] == "timed_out" and "timeout" in r["error"]
            assert 0 < r["rows_scored"] < 120
            t2 = await svc.create_task(name="slow2", workspace_id=1, json_args=args(batch_size=2))
            await asyncio.sleep(0.5)
            killed = await svc.kill_task(t2["id"])
            assert killed["status"] == "killed"
            r2 = svc.list_runs(t2["id"])[0]
            assert r2["status"] == "killed"
            # every row is scored at most once across the three runs, and the rest get scored later
            cache_mod.make_executor = orig
            _, r3 = await _once(svc)
            assert r3["status"] == "succeeded"
        finally:
            cache_mod.make_executor = orig
            await svc.stop()

    asyncio.run(go())
    out = all_rows(logstore, "llm-combined-scores")
    keys = out.column("in.source_key").to_pylist()
    assert len(keys) == 120 and len(set(keys)) == 120


def test_scheduled_task_fires_on_a_seconds_cron(db, logstore):
    logstore.append("llm", llm_rows(GOOD, now_ms() - 1000))

    async def go():
        svc = await _svc(db, logstore)
        try:
            t = await svc.create_task(name="cron", workspace_id=1, json_args=args(), schedule="* * * * * *")
            assert t["status"] == "started" and t["next_run"] is not None
            await asyncio.sleep(3.3)
            runs = svc.list_runs(t["id"])
            assert len(runs) >= 2
            ticks = [r["tick"] for r in runs]
            assert len(ticks) == len(set(ticks))
            await svc.kill_task(t["id"])
            n = len(svc.list_runs(t["id"]))
            await asyncio.sleep(1.5)
            assert len(svc.list_runs(t["id"])) == n
        finally:
            await svc.stop()

    asyncio.run(go())
    out = all_rows(logstore, "llm-combined-scores")
    assert out.num_rows == 3


def test_missed_ticks_run_once_and_no_tick_twice(db, logstore):
    from wallaroo_pulumi.runtime.services.listeners.cron import due_tick

    assert due_tick("*/5 * * * *", 0.0, 3600.0) == 3600.0
    assert due_tick("*/5 * * * *", 3600.0, 3600.0) is None
    assert due_tick("*/5 * * * *", 3000.0, 3599.0) == 3300.0

    async def go():
        svc = await _svc(db, logstore)
        try:
            t = await svc.create_task(name="m", workspace_id=1, json_args=args(), schedule="*/5 * * * *")
            svc.store.update_task(t["id"], last_tick=t["created_at"] - 7200)  # "down" for 2 hours
            await svc.scheduler.schedule_once()
            await svc.scheduler.schedule_once()
            runs = svc.list_runs(t["id"])
            assert len(runs) == 1
            assert "missed" in " ".join(x["line"] for x in svc.run_logs(runs[0]["id"]))
        finally:
            await svc.stop()

    asyncio.run(go())


def test_bad_cron_is_rejected_naming_schedule(db, logstore):
    from wallaroo_pulumi.runtime.services.listeners.errors import BadListenerRequest

    async def go():
        svc = await _svc(db, logstore)
        try:
            for bad in ("every hour", "61 * * * *", "* * *", "", "0 0 * * * 70"):
                with pytest.raises(BadListenerRequest) as e:
                    await svc.create_task(name="c", workspace_id=1, json_args=args(), schedule=bad)
                assert e.value.message.startswith("schedule:") and "e.g. '0 * * * *'" in e.value.message
            assert svc.list_tasks() == []
        finally:
            await svc.stop()

    asyncio.run(go())


@pytest.mark.parametrize("mode", ["inprocess", "sidekick"])
def test_run_through_the_listener_byop_folder(db, logstore, mode):
    """The same run with the listener's BYOP folder loaded through mac, in-process or in its own
    sidekick process."""
    logstore.append("llm", llm_rows(GOOD + BAD, now_ms() - 60_000))

    async def go():
        svc = await _svc(db, logstore, executor=mode)
        try:
            _, r = await _once(svc, listener_model={"name": "hate"})
            assert r["status"] == "succeeded", r
            assert r["rows_scored"] == 5
        finally:
            await svc.stop()

    asyncio.run(go())
    out = all_rows(logstore, "llm-hate-scores")
    np.testing.assert_allclose(out.column("out.hate").to_numpy(), S.score_hate(GOOD + BAD)["hate"])


def test_a_run_over_its_memory_cap_fails_with_a_clear_error(db, logstore):
    t0 = now_ms() - 60_000
    logstore.append("llm", llm_rows((GOOD + BAD) * 40, t0))

    async def go():
        svc = await _svc(db, logstore)
        try:
            _, r = await _once(svc, page_size=200, max_memory_mb=0.01)
            assert r["status"] == "failed", r
            assert "max_memory_mb" in r["error"] and "page_size 200" in r["error"] and "0.01 MB" in r["error"], r
            assert r["rows_scored"] == 0
            _, ok = await _once(svc, page_size=200)  # the default cap holds a 200-row page easily
            assert ok["status"] == "succeeded" and ok["rows_scored"] == 200, ok
        finally:
            await svc.stop()

    asyncio.run(go())


def test_duplicate_counts_stay_bounded_by_the_page_not_the_window(tmp_path):
    """Identical rows (same time, same content) keep distinct keys across pages while the counts a
    run keeps are pruned below the store's floor: a window of many sealed segments holds only the
    counts of the segment being read."""
    from wallaroo_pulumi.runtime.services.listeners.row_keys import prune_seen
    from wallaroo_pulumi.runtime.store.logs import LogStore

    store = LogStore(tmp_path, seal_after_s=0, compact_min_files=0)  # (merged, the bound is one 16k-row group)
    t0 = now_ms() - 3_600_000
    for i in range(5):  # five sealed segments, each 1000 rows 1 ms apart, the last row of each duplicated
        table = llm_rows([f"text {i} {j}" for j in range(999)], t0 + i * 100_000)
        store.append("llm", table.take(list(range(999)) + [998]))
        store._log("llm").close()
    seen, keys, most, cursor = Counter(), [], 0, None
    while True:
        page = store.query("llm", limit=500, cursor=cursor)
        keys += row_keys(page.table, seen)
        prune_seen(seen, page.floor_ms)
        most = max(most, len(seen))
        if page.status == "All" or page.cursor is None:
            break
        cursor = page.cursor
    assert len(keys) == 5000 and len(set(keys)) == 5000  # the duplicates got :1
    assert sum(k.endswith(":1") for k in keys) == 5
    assert most <= 1000, most  # one segment's worth, not the window's 5000


def test_scores_carry_the_model_that_served_each_row(db, logstore):
    """A split's rows name their model in out._model_split; a plain row, its metadata.last_model:
    each score row says which model served the row it scores, so scores compare per model version."""
    t0 = now_ms() - 60_000
    rows = llm_rows((GOOD + BAD)[:4], t0)
    a = json.dumps({"name": "llm-a", "version": "v-a", "sha": "sa"}, separators=(",", ":"))
    b = json.dumps({"name": "llm-b", "version": "v-b", "sha": "sb"}, separators=(",", ":"))
    # the last row has no split column value (a plain step answered): its metadata.last_model names the model
    rows = rows.append_column("out._model_split", pa.array([[a], [b], [a], None], pa.list_(pa.string())))
    logstore.append("llm", rows)

    async def go():
        svc = await _svc(db, logstore)
        try:
            _, r = await _once(svc)
            assert r["status"] == "succeeded", r
        finally:
            await svc.stop()

    asyncio.run(go())
    out = all_rows(logstore, "llm-combined-scores")
    served = [json.loads(m) for m in out.column("in.source_model").to_pylist()]
    assert [m["name"] for m in served] == ["llm-a", "llm-b", "llm-a", "llm"]
    assert served[1] == {"name": "llm-b", "version": "v-b", "sha": "sb"}
    assert served[3] == {"name": "llm", "version": None, "sha": "x"}
