"""Pins the Aim behaviour and internals the writer relies on: fails loudly if Aim changes."""

import threading
from importlib.metadata import version

from align_track_pipeline.core.trackers.aim import compat as aim_compat
from tests.conftest import aim_runs_seen_by_a_fresh_process


def test_aim_is_pinned():
    assert version("aim") == "3.29.1"


def _run(repo, name: str) -> str:
    run = aim_compat.lean_run(repo, "exp")
    run.name = name
    run["adm"] = "x"
    run.track(1.0, name="timing_seconds")
    run.close()
    return run.hash


def test_closed_runs_need_indexing_and_index_runs_does_it(tmp_path):
    repo = aim_compat.open_repo(tmp_path / "aim")
    first, second = _run(repo, "a"), _run(repo, "b")
    # close() does not index: a fresh process lists the runs but sees none of their params
    seen = {r["hash"]: r for r in aim_runs_seen_by_a_fresh_process(tmp_path / "aim")}
    assert {h: r["params"]["adm"] for h, r in seen.items()} == {first: None, second: None}
    assert set(aim_compat.outdated_runs(repo)) == {first, second}
    assert aim_compat.index_runs(repo, [first]) == 1
    seen = {r["hash"]: r for r in aim_runs_seen_by_a_fresh_process(tmp_path / "aim")}
    assert {h: r["params"]["adm"] for h, r in seen.items()} == {first: "x", second: None}
    assert seen[first]["name"] == "a"
    assert aim_compat.outdated_runs(repo) == [second]


def test_lean_runs_leave_no_threads(tmp_path):
    repo = aim_compat.open_repo(tmp_path / "aim")
    before = threading.active_count()
    for i in range(5):
        _run(repo, str(i))
    assert threading.active_count() <= before + 1


def test_rebuild_index(tmp_path):
    repo = aim_compat.open_repo(tmp_path / "aim")
    hashes = {_run(repo, str(i)) for i in range(3)}
    assert aim_compat.rebuild_index(repo) == 3
    seen = aim_runs_seen_by_a_fresh_process(tmp_path / "aim")
    assert {r["hash"] for r in seen if r["params"]["adm"] == "x"} == hashes


def test_deleted_runs_disappear_without_reindex(tmp_path):
    repo = aim_compat.open_repo(tmp_path / "aim")
    keep, gone = _run(repo, "keep"), _run(repo, "gone")
    aim_compat.index_runs(repo, [keep, gone])
    assert repo.delete_runs([gone]) == (True, [])
    assert not aim_compat.run_exists(repo, gone)
    assert [r["hash"] for r in aim_runs_seen_by_a_fresh_process(tmp_path / "aim")] == [keep]


def test_aim_hard_codes_the_project_name_and_name_project_replaces_it(tmp_path, monkeypatch):
    """Aim 3.29 stores no project name: `Project()` (what /api/projects/ returns) says "My
    awesome project" until `name_project`, which `align-track aim-ui`'s server calls."""
    from aim.web.api.projects.project import Project
    from aim.web.configs import AIM_UI_MOUNTED_REPO_PATH

    aim_compat.open_repo(tmp_path / "aim")
    monkeypatch.setenv(AIM_UI_MOUNTED_REPO_PATH, str(tmp_path / "aim"))
    monkeypatch.setattr(Project, "__init__", Project.__init__)  # restored after the test
    assert Project().name == "My awesome project"
    aim_compat.name_project("align-track-pipeline")
    aim_compat.name_project("align-track-pipeline")  # once only, whoever calls it again
    project = Project()
    assert project.name == "align-track-pipeline" and project.exists()


def test_aim_up_builds_its_server_command_from_an_app_string():
    """`run_aim_up` swaps the app in the uvicorn command `aim up` runs."""
    from aim.cli.up import commands

    command = commands.build_uvicorn_command("x.y:app", host="127.0.0.1", port=1, workers=1)
    assert command[-1] == "x.y:app" and "--workers" in command
    assert {p.name for p in commands.up.params} >= {"repo", "workers", "host", "port", "yes"}


def test_lean_runs_skip_status_reporting_and_still_finish(tmp_path):
    """Aim's `Run` builds a status reporter (a thread and check-in files per run, named in
    `aim.sdk.run`); a lean run has none, and still ends with an end time: not active."""
    import aim.sdk.run
    from aim import Run

    assert all(callable(getattr(aim.sdk.run, name)) for name in aim_compat._STATUS_REPORTERS)
    repo = aim_compat.open_repo(tmp_path / "aim")
    check_ins = tmp_path / "aim" / ".aim" / "check_ins"
    plain = Run(repo=repo, system_tracking_interval=None, capture_terminal_logs=False,
                log_system_params=False)
    assert plain._checkins is not None
    plain.close()
    assert len(list(check_ins.iterdir())) >= 1  # what a plain run leaves, one folder for all

    before = set(check_ins.iterdir())
    lean = aim_compat.lean_run(repo, "exp")
    assert lean._checkins is None and lean._heartbeat is None
    lean["adm"] = "x"
    lean.close()
    assert set(check_ins.iterdir()) == before
    assert aim.sdk.run.RunStatusReporter is not aim_compat._no_reporter  # put back
    aim_compat.set_archived(repo, lean.hash)
    assert set(check_ins.iterdir()) == before
    assert aim_compat.index_runs(repo, [plain.hash, lean.hash]) == 2
    for run_hash in (plain.hash, lean.hash):
        reread = Run(run_hash, repo=repo, read_only=True)
        assert reread.end_time is not None and not reread.active
    assert Run(lean.hash, repo=repo, read_only=True).archived


def test_the_run_table_is_switched_to_wal_for_new_and_existing_repos(tmp_path):
    """Aim names its run table `run_metadata.sqlite` and creates it in rollback mode; the
    writer switches it to WAL, where Aim and a fresh reader still see every run."""
    import sqlite3

    from aim import Repo

    def mode(path):
        with sqlite3.connect(path / ".aim" / aim_compat.STRUCTURED_DB) as conn:
            return conn.execute("PRAGMA journal_mode").fetchone()[0]

    Repo.from_path(str(tmp_path / "old"), init=True)
    assert mode(tmp_path / "old") == "delete"  # Aim's own default
    for path in (tmp_path / "old", tmp_path / "new"):
        repo = aim_compat.open_repo(path)
        assert mode(path) == "wal"
        run_hash = _run(repo, "a")
        assert aim_compat.index_runs(repo, [run_hash]) == 1
        assert [r["hash"] for r in aim_runs_seen_by_a_fresh_process(path)] == [run_hash]


def test_a_staged_run_is_built_outside_the_repo_and_moved_in_whole(tmp_path):
    """Aim opens a new run's two writable databases through `Repo.request_container` and its
    lock through `Repo.request_run_lock` while `Run()` runs, from `RocksContainer`'s
    `_db_opts`: a staged run is built under the stage (small MANIFEST preallocation, one
    file-opening thread), is nowhere in the repo until published, then reads back like any
    run."""
    from aim.sdk.repo import ContainerConfig

    (tmp_path / "shm").mkdir()
    stage = aim_compat.new_stage(tmp_path / "shm")
    repo = aim_compat.open_repo(tmp_path / "aim")
    run = aim_compat.lean_run(repo, "exp", stage)
    assert not {"request_container", "request_run_lock"} & set(vars(repo))  # Aim's own again
    assert isinstance(run._lock, aim_compat._NewRunLock)  # no lock file: a hash no one knows
    assert not list((tmp_path / "aim" / ".aim" / "locks").glob(f"{run.hash}*"))
    containers = [repo.container_pool[ContainerConfig(name, run.hash, False)]
                  for name in ("meta", "seqs")]
    assert all(c._db_opts["manifest_preallocation_size"] == aim_compat._SMALL_MANIFEST
               for c in containers)
    run.name, run["adm"] = "a", "x"
    run.track(1.5, name="timing_seconds")
    run.close()
    for name in ("meta", "seqs"):
        assert (stage / name / "chunks" / run.hash / "CURRENT").is_file()
        [options] = (stage / name / "chunks" / run.hash).glob("OPTIONS-*")  # as RocksDB ran
        assert "max_file_opening_threads=1\n" in options.read_text()
        assert not (tmp_path / "aim" / ".aim" / name / "chunks" / run.hash).exists()
    assert aim_compat.run_recorded(repo, run.hash) and not aim_compat.run_exists(repo, run.hash)

    aim_compat.publish_run(repo, run.hash, stage)
    assert not any(list((stage / name / "chunks").iterdir()) for name in ("meta", "seqs"))
    assert aim_compat.all_run_hashes(repo) == [run.hash]
    assert aim_compat.index_runs(repo, [run.hash]) == 1
    [seen] = aim_runs_seen_by_a_fresh_process(tmp_path / "aim")
    assert (seen["name"], seen["params"]["adm"]) == ("a", "x")
    assert seen["metrics"] == {"timing_seconds": 1.5}


def _file_opening_threads(options) -> int | None:
    """`max_file_opening_threads` read back through RocksDB's C API (aimrocks cannot)."""
    address = aim_compat._native_options(options)
    return None if address is None else (
        aim_compat._rocksdb().rocksdb_options_get_max_file_opening_threads(address))


def test_file_opening_threads_are_set_through_rocksdbs_c_api():
    """aimrocks has no setting for `max_file_opening_threads`: the native options object is
    found in the aimrocks object and set through the C API of aimrocks' own librocksdb."""
    import aimrocks

    options = aimrocks.Options(max_open_files=-1, create_if_missing=True)
    assert _file_opening_threads(options) == 16  # RocksDB's default
    assert aim_compat.set_file_opening_threads(options, 1)
    assert _file_opening_threads(options) == 1
    assert options.max_open_files == -1  # the probe leaves what aimrocks set
    assert aimrocks.Options is not aim_compat._OneOpenerOptions  # swapped only while opening


def test_without_rocksdbs_library_runs_open_with_the_default_threads(monkeypatch, caplog,
                                                                     tmp_path):
    """A missing or changed librocksdb makes runs slower, never fails them; the log says so
    once."""
    import aimrocks

    def missing():
        raise OSError("librocksdb.so: cannot open shared object file")

    monkeypatch.setattr(aim_compat, "_rocksdb", missing)
    aim_compat._say_once.cache_clear()
    assert not aim_compat.set_file_opening_threads(aimrocks.Options(), 1)
    assert not aim_compat.set_file_opening_threads(aimrocks.Options(), 1)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["Aim runs open with RocksDB's default file-opening threads: RocksDB's C "
                      "API is not usable (librocksdb.so: cannot open shared object file)"]
    repo = aim_compat.open_repo(tmp_path / "aim")
    (tmp_path / "shm").mkdir()
    stage = aim_compat.new_stage(tmp_path / "shm", min_free=0)
    run = aim_compat.lean_run(repo, "e", stage)
    run["x"] = 1
    run.close()
    assert aim_compat.publish_run(repo, run.hash, stage) is not None
    aim_compat._say_once.cache_clear()


def test_new_stage_removes_only_dead_processes_folders(tmp_path):
    import os
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"align-track-aim-{gone.pid}-abc"
    live = tmp_path / f"align-track-aim-{os.getpid()}-def"
    for folder in (dead, live):
        (folder / "meta").mkdir(parents=True)
    fresh = aim_compat.new_stage(tmp_path)
    assert fresh.is_dir() and fresh.name.startswith(f"align-track-aim-{os.getpid()}-")
    assert not dead.exists() and live.exists()
    assert aim_compat.new_stage(tmp_path / "missing") is None  # no memory file system


def test_no_stage_on_a_memory_file_system_short_of_space(tmp_path):
    """Runs are then written in the repo directly instead of failing when it fills."""
    import shutil

    free = shutil.disk_usage(tmp_path).free
    assert aim_compat.new_stage(tmp_path, min_free=free + 2**30) is None
    assert not list(tmp_path.iterdir())
    assert aim_compat.new_stage(tmp_path, min_free=free // 2) is not None


def test_run_creation_takes_an_flock_and_commits_without_a_sync_each(tmp_path):
    """Aim guards creating a run's row with `Repo._sdb_lock` (a polled lock file); the writer
    swaps in an `flock` and has its connections commit with `synchronous=NORMAL`."""
    import inspect

    from aim.sdk.repo import Repo

    assert "self._sdb_lock" in inspect.getsource(Repo.request_props)
    repo = aim_compat.open_repo(tmp_path / "aim")
    assert isinstance(repo._sdb_lock, aim_compat._Flock)
    with repo.structured_db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert aim_compat.open_repo(tmp_path / "aim") is repo  # Aim caches repos: set up once
    _run(repo, "a")
    assert len(repo.structured_db.runs()) == 1


def test_indexing_from_the_records_read_at_publishing_equals_aims_own(tmp_path):
    """`publish_run` reads a staged run's meta records before closing it; indexing them puts
    into the index exactly what Aim's `finalize` (reopening the run) puts there."""
    from aim import Text

    (tmp_path / "shm").mkdir()
    stage = aim_compat.new_stage(tmp_path / "shm")
    repo = aim_compat.open_repo(tmp_path / "aim")
    run = aim_compat.lean_run(repo, "exp", stage)
    run.name, run["adm"], run["kdma"] = "a", "x", {"merit": 0.5}
    run.track(1.5, name="timing_seconds")
    run.track(Text("a long text " * 100), name="probe_text")  # a BLOB, read lazily by Aim
    run.close()
    records = aim_compat.publish_run(repo, run.hash, stage)
    assert records.items

    def indexed() -> list:
        found = list(repo.request_container("meta", read_only=True).items(records.prefix))
        repo.container_pool.clear()  # read-only: reopened, so it sees the next write
        return [(key, bytes(value)) for key, value in found]

    assert aim_compat.index_runs(repo, [run.hash], records={run.hash: records}) == 1
    ours = indexed()
    assert aim_compat.index_runs(repo, [run.hash]) == 1  # Aim's way, reopening the run
    assert ours and ours == indexed()
    assert aim_compat.outdated_runs(repo) == []
    [seen] = aim_runs_seen_by_a_fresh_process(tmp_path / "aim")
    assert (seen["name"], seen["params"]["kdma"]) == ("a", {"merit": 0.5})
