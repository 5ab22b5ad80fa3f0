"""`align-track` end to end on a copy of the bundled tree, with a real Dagster instance."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import find_run_dirs
from tests.conftest import item_count, status_counts


def _ingest(capsys, tree: Path, data: Path) -> tuple[int, dict]:
    code = main(["ingest", "--experiments-dir", str(tree), "--data-dir", str(data), "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_ingest_twice_then_change_one_file(capsys, sample_tree, data_dir):
    keys = sorted(r.key for r in find_run_dirs(sample_tree))
    code, first = _ingest(capsys, sample_tree, data_dir)
    assert code == 0 and first["failed"] == []
    assert first["discovered"] == len(keys) and sorted(first["materialized"]) == keys

    code, second = _ingest(capsys, sample_tree, data_dir)
    assert code == 0 and second["materialized"] == [] and sorted(second["fresh"]) == keys

    changed = find_run_dirs(sample_tree)[2]
    os.utime(find_run_dirs(sample_tree)[0].path / "input_output.json")  # touch only
    with open(changed.path / "input_output.json", "a") as f:
        f.write("\n")  # same JSON, new bytes
    code, third = _ingest(capsys, sample_tree, data_dir)
    assert code == 0 and third["materialized"] == [changed.key]

    scenes = ds.dataset(data_dir / "parquet" / "scenes").to_table()
    assert scenes.num_rows == sum(item_count(r.path) for r in find_run_dirs(sample_tree))


def test_a_tree_whose_only_run_dir_is_bad_exits_1_and_status_says_failed(capsys, tmp_path,
                                                                        data_dir):
    """The CLI's whole path in seconds: the observation registers the partition, the tables
    fail it with an error naming the file, the trackers skip it; `status` reports it failed."""
    bad = tmp_path / "tree" / "broken" / "run"
    bad.mkdir(parents=True)
    (bad / "input_output.json").write_text("")
    code, report = _ingest(capsys, tmp_path / "tree", data_dir)
    assert code == 1
    assert report == {"discovered": 1, "materialized": [], "fresh": [], "removed": [],
                      "changed": [], "failed": [{
        "partition": "broken/run",
        "error": f"{bad / 'input_output.json'}: empty file "
                 "(the run may have crashed or still be writing it)"}]}
    assert not (data_dir / "mlflow.db").exists() and not (data_dir / "aim").exists()
    main(["status", "--experiments-dir", str(tmp_path / "tree"), "--data-dir", str(data_dir),
          "--json"])
    status = json.loads(capsys.readouterr().out)
    error = report["failed"][0]["error"]  # the reason is the one the ingest reported
    assert status["partitions"] == [{"partition": "broken/run", "path": "broken/run",
                                     "state": "failed", "error": error}]
    assert status["counts"] == status_counts(failed=1) and status["total"] == 1
    main(["status", "--experiments-dir", str(tmp_path / "tree"), "--data-dir", str(data_dir)])
    lines = capsys.readouterr().out.splitlines()
    assert f"  FAILED broken/run: {error}" in lines
    assert lines[-1] == "1 partitions: 0 fresh, 0 stale, 0 missing, 1 failed, 0 unreadable, 0 gone"


@pytest.mark.slow
def test_bad_dir_fails_alone_with_exit_1(capsys, sample_tree, data_dir):
    bad = sample_tree / "pipeline_broken" / "affiliation-0.5"
    bad.mkdir(parents=True)
    (bad / "input_output.json").write_text("")
    code, report = _ingest(capsys, sample_tree, data_dir)
    assert code == 1
    assert report["failed"] == [{
        "partition": "pipeline_broken/affiliation-0.5",
        "error": f"{bad / 'input_output.json'}: empty file "
                 "(the run may have crashed or still be writing it)",
    }]
    assert len(report["materialized"]) == report["discovered"] - 1

    main(["status", "--experiments-dir", str(sample_tree), "--data-dir", str(data_dir), "--json"])
    status = json.loads(capsys.readouterr().out)
    states = {p["partition"]: p["state"] for p in status["partitions"]}
    assert states.pop("pipeline_broken/affiliation-0.5") == "failed"
    assert set(states.values()) == {"fresh"}


@pytest.mark.parametrize("made", [False, True])
def test_status_of_a_data_dir_never_ingested_creates_nothing(capsys, small_tree, tmp_path,
                                                           made):
    """A mistyped --data-dir is told, and neither created nor filled with an instance."""
    data = tmp_path / "never"
    if made:
        data.mkdir()
    code = main(["status", "--experiments-dir", str(small_tree), "--data-dir", str(data),
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out)["counts"] == status_counts(missing=3)
    assert f"nothing has been ingested into {data} yet: every partition is missing" in \
        captured.err
    assert (list(data.iterdir()) == []) if made else not data.exists()


@pytest.mark.slow
def test_status_reports_missing_and_stale(capsys, sample_tree, data_dir):
    def status() -> dict[str, str]:
        main(["status", "--experiments-dir", str(sample_tree), "--data-dir", str(data_dir),
              "--json"])
        return {p["path"]: p["state"] for p in json.loads(capsys.readouterr().out)["partitions"]}

    assert set(status().values()) == {"missing"}
    _ingest(capsys, sample_tree, data_dir)
    run = find_run_dirs(sample_tree)[0]
    (run.path / "scores.json").write_text('[{"alignment_target": "t", "measures": {}}]')
    states = status()
    assert states.pop(run.rel_path) == "stale" and set(states.values()) == {"fresh"}


def test_list_runs_table(capsys, sample_tree):
    main(["list-runs", str(sample_tree)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "path", "ADM", "alignment", "scenarios"]
    paths = {line.split()[0] for line in lines[2:]}
    assert paths == {r.rel_path for r in find_run_dirs(sample_tree) if " " not in r.rel_path}


@pytest.mark.slow
def test_console_script_json_is_one_object_on_stdout(sample_tree, data_dir):
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bin_dir / "align-track"), "ingest", "--json", "--experiments-dir", str(sample_tree),
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=False, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # exactly one JSON document
    assert report["discovered"] == len(find_run_dirs(sample_tree))
    assert "discovered" in proc.stderr  # progress went to stderr
    assert (data_dir / "dagster" / "dagster.yaml").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("env_var", ["ALIGN_TRACK_EXPERIMENTS_DIR"])
def test_env_var_selects_the_tree(capsys, monkeypatch, sample_tree, data_dir, env_var):
    monkeypatch.setenv(env_var, str(sample_tree))
    monkeypatch.setenv("ALIGN_TRACK_DATA_DIR", str(data_dir))
    assert main(["ingest", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["discovered"] == len(find_run_dirs(sample_tree))
    assert (data_dir / "parquet" / "scenes").is_dir()


@pytest.mark.slow
def test_odd_directory_names_ingest_end_to_end(capsys, sample_tree, data_dir):
    source = sample_tree / "random" / "unaligned" / "input_output.json"
    odd = ["with space/ünïcödé 名前", "dots.../run", "comma,100%/run"]
    for rel in odd:
        (sample_tree / rel).mkdir(parents=True)
        (sample_tree / rel / "input_output.json").write_bytes(source.read_bytes())
    code, report = _ingest(capsys, sample_tree, data_dir)
    assert code == 0 and report["failed"] == []
    scenes = ds.dataset(data_dir / "parquet" / "scenes").to_table()
    paths = set(scenes.column("experiment_path").to_pylist())
    assert set(odd) <= paths


@pytest.mark.slow
def test_a_bad_input_later_loses_nothing_already_ingested(capsys, sample_tree, data_dir):
    _ingest(capsys, sample_tree, data_dir)
    before = ds.dataset(data_dir / "parquet" / "scenes").to_table().num_rows
    victim = find_run_dirs(sample_tree)[0]
    (victim.path / "input_output.json").write_text('[{"input": ')  # a crashed rewrite
    code, report = _ingest(capsys, sample_tree, data_dir)
    assert code == 1 and [f["partition"] for f in report["failed"]] == [victim.key]
    assert ds.dataset(data_dir / "parquet" / "scenes").to_table().num_rows == before


@pytest.mark.slow
def test_trackers_option_writes_only_the_named_ones_and_the_rest_catch_up_later(
        capsys, monkeypatch, tmp_path, sample_tree, data_dir):
    """`--trackers aim`: the tables and Aim, and no MLflow store at all; `status` with the
    same choice says fresh. A later ingest with every tracker writes only MLflow (the tables
    and Aim stay as they are)."""
    tree = tmp_path / "tree"
    keep = find_run_dirs(sample_tree)[:3]
    for run_dir in keep:
        shutil.copytree(run_dir.path, tree / run_dir.key)
    keys = sorted(r.key for r in keep)
    argv = ["--experiments-dir", str(tree), "--data-dir", str(data_dir), "--json"]
    assert main(["ingest", *argv, "--trackers", "aim"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["materialized"]) == keys
    assert not (data_dir / "mlflow.db").exists() and (data_dir / "aim").is_dir()
    monkeypatch.setenv("ALIGN_TRACK_TRACKERS", "aim")
    main(["status", *argv])
    assert {p["state"] for p in json.loads(capsys.readouterr().out)["partitions"]} == {"fresh"}
    monkeypatch.delenv("ALIGN_TRACK_TRACKERS")

    assert main(["ingest", *argv]) == 0
    out, err = capsys.readouterr()
    assert sorted(json.loads(out)["materialized"]) == keys and (data_dir / "mlflow.db").exists()
    assert "mlflow: 3 partitions in" in err
    assert "aim: " not in err and "tables: " not in err  # fresh: nothing to redo

    # A folder removed while MLflow is left out: its MLflow runs go all the same.
    shutil.rmtree(tree / keys[0])
    assert main(["ingest", *argv, "--trackers", "aim"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == [keys[0]]
    assert _mlflow_runs(data_dir, keys[0]) == 0 and _mlflow_runs(data_dir, keys[1]) > 0
    assert main(["ingest", *argv]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["materialized"] == report["removed"] == []
    assert sorted(report["fresh"]) == keys[1:]

    assert main(["ingest", *argv, "--trackers", "aim,wandb"]) == 2
    assert "--trackers names wandb: no such tracker; registered: mlflow, aim" in (
        capsys.readouterr().err)
    assert main(["ingest", *argv, "--trackers", " , "]) == 2
    assert "--trackers ' , ' names no tracker" in capsys.readouterr().err


def _mlflow_runs(data_dir: Path, partition: str) -> int:
    """Active MLflow runs (parents and scenes) of a partition in the embedded store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{data_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("align-system")
    return len(client.search_runs([experiment.experiment_id], max_results=10000,
                                  filter_string=f"tags.`align_track.partition` = '{partition}'"))


@pytest.mark.slow
def test_every_phase_shows_progress_and_the_hints_repeat_the_dirs(capsys, small_tree,
                                                                  data_dir):
    """Each phase prints `[n/N] key: ... (rate)`; the closing hints name the tree and data
    dir given, so pasting them opens the same stores; a pass that writes no table leaves
    `scene_comparison` alone and says nothing about rebuilding it."""
    dirs = ["--experiments-dir", str(small_tree), "--data-dir", str(data_dir)]
    assert main(["ingest", *dirs]) == 0
    out, err = capsys.readouterr()
    keys = [r.key for r in find_run_dirs(small_tree)]
    for phase in ("scenes so far", "runs,"):  # the tables, then each tracker
        done = [line for line in err.splitlines() if line.startswith("[3/3] ") and phase in line]
        assert done and all(line.endswith(" partitions/s)") for line in done), err
    assert sum(line.startswith("[3/3] ") and "runs," in line for line in err.splitlines()) == 2
    assert "analysis: rebuilt" in err
    assert f"open with `align-track mlflow-ui --data-dir {data_dir}`" in out
    assert f"open with `align-track aim-ui --data-dir {data_dir}`" in out
    assert f"`align-track status --experiments-dir {small_tree} --data-dir {data_dir}`" in out

    bad = small_tree / "pipeline_broken" / "run"
    bad.mkdir(parents=True)
    (bad / "input_output.json").write_text("")
    assert main(["ingest", *dirs]) == 1
    err = capsys.readouterr().err
    assert "pipeline_broken/run" in err and "analysis: rebuilt" not in err  # no table written
    assert len(keys) == 3


@pytest.mark.parametrize(("args", "said"), [
    (["ingest", "--data-dir", ""], "argument --data-dir: an empty path"),
    (["status", "--experiments-dir", " "], "argument --experiments-dir: an empty path"),
    (["search", "--limit", "-5"], "argument --limit: expected a whole number (0 or more)"),
    (["ingest", "--workers", "0"], "argument --workers: expected a whole number of at least 1"),
    (["export", "-o", ""], "argument -o/--output: an empty path (give a file name)"),
    (["compare", "S", "--html", " "], "argument --html: an empty path"),
    (["list-runs", ""], "argument dir: an empty path"),
    (["mlflow-ui", "--port", "0"], "argument --port: expected a port from 1 to 65535, not '0'"),
    (["aim-ui", "--port", "70000"], "argument --port: expected a port from 1 to 65535"),
    (["report", "-o", "/"], "argument -o/--output: / is a folder (give a file name)"),
    (["dashboard", "-o", "/tmp"], "argument -o/--output: /tmp is a folder"),
    (["search", "--limit", "99999999999999999999"], "argument --limit: expected a whole"),
])
def test_a_value_an_option_cannot_take_is_a_usage_error(capsys, args, said):
    """Before any work: an empty --data-dir or -o would silently mean the working directory,
    a negative --limit cut rows off the end, port 0 a port nobody is told."""
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2 and said in capsys.readouterr().err


def test_a_home_folder_written_as_a_tilde_is_the_home_folder(monkeypatch, tmp_path):
    """`--data-dir=~/x` reaches the command unexpanded (the shell expands no `~` after `=`),
    as does `~` in a variable set from a file: neither may create a folder named `~`."""
    from align_track_pipeline.cli.arguments import folder
    from align_track_pipeline.core.locations import default_data_dir, default_experiments_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    assert folder("~/atdata") == tmp_path / "atdata"
    monkeypatch.setenv("ALIGN_TRACK_DATA_DIR", "~/atdata")
    monkeypatch.setenv("ALIGN_TRACK_EXPERIMENTS_DIR", "~/tree")
    assert (default_data_dir(), default_experiments_dir()) == (str(tmp_path / "atdata"),
                                                               str(tmp_path / "tree"))


@pytest.mark.parametrize("command", ["mlflow-ui", "aim-ui", "dagster-ui"])
def test_a_ui_on_a_taken_port_says_so_and_starts_nothing(capsys, small_tree, tmp_path,
                                                         command):
    """Before, the second `mlflow-ui` printed addresses served by another data dir's UI and
    exited 0; `dagster-ui` ran its daemon on without a web server."""
    import socket

    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main([command, "--data-dir", str(data), "--port", str(port),
                     *(["--experiments-dir", str(small_tree)] if command == "dagster-ui"
                       else [])])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err == (f"align-track: port {port} on 127.0.0.1 is taken (Address already in use), "
                   "perhaps by another UI: nothing was started. Stop it, or pass --port N\n")
    assert not data.exists()


def test_aim_reindex_of_a_repo_not_written_yet_makes_none(capsys, tmp_path):
    data = tmp_path / "typo"
    assert main(["aim-reindex", "--data-dir", str(data)]) == 2
    assert f"no Aim repo at {data / 'aim'} yet: nothing to index" in capsys.readouterr().err
    assert not data.exists()
