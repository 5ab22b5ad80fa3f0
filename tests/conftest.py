"""Shared fixtures: a private copy of the bundled sample tree, and data dirs under tmp."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

# Pytest keeps the test modules it rewrites (and Python the package's bytecode) only where
# bytecode may be written: with PYTHONDONTWRITEBYTECODE set, every test process would compile
# them all again (~2 s CPU per process; __pycache__ is git-ignored).
sys.dont_write_bytecode = False

REPO = Path(__file__).resolve().parents[1]
SAMPLE_TREE = REPO / "examples" / "experiment-data"

# The tests' temporary folders on a memory file system where one has room: the Dagster,
# MLflow and Aim SQLite stores the tests write commit thousands of times, and each commit's
# fsync waits for the disk (most of the fast tier's waiting on a busy shared disk). A killed
# process loses nothing by it (its writes are in the page cache either way); only a power cut
# would, which no test makes. pytest's own variable for the root of its numbered folders
# (it keeps the last 3 runs', ~300 MB each); set it to keep them elsewhere.
MEMORY_TEMPROOT = Path("/dev/shm")
MEMORY_TEMPROOT_MIN_FREE = 4 << 30  # a container's small /dev/shm: the disk as before


def _temproot_in_memory() -> None:
    if "PYTEST_DEBUG_TEMPROOT" in os.environ:
        return
    try:
        free = os.statvfs(MEMORY_TEMPROOT)
    except OSError:
        return
    if free.f_bavail * free.f_frsize >= MEMORY_TEMPROOT_MIN_FREE and os.access(
            MEMORY_TEMPROOT, os.W_OK | os.X_OK):
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(MEMORY_TEMPROOT)


_temproot_in_memory()


# Tests that kill processes and count what survives, or bound how long something takes: in a
# parallel run (`-n`, `--dist loadgroup`) they run one after another on one worker, so that two of
# them never load the cores against each other's deadlines.
TIMING_SENSITIVE = (
    "tests/test_no_orphans.py::",  # survivors counted GONE_WITHIN s after a kill -9
    "tests/core/test_lifeline.py::",  # pool processes gone within a few poll periods
    "tests/defs/test_concurrency.py::test_ctrl_c_stops_a_wait_for_a_pool_at_once",  # < 10 s
    "tests/test_shared_stores.py::test_a_writer_killed_on_another_host_never_blocks",
    "tests/test_uri_credentials.py::test_search_with_a_server_that_is_down",  # < 15 s
    "tests/test_uri_credentials.py::test_search_gives_up",  # < 15 s
    "tests/test_json_errors.py::test_sigterm_mid_ingest",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(TIMING_SENSITIVE):
            item.add_marker(pytest.mark.xdist_group("timing"))


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_reaches_child_processes():
    """A shell runs a background job with SIGINT ignored, and a child process inherits that:
    the tests that Ctrl-C an `align-track` (or have it interrupt itself) would then see it
    run on. With a handler here, each child starts with SIGINT at its default again."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture(autouse=True)
def _dagster_state_storage_isolated():
    """No Dagster defs-state storage leaks from one test into the next (see
    `dagster_probes.no_defs_state_storage`)."""
    from tests.dagster_probes import no_defs_state_storage

    with no_defs_state_storage():
        yield


@pytest.fixture
def sample_tree(tmp_path: Path) -> Path:
    """A writable copy of examples/experiment-data."""
    dest = tmp_path / "experiment-data"
    shutil.copytree(SAMPLE_TREE, dest, symlinks=True)
    return dest


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data dir; DAGSTER_HOME is left to default inside it."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return tmp_path / "data"


SMALL_TREE_DIRS = ("comp_reg_icl_adept/moral_judgement-0.2",
                   "pipeline_baseline/moral_judgement-0.2", "random/unaligned")


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    """Three real run directories of the sample tree (4 scenes each): fast end-to-end runs."""
    dest = tmp_path / "small-tree"
    for rel in SMALL_TREE_DIRS:
        shutil.copytree(SAMPLE_TREE / rel, dest / rel, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def tables_dir(tmp_path_factory) -> Path:
    """A data dir holding both Parquet tables of the whole sample tree, written by the
    project's own parser and writer (no Dagster): fast tests of what reads the tables."""
    return write_tables(SAMPLE_TREE, tmp_path_factory.mktemp("tables"))


def write_tables(tree: Path, data: Path) -> Path:
    """Both Parquet tables of `tree` written into `data` by the project's own parser and
    writer (no Dagster); returns `data`."""
    from align_track_pipeline.core.source.discovery import FingerprintCache, find_run_dirs
    from align_track_pipeline.core.tables.writer import PartitionJob, write_partition

    run_dirs = find_run_dirs(tree)
    cache = FingerprintCache(data / "state" / "fingerprints.sqlite")
    versions = cache.versions(run_dirs)
    cache.close()
    for run_dir in run_dirs:
        write = write_partition(PartitionJob(run_dir.key, str(tree), str(data),
                                             versions[run_dir.key]))
        assert write.error is None, write.error
    return data


@pytest.fixture(scope="session")
def _empty_aim_repo(tmp_path_factory) -> Path:
    """An empty Aim repo made by Aim itself (`Repo.from_path(init=True)`), once per test
    process: Aim migrates a new repo's run table in an Alembic subprocess, ~1 s CPU each."""
    from aim import Repo

    path = tmp_path_factory.mktemp("empty-aim-repo")
    Repo.from_path(str(path), init=True)
    return path


@pytest.fixture
def aim_repo(tmp_path: Path, _empty_aim_repo: Path) -> Path:
    """`tmp_path / "aim"`: an empty Aim repo, as Aim's init leaves one (a copy of
    `_empty_aim_repo`). Tests of how a repo is created start without it."""
    return copy_empty_aim_repo(_empty_aim_repo, tmp_path / "aim")


def copy_empty_aim_repo(template: Path, dest: Path) -> Path:
    """`dest` made an empty Aim repo, a copy of `template`; returns `dest`."""
    shutil.copytree(template, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """MLflow's schema in a new SQLite file, made by MLflow's own migrations once per test
    process (they cost ~1 s CPU per new store). No experiment yet: a store opened on a copy
    adds its default experiment with its own artifact root, as on a new file."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    path = tmp_path_factory.mktemp("empty-mlflow-db") / "mlflow.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    _initialize_tables(engine)
    engine.dispose()
    return path


@pytest.fixture
def mlflow_db(tmp_path: Path, empty_mlflow_db: Path) -> Path:
    """`tmp_path / "mlflow.db"`: MLflow's schema and nothing else (a copy of
    `empty_mlflow_db`). Tests of how a store is created start without it."""
    dest = tmp_path / "mlflow.db"
    shutil.copyfile(empty_mlflow_db, dest)
    return dest


@pytest.fixture(scope="session")
def _empty_dagster_storage(tmp_path_factory) -> Path:
    """The storage a test instance creates on first use (its run, event log and schedule
    SQLite databases, schema by Dagster's own migrations), made once per test process."""
    import dagster as dg

    path = tmp_path_factory.mktemp("empty-dagster-instance")
    with dg.instance_for_test(temp_dir=str(path)) as instance:
        instance.get_runs()
        instance.all_instigator_state()
    return path


@pytest.fixture
def dagster_storage(tmp_path: Path, _empty_dagster_storage: Path) -> Path:
    """`tmp_path` holding a copy of that storage: `dg.instance_for_test(temp_dir=tmp_path)`
    opens it instead of creating its databases (~0.25 s CPU each)."""
    for name in ("history", "schedules"):
        shutil.copytree(_empty_dagster_storage / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def empty_stores(data_dir: Path, empty_mlflow_db: Path, _empty_aim_repo: Path) -> Path:
    """`data_dir` holding an empty MLflow store (`mlflow.db`) and Aim repo (`aim`) where the
    pipeline keeps them by default: copies of the ones made once per test process. Tests of
    how the stores are created start without them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_mlflow_db, data_dir / "mlflow.db")
    copy_empty_aim_repo(_empty_aim_repo, data_dir / "aim")
    return data_dir


def sensor_tick(defs, instance, cursor: str | None = None):
    """One evaluation of `experiment_folder_sensor` on a real instance."""
    import dagster as dg

    from align_track_pipeline.defs.sensors import experiment_folder_sensor

    context = dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor)
    return experiment_folder_sensor(context, tree=defs.resources["tree"],
                                    store=defs.resources["store"],
                                    trackers=defs.resources["trackers"])


def apply_partition_requests(instance, result) -> None:
    """What the daemon does with a sensor result's dynamic-partition requests."""
    import dagster as dg

    for request in getattr(result, "dynamic_partitions_requests", None) or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def item_count(run_dir: Path) -> int:
    """Items of a run dir's input_output.json, read independently of the parser."""
    data = json.loads((run_dir / "input_output.json").read_text())
    return len(data["results"] if isinstance(data, dict) else data)


def make_run_dir(root: Path, rel: str, source: Path | None = None) -> Path:
    """A run dir at `rel` holding a real input_output.json (copied from the sample tree)."""
    run_dir = root / rel
    run_dir.mkdir(parents=True, exist_ok=True)
    src = source or SAMPLE_TREE / "random" / "unaligned" / "input_output.json"
    shutil.copyfile(src, run_dir / "input_output.json")
    return run_dir


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts)."""
    import subprocess
    import sys
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    with open(root / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{root}/server.db",
             "--artifacts-destination", str(root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT,
            # Without this the server also starts its job runner: 7 more processes, ~1.7 GB.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError((root / "server.log").read_text()[-3000:]) from None
            time.sleep(0.5)
    yield url
    stop_server(proc)


def stop_server(proc, seconds: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited in time (`aim up` may ignore SIGTERM while
    its background indexer runs)."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=seconds)


def mlflow_scenes_finished(tracking_uri: str, key: str, scenes: int) -> bool:
    """The partition has exactly `scenes` finished scene runs in the `align-system` experiment,
    read through MLflow's client (independently of the writer). A SQL store is opened under
    the writers' creation lock, and a SQLite one not before it exists: MLflow's client creates
    or migrates the schema it opens, and two processes doing that at once clash (seen once: a
    column missing mid-migration)."""
    from mlflow import MlflowClient

    from align_track_pipeline.core.trackers.mlflow.writer import creation_lock

    if tracking_uri.startswith("sqlite:///") and not Path(
            tracking_uri.removeprefix("sqlite:///")).exists():
        return False
    with creation_lock(tracking_uri):
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name("align-system")
    if experiment is None:
        return False
    children = client.search_runs(
        [experiment.experiment_id],
        f"tags.partition_key = '{key}' and tags.run_type = 'scene'", max_results=1000)
    return len(children) == scenes and all(r.info.status == "FINISHED" for r in children)


def aim_runs_held(repo_path: Path) -> set[str]:
    """Every Aim run the repo holds anything of, complete or not: its folders, and the
    run-table rows of runs cut short while being built outside the repo."""
    from align_track_pipeline.core.trackers.aim import storage

    repo = storage.open_repo(repo_path)
    return set(storage.all_run_hashes(repo)) | {r.hash for r in repo.structured_db.runs()}


def aim_runs_seen_by_a_fresh_process(repo: Path, query: str = "") -> list[dict]:
    """Runs a new process's `aim.Repo(repo).query_runs(query)` returns, with params: a child
    forked for this query by `aim_query.py --serve`, which never opens a repo itself."""
    server = _aim_query_server()
    server.stdin.write(json.dumps([str(repo), query]) + "\n")
    server.stdin.flush()
    line = server.stdout.readline()
    assert line, f"aim_query.py --serve ended with {server.wait()}"
    answer = json.loads(line)
    assert "error" not in answer, answer["error"]
    return answer["runs"]


_AIM_QUERY_SERVER = []  # this test process's `aim_query.py --serve`, started on first use


def _aim_query_server():
    import subprocess
    import sys

    if not _AIM_QUERY_SERVER or _AIM_QUERY_SERVER[0].poll() is not None:
        _AIM_QUERY_SERVER[:] = [subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "aim_query.py"), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)]
    return _AIM_QUERY_SERVER[0]


@pytest.fixture(autouse=True, scope="session")
def _aim_query_server_stopped():
    """The query server ends with the session (it reads stdin to its end)."""
    yield
    for server in _AIM_QUERY_SERVER:
        server.stdin.close()
        server.wait(timeout=60)


def wait_http(url: str, proc, seconds: float = 120) -> bytes:
    """The body of `url` once the server `proc` answers; fails if it dies or never answers."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            return urllib.request.urlopen(url, timeout=2).read()
        except OSError:
            assert proc.poll() is None, "server exited"
            assert time.monotonic() < deadline, f"no answer from {url}"
            time.sleep(0.5)


def in_ci() -> bool:
    """`CI` is set (`.ci/run` sets it; so do CI services), where a missing tool is a failure."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(found: bool, what: str) -> None:
    """Skip with the reason when a system tool the test needs is missing here; fail in CI,
    where `.ci/provision` must have installed it."""
    if found:
        return
    reason = f"{what} is not installed (.ci/provision installs it)"
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway Postgres on 127.0.0.1 (trust auth, fsync off); yields a function that
    creates a fresh database and returns its SQLAlchemy URL (psycopg2 driver)."""
    from benchmarks.postgres import server_binaries, throwaway_postgres

    bin_dir = server_binaries()
    require(bin_dir is not None, "Debian's PostgreSQL server (package postgresql)")
    with throwaway_postgres(bin_dir) as (database, _pid):
        yield database


def without_read_override(argv: list[str]) -> list[str]:
    """`argv` run so that file permissions bind: as root, without the capabilities that read
    past them (util-linux's setpriv), so a folder with mode 000 is really unreadable."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]


def status_counts(**counts: int) -> dict[str, int]:
    """`status --json`'s counts: every state, zero where no partition is in it."""
    return dict.fromkeys(("fresh", "stale", "missing", "failed", "unreadable", "gone"),
                         0) | counts
