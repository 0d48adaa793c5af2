"""Storage, the bottom layer: metadata (SQLite | PostgreSQL), artifacts, object storage, inference logs,
uploads, migration and retention. Never imports services, the engine or routes."""
