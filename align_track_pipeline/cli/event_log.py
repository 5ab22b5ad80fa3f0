"""Dagster's SQLite event log, with its connections kept open for the life of the process.

Dagster's `SqliteEventLogStorage` builds a SQLAlchemy engine, opens a SQLite connection and
disposes of both for every read and write; an asset materialization is about seven of them
(the run's shard, the cross-run index, and a check that a table exists), and closing the last
connection of a database in WAL mode checkpoints it. Measured on 2 loaded cores
(`benchmarks/events.py`): a run of 200 materializations took 28.2 s and 3.9 s of CPU that
way, 6.6 s and 1.4 s with the connections kept. An ingest writes several per partition, so
the CLI keeps one small engine per shard (the index, and the few most recent runs' shards):
each use is still its own transaction, so what other processes commit is seen at the next
use, exactly as before. Only the CLI's instances are changed (`open_instance`);
the daemon and the UI keep Dagster's own storage.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType
from typing import TYPE_CHECKING

from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine

from align_track_pipeline.core.verified import dagster_internals

if TYPE_CHECKING:
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

RUN_SHARDS_KEPT = 8  # engines kept besides the index's: a run's shard is busy while it runs


def keep_connections(storage: object) -> bool:
    """Make a SQLite event log keep its connections open (any other storage is left as it
    is); True when it was changed. Replaces, on this object only, the storage's
    `_connect(shard)` (the one place Dagster opens a shard for reading and writing) and
    `has_table` (asked before each event's tags are stored, on an engine of its own). Only on
    the Dagster version this was verified on (`verified.dagster_internals`)."""
    if not dagster_internals():
        return False
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
        INDEX_SHARD_NAME,
        SqliteEventLogStorage,
    )

    if not isinstance(storage, SqliteEventLogStorage):
        return False
    engines: OrderedDict[str, Engine] = OrderedDict()
    lock = threading.Lock()  # the engines; `_db_lock` is held around whole transactions
    tables: set[str] = set()  # tables seen: they are never dropped

    def engine(self: SqliteEventLogStorage, shard: str) -> Engine:
        with lock:
            return _engine(self, engines, shard)

    @contextmanager
    def _connect(self: SqliteEventLogStorage, shard: str) -> Iterator[Connection]:
        with self._db_lock, engine(self, shard).connect() as conn, conn.begin():
            yield conn

    def has_table(self: SqliteEventLogStorage, table: str) -> bool:
        if table not in tables:  # called inside an index transaction too: not `_db_lock`
            index = engine(self, INDEX_SHARD_NAME)
            with index.connect() as conn:
                if index.dialect.has_table(conn, table):
                    tables.add(table)
        return table in tables

    dispose = storage.dispose

    def _dispose(self: SqliteEventLogStorage) -> None:
        with lock:
            while engines:
                engines.popitem()[1].dispose()
        dispose()

    storage._connect = MethodType(_connect, storage)
    storage.has_table = MethodType(has_table, storage)
    storage.dispose = MethodType(_dispose, storage)
    return True


def _engine(storage: SqliteEventLogStorage, engines: OrderedDict[str, Engine],
            shard: str) -> Engine:
    """The shard's engine, made (and the shard's database created) on first use; the least
    recently used run shard's is closed when more than `RUN_SHARDS_KEPT` are open."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
        INDEX_SHARD_NAME,
        SQLITE_BUSY_TIMEOUT_SECONDS,
    )

    engine = engines.get(shard)
    if engine is None:
        engine = create_engine(storage.conn_string_for_shard(shard), pool_size=2,
                               max_overflow=4, pool_reset_on_return="rollback",
                               connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
                                             "check_same_thread": False})
        if shard not in storage._initialized_dbs:
            storage._initdb(engine)
            storage._initialized_dbs.add(shard)
        engines[shard] = engine
        if len(engines) > RUN_SHARDS_KEPT + 1:
            oldest = next(s for s in engines if s not in (shard, INDEX_SHARD_NAME))
            engines.pop(oldest).dispose()
    engines.move_to_end(shard)
    return engine

