"""A password written into the MLflow tracking URI (`http://USER:PASSWORD@HOST:PORT`) is used
to connect and shown nowhere: not on stdout or stderr, not in `--json`, not in any file of the
data dir (Parquet, Dagster's run and event storage, its compute logs)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.trackers.mlflow.environment import SETTINGS as MLFLOW_SWITCHES
from align_track_pipeline.core.trackers.mlflow.lookup import REACH_SECONDS
from tests.conftest import _free_port

# A lookup that did not give up would take MLflow's 120 s per request, retried: far above this
# bound, which leaves room for the CLI's start-up on loaded cores (21 s seen with two test
# workers on 2 busy cores, where the lookup itself gave up after its 2 s).
GAVE_UP_WITHIN = 60

ALIGN_TRACK = str(Path(sys.executable).parent / "align-track")
PASSWORD = "SECRETPW"


def _with_password(url: str) -> str:
    return url.replace("http://", f"http://alice:{PASSWORD}@", 1)


def _align_track(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ALIGN_TRACK_"))}
    return subprocess.run([ALIGN_TRACK, *args], capture_output=True, text=True, timeout=600,
                          env=clean | env)


def _clean_environment(monkeypatch) -> None:
    """The environment `_align_track` gives a command: none of the caller's MLflow or
    align-track settings, only the switches every process of the project sets."""
    for name in list(os.environ):
        if name.startswith(("MLFLOW_", "ALIGN_TRACK_")) and name not in MLFLOW_SWITCHES:
            monkeypatch.delenv(name)


def _search(capfd, monkeypatch, *args: str, **env: str) -> tuple[int, str, str]:
    """`align-track search ARGS` run in this process as the entry point runs it (no Python
    start-up and imports to pay), in the environment `_align_track` gives the command: exit
    code, stdout and stderr as they reached the file descriptors (log handlers included)."""
    _clean_environment(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capfd.readouterr()
    code = main(["search", *args])
    out = capfd.readouterr()
    return code, out.out, out.err


def _files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under `root` whose bytes contain `secret` (SQLite databases included)."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_password_in_the_uri_reaches_no_output_and_no_file(small_tree, tmp_path, mlflow_server):
    data = tmp_path / "data"
    uis = {"ALIGN_TRACK_MLFLOW_UI_URL": _with_password("http://mlflow.example:5000"),
           "ALIGN_TRACK_AIM_UI_URL": _with_password("http://aim.example:43800")}
    done = _align_track("ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data),
                        "--mlflow-uri", _with_password(mlflow_server),
                        "--mlflow-experiment", "credentials", **uis)
    assert done.returncode == 0, done.stderr[-3000:]
    found = _align_track("search", "--data-dir", str(data), "--limit", "2", "--json",
                         "--mlflow-uri", _with_password(mlflow_server),
                         "--mlflow-experiment", "credentials", **uis)
    assert found.returncode == 0, found.stderr[-3000:]
    rows = json.loads(found.stdout)["rows"]
    assert all(r["links"]["mlflow"].startswith("http://mlflow.example:5000/#/") for r in rows)
    assert all(r["links"]["aim"].startswith("http://aim.example:43800/runs/") for r in rows)
    assert PASSWORD not in found.stdout + found.stderr
    experiment = MlflowClient(mlflow_server).get_experiment_by_name("credentials")
    runs = MlflowClient(mlflow_server).search_runs([experiment.experiment_id], max_results=100)
    assert len(runs) == 3 + 12  # the URI was used to connect
    assert PASSWORD not in done.stdout + done.stderr
    assert "View run" not in done.stdout + done.stderr  # one get_run per run, no longer made
    assert f"mlflow: {mlflow_server} (experiment credentials)" in done.stdout
    assert (data / "dagster" / "storage").is_dir()  # the compute logs are among the files
    assert _files_holding(data, PASSWORD) == []


@pytest.mark.slow
def test_a_password_in_the_uri_of_a_server_that_is_down_is_shown_nowhere(small_tree, tmp_path):
    """Nothing listens at the server's address: its partitions fail once it has not answered
    for REACH_SECONDS (not after MLflow's retries, about four minutes), each with one line
    naming the server."""
    data = tmp_path / "data"
    port = _free_port()
    uri = _with_password(f"http://127.0.0.1:{port}")  # nothing listens there
    started = time.monotonic()
    done = _align_track("ingest", "--json", "--experiments-dir", str(small_tree), "--data-dir",
                        str(data), "--mlflow-uri", uri, "--trackers", "mlflow")
    assert time.monotonic() - started < REACH_SECONDS + GAVE_UP_WITHIN
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [f["error"] for f in json.loads(done.stdout)["failed"]]
    assert errors == [f"log_mlflow_runs: ConnectionError: the MLflow tracking server "
                      f"http://127.0.0.1:{port} cannot be reached: Connection refused"] * 3
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert _files_holding(data, PASSWORD) == []


def test_search_with_a_server_that_is_down_answers_from_parquet(tables_dir, capfd, monkeypatch):
    """Links come from a tracking server that does not answer: the rows are printed at once,
    the links marked unavailable, and why on stderr (no password)."""
    shown = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    code, out, err = _search(capfd, monkeypatch, "--data-dir", str(tables_dir), "--adm",
                             "random", "--limit", "3", "--json",
                             MLFLOW_TRACKING_URI=_with_password(shown))
    seconds = time.monotonic() - started
    assert code == 0, err[-3000:]
    assert seconds < GAVE_UP_WITHIN, seconds
    found = json.loads(out)
    assert found["count"] == 3
    assert [r["links"]["mlflow"] for r in found["rows"]] == ["unavailable"] * 3
    assert err == (f"align-track search: mlflow links unavailable: {shown} "
                   "(experiment align-system): ConnectionRefusedError: "
                   "[Errno 111] Connection refused\n")


def test_search_with_a_server_that_is_down_marks_links_in_the_table(tables_dir, capfd,
                                                                     monkeypatch):
    uri = _with_password(f"http://127.0.0.1:{_free_port()}")
    code, out, err = _search(capfd, monkeypatch, "--data-dir", str(tables_dir), "--adm",
                             "random", "--limit", "3", "--mlflow-uri", uri)
    assert code == 0, err[-3000:]
    lines = out.splitlines()
    assert "mlflow link" in lines[0] and lines[-1] == "3 scenes rows (more match: --limit N " \
        "or --limit 0 for all)"
    assert sum("unavailable" in line for line in lines) == 3
    assert PASSWORD not in out + err


def _search_a_silent_server(tables_dir: Path, uri: str, capfd,
                            monkeypatch) -> tuple[int, str, str, float]:
    """`search` with links from a server at `uri` ({address} filled in) that takes the
    connection and never answers; its exit code, what it printed and how long it took."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nothing ever reads or answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        code, out, err = _search(capfd, monkeypatch, "--data-dir", str(tables_dir), "--adm",
                                 "random", "--limit", "3", "--json", "--mlflow-uri",
                                 uri.format(address=address))
        return code, out, err, time.monotonic() - started


def test_search_gives_up_on_a_server_that_never_answers(tables_dir, capfd, monkeypatch):
    """A server that takes the connection and never answers (hung, or a blackholed proxy):
    the lookup gives up after LOOKUP_SECONDS, not MLflow's 120 s per request, 8 times."""
    code, out, err, seconds = _search_a_silent_server(tables_dir, "http://{address}", capfd,
                                                      monkeypatch)
    assert code == 0, err[-3000:]
    assert seconds < GAVE_UP_WITHIN, seconds
    assert "mlflow links unavailable: http://127.0.0.1:" in err
    assert err.rstrip().endswith("TimeoutError: timed out")
    assert json.loads(out)["count"] == 3


def test_a_traceback_of_the_cli_shows_no_password(tmp_path, capfd, monkeypatch):
    """An error nothing of ours expected still prints its traceback, masked: here the
    instance home failing with a database URI in its message."""
    from align_track_pipeline.cli import instance

    def failing(_data):
        raise RuntimeError(f"cannot reach postgresql://alice:{PASSWORD}@db.example/dagster")

    monkeypatch.setattr(instance, "prepare_home", failing)
    capfd.readouterr()
    code = main(["dagster-home", "--data-dir", str(tmp_path)])
    out = capfd.readouterr()
    assert code == 1
    assert out.err.startswith("Traceback (most recent call last):")
    assert "RuntimeError: cannot reach postgresql://***@db.example/dagster" in out.err
    assert PASSWORD not in out.out + out.err


@pytest.mark.parametrize("how", ["variable", "option"])
def test_a_password_in_a_refused_aim_repo_uri_is_shown_nowhere(tmp_path, capfd, monkeypatch,
                                                              how):
    """A remote Aim repo is refused (exit 2) naming it, without its credentials."""
    repo = f"aim://alice:{PASSWORD}@host:53800"
    _clean_environment(monkeypatch)
    args = ["ingest", "--data-dir", str(tmp_path), "--json"]
    if how == "variable":
        monkeypatch.setenv("ALIGN_TRACK_AIM_REPO", repo)
    else:
        args += ["--aim-repo", repo]
    capfd.readouterr()
    code = main(args)
    out = capfd.readouterr()
    assert code == 2 and "Aim repo 'aim://host:53800': remote repos" in out.err
    assert PASSWORD not in out.out + out.err


def _mlflow_ui(capfd, monkeypatch, uri: str) -> tuple[int, str, float]:
    """`align-track mlflow-ui` on a store it cannot open, in this process (it fails before
    its server would replace the process): exit code, stderr, seconds."""
    _clean_environment(monkeypatch)
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    capfd.readouterr()
    started = time.monotonic()
    code = main(["mlflow-ui", "--mlflow-uri", uri, "--port", str(_free_port())])
    return code, capfd.readouterr().err, time.monotonic() - started


def test_mlflow_ui_on_a_tracking_server_that_is_down_says_so_in_one_line(capfd, monkeypatch):
    port = _free_port()
    code, err, _ = _mlflow_ui(capfd, monkeypatch, _with_password(f"http://127.0.0.1:{port}"))
    assert code == 1
    assert err.startswith(f"align-track: cannot open the MLflow store http://127.0.0.1:{port}: ")
    assert "Connection refused" in err
    assert "Traceback" not in err and PASSWORD not in err
    assert "PGCONNECT_TIMEOUT" not in os.environ  # set for the lookup only


@pytest.mark.slow  # a real mlflow server
def test_mlflow_ui_on_a_tracking_server_points_at_its_own_ui(capfd, monkeypatch, mlflow_server):
    """`mlflow server` cannot take another server as its store: nothing is started, the
    server's own addresses of the experiment are printed, without the password."""
    experiment = f"ui-{time.monotonic_ns()}"
    experiment_id = MlflowClient(mlflow_server).create_experiment(experiment)
    _clean_environment(monkeypatch)
    monkeypatch.setenv("ALIGN_TRACK_MLFLOW_EXPERIMENT", experiment)
    capfd.readouterr()
    code = main(["mlflow-ui", "--mlflow-uri", _with_password(mlflow_server)])
    err = capfd.readouterr().err
    assert code == 0, err
    assert f"serves the MLflow UI itself: {mlflow_server}" in err
    assert f"{mlflow_server}/#/experiments/{experiment_id}/runs" in err
    assert "MLflow UI on" not in err and PASSWORD not in err


def test_mlflow_ui_gives_up_on_a_database_server_that_never_answers(capfd, monkeypatch):
    """A blackholed Postgres: libpq has no limit of its own, the command would hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        code, err, seconds = _mlflow_ui(
            capfd, monkeypatch, f"postgresql+psycopg2://alice:{PASSWORD}@{address}/db")
    assert code == 1
    assert err.startswith(f"align-track: cannot open the MLflow store "
                          f"postgresql+psycopg2://{address}/db: "), err[-2000:]
    assert "timeout expired" in err
    assert seconds < GAVE_UP_WITHIN, seconds
    assert "Traceback" not in err and PASSWORD not in err


def test_search_gives_up_on_a_database_server_that_never_answers(tables_dir, capfd,
                                                                  monkeypatch):
    """The same with MLflow on Postgres: the driver's connection gives up after
    LOOKUP_SECONDS (libpq has no timeout of its own)."""
    code, out, err, seconds = _search_a_silent_server(
        tables_dir, f"postgresql+psycopg2://alice:{PASSWORD}@{{address}}/db", capfd,
        monkeypatch)
    assert code == 0, err[-3000:]
    assert seconds < GAVE_UP_WITHIN, seconds
    assert "mlflow links unavailable: postgresql+psycopg2://127.0.0.1:" in err
    assert json.loads(out)["count"] == 3
    assert PASSWORD not in out + err


@pytest.mark.parametrize(("name", "uri"), [
    ("MLFLOW_TRACKING_URI", f"http://alice:{PASSWORD}/x@127.0.0.1:5077"),
    ("MLFLOW_TRACKING_URI", f"postgresql+psycopg2://alice:{PASSWORD}/x@db:5432/mlflow"),
    ("ALIGN_TRACK_POSTGRES_URL", f"postgresql+psycopg2://alice:{PASSWORD}/x@db:5432/dagster"),
])
def test_a_password_with_an_unencoded_slash_is_refused_and_shown_nowhere(tmp_path, name, uri):
    """A `/` in a password, unencoded, ends the host part: before, the refusal about the
    'port' quoted the URI with the password in it, and `config` listed it whole."""
    for argv in (["status"], ["ingest"], ["config"]):
        done = _align_track(*argv, "--data-dir", str(tmp_path / "data"), **{name: uri})
        assert PASSWORD not in done.stdout + done.stderr, argv
        if argv != ["config"]:
            assert done.returncode == 2, (argv, done.stderr)
            assert "unencoded '/'" in done.stderr and "%2F" in done.stderr, done.stderr
