"""Writers in separate processes on one PostgreSQL database, as replicas on separate hosts:
each cron tick is claimed once, each source row is claimed by one run, a run is settled once."""

from __future__ import annotations

import multiprocessing as mp

from wallaroo_pulumi.runtime.services.listeners.store import TaskStore
from wallaroo_pulumi.runtime.store.db_postgres import PostgresDatabase
from wallaroo_pulumi.testing.postgres import PostgresServer

WRITERS = 4
TICKS = 40
KEYS = [f"row-{i}" for i in range(300)]


def _task(store: TaskStore) -> str:
    return store.create_task(
        name="t", workspace_id=1, orch_id=None, monitored_pipeline="p", listener_model={"name": "toxicity"},
        schedule="* * * * * *", window_seconds=60, timeout_seconds=60, args={}, next_run=0, last_tick=None,
    )["id"]


def _writer(url: str, task_id: str, me: int, out: mp.Queue) -> None:
    store = TaskStore(PostgresDatabase(url, max_connections=2))
    ticks = [t for t in range(1, TICKS + 1) if store.claim_tick(task_id, float(t), float(t + 1))]
    run = store.create_run(task_id, f"writer-{me}", None)["id"]
    # every writer offers every key, in its own order, in small batches
    order = KEYS[me::WRITERS] + [k for i, k in enumerate(KEYS) if i % WRITERS != me]
    claimed: list[str] = []
    for i in range(0, len(order), 25):
        batch = order[i : i + 25]
        claimed += [batch[j] for j in store.claim("stream", run, batch, [0] * len(batch)).mine]
    store.mark_done("stream", claimed, run)
    out.put((me, ticks, claimed, run))


def test_ticks_and_row_claims_are_won_once_across_processes(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    store = TaskStore(PostgresDatabase(url))
    task_id = _task(store)
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, task_id, i, out)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    ticks = [t for _, won, _, _ in results for t in won]
    assert sorted(ticks) == list(range(1, TICKS + 1))  # each tick fired once, none lost
    claimed = [k for _, _, keys, _ in results for k in keys]
    assert sorted(claimed) == sorted(KEYS)  # each row claimed by exactly one run
    assert store.scored_count("stream") == len(KEYS)
    # a run is settled once: the first finish wins, a second (another replica's lease check) is refused
    run = results[0][3]
    assert store.finish_run(run, "succeeded") is True
    assert store.finish_run(run, "failed", "lease expired") is False
    assert store.get_run(run)["status"] == "succeeded"
