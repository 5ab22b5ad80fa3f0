"""Pins the Aim behaviour and internals the writer relies on: fails loudly if Aim changes."""

import threading
import time
from importlib.metadata import version

import pytest

from align_track_pipeline.core.trackers.aim import indexing, lean_runs, staging, storage
from tests.conftest import aim_runs_seen_by_a_fresh_process, copy_empty_aim_repo


def test_aim_is_pinned():
    assert version("aim") == "3.29.1"


def _run(repo, name: str) -> str:
    run = lean_runs.lean_run(repo, "exp")
    run.name = name
    run["adm"] = "x"
    run.track(1.0, name="timing_seconds")
    run.close()
    return run.hash


def test_closed_runs_need_indexing_and_index_runs_does_it(aim_repo):
    repo = storage.open_repo(aim_repo)
    first, second = _run(repo, "a"), _run(repo, "b")
    # close() does not index: a fresh process lists the runs but sees none of their params
    seen = {r["hash"]: r for r in aim_runs_seen_by_a_fresh_process(aim_repo)}
    assert {h: r["params"]["adm"] for h, r in seen.items()} == {first: None, second: None}
    assert set(indexing.outdated_runs(repo)) == {first, second}
    assert indexing.index_runs(repo, [first]) == 1
    seen = {r["hash"]: r for r in aim_runs_seen_by_a_fresh_process(aim_repo)}
    assert {h: r["params"]["adm"] for h, r in seen.items()} == {first: "x", second: None}
    assert seen[first]["name"] == "a"
    assert indexing.outdated_runs(repo) == [second]


def test_lean_runs_leave_no_threads(aim_repo):
    repo = storage.open_repo(aim_repo)
    before = threading.active_count()
    for i in range(5):
        _run(repo, str(i))
    assert threading.active_count() <= before + 1


def test_rebuild_index(aim_repo):
    repo = storage.open_repo(aim_repo)
    hashes = {_run(repo, str(i)) for i in range(3)}
    assert indexing.rebuild_index(repo) == 3
    seen = aim_runs_seen_by_a_fresh_process(aim_repo)
    assert {r["hash"] for r in seen if r["params"]["adm"] == "x"} == hashes


def test_deleted_runs_disappear_without_reindex(aim_repo):
    repo = storage.open_repo(aim_repo)
    keep, gone = _run(repo, "keep"), _run(repo, "gone")
    indexing.index_runs(repo, [keep, gone])
    assert repo.delete_runs([gone]) == (True, [])
    assert not storage.run_exists(repo, gone)
    assert [r["hash"] for r in aim_runs_seen_by_a_fresh_process(aim_repo)] == [keep]


def test_aim_up_is_a_click_command_with_the_options_aim_ui_passes():
    """`align-track aim-ui` runs `aim up`'s own command (`aim.cli.up.commands.up`)."""
    from aim.cli.up import commands

    assert {p.name for p in commands.up.params} >= {"repo", "workers", "host", "port", "yes"}


def test_lean_runs_skip_status_reporting_and_still_finish(aim_repo):
    """Aim's `Run` builds a status reporter (a thread and check-in files per run, named in
    `aim.sdk.run`); a lean run has none, and still ends with an end time: not active."""
    import aim.sdk.run
    from aim import Run

    assert all(callable(getattr(aim.sdk.run, name)) for name in lean_runs.STATUS_REPORTERS)
    repo = storage.open_repo(aim_repo)
    check_ins = aim_repo / ".aim" / "check_ins"
    plain = Run(repo=repo, system_tracking_interval=None, capture_terminal_logs=False,
                log_system_params=False)
    assert plain._checkins is not None
    plain.close()
    assert len(list(check_ins.iterdir())) >= 1  # what a plain run leaves, one folder for all

    before = set(check_ins.iterdir())
    lean = lean_runs.lean_run(repo, "exp")
    assert lean._checkins is None and lean._heartbeat is None
    lean["adm"] = "x"
    lean.close()
    assert set(check_ins.iterdir()) == before
    assert aim.sdk.run.RunStatusReporter is not lean_runs._no_reporter  # put back
    lean_runs.set_archived(repo, lean.hash)
    assert set(check_ins.iterdir()) == before
    assert indexing.index_runs(repo, [plain.hash, lean.hash]) == 2
    for run_hash in (plain.hash, lean.hash):
        reread = Run(run_hash, repo=repo, read_only=True)
        assert reread.end_time is not None and not reread.active
    assert Run(lean.hash, repo=repo, read_only=True).archived


def test_the_run_table_is_switched_to_wal_for_new_and_existing_repos(tmp_path,
                                                                      _empty_aim_repo):
    """Aim names its run table `run_metadata.sqlite` and creates it in rollback mode; the
    writer switches it to WAL, where Aim and a fresh reader still see every run."""
    import sqlite3

    def mode(path):
        with sqlite3.connect(path / ".aim" / storage.STRUCTURED_DB) as conn:
            return conn.execute("PRAGMA journal_mode").fetchone()[0]

    copy_empty_aim_repo(_empty_aim_repo, tmp_path / "old")  # as Aim's own init leaves one
    assert mode(tmp_path / "old") == "delete"  # Aim's own default
    for path in (tmp_path / "old", tmp_path / "new"):
        repo = storage.open_repo(path)
        assert mode(path) == "wal"
        run_hash = _run(repo, "a")
        assert indexing.index_runs(repo, [run_hash]) == 1
        assert [r["hash"] for r in aim_runs_seen_by_a_fresh_process(path)] == [run_hash]


def test_a_staged_run_is_built_outside_the_repo_and_moved_in_whole(tmp_path, aim_repo):
    """Aim opens a new run's two writable databases through `Repo.request_container` and its
    lock (a `RunLock`: `lock`, `release`) through `Repo.request_run_lock` while `Run()` runs,
    from `RocksContainer`'s `_db_opts`, and writes through `RocksContainer.commit`: a staged
    run is built under the stage (small MANIFEST preallocation, no write-ahead log), is
    nowhere in the repo until published, then reads back like any run."""
    from aim.sdk.repo import ContainerConfig
    from aim.storage.locking import RunLock

    (tmp_path / "shm").mkdir()
    stage = staging.new_stage(tmp_path / "shm")
    repo = storage.open_repo(aim_repo)
    run = lean_runs.lean_run(repo, "exp", stage)
    assert not {"request_container", "request_run_lock"} & set(vars(repo))  # Aim's own again
    assert isinstance(run._lock, staging._NewRunLock)  # no lock file: a hash no one knows
    assert {n for n in vars(RunLock) if not n.startswith("_")} == {"lock", "release"}
    assert not list((aim_repo / ".aim" / "locks").glob(f"{run.hash}*"))
    containers = [repo.container_pool[ContainerConfig(name, run.hash, False)]
                  for name in ("meta", "seqs")]
    assert all(c._db_opts["manifest_preallocation_size"] == staging._SMALL_MANIFEST
               and c._db_opts["db_log_dir"] == staging._NO_INFO_LOG for c in containers)
    run.name, run["adm"] = "a", "x"
    run.track(1.5, name="timing_seconds")
    for name in ("meta", "seqs"):  # every write went through `commit`: no write-ahead log
        assert [p.stat().st_size for p in (stage / name / "chunks" / run.hash).glob("*.log")
                ] == [0]
    run.close()
    for name in ("meta", "seqs"):
        assert (stage / name / "chunks" / run.hash / "CURRENT").is_file()
        [options] = (stage / name / "chunks" / run.hash).glob("OPTIONS-*")  # as RocksDB ran
        assert f"manifest_preallocation_size={staging._SMALL_MANIFEST}\n" in options.read_text()
        assert f"db_log_dir={staging._NO_INFO_LOG}\n" in options.read_text()
        assert not list((stage / name / "chunks" / run.hash).glob("LOG*"))  # no info log
        assert not (aim_repo / ".aim" / name / "chunks" / run.hash).exists()
    assert not storage.run_recorded(repo, run.hash)  # not even its row

    staging.publish_run(repo, run.hash, stage)
    assert not any(list((stage / name / "chunks").iterdir()) for name in ("meta", "seqs"))
    for name in ("meta", "seqs"):  # what RocksDB opens from; not its LOG, LOCK, OPTIONS,
        moved = aim_repo / ".aim" / name / "chunks" / run.hash  # IDENTITY
        assert {p.name.split("-")[0] if p.suffix != ".sst" else ".sst"
                for p in moved.iterdir()} == {"CURRENT", "MANIFEST", ".sst"}
    assert storage.all_run_hashes(repo) == [run.hash]
    assert storage.read_params(repo, run.hash, ["adm"]) == {"adm": "x"}  # its meta, read-only
    assert indexing.index_runs(repo, [run.hash]) == 1
    [seen] = aim_runs_seen_by_a_fresh_process(aim_repo)  # its metric: its seqs, read-only
    assert (seen["name"], seen["params"]["adm"]) == ("a", "x")
    assert seen["metrics"] == {"timing_seconds": 1.5}
    lean_runs.set_archived(repo, run.hash)  # opened for writing again: RocksDB remakes the rest
    assert storage.archived_runs(repo) == {run.hash}
    indexing.index_runs(repo, [run.hash])
    [seen] = aim_runs_seen_by_a_fresh_process(aim_repo, "run.archived == True")
    assert (seen["hash"], seen["params"]["adm"]) == (run.hash, "x")


def test_a_new_runs_row_experiment_and_name_are_one_commit(aim_repo):
    """Aim's run-table session commits while its `autocommit` attribute is true and only
    flushes inside `with repo.structured_db` (Aim's own transaction); after the block the
    thread's session commits again, so a later write through the run is not left
    uncommitted."""
    from sqlalchemy import event

    repo = storage.open_repo(aim_repo)
    commits = []
    event.listen(repo.structured_db.engine, "commit", commits.append)
    run = lean_runs.lean_run(repo, "exp", name="one commit")
    assert len(commits) == 1  # four without the transaction: row, experiment twice, name
    run.description = "written after"  # through the run's own session, after the block
    assert len(commits) == 2
    lean_runs.close_at(run, None)
    indexing.index_runs(repo, [run.hash])
    [seen] = aim_runs_seen_by_a_fresh_process(aim_repo)
    assert (seen["name"], seen["experiment"]) == ("one commit", "exp")
    assert storage.open_repo(aim_repo).structured_db.find_run(run.hash).description == (
        "written after")


def _row(repo, run_hash: str) -> dict:
    from aim.storage.structured.sql_engine.models import Experiment
    from aim.storage.structured.sql_engine.models import Run as RunModel
    from sqlalchemy import select

    with repo.structured_db.engine.connect() as conn:
        row = conn.execute(select(RunModel.__table__).where(RunModel.hash == run_hash)).one()
        experiment = conn.execute(select(Experiment.name).where(
            Experiment.id == row.experiment_id)).scalar_one()
    return {**row._asdict(), "experiment": experiment}


def test_a_staged_runs_row_is_one_insert_when_published_and_equals_aims_own(tmp_path,
                                                                          aim_repo):
    """`Run()` makes a new run's row through `Repo.request_props` and sets its experiment
    and name through the row (`Run.props`); a staged run's row is held in memory (a
    `storage.RunRow`), and `publish_run` inserts it in one commit before moving the run in.
    The row has every column Aim's own ORM gives a run (bar its id, hash and write time);
    what a `RunRow` has no column for fails loudly; a discarded run leaves no row."""
    from aim.storage.structured.sql_engine.models import Run as RunModel
    from sqlalchemy import event

    assert {c.name for c in RunModel.__table__.columns} == {
        "id", "hash", "name", "description", "is_archived", "created_at", "updated_at",
        "finalized_at", "experiment_id"}
    (tmp_path / "shm").mkdir()
    stage = staging.new_stage(tmp_path / "shm")
    repo = storage.open_repo(aim_repo)
    commits = []
    event.listen(repo.structured_db.engine, "commit", commits.append)
    staged = lean_runs.lean_run(repo, "exp", stage, created=DATE, name="same")
    staged.description = "described"
    with pytest.raises(AttributeError):
        staged.add_tag("no column")
    lean_runs.close_at(staged, None)
    assert commits == [] and not storage.run_recorded(repo, staged.hash)
    staging.publish_run(repo, staged.hash, stage)
    assert len(commits) == 1 and storage.run_recorded(repo, staged.hash)

    own = lean_runs.lean_run(repo, "exp", created=DATE, name="same")  # Aim's ORM writes it
    own.description = "described"
    lean_runs.close_at(own, None)
    ours, aims = _row(repo, staged.hash), _row(repo, own.hash)
    differ = {"id", "hash", "updated_at"}
    assert {k: v for k, v in ours.items() if k not in differ} == {
        k: v for k, v in aims.items() if k not in differ}
    assert (ours["name"], ours["experiment"], ours["is_archived"]) == ("same", "exp", False)
    [made] = [e for e in repo.structured_db.experiments() if e.name == "exp"]
    assert made.uuid and made.creation_time and not made.archived  # Aim's defaults

    cut = lean_runs.lean_run(repo, "new experiment", stage, name="cut short")
    cut.close()
    staging.discard_run(repo, cut.hash, stage)
    assert not storage.run_recorded(repo, cut.hash) and cut.hash not in staging._ROWS
    left = lean_runs.lean_run(repo, "exp", stage)  # never published: its stage goes
    left.close()
    staging.remove_stage(stage)
    assert left.hash not in staging._ROWS and not storage.run_recorded(repo, left.hash)
    indexing.index_runs(repo, [staged.hash, own.hash])
    seen = {r["hash"]: r for r in aim_runs_seen_by_a_fresh_process(aim_repo)}
    assert seen[staged.hash]["creation_time"] == seen[own.hash]["creation_time"] == DATE
    assert seen[staged.hash]["experiment"] == "exp"


def test_new_stage_removes_only_dead_processes_folders(tmp_path):
    import os
    import subprocess
    import sys

    from align_track_pipeline.core.scratch import owner_tag

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"align-track-aim-{gone.pid}-abc"
    live = tmp_path / f"align-track-aim-{os.getpid()}-def"
    for folder in (dead, live):
        (folder / "meta").mkdir(parents=True)
    fresh = staging.new_stage(tmp_path)
    assert fresh.is_dir() and fresh.name.startswith(f"align-track-aim-{owner_tag()}-")
    assert not dead.exists() and live.exists()
    assert staging.new_stage(tmp_path / "missing") is None  # no memory file system


def test_no_stage_on_a_memory_file_system_short_of_space(tmp_path):
    """Runs are then written in the repo directly instead of failing when it fills."""
    import shutil

    free = shutil.disk_usage(tmp_path).free
    assert staging.new_stage(tmp_path, min_free=free + 2**30) is None
    assert not list(tmp_path.iterdir())
    assert staging.new_stage(tmp_path, min_free=free // 2) is not None


DATE, END = 1749737035.25, 1749737059.5  # 2025-06-12 14:03:55.25 UTC, 24.25 s later


@pytest.mark.parametrize("staged", [False, True])
def test_a_run_is_dated_and_ended_as_asked(tmp_path, aim_repo, staged):
    """The Aim UI shows a run's `creation_time` (its run-table row's `created_at`, made by
    `Repo.request_props` in `Run.__init__`) as its date and `end_time - creation_time` (the
    meta tree's `end_time`, set by closing) as its duration: a lean run gets both as asked,
    staged or not, and keeps them when archived; the row's `updated_at` (what the crash
    repair looks for) is still the time it was written."""
    from aim import Run

    stage = None
    if staged:
        (tmp_path / "shm").mkdir()
        stage = staging.new_stage(tmp_path / "shm")
    repo = storage.open_repo(aim_repo)
    before = time.time()
    run = lean_runs.lean_run(repo, "exp", stage, created=DATE)
    assert "request_props" not in vars(repo)  # Aim's own again
    run.name = "a"
    lean_runs.close_at(run, END)
    if staged:
        staging.publish_run(repo, run.hash, stage)
    assert storage.rows_written_since(repo, before - 1) == [run.hash]
    assert storage.rows_written_since(repo, time.time() + 1) == []
    plain = lean_runs.lean_run(repo, "exp")  # no date asked: now, as Aim's own
    lean_runs.close_at(plain, None)
    assert storage.read_end_time(repo, run.hash) == END
    lean_runs.set_archived(repo, run.hash)  # reopened for writing
    assert indexing.index_runs(repo, [run.hash, plain.hash]) == 2
    reread = Run(run.hash, repo=repo, read_only=True)
    assert (reread.creation_time, reread.end_time, reread.duration) == (DATE, END, END - DATE)
    assert reread.archived
    seen = {r["hash"]: r for r in aim_runs_seen_by_a_fresh_process(aim_repo)}
    assert list(seen) == [plain.hash]  # the archived run is hidden, as in the UI
    assert before <= seen[plain.hash]["creation_time"] <= seen[plain.hash]["end_time"] <= (
        time.time())


def test_run_creation_takes_an_flock_and_commits_without_a_sync_each(aim_repo):
    """Aim guards creating a run's row with `Repo._sdb_lock` (a polled lock file); the writer
    swaps in an `flock` and has its connections commit with `synchronous=NORMAL`."""
    import inspect

    from aim.sdk.repo import Repo

    assert "self._sdb_lock" in inspect.getsource(Repo.request_props)
    repo = storage.open_repo(aim_repo)
    assert isinstance(repo._sdb_lock, storage._Flock)
    with repo.structured_db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert storage.open_repo(aim_repo) is repo  # Aim caches repos: set up once
    _run(repo, "a")
    assert len(repo.structured_db.runs()) == 1


def test_indexing_from_the_records_read_at_publishing_equals_aims_own(tmp_path, aim_repo):
    """`publish_run` reads a staged run's meta records before closing it; indexing them puts
    into the index exactly what Aim's `finalize` (reopening the run) puts there."""
    from aim import Text

    (tmp_path / "shm").mkdir()
    stage = staging.new_stage(tmp_path / "shm")
    repo = storage.open_repo(aim_repo)
    run = lean_runs.lean_run(repo, "exp", stage)
    run.name, run["adm"], run["kdma"] = "a", "x", {"merit": 0.5}
    run.track(1.5, name="timing_seconds")
    run.track(Text("a long text " * 100), name="probe_text")  # a BLOB, read lazily by Aim
    run.close()
    records = staging.publish_run(repo, run.hash, stage)
    assert records.items

    def indexed() -> list:
        found = list(repo.request_container("meta", read_only=True).items(records.prefix))
        repo.container_pool.clear()  # read-only: reopened, so it sees the next write
        return [(key, bytes(value)) for key, value in found]

    assert indexing.index_runs(repo, [run.hash], records={run.hash: records}) == 1
    ours = indexed()
    assert indexing.index_runs(repo, [run.hash]) == 1  # Aim's way, reopening the run
    assert ours and ours == indexed()
    assert indexing.outdated_runs(repo) == []
    [seen] = aim_runs_seen_by_a_fresh_process(aim_repo)
    assert (seen["name"], seen["params"]["kdma"]) == ("a", {"merit": 0.5})


def test_on_an_unverified_aim_only_public_apis_are_used_and_runs_read_back_alike(tmp_path,
                                                                                 monkeypatch,
                                                                                 caplog, aim_repo):
    """With the Aim gate closed: the run table keeps Aim's own mode and lock, there is no
    stage, runs keep Aim's status reporter and are dated and ended when written (the date
    asked for needs an internal), every run counts as outdated and indexing goes through
    Aim's own indexer step; a fresh process reads the runs back as written."""
    from align_track_pipeline.core import verified

    monkeypatch.setitem(verified.VERIFIED, "aim", {"aim": frozenset({"0.0.0"})})
    verified._warn_once.cache_clear()
    assert not verified.aim_internals()
    (tmp_path / "shm").mkdir()
    assert staging.new_stage(tmp_path / "shm", min_free=0) is None
    repo = storage.open_repo(aim_repo)
    assert type(repo._sdb_lock).__name__ == "SoftFileLock"  # Aim's own
    with repo.structured_db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL, SQLite's
    before = time.time()
    run = lean_runs.lean_run(repo, "exp", created=DATE)
    assert run._checkins is not None  # Aim's own status reporting
    run.name, run["adm"] = "a", "x"
    lean_runs.close_at(run, END)
    assert indexing.outdated_runs(repo) == [run.hash]
    assert indexing.index_runs(repo, [run.hash]) == 1
    assert indexing.outdated_runs(repo) == [run.hash]  # every run, always
    assert storage.read_params(repo, run.hash, ("adm", "none")) == {"adm": "x", "none": None}
    [seen] = aim_runs_seen_by_a_fresh_process(aim_repo)
    assert (seen["name"], seen["params"]["adm"]) == ("a", "x")
    assert before <= seen["creation_time"] <= seen["end_time"] <= time.time()  # written then
    warned = [r.getMessage() for r in caplog.records if r.name == verified.__name__]
    assert warned == ["aim: using its public API only (slower): aim 3.29.1 is not among the "
                      "verified ['0.0.0']"]
    verified._warn_once.cache_clear()
