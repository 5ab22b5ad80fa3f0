"""`align-track search|compare|report|export` on real tables: answers equal the Parquet rows
read independently, bad requests exit 2 with what is valid, no match is an empty answer."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.analysis.search import SHOWN_COLUMNS
from align_track_pipeline.core.trackers.aim.manifest import complete_run_hashes, manifest_path
from align_track_pipeline.core.trackers.mlflow.plan import TAG_KEY
from align_track_pipeline.core.versions import scene_key
from tests.core.analysis.expected import by_key, comparison_rows, table_rows

UI_VARIABLES = ("ALIGN_TRACK_MLFLOW_UI_URL", "ALIGN_TRACK_AIM_UI_URL")


@pytest.fixture(autouse=True)
def _no_ui_addresses(monkeypatch):
    for name in UI_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_search_json_is_every_column_of_the_matching_rows(capsys, tables_dir):
    code, out, _ = run(capsys, "search", "--data-dir", str(tables_dir), "--adm", "random",
                       "--target", "unaligned", "--json")
    found = json.loads(out)
    expected = [r for r in table_rows(tables_dir, "scenes")
                if (r["adm"], r["alignment_target_id"]) == ("random", "unaligned")]
    assert code == 0 and found["count"] == len(expected) == len(found["rows"])
    assert by_key(found["rows"]) == by_key(expected)  # full texts, no links without UI URLs


def test_search_table_shortens_texts_and_counts(capsys, monkeypatch, tables_dir):
    monkeypatch.setenv("COLUMNS", "1000")  # every column fits: each text cut at 40
    code, out, _ = run(capsys, "search", "--data-dir", str(tables_dir), "--scenario",
                       "June2025-AF-train", "--limit", "3")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == SHOWN_COLUMNS["scenes"]
    assert len(lines) == 2 + 3 + 1 and "..." in out
    assert lines[-1] == "3 scenes rows (more match: --limit N or --limit 0 for all)"
    code, out, _ = run(capsys, "search", "--data-dir", str(tables_dir), "--scenario",
                       "June2025-AF-train", "--limit", "3", "--json")
    found = json.loads(out)
    assert (found["count"], found["more"]) == (3, True)  # a script knows it got a part


def test_no_match_is_an_empty_answer(capsys, tables_dir):
    code, out, _ = run(capsys, "search", "--data-dir", str(tables_dir), "--adm", "nobody")
    assert (code, out) == (0, "no scenes rows match\n")
    code, out, _ = run(capsys, "search", "--data-dir", str(tables_dir), "--adm", "nobody",
                       "--json")
    assert (code, json.loads(out)) == (0, {"count": 0, "more": False, "rows": []})
    code, out, _ = run(capsys, "compare", "nothing", "--data-dir", str(tables_dir), "--json")
    assert (code, json.loads(out)) == (0, {"scenario_id": "nothing", "count": 0, "rows": []})


@pytest.mark.parametrize(("argv", "message"), [
    (["search", "--where", "1=1; COPY scenes TO '/tmp/leak.csv'"], "without ';'"),
    (["search", "--where", "(SELECT count(*) FROM read_csv('/etc/passwd')) > 0"],
     "may read the tables only"),
    (["search", "--where", "(SELECT count(*) FROM read_parquet('/etc/x.parquet')) > 0"],
     "may read the tables only"),
    (["export", "-o", "{tmp}/x.csv", "--where",
      "(SELECT count(*) FROM read_text('/etc/hostname')) > 0"], "may read the tables only"),
    (["search", "--where", "nosuch = 1"], "valid columns of scenes: partition_key"),
    (["search", "--table", "experiments", "--scene", "P1"], "try --table scenes"),
    (["search", "--min-score", "score"], "NAME=VALUE"),
    (["report", "-o", "{tmp}/r.txt"], r"must end in \.xlsx, \.csv, \.md, \.html"),
    (["report", "--rows", "nosuch", "-o", "{tmp}/r.csv"], "valid: partition_key"),
    (["export", "-o", "{tmp}/x.xml"], "valid: csv, tsv, json, jsonl, parquet"),
])
def test_bad_requests_exit_2_saying_what_is_valid(capsys, tables_dir, tmp_path, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, out, err = run(capsys, *argv, "--data-dir", str(tables_dir))
    assert code == 2 and out == "" and err.startswith(f"align-track {argv[0]}: ")
    assert re.search(message, err), err
    assert not Path("/tmp/leak.csv").exists() and not list(tmp_path.iterdir())


def test_no_tables_yet_says_to_ingest(capsys, tmp_path):
    for argv in (["search"], ["compare", "S"], ["report", "-o", str(tmp_path / "r.md")],
                 ["export", "-o", str(tmp_path / "x.csv")]):
        code, _, err = run(capsys, *argv, "--data-dir", str(tmp_path / "nothing"))
        assert code == 2 and "run `align-track ingest` first" in err


def test_compare_json_and_html(capsys, tables_dir, tmp_path):
    page = tmp_path / "mj1.html"
    code, out, _ = run(capsys, "compare", "DryRunEval.MJ1", "--scene", "P1", "--data-dir",
                       str(tables_dir), "--json", "--html", str(page))
    found = json.loads(out)
    expected = comparison_rows(tables_dir, "DryRunEval.MJ1", "P1")
    assert code == 0 and found["scenario_id"] == "DryRunEval.MJ1"
    assert found["count"] == len(expected) and found["rows"] == expected
    html = page.read_text()
    assert "<script" not in html and "http" not in html  # opens offline, anywhere
    assert all(r["experiment_path"] in html for r in expected)


def test_compare_in_the_terminal_groups_by_scene(capsys, tables_dir):
    code, out, _ = run(capsys, "compare", "DryRunEval.MJ1", "--data-dir", str(tables_dir))
    expected = comparison_rows(tables_dir, "DryRunEval.MJ1")
    scenes = sorted({r["scene_id"] for r in expected})
    headings = [line for line in out.splitlines() if line.startswith("== ")]
    assert code == 0 and [h.split()[4].rstrip(":") for h in headings] == scenes
    assert out.count("probe: ") == len(scenes)


def test_compare_of_an_unknown_scenario_or_scene_names_the_closest_ones(capsys, tables_dir):
    scenarios = sorted({r["scenario_id"] for r in table_rows(tables_dir, "scenes")})
    code, out, _ = run(capsys, "compare", "dryruneval.mj1", "--data-dir", str(tables_dir))
    assert code == 0 and out.startswith(
        "no scenes of scenario 'dryruneval.mj1'; closest scenario ids: DryRunEval.MJ1, ")
    code, out, _ = run(capsys, "compare", "nope", "--data-dir", str(tables_dir))
    assert out == (f"no scenes of scenario 'nope'; {len(scenarios)} scenario ids: "
                   f"{', '.join(scenarios)}\n")
    code, out, _ = run(capsys, "compare", "DryRunEval.MJ1", "--scene", "p1", "--data-dir",
                       str(tables_dir))
    assert out.startswith("no scenes of scenario 'DryRunEval.MJ1' with scene id 'p1'; "
                          "closest scene ids of DryRunEval.MJ1: P1")


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_an_export_again_over_its_own_file_replaces_it(capsys, tables_dir, tmp_path, suffix):
    """Exporting again after an ingest is routine: DuckDB's own way of writing over a file
    (a temporary name beside it) is one the locked connection may not write."""
    target = tmp_path / f"rows{suffix}"
    argv = ["export", "--data-dir", str(tables_dir), "-o", str(target)]
    assert run(capsys, *argv)[0] == 0
    code, out, err = run(capsys, *argv, "--adm", "random")
    randoms = [r for r in table_rows(tables_dir, "scenes") if r["adm"] == "random"]
    assert (code, err) == (0, "") and f"wrote {len(randoms)} scenes rows" in out
    if suffix == ".parquet":
        assert pq.read_table(target).num_rows == len(randoms)
    else:
        assert "pipeline_baseline" not in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no partial file left


@pytest.mark.parametrize("argv", [["export", "--format", "csv", "-o"], ["report", "-o"],
                                  ["dashboard", "-o"], ["compare", "x", "--html"]])
def test_an_output_that_is_a_fifo_is_refused_and_left_as_it_is(capsys, tables_dir, tmp_path,
                                                                 argv):
    """Before, the output was written beside it and moved over it: the FIFO (or, as root,
    `/dev/full` itself) was replaced by a file, its reader got nothing, and the command said
    it wrote the rows, exit 0."""
    import os
    import stat

    fifo = tmp_path / "out.html" if argv[0] in ("dashboard", "compare") else tmp_path / "o.csv"
    os.mkfifo(fifo)
    code, out, err = run(capsys, *argv, str(fifo), "--data-dir", str(tables_dir))
    assert code == 2 and "it is a FIFO, not a file; nothing was written" in err, (out, err)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_adm_matches_the_hydra_config_too(capsys, tables_dir):
    """Few-shot runs are named after the zero-shot config they extend: `--adm` with the
    few-shot config finds them (before: no rows)."""
    few_shot = "phase2_pipeline_fewshot_comparative_regression"
    code, out, _ = run(capsys, "search", "--data-dir", str(tables_dir), "--adm", few_shot,
                       "--json", "--limit", "0")
    rows = json.loads(out)["rows"]
    expected = [r for r in table_rows(tables_dir, "scenes") if r["adm_config"] == few_shot]
    assert code == 0 and len(rows) == len(expected) > 0
    assert {r["adm"] for r in rows} == {"phase2_pipeline_zeroshot_comparative_regression"}


def test_tables_of_an_earlier_version_are_read_and_a_hand_made_file_is_named(
        capsys, tables_dir, tmp_path):
    """Files written before a column existed, which no ingest rewrote (their folder became
    unreadable, or fails to parse now): read with that column empty, and said. Before, every
    read failed with DuckDB's binder error. A file made by hand with the row keys is named."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tables_dir / "parquet", data / "parquet")
    older = sorted((data / "parquet" / "scenes").glob("*.parquet"))[1]
    pq.write_table(pq.read_table(older).drop_columns(["adm_config"]), older)
    code, out, err = run(capsys, "search", "--data-dir", str(data), "--json", "--limit", "0")
    assert code == 0 and "written by an earlier align-track" in err, err
    rows = json.loads(out)["rows"]
    assert len(rows) == len(table_rows(tables_dir, "scenes"))
    assert {r["adm_config"] for r in rows if r["partition_key"] == pq.read_table(
        older)["partition_key"][0].as_py()} == {None}

    mine = data / "parquet" / "scenes" / "mine.parquet"
    pq.write_table(pq.read_table(older, columns=["partition_key", "scene_index"]), mine)
    code, _, err = run(capsys, "search", "--data-dir", str(data))
    assert code == 1 and f"{mine}" in err and "Move them out of" in err, err
    assert str(older) not in err.split("Move them out")[0]


def test_an_export_to_a_gz_name_is_compressed(capsys, tables_dir, tmp_path):
    target = tmp_path / "rows.csv.gz"
    assert run(capsys, "export", "--data-dir", str(tables_dir), "-o", str(target), "--format",
               "csv")[0] == 0
    assert target.read_bytes()[:2] == b"\x1f\x8b"  # gzip, as DuckDB writes it by its name


def test_an_export_to_stdout_is_the_file_it_would_write(tables_dir, tmp_path):
    """`-o -` wrote a file named `-` in the working directory."""
    script = str(Path(sys.executable).parent / "align-track")
    argv = [script, "export", "--data-dir", str(tables_dir), "--table", "experiments"]
    done = subprocess.run([*argv, "-o", "-", "--format", "jsonl"], capture_output=True,
                          cwd=tmp_path, timeout=120, check=True)
    rows = [json.loads(line) for line in done.stdout.decode().splitlines()]
    expected = table_rows(tables_dir, "experiments")
    assert sorted(r["partition_key"] for r in rows) == sorted(
        r["partition_key"] for r in expected)
    assert done.stderr.decode().endswith(f"wrote {len(expected)} experiments rows to stdout "
                                         "(jsonl)\n")
    assert list(tmp_path.iterdir()) == []
    refused = subprocess.run([*argv, "-o", "-"], capture_output=True, text=True, cwd=tmp_path,
                             timeout=120, check=False)
    assert refused.returncode == 2 and "-o - (stdout) needs --format" in refused.stderr


def test_report_and_export_write_their_files(capsys, tables_dir, tmp_path):
    for suffix in (".xlsx", ".csv", ".md", ".html"):
        code, out, _ = run(capsys, "report", "--data-dir", str(tables_dir), "-o",
                           str(tmp_path / f"r{suffix}"))
        assert code == 0 and out.startswith(f"wrote {tmp_path / f'r{suffix}'}: mean of ")
    target = tmp_path / "slow.parquet"
    code, out, _ = run(capsys, "export", "--data-dir", str(tables_dir), "--table",
                       "experiments", "--adm", "pipeline_*", "-o", str(target))
    rows = ds.dataset(target).to_table().to_pylist()
    expected = [r for r in table_rows(tables_dir, "experiments")
                if r["adm"].startswith("pipeline_")]
    assert code == 0 and out == f"wrote {len(expected)} experiments rows to {target} (parquet)\n"
    assert {(r["partition_key"], r["alignment_target_id"]) for r in rows} == set(
        by_key(expected))


def test_report_takes_several_columns_and_prints_without_a_file(capsys, tables_dir, tmp_path):
    code, out, err = run(capsys, "report", "--data-dir", str(tables_dir), "--rows",
                         "adm,llm_backbone", "--cols", "alignment_target_id", "--values",
                         "scores.score", "-o", str(tmp_path / "r.csv"))
    assert code == 0, err
    with (tmp_path / "r.csv").open() as f:
        header = next(csv.reader(f))
    targets = {r["alignment_target_id"] for r in table_rows(tables_dir, "experiments")}
    assert header[:2] == ["adm", "llm_backbone"] and set(header[2:]) == targets
    code, out, _ = run(capsys, "report", "--data-dir", str(tables_dir), "--rows", "adm",
                       "--cols", "llm_backbone")
    lines = out.splitlines()
    assert code == 0 and lines[0].endswith("9 rows x 4 columns") and len(lines) == 2 + 2 + 9
    assert "0.002477" in out and lines[-1].split()[0] == "single_kdma_baseline"


def test_the_data_dir_comes_from_the_environment(capsys, monkeypatch, tables_dir):
    monkeypatch.setenv("ALIGN_TRACK_DATA_DIR", str(tables_dir))
    code, out, _ = run(capsys, "search", "--table", "experiments", "--json", "--limit", "0")
    assert code == 0 and json.loads(out)["count"] == len(table_rows(tables_dir, "experiments"))


def test_a_deleted_partition_file_is_named_with_the_repair(capsys, tables_dir, tmp_path):
    """A file that was written and known good (as the tables asset records it), deleted
    behind the pipeline's back while its folder is still in the tree: a warning, the rows
    that remain, exit 0."""
    import shutil

    from align_track_pipeline.core.locations import fingerprint_cache_path
    from align_track_pipeline.core.tables.health import VerifiedFiles

    data = shutil.copytree(tables_dir, tmp_path / "data")
    files = VerifiedFiles(fingerprint_cache_path(data))
    files.record(sorted((data / "parquet").rglob("*.parquet")))
    files.close()
    scenes = sorted((data / "parquet" / "scenes").glob("*.parquet"))
    code, out, err = run(capsys, "search", "--data-dir", str(data), "--json", "--limit", "0")
    assert code == 0 and err == ""
    everything = json.loads(out)["count"]
    lost = pq.read_metadata(scenes[0]).num_rows
    scenes[0].unlink()
    code, out, err = run(capsys, "search", "--data-dir", str(data), "--json", "--limit", "0")
    assert code == 0 and json.loads(out)["count"] == everything - lost
    assert err == (f"align-track search: warning: 1 table files that ingest wrote are missing "
                   f"({scenes[0]}): the answer leaves out their rows. Run `align-track ingest` "
                   "to rewrite them\n")
    files = VerifiedFiles(fingerprint_cache_path(data))
    files.forget([scenes[0]])  # as the removal of its folder does
    files.close()
    assert run(capsys, "search", "--data-dir", str(data), "--limit", "1")[2] == ""


def test_table_commands_never_load_dagster(tables_dir):
    """What keeps them under a second: Dagster alone takes longer to import."""
    script = ("import sys; from align_track_pipeline.cli.main import main; "
              f"code = main(['search', '--data-dir', {str(tables_dir)!r}, '--limit', '1']); "
              "print('dagster' in sys.modules, code)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.splitlines()[-1] == "False 0"


@pytest.mark.parametrize("json_out", [False, True])
def test_a_reader_that_stops_reading_ends_the_command_quietly(tables_dir, json_out):
    """`align-track search | head -1`: the pipe closed before the rows are written ends the
    command as SIGPIPE ends `cat` (141), without a traceback."""
    read, write = os.pipe()
    os.close(read)
    argv = [str(Path(sys.executable).parent / "align-track"), "search", "--data-dir",
            str(tables_dir), *(["--json"] if json_out else [])]
    with os.fdopen(write, "wb") as stdout:
        done = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True,
                              timeout=120, check=False)
    assert (done.returncode, done.stderr) == (141, "")


def test_search_links_never_load_mlflow(tables_dir):
    """The links are one SQL query on MLflow's tables: importing MLflow would cost more than
    the whole search (seconds)."""
    script = ("import os, sys; from align_track_pipeline.cli.main import main; "
              "os.environ['ALIGN_TRACK_MLFLOW_UI_URL'] = 'http://127.0.0.1:5000'; "
              f"code = main(['search', '--data-dir', {str(tables_dir)!r}, '--limit', '1']); "
              "print('mlflow' in sys.modules, code)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.splitlines()[-1] == "False 0"


@pytest.mark.slow
def test_after_a_real_ingest_search_links_to_the_runs(capsys, monkeypatch, small_tree,
                                                      data_dir):
    assert main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
                 "--json"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("ALIGN_TRACK_MLFLOW_UI_URL", "http://127.0.0.1:5000")
    monkeypatch.setenv("ALIGN_TRACK_AIM_UI_URL", "http://127.0.0.1:43800")
    code, out, _ = run(capsys, "search", "--data-dir", str(data_dir), "--json", "--limit", "0")
    rows = json.loads(out)["rows"]
    assert code == 0 and by_key(rows).keys() == by_key(table_rows(data_dir, "scenes")).keys()

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{data_dir}/mlflow.db")
    experiment = client.get_experiment_by_name("align-system").experiment_id
    mlflow_ids = {r.data.tags[TAG_KEY]: r.info.run_id
                  for r in client.search_runs([experiment], max_results=5000)}
    keys = [scene_key(r["partition_key"], r["scene_index"]) for r in rows]
    aim_hashes = complete_run_hashes(manifest_path(data_dir / "aim"), keys)
    assert [r["links"] for r in rows] == [{
        "mlflow": f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{mlflow_ids[k]}",
        "aim": f"http://127.0.0.1:43800/runs/{aim_hashes[k]}"} for k in keys]
    code, out, _ = run(capsys, "search", "--data-dir", str(data_dir), "--limit", "2")
    assert "mlflow link" in out.splitlines()[0] and "http://127.0.0.1:43800/runs/" in out

    # the columns asked for go before the links; --no-links looks none up
    monkeypatch.setenv("COLUMNS", "100")
    chosen = ["experiment_path", "timing_seconds", "decision_text"]
    code, out, _ = run(capsys, "search", "--data-dir", str(data_dir), "--limit", "2",
                       "--columns", ",".join(chosen))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == chosen and max(map(len, lines)) <= 100
    assert lines[-2] == ("(aim link and mlflow link did not fit 100 characters: COLUMNS=N "
                         "to widen, --json to have them)")
    monkeypatch.setenv("COLUMNS", "1000")
    code, out, _ = run(capsys, "search", "--data-dir", str(data_dir), "--limit", "2",
                       "--no-links", "--columns", ",".join(chosen))
    assert code == 0 and out.splitlines()[0].split() == chosen and "http" not in out
    code, out, _ = run(capsys, "search", "--data-dir", str(data_dir), "--no-links", "--json",
                       "--limit", "2")
    assert [set(r) for r in json.loads(out)["rows"]] == [set(rows[0]) - {"links"}] * 2


def test_an_unreadable_table_folder_is_named_not_a_traceback(tables_dir, tmp_path):
    """The check for deleted files must not trip over a folder it may not look into: the
    reading command answers as without the check (here: no readable tables), never with
    the check's own error (`cannot write ...: Permission denied`)."""
    import shutil

    from align_track_pipeline.core.locations import fingerprint_cache_path
    from align_track_pipeline.core.tables.health import VerifiedFiles
    from tests.conftest import without_read_override

    data = shutil.copytree(tables_dir, tmp_path / "data")
    files = VerifiedFiles(fingerprint_cache_path(data))
    files.record(sorted((data / "parquet").rglob("*.parquet")))
    files.close()
    scenes = data / "parquet" / "scenes"
    scenes.chmod(0)
    try:
        done = subprocess.run(without_read_override(
            [str(Path(sys.executable).parent / "align-track"), "search", "--data-dir",
             str(data), "--limit", "1"]), capture_output=True, text=True, timeout=120,
            check=False)
    finally:
        scenes.chmod(0o755)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert (done.returncode, done.stderr.startswith("align-track search: ")) == (2, True), \
        done.stderr
    assert "cannot write" not in done.stderr and "run `align-track ingest`" in done.stderr


def _table_files(data: Path) -> dict[str, bytes]:
    """Every file under the data dir's Parquet folder, byte for byte."""
    root = data / "parquet"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _scenes_found(capsys, data: Path) -> int:
    code, out, _ = run(capsys, "search", "--data-dir", str(data), "--json", "--limit", "0")
    assert code == 0
    return json.loads(out)["count"]


def _a_copy(tables_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return shutil.copytree(tables_dir, tmp_path / "data")


# An output path into a table folder, however it is spelled: over a partition's file, a new
# file beside them, through `..`, relative to the working directory, through a symlink.
INTO_THE_TABLES = ["over", "beside", "dotdot", "relative", "symlink"]


def _into_the_tables(how: str, data: Path, tmp_path: Path, monkeypatch, suffix: str) -> str:
    scenes = data / "parquet" / "scenes"
    partition = sorted(scenes.glob("*.parquet"))[0]
    if how == "over":
        return str(partition.with_suffix(suffix))
    if how == "beside":
        return str(scenes / f"my_export{suffix}")
    if how == "dotdot":
        return str(data / "exports" / ".." / "parquet" / "scenes" / f"mine{suffix}")
    if how == "relative":
        monkeypatch.chdir(data / "parquet" / "experiments")
        return f"../scenes/mine{suffix}"
    link = tmp_path / f"innocent{suffix}"
    link.symlink_to(partition)  # the file the user thinks they write is a table's file
    return str(link)


def _refused_into_the_tables(command: str, suffix: str, how: str, capsys, monkeypatch,
                             tables_dir: Path, tmp_path: Path) -> tuple[Path, int, str]:
    """`command -o` into a copy's table folder (`how`): refused (exit 2, nothing on stdout)
    with the table files and the `search` count unchanged. The copy, its scene count and
    the error."""
    data = _a_copy(tables_dir, tmp_path)
    before, found = _table_files(data), _scenes_found(capsys, data)
    target = _into_the_tables(how, data, tmp_path, monkeypatch, suffix)
    code, out, err = run(capsys, command, "--data-dir", str(data), "-o", target)
    assert code == 2 and out == "", err
    assert err.startswith(f"align-track {command}: refusing to write -o {target}")
    assert _table_files(data) == before and _scenes_found(capsys, data) == found
    return data, found, err


@pytest.mark.parametrize("how", INTO_THE_TABLES)
def test_export_into_a_table_folder_is_refused_and_changes_nothing(capsys, monkeypatch,
                                                                    tables_dir, tmp_path, how):
    """An export over a partition's file replaced its rows (scenes 252 -> 500) and one beside
    them doubled every answer, `status` saying fresh and `ingest` repairing neither: now it
    is refused before anything is written, and the same export elsewhere is written."""
    data, found, err = _refused_into_the_tables("export", ".parquet", how, capsys, monkeypatch,
                                                tables_dir, tmp_path)
    assert f"{data / 'parquet'}, the Parquet tables' folder" in err and err.count("\n") == 1
    elsewhere = tmp_path / "exports" / "scenes.parquet"
    code, out, _ = run(capsys, "export", "--data-dir", str(data), "-o", str(elsewhere))
    assert (code, pq.read_metadata(elsewhere).num_rows) == (0, found)


@pytest.mark.parametrize("how", INTO_THE_TABLES)
def test_report_into_a_table_folder_is_refused_and_changes_nothing(capsys, monkeypatch,
                                                                    tables_dir, tmp_path, how):
    _refused_into_the_tables("report", ".csv", how, capsys, monkeypatch, tables_dir, tmp_path)


@pytest.mark.parametrize("owned", ["analysis/scene_comparison.parquet", "state/x.csv",
                                   "state/fingerprints.sqlite", "dagster/x.json", "aim/x.csv",
                                   "archive/x.parquet", "mlflow.db", "mlflow.db-wal",
                                   "tree.json"])
def test_an_export_over_the_pipelines_other_files_is_refused(capsys, tables_dir, tmp_path,
                                                              owned):
    data = _a_copy(tables_dir, tmp_path)
    target = data / owned
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"the pipeline's")
    code, out, err = run(capsys, "export", "--data-dir", str(data), "--format", "csv", "-o",
                         str(target))
    assert code == 2 and out == "" and "which the pipeline owns" in err
    assert target.read_bytes() == b"the pipeline's"


def test_compare_html_into_a_table_folder_is_a_json_error(capsys, tables_dir, tmp_path):
    data = _a_copy(tables_dir, tmp_path)
    before = _table_files(data)
    page = data / "parquet" / "scenes" / "mj1.parquet"
    code, out, err = run(capsys, "compare", "DryRunEval.MJ1", "--data-dir", str(data),
                         "--json", "--html", str(page))
    assert code == 2 and json.loads(out)["error"].startswith(f"refusing to write --html {page}")
    assert _table_files(data) == before


def test_exporting_into_an_ordinary_folder_still_works(capsys, tables_dir, tmp_path):
    """The user's folders, the data dir's own root among them, and names only like the
    pipeline's."""
    data = _a_copy(tables_dir, tmp_path)
    found = _scenes_found(capsys, data)
    for target in (tmp_path / "exports" / "parquet" / "scenes" / "x.parquet",
                   data / "scenes.parquet", data / "parquet-exports" / "x.parquet",
                   data / "mlflow.db.parquet"):
        code, out, err = run(capsys, "export", "--data-dir", str(data), "-o", str(target))
        assert code == 0, err
        assert out == f"wrote {found} scenes rows to {target} (parquet)\n"
        assert pq.read_metadata(target).num_rows == found
    code, out, err = run(capsys, "report", "--data-dir", str(data), "-o",
                         str(data / "report.md"))
    assert code == 0 and (data / "report.md").is_file(), err
    assert _scenes_found(capsys, data) == found
