"""Exactly once across a crash at the centre between storing a shipped segment's rows and recording
the shipment: the centre's data dir is left as that crash leaves it (the rows in the log, no record
of the shipment), and the edge's resend of the segment is answered as a duplicate, its rows there once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pyarrow as pa

from tests.publish.conftest import centre_args, centre_env
from tests.publish.publish_helpers import PIPELINE, centre_rows, make_pipeline, post, publish
from tests.runtime.conftest import Server
from wallaroo_pulumi.ports import free_port
from wallaroo_pulumi.runtime.services.publish.bundle import decode_bundle
from wallaroo_pulumi.testing.oci_registry import OciRegistry as RegistryServer


def segment() -> bytes:
    """Three inference log rows as an edge ships them: an Arrow IPC stream."""
    table = pa.table({"time": pa.array([1_700_000_000_000 + i for i in range(3)], pa.timestamp("ms", tz="UTC")),
                      "in.x": [1.0, 2.0, 3.0], "out.y": [2.0, 4.0, 6.0]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def ship(centre: Server, edge_key: str, number: int) -> dict:
    answer = httpx.post(f"{centre.url}/v1/api/edge/ship_logs", content=segment(), timeout=30, headers={
        "Authorization": f"Bearer {edge_key}", "Content-Type": "application/vnd.apache.arrow.stream",
        "X-Edge-Segment": str(number), "X-Edge-Dropped": "0"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_segment_resent_after_a_crash_before_its_record_is_stored_once(tmp_path: Path, registry: RegistryServer,
                                                                         base_image: str) -> None:
    centre = Server(tmp_path / "centre", [*centre_args(registry, base_image), "--port", str(free_port())],
                    centre_env(registry)).start()
    try:
        version_id, model_id = make_pipeline(centre, tmp_path)
        done = publish(centre, version_id, model_id)
        added = post(centre, "/pipelines/add_edge_to_publish", {"name": "shop-once", "pipeline_publish_id": done["id"]},
                     status=201)
        bundle = decode_bundle(added["edge_bundles"]["shop-once"])
        key = post(centre, "/edge/join", {"name": "shop-once", "join_token": bundle.join_token})["edge_key"]
        assert ship(centre, key, 7) == {"accepted": 3, "duplicate": False}
        assert ship(centre, key, 7) == {"accepted": 0, "duplicate": True}  # an ordinary resend

        centre.stop()  # the state a crash after the rows were stored, before the shipment's record, leaves
        with sqlite3.connect(centre.data_dir / "runtime.db") as db:
            assert db.execute("DELETE FROM edge_shipments WHERE segment = '7'").rowcount == 1
            db.execute("UPDATE edges SET shipped_rows = 0")
        centre.start()

        assert ship(centre, key, 7) == {"accepted": 0, "duplicate": True}  # the edge never got its answer: it resends
        rows = centre_rows(centre, PIPELINE)
        assert sorted(rows["in.x"].tolist()) == [1.0, 2.0, 3.0] and set(rows["metadata.partition"]) == {"shop-once"}
        [edge] = post(centre, "/pipelines/list_edges_by_publish_id", {"publish_id": done["id"]})["edges"]
        assert edge["shipped_rows"] == 3  # recorded by the resend, once
        assert ship(centre, key, 8) == {"accepted": 3, "duplicate": False}  # the next segment is taken as ever
        assert len(centre_rows(centre, PIPELINE)) == 6
    finally:
        centre.stop()
