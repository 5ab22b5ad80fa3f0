"""The CLI's Dagster instance keeps its SQLite event-log connections open: a few connections
for a whole run instead of several per event, and still every event stored and seen by other
instances (other processes) as before."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import event
from sqlalchemy.pool import Pool

from align_track_pipeline.cli.event_log import RUN_SHARDS_KEPT
from align_track_pipeline.cli.instance import dagster_home, open_instance

KEYS = [f"p{i:03}" for i in range(40)]
parts = dg.DynamicPartitionsDefinition(name="event_log_parts")


@dg.asset(partitions_def=parts)
def marked(context) -> None:
    """One materialization per partition of the run, as the project's batch assets log."""
    for key in context.partition_keys:
        context.log_event(dg.AssetMaterialization(asset_key="marked", partition=key,
                                                  metadata={"n": KEYS.index(key)}))


def _materialize(instance: dg.DagsterInstance, keys: list[str]) -> None:
    dg.materialize([marked], instance=instance, tags={
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1]})


@pytest.fixture
def connections():
    """The files of the SQLite connections SQLAlchemy's pools open meanwhile (a public pool
    event)."""
    opened: list[str] = []

    def count(dbapi_connection, _record) -> None:
        opened.append(dbapi_connection.execute("PRAGMA database_list").fetchone()[2])

    event.listen(Pool, "connect", count)
    yield opened
    event.remove(Pool, "connect", count)


def _latest(instance: dg.DagsterInstance) -> dict[str, int]:
    """Partition -> `n` of its latest materialization."""
    found: dict[str, int] = {}
    for record in instance.fetch_materializations(dg.AssetKey("marked"), limit=1000).records:
        metadata = record.asset_materialization.metadata
        if "n" in metadata:  # not Dagster's own materialization of the run's output
            found.setdefault(record.partition_key, metadata["n"].value)  # newest first
    return found


def test_a_run_of_40_materializations_opens_a_few_connections(tmp_path, connections):
    """Dagster's own storage opens 314 here (about seven per event), the kept one 3."""
    with open_instance(tmp_path / "data") as instance:
        instance.add_dynamic_partitions(parts.name, KEYS)
        before = len(connections)
        _materialize(instance, KEYS)
        # The event log's shards: the run's own and the cross-run index (history/runs.db is
        # the run storage, which Dagster still opens per use).
        opened = [f for f in connections[before:] if Path(f).parent.name == "runs"]
    assert 1 <= len(opened) <= 6, Counter(opened)
    with dg.DagsterInstance.from_config(str(dagster_home(tmp_path / "data"))) as plain:
        assert _latest(plain) == {k: n for n, k in enumerate(KEYS)}  # Dagster's own view


def test_writes_of_other_instances_are_seen_at_the_next_use(tmp_path):
    """A kept connection holds no snapshot: what another process commits is read next."""
    with open_instance(tmp_path / "data") as kept:
        kept.add_dynamic_partitions(parts.name, KEYS)
        assert _latest(kept) == {}
        with dg.DagsterInstance.from_config(str(dagster_home(tmp_path / "data"))) as other:
            _materialize(other, KEYS[:3])
        assert _latest(kept) == {"p000": 0, "p001": 1, "p002": 2}
        _materialize(kept, KEYS[3:5])
        assert set(_latest(kept)) == set(KEYS[:5])


def test_open_files_stay_bounded_over_many_runs(tmp_path):
    """Each run has its own shard: only the most recent ones stay open."""
    with open_instance(tmp_path / "data") as instance:
        instance.add_dynamic_partitions(parts.name, KEYS)
        for n in range(RUN_SHARDS_KEPT + 6):
            _materialize(instance, KEYS[n:n + 1])
        home = str(dagster_home(tmp_path / "data").resolve())
        shards = {target for fd in os.listdir("/proc/self/fd")
                  if (target := _target(fd)).startswith(home) and target.endswith(".db")}
        assert len(_latest(instance)) == RUN_SHARDS_KEPT + 6
    runs = [s for s in shards if "/history/runs/" in s and not s.endswith("index.db")]
    assert 1 <= len(runs) <= RUN_SHARDS_KEPT, runs


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def test_every_cli_instance_on_sqlite_keeps_its_connections(tmp_path):
    """Fails loudly if Dagster's SQLite event log is renamed or moved: the change would
    otherwise be skipped without a word."""
    from align_track_pipeline.cli.event_log import keep_connections

    with dg.DagsterInstance.ephemeral() as memory:
        assert not keep_connections(memory.event_log_storage)  # not SQLite files: untouched
    with open_instance(Path(tmp_path / "data")) as instance:
        assert keep_connections(instance.event_log_storage)
