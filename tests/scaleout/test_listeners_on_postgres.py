"""The listener store tests that matter (exactly-once claims, leases, dead runs, cron ticks,
settled segments),
run unchanged against PostgreSQL: the same functions as in tests/listeners, with `db` a
PostgresDatabase on a fresh database of the session's server."""

from collections.abc import Iterator

import pytest

from tests.listeners.conftest import data_dir, logstore  # noqa: F401 - fixtures
from tests.listeners.test_runs import (  # noqa: F401
    test_a_run_whose_process_stops_heartbeating_is_failed_and_its_rows_rescored,
    test_claims_of_a_dead_run_are_reconciled,
    test_missed_ticks_run_once_and_no_tick_twice,
    test_overlapping_runs_score_each_row_exactly_once,
    test_run_scores_logged_inferences_and_stores_them_as_logs,
    test_scheduled_task_fires_on_a_seconds_cron,
    test_second_run_scores_only_new_rows_even_identical_ones,
    test_timeout_and_kill,
)
from tests.listeners.test_settled import (  # noqa: F401
    test_a_run_reads_only_what_its_stream_has_not_settled,
    test_a_segment_stays_unsettled_while_another_run_holds_one_of_its_rows,
)
from wallaroo_pulumi.runtime.store.db_postgres import PostgresDatabase
from wallaroo_pulumi.testing.postgres import PostgresServer


@pytest.fixture
def db(postgres: PostgresServer) -> Iterator[PostgresDatabase]:
    d = PostgresDatabase(postgres.new_database())
    yield d
    d.close()
