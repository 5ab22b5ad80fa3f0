"""One switch puts the Dagster instance on Postgres: ALIGN_TRACK_POSTGRES_URL, read from the
environment by `align-track`, `dagster dev` and the daemon alike; unset, embedded SQLite."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from align_track_pipeline.cli import main
from align_track_pipeline.cli.instance import (
    INSTANCE_CONFIG,
    PROJECT_HEADER,
    open_instance,
    prepare_home,
)
from align_track_pipeline.core.cores import usable_cores
from tests.conftest import REPO, status_counts

ALIGN_TRACK = str(Path(sys.executable).parent / "align-track")


def test_unset_means_embedded_sqlite_as_before(data_dir, monkeypatch):
    monkeypatch.delenv("ALIGN_TRACK_POSTGRES_URL", raising=False)
    with open_instance(data_dir) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    config = yaml.safe_load((data_dir / "dagster" / "dagster.yaml").read_text())
    assert "storage" not in config
    project = yaml.safe_load(INSTANCE_CONFIG.read_text())
    project["concurrency"]["runs"]["max_concurrent_runs"] = usable_cores()  # one run per core
    assert config == project


def test_the_generated_config_names_the_variable_never_its_value(data_dir, monkeypatch):
    """What `dagster dev` and the daemon read (`DAGSTER_HOME=$(align-track dagster-home)`)."""
    monkeypatch.setenv("ALIGN_TRACK_POSTGRES_URL", "postgresql+psycopg2://u:hunter2@db.example:5432/d")
    out = subprocess.run([ALIGN_TRACK, "dagster-home", "--data-dir", str(data_dir)],
                         capture_output=True, text=True, check=True).stdout
    home = Path(out.strip())
    assert home == (data_dir / "dagster").resolve()
    text = (home / "dagster.yaml").read_text()
    assert "hunter2" not in text and "db.example" not in text
    assert yaml.safe_load(text)["storage"] == {
        "postgres": {"postgres_url": {"env": "ALIGN_TRACK_POSTGRES_URL"}}}
    monkeypatch.delenv("ALIGN_TRACK_POSTGRES_URL")  # switched off again: SQLite again
    assert "storage" not in yaml.safe_load((prepare_home(data_dir) / "dagster.yaml").read_text())


def test_a_copy_seeded_by_an_earlier_version_is_regenerated(data_dir, monkeypatch):
    home = data_dir / "dagster"
    home.mkdir(parents=True)
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    monkeypatch.setenv("ALIGN_TRACK_POSTGRES_URL", "postgresql+psycopg2://u@db.example/d")
    prepare_home(data_dir)
    assert "storage" in yaml.safe_load((home / "dagster.yaml").read_text())


@pytest.mark.parametrize("url", ["mysql://u:hunter2@h/db", "postgresql+psycopg2://u:hunter2@h/",
                                 "postgresql://u:hunter2@h/db"])
def test_a_bad_url_is_refused_naming_the_variable_not_the_password(capsys, data_dir,
                                                                   small_tree, monkeypatch,
                                                                   url):
    monkeypatch.setenv("ALIGN_TRACK_POSTGRES_URL", url)
    code = main(["status", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "ALIGN_TRACK_POSTGRES_URL" in err and "hunter2" not in err
    if url.startswith("postgresql://"):  # SQLAlchemy would pick psycopg 3: say what to write
        assert "name the driver: postgresql+psycopg2://" in err


def test_a_users_own_config_is_kept_but_never_silently_on_sqlite(capsys, data_dir, small_tree,
                                                                 monkeypatch):
    home = data_dir / "dagster"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("ALIGN_TRACK_POSTGRES_URL", "postgresql+psycopg2://u@db.example/d")
    code = main(["status", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir)])
    assert code == 2 and "has no storage" in capsys.readouterr().err
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


@pytest.mark.slow
@pytest.mark.postgres
def test_align_track_on_postgres(postgres, small_tree, data_dir, monkeypatch, capsys):
    """`ingest` and `status` with the switch on: runs and events in Postgres, no SQLite
    instance files."""
    import json

    import sqlalchemy

    db = postgres()
    monkeypatch.setenv("ALIGN_TRACK_POSTGRES_URL",
                       db.replace("postgres@", "postgres:pw@"))
    args = ["--experiments-dir", str(small_tree), "--data-dir", str(data_dir), "--json"]
    assert main(["ingest", *args]) == 0
    assert json.loads(capsys.readouterr().out)["failed"] == []
    assert main(["status", *args]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == status_counts(fresh=3)
    engine = sqlalchemy.create_engine(db)
    with engine.connect() as conn:
        runs = conn.execute(sqlalchemy.text("SELECT count(*) FROM runs")).scalar()
        events = conn.execute(sqlalchemy.text(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        )).scalar()
    engine.dispose()
    assert runs >= 3 and events >= 3 * 4  # 3 partitions x (2 tables, 2 trackers)
    assert not list((data_dir / "dagster").rglob("*.db"))


OPEN = ("import sys; from align_track_pipeline.cli.instance import open_instance; "
        "open_instance(sys.argv[1]).get_runs(limit=1)")


@pytest.mark.slow
def test_processes_creating_one_instance_at_once_all_open_it(tmp_path):
    """Created by several processes at once, a SQLite instance used to end with two schema
    stamps that no process could open again."""
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(tmp_path)],
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    subprocess.run([sys.executable, "-c", OPEN, str(tmp_path)], check=True, timeout=300)


def test_the_package_carries_the_repositorys_dagster_yaml_unchanged():
    """The top-level dagster.yaml is the instance configuration; installed wheels seed their
    homes from the package's copy, which must not drift from it."""
    top = REPO / "dagster.yaml"
    assert INSTANCE_CONFIG.read_text() == top.read_text()
    assert top.read_text().startswith(PROJECT_HEADER)


def _leaves(config: dict, prefix: tuple = ()) -> dict[tuple, object]:
    out = {}
    for key, value in config.items():
        out |= _leaves(value, (*prefix, key)) if isinstance(value, dict) else {
            (*prefix, key): value}
    return out


def test_the_deployment_extends_the_repositorys_dagster_yaml():
    """Every setting of the top-level dagster.yaml holds in deploy/dagster.yaml too (which adds
    Postgres, the queue and shared logs), except the run limit, sized to the host there."""
    top = _leaves(yaml.safe_load((REPO / "dagster.yaml").read_text()))
    deploy = _leaves(yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text()))
    sized = {("concurrency", "runs", "max_concurrent_runs")}
    assert len(top) >= 5
    assert {k: v for k, v in top.items() if k not in sized} == {
        k: deploy.get(k) for k in top if k not in sized}


def test_a_dagster_home_exported_in_the_shell_serves_one_data_dir(capsys, tmp_path, small_tree,
                                                                  monkeypatch):
    """Two data dirs in one instance took each other's folders for removed (`--confirm-
    removals` then removed them) and rewrote everything in turn."""
    from align_track_pipeline.cli.main import main

    home = tmp_path / "mydagster"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["dagster-home", "--data-dir", str(first)]) == 0
    assert capsys.readouterr().out.strip() == str(home)
    assert main(["dagster-home", "--data-dir", str(first)]) == 0  # its own data dir, again
    capsys.readouterr()
    code = main(["status", "--experiments-dir", str(small_tree), "--data-dir", str(second)])
    err = capsys.readouterr().err
    assert code == 2 and f"the Dagster instance {home} (DAGSTER_HOME) is the data dir " \
        f"{first}'s, not {second}'s: their partitions would be mixed. Unset DAGSTER_HOME" in err
    monkeypatch.delenv("DAGSTER_HOME")  # the home inside each data dir is its own
    assert main(["status", "--experiments-dir", str(small_tree), "--data-dir", str(second)]) == 0
    capsys.readouterr()
    # as the docs say to: `export DAGSTER_HOME=$(align-track dagster-home)`, a data dir's home
    assert main(["dagster-home", "--data-dir", str(second)]) == 0
    monkeypatch.setenv("DAGSTER_HOME", capsys.readouterr().out.strip())
    code = main(["status", "--experiments-dir", str(small_tree), "--data-dir", str(first)])
    assert code == 2 and f"is the data dir {second}'s, not {first}'s" in capsys.readouterr().err
