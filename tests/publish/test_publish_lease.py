"""One builder per publish (D49, BuildLease): where replicas share a database, a publish another
live process is building is left to it, even by a runtime starting up (whose resume used to build
every unfinished publish again), and taken over once that builder's lease has lapsed. The other
replica is this test writing the row it would have written, into the centre's own database."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.publish.publish_helpers import make_pipeline, post, publish, wait_published
from tests.runtime.conftest import Server

COLUMNS = ("pipeline_id", "pipeline_version_id", "workspace_id", "engine_config", "replaces")


def test_a_publish_held_by_another_builder_is_left_to_it_until_its_lease_lapses(centre: Server, tmp_path: Path) -> None:
    version_id, model_id = make_pipeline(centre, tmp_path)
    done = publish(centre, version_id, model_id)
    centre.stop()
    db = sqlite3.connect(centre.data_dir / "runtime.db")
    with db:
        row = db.execute(f"SELECT {', '.join(COLUMNS)} FROM publishes WHERE id = ?", (done["id"],)).fetchone()
        now = time.time()
        held = db.execute(
            f"INSERT INTO publishes ({', '.join(COLUMNS)}, status, created_at, updated_at, builder, lease_until) "
            "VALUES (?, ?, ?, ?, ?, 'Publishing', ?, ?, 'another-replica', ?)", (*row, now, now, now + 3600)).lastrowid
    db.close()

    centre.start()  # its resume at start finds the publish unfinished, but held
    time.sleep(2)
    status = post(centre, "/pipelines/get_publish_status", {"id": held})
    assert status["status"] == "Publishing" and status["pipeline_url"] is None

    centre.stop()
    db = sqlite3.connect(centre.data_dir / "runtime.db")
    with db:  # that replica stopped: its lease lapses
        db.execute("UPDATE publishes SET lease_until = ? WHERE id = ?", (time.time() - 1, held))
    db.close()
    centre.start()
    taken = wait_published(centre, held)
    assert taken["status"] == "Published", taken["error"]
    assert taken["pipeline_url"].endswith(f"-{held}")
