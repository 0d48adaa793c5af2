"""Inference log store: append-only Arrow/Parquet segments per pipeline, shared by the processes of
one data dir. Layout, crash safety and the multi-writer rules: docs/runtime-api.md ("Logs", "Roles")."""

from wallaroo_pulumi.runtime.store.logs.query import LogPage, Order
from wallaroo_pulumi.runtime.store.logs.store import LogStore
from wallaroo_pulumi.runtime.store.logs.time_column import TIME_TYPE

__all__ = ["TIME_TYPE", "LogPage", "LogStore", "Order"]
