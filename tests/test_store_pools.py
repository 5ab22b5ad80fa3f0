"""Pools belong to stores: trackers writing one store share its pool (and its limit), so they
are never written at once beyond what the store takes; trackers on other stores keep their
own pools."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields

import dagster as dg
import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.cli.main import main
from align_track_pipeline.cli.sizing import most_writers, size_pools
from align_track_pipeline.cli.workers import AUTO_MIN_BATCH, Setup, parallel_for
from align_track_pipeline.core.pools import MAX_LENGTH, pool_name
from align_track_pipeline.core.trackers import registry
from align_track_pipeline.core.trackers.aim.tracker import AimTracker
from align_track_pipeline.core.trackers.mlflow.tracker import MlflowTracker, mlflow_tracker
from align_track_pipeline.definitions import build_defs
from align_track_pipeline.defs.dagster_compat import pool_holders


@dataclass(frozen=True)
class SecondMlflow(MlflowTracker):
    """Another team's MLflow tracker: its own experiment, the same tracking store."""

    name = "mlflow_b"
    version_tag = "b"

    def max_writers(self, cores: int) -> int:
        return 2  # whatever the cores: the shared store's limit is the least of its trackers'


def second_mlflow(settings: registry.Settings) -> SecondMlflow:
    base = mlflow_tracker(settings)
    given = {f.name: getattr(base, f.name) for f in fields(base)}
    return SecondMlflow(**given | {"experiment": f"{base.experiment}-b"})


def _accepted_by_dagster(pool: str) -> bool:
    def write() -> None: ...

    try:
        dg.op(name="write", pool=pool)(write)
    except dg.DagsterInvalidDefinitionError as exc:
        assert "not a valid pool name" in str(exc)
        return False
    return True


def test_a_safe_address_is_its_pool_name_and_any_other_is_made_safe_and_unique():
    assert pool_name("aim:/data/aim") == "aim:/data/aim"
    spaced = "mlflow:sqlite:////data/my runs/mlflow.db"
    assert not _accepted_by_dagster(spaced)  # why names are made safe (Dagster: no whitespace)
    assert pool_name(spaced).startswith("mlflow:sqlite:////data/my_runs/mlflow.db#")
    assert pool_name(spaced) != pool_name(spaced.replace(" ", "_"))
    long_a = "aim:/" + "a" * 150 + "/x/" + "b" * 150 + "/aim"
    long_b = long_a.replace("/x/", "/y/")
    for long in (long_a, long_b):
        name = pool_name(long)
        assert len(name) <= MAX_LENGTH and name.startswith("aim:/aaa") and "bbb/aim#" in name
    assert pool_name(long_a) != pool_name(long_b)
    for name in (pool_name(spaced), pool_name(long_a), pool_name("x\ty\x00z")):
        assert _accepted_by_dagster(name), name


def test_an_mlflow_pool_is_its_store_whatever_the_spelling_experiment_or_credentials(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    pool = MlflowTracker(f"sqlite:///{tmp_path}/real/mlflow.db").pool
    assert pool == pool_name(f"mlflow:sqlite:///{tmp_path}/real/mlflow.db")
    for same in ("sqlite:///real/mlflow.db", f"sqlite:///{tmp_path}/link/mlflow.db",
                 f"sqlite+pysqlite:///{tmp_path}/real/mlflow.db?timeout=30"):
        assert MlflowTracker(same, experiment="other").pool == pool
    assert MlflowTracker(f"sqlite:///{tmp_path}/real/other.db").pool != pool

    server = MlflowTracker("http://alice:s3cret@MLflow.example:5000/").pool
    assert server == "mlflow:http://mlflow.example:5000"
    assert MlflowTracker("http://mlflow.example:5000").pool == server
    assert MlflowTracker("http://mlflow.example:5001").pool != server
    postgres = MlflowTracker("postgresql+psycopg2://u:pw@db.example/mlflow").pool
    assert postgres == "mlflow:postgresql://db.example:5432/mlflow"
    assert MlflowTracker("postgresql://v:other@db.example:5432/mlflow").pool == postgres
    assert MlflowTracker("postgresql://db.example:5432/other").pool != postgres


def test_an_aim_pool_is_its_repo_real_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "repo").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "repo")
    pool = AimTracker(str(tmp_path / "repo")).pool
    assert pool == pool_name(f"aim:{tmp_path}/repo")
    assert AimTracker("repo").pool == AimTracker(str(tmp_path / "link")).pool == pool
    assert AimTracker(str(tmp_path / "other")).pool != pool


def test_trackers_on_one_store_share_its_pool_at_the_least_limit(tmp_path, dagster_storage):
    server = "http://127.0.0.1:5999"
    trackers = [MlflowTracker(server), AimTracker(str(tmp_path / "aim")),
                SecondMlflow(server, experiment="b"),
                SecondMlflow(f"sqlite:///{tmp_path}/b.db", experiment="b")]
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        limits = size_pools(instance, trackers, n_cores=8)
        assert limits == {"mlflow:http://127.0.0.1:5999": 2,
                          pool_name(f"aim:{tmp_path}/aim"): 9,
                          pool_name(f"mlflow:sqlite:///{tmp_path}/b.db"): 2}
        for pool, limit in limits.items():
            assert pool_holders(instance, pool) == (limit, [])


def test_the_default_workers_are_what_the_most_parallel_store_takes(tmp_path):
    """Aim takes a writer more than the cores (each waits on RocksDB's threads a fifth of
    its time), so by default its phase gets that many workers; MLflow on a server one per
    core, within the same pool of workers; SQLite alone never needs a worker."""
    aim, server = AimTracker(str(tmp_path / "aim")), MlflowTracker("http://127.0.0.1:5999")
    sqlite = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db")
    assert most_writers([sqlite, aim], n_cores=2) == 3
    assert most_writers([server], n_cores=2) == 2
    assert most_writers([sqlite], n_cores=2) == most_writers([], n_cores=2) == 1
    default = parallel_for(Setup(str(tmp_path), str(tmp_path)), None, 3)
    assert default.workers == 3
    phase = 3 * AUTO_MIN_BATCH
    assert (default.processes(phase, 3), default.processes(phase, 2)) == (3, 2)
    assert default.processes(phase - 1, 3) == 2  # a worker only for 32 partitions or more
    assert parallel_for(Setup(str(tmp_path), str(tmp_path)), 2, 3).processes(phase, 3) == 2


def test_the_assets_of_trackers_on_one_store_declare_its_pool(small_tree, data_dir):
    with registry.registered("mlflow_b", second_mlflow):
        defs = build_defs(str(small_tree), str(data_dir))
    pools = {asset: defs.resolve_assets_def(asset).op.pool
             for asset in ("mlflow_runs", "mlflow_b_runs", "aim_runs", "aim_index")}
    store = pool_name(f"mlflow:sqlite:///{data_dir.resolve()}/mlflow.db")
    aim = pool_name(f"aim:{data_dir.resolve()}/aim")
    assert pools == {"mlflow_runs": store, "mlflow_b_runs": store, "aim_runs": aim,
                     "aim_index": aim}


@pytest.fixture
def installed_second_mlflow(tmp_path, monkeypatch):
    """`mlflow_b` installed as a plugin (an entry point), so that the worker processes of
    `--workers` register it too."""
    dist = tmp_path / "plugins" / "mlflow_b-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlflow-b\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\nmlflow_b = {__name__}:second_mlflow\n")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    assert "mlflow_b" in registry.factories()


def _span(instance: dg.DagsterInstance, job: str) -> tuple[float, float]:
    """From the first start to the last end of a job's runs."""
    records = instance.get_run_records(dg.RunsFilter(job_name=job))
    assert records and all(r.end_time for r in records)
    return min(r.start_time for r in records), max(r.end_time for r in records)


@pytest.mark.slow
def test_ingest_never_writes_one_store_from_two_trackers_at_once(
        capsys, small_tree, data_dir, mlflow_server, installed_second_mlflow):
    """Two MLflow trackers on one server, two workers: each phase takes the pool's two slots,
    so the second tracker's phase starts only once the first's has ended."""
    experiment = f"pools-{os.getpid()}-{data_dir.parent.name}"
    args = ["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
            "--mlflow-uri", mlflow_server, "--mlflow-experiment", experiment,
            "--trackers", "mlflow,mlflow_b", "--workers", "2", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["failed"] == []
    assert "mlflow: 3 partitions over 2 worker processes" in captured.err
    assert "mlflow_b: 3 partitions over 2 worker processes" in captured.err

    pool = f"mlflow:{mlflow_server.rstrip('/')}"
    with open_instance(data_dir) as instance:
        assert pool_holders(instance, pool) == (2, [])
        first, second = _span(instance, "mlflow"), _span(instance, "mlflow_b")
    assert first[1] <= second[0], (first, second)
    client = MlflowClient(mlflow_server)
    for name in (experiment, f"{experiment}-b"):
        exp = client.get_experiment_by_name(name)
        runs = client.search_runs([exp.experiment_id], "tags.run_type = 'parent'")
        assert len(runs) == 3, name  # one parent per experiments row of the small tree
