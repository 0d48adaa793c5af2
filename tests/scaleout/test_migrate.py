"""`wallaroo-pulumi runtime migrate`: an embedded data dir (SQLite + local files) copied into a
PostgreSQL database and a bucket; a replica on another data dir then serves it as it was."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.runtime.conftest import DOUBLE, REPO, X_SCHEMA, Y_SCHEMA, Server, make_model, server_env
from tests.scaleout.conftest import SECRETS_KEY, scaleout_args, scaleout_env
from wallaroo_pulumi.testing.postgres import PostgresServer
from wallaroo_pulumi.testing.s3 import S3Server


def test_migrate_an_embedded_data_dir_into_a_database_and_bucket(tmp_path: Path, postgres: PostgresServer,
                                                                  s3: S3Server) -> None:
    embedded = Server(tmp_path / "embedded", [], server_env()).start()
    try:
        c = embedded.client()
        mv = c.upload_model("double", make_model(tmp_path, "double", DOUBLE), X_SCHEMA, Y_SCHEMA)
        created = c.create_pipeline("moved", steps=[mv])
        dep = c.deploy("moved", pipeline_id=created.pipeline_id,
                       engine_config={"sidekicks": {"double": {"env": {"API_KEY": "sk-migrated-secret"}}}})
        c.wait_for_deployment(f"moved-{dep}", timeout_s=60)
        for i in range(3):
            c.infer("moved", pd.DataFrame({"x": [float(i)]}))
    finally:
        embedded.stop()

    database, bucket = postgres.new_database(), s3.new_bucket()
    env = {**scaleout_env(s3), "WALLAROO_DATABASE_URL": database}
    done = subprocess.run([sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "migrate", "--data-dir",
                           str(embedded.data_dir), "--object-store", bucket], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 artifact(s), 3 log row(s)" in done.stdout, done.stdout
    assert "sk-migrated-secret" not in done.stdout + done.stderr
    again = subprocess.run([sys.executable, "-m", "wallaroo_pulumi.cli", "runtime", "migrate", "--data-dir",
                            str(embedded.data_dir), "--object-store", bucket], env=env, cwd=str(REPO),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "empty database" in again.stderr, again.stderr

    replica = Server(tmp_path / "node", ["--role", "serve", *scaleout_args(postgres, s3, database, bucket)],
                     {**scaleout_env(s3), "WALLAROO_SECRETS_KEY": SECRETS_KEY}).start()
    try:
        c = replica.client()
        assert c.get_model_version(mv.id).sha == mv.sha
        p = c.get_pipeline("moved")
        assert p.version == created.version and p.deployment_id == dep and p.deployed
        assert c.wait_for_deployment(f"moved-{dep}", timeout_s=90) == "Running"  # artifact from the bucket, env opened
        assert c.logs("moved", limit=100, order="Asc")["in.x"].tolist() == [0.0, 1.0, 2.0]
        assert c.infer("moved", pd.DataFrame({"x": [5.0]}))["out.y"].tolist() == [10.0]
        assert len(c.logs("moved", limit=100)) == 4
        new = c.create_pipeline("after-migration", steps=[mv])  # ids keep counting after the copied ones
        assert new.pipeline_id > created.pipeline_id
    finally:
        replica.stop()
