"""Dagster's SQLite event log, with its connections kept open for the life of the process.

Dagster's `SqliteEventLogStorage` builds a SQLAlchemy engine, opens a SQLite connection and
disposes of both for every read and write; an asset materialization is about five of them
(the run's shard, then the cross-run index), and closing the last connection of a database in
WAL mode checkpoints it. Measured on 2 cores: 200 materializations take 4.1 s of CPU that way
and 1.3 s with the connections kept (`benchmarks/events.py`). An ingest writes several per
partition, so the CLI keeps one small engine per shard (the index, and the few most recent
runs' shards): each use is still its own transaction, so what other processes commit is seen
at the next use, exactly as before. Only the CLI's instances are changed (`open_instance`);
the daemon and the UI keep Dagster's own storage.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType

from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine

RUN_SHARDS_KEPT = 8  # engines kept besides the index's: a run's shard is busy while it runs


def keep_connections(storage: object) -> bool:
    """Make a SQLite event log keep its connections open (any other storage is left as it
    is); True when it was changed. Replaces the storage's `_connect(shard)`, the one place
    Dagster opens a shard, on this object only."""
    if not isinstance(storage, SqliteEventLogStorage):
        return False
    engines: OrderedDict[str, Engine] = OrderedDict()

    @contextmanager
    def _connect(self: SqliteEventLogStorage, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = _engine(self, engines, shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    dispose = storage.dispose

    def _dispose(self: SqliteEventLogStorage) -> None:
        while engines:
            engines.popitem()[1].dispose()
        dispose()

    storage._connect = MethodType(_connect, storage)
    storage.dispose = MethodType(_dispose, storage)
    return True


def _engine(storage: SqliteEventLogStorage, engines: OrderedDict[str, Engine],
            shard: str) -> Engine:
    """The shard's engine, made (and the shard's database created) on first use; the least
    recently used run shard's is closed when more than `RUN_SHARDS_KEPT` are open."""
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

