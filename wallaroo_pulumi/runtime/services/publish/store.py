"""The publish tables: a pipeline version published as an image, and the edges of each publish
(only hashes of their join tokens and edge keys; the join token itself sealed, for the bundle)."""

from __future__ import annotations

from wallaroo_pulumi.runtime.store.db import Database

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS publishes (
    id INTEGER PRIMARY KEY,
    pipeline_id INTEGER NOT NULL,
    pipeline_version_id INTEGER NOT NULL,
    workspace_id INTEGER NOT NULL,
    engine_config TEXT NOT NULL,          -- DeploymentConfig JSON, sidekick env values emptied (names kept)
    replaces TEXT NOT NULL,               -- JSON list of publish ids this one upgrades
    status TEXT NOT NULL,                 -- PendingPublish | Publishing | Published | Error
    error TEXT,
    image TEXT,                           -- registry/repository:tag once pushed
    digest TEXT,
    image_bytes INTEGER,
    publish_seconds REAL,
    chart TEXT,                           -- the Helm chart: registry/repository (tag: chart_version)
    chart_version TEXT,
    chart_digest TEXT,
    chart_seconds REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS edges (
    id TEXT PRIMARY KEY,                  -- uuid
    name TEXT NOT NULL UNIQUE,
    publish_id INTEGER NOT NULL,
    tags TEXT NOT NULL,
    join_token TEXT NOT NULL,             -- sealed (SecretBox): the bundle is answered again on request
    join_sha256 TEXT NOT NULL UNIQUE,
    joined_at REAL,
    key_sha256 TEXT UNIQUE,               -- the edge key the join handed out
    shipped_rows INTEGER NOT NULL DEFAULT 0,
    dropped_rows INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS edge_shipments (
    edge_id TEXT NOT NULL,
    segment TEXT NOT NULL,                -- the edge's own segment number: each is taken once
    rows INTEGER NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (edge_id, segment)
)""",
)


def ensure_tables(db: Database) -> None:
    with db.tx() as c:
        for stmt in SCHEMA:
            c.execute(stmt)
    # a data dir from before the charts
    db.add_columns("publishes", {"chart": "TEXT", "chart_version": "TEXT", "chart_digest": "TEXT", "chart_seconds": "REAL"})
