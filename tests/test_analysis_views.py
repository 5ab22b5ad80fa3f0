"""What `compare` and `search` show: every probe and choice list a scene id had, each with the
runs that saw it; a run-directory column; search tables sorted, narrowed to chosen columns,
fitted to the terminal's width, with control characters from the data escaped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.analysis.columns import columns_of
from tests.conftest import SAMPLE_TREE, write_tables
from tests.core.analysis.expected import comparison_rows, table_rows

SCENARIO = "DryRunEval.MJ1"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(autouse=True)
def _no_ui_addresses(monkeypatch):
    for name in ("ALIGN_TRACK_MLFLOW_UI_URL", "ALIGN_TRACK_AIM_UI_URL", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def versions_dir(tmp_path_factory) -> Path:
    """Four run directories of one real run (random/unaligned), as runs of three versions of
    the scenario would be: two saw the original scene P1, one saw P2's probe under P1's id,
    one saw P1's choices in reverse order."""
    root = tmp_path_factory.mktemp("versions")
    tree = root / "tree"
    source = SAMPLE_TREE / "random" / "unaligned"
    for rel in ("v1/first", "v1/second", "v2/other-probe", "v3/other-choices"):
        shutil.copytree(source, tree / rel)
    items = json.loads((source / "input_output.json").read_text())
    first, second = items[0]["input"], items[1]["input"]
    assert first["full_state"]["meta_info"]["scene_id"] == "P1" and first["state"] != second[
        "state"]
    first["state"] = second["state"]
    (tree / "v2/other-probe/input_output.json").write_text(json.dumps(items))
    items = json.loads((source / "input_output.json").read_text())
    items[0]["input"]["choices"].reverse()
    items[0]["label"].reverse()
    (tree / "v3/other-choices/input_output.json").write_text(json.dumps(items))
    return write_tables(tree, root / "data")


def _blocks(out: str) -> list[list[str]]:
    """The terminal's blocks of one scene: the lines of each `-- n of m --` section."""
    return [part.splitlines() for part in out.split("\n-- ")[1:]]


def test_compare_shows_each_probe_and_choice_list_with_the_runs_that_saw_it(capsys,
                                                                             versions_dir):
    code, out, _ = run(capsys, "compare", SCENARIO, "--scene", "P1", "--data-dir",
                       str(versions_dir))
    rows = comparison_rows(versions_dir, SCENARIO, "P1")
    assert code == 0 and len(rows) == 4
    assert "== DryRunEval.MJ1 / scene P1: 4 runs, 3 different probes or choice lists ==" in out
    blocks = _blocks(out)
    assert [b[0] for b in blocks] == ["1 of 3: 2 runs --", "2 of 3: 1 run --",
                                      "3 of 3: 1 run --"]
    by_path = {r["experiment_path"]: r for r in rows}
    expected = [["v1/first", "v1/second"], ["v2/other-probe"], ["v3/other-choices"]]
    for block, paths in zip(blocks, expected, strict=True):
        table = block[block.index(next(b for b in block if b.startswith("run directory"))):]
        assert [line.split()[0] for line in table[2:]] == paths
        seen = by_path[paths[0]]
        assert f"probe: {' '.join(seen['probe_text'].split())}" in block
        assert block[block.index("choices:") + 1:][:9] == [
            f"  {line}" for line in seen["choices_text"].splitlines()]
    assert len({by_path[p[0]]["choices_text"] for p in expected}) == 2
    assert len({by_path[p[0]]["probe_text"] for p in expected}) == 2


def test_compare_html_has_a_section_per_probe_and_json_keeps_each_rows_own(capsys,
                                                                           versions_dir,
                                                                           tmp_path):
    page = tmp_path / "p1.html"
    code, out, _ = run(capsys, "compare", SCENARIO, "--scene", "P1", "--data-dir",
                       str(versions_dir), "--json", "--html", str(page))
    rows = json.loads(out)["rows"]
    assert code == 0 and rows == comparison_rows(versions_dir, SCENARIO, "P1")
    assert {r["experiment_path"]: (r["probe_text"] == rows[0]["probe_text"],
                                   r["choices_text"] == rows[0]["choices_text"])
            for r in rows} == {"v1/first": (True, True), "v1/second": (True, True),
                               "v2/other-probe": (False, True),
                               "v3/other-choices": (True, False)}
    html = page.read_text()
    sections = html.split("<h3>Probe and choices ")[1:]
    assert [s.split("</h3>")[0] for s in sections] == ["1 of 3: 2 runs", "2 of 3: 1 run",
                                                       "3 of 3: 1 run"]
    assert ["v2/other-probe" in s for s in sections] == [False, True, False]


def test_compare_shows_every_probe_of_a_real_scenario(capsys, tables_dir, tmp_path):
    """MetricsEval.MD17 of the bundled tree: scenes without an id, 6 different probes."""
    page = tmp_path / "md17.html"
    code, out, _ = run(capsys, "compare", "MetricsEval.MD17", "--data-dir", str(tables_dir),
                       "--html", str(page))
    rows = comparison_rows(tables_dir, "MetricsEval.MD17")
    probes = {r["probe_text"] for r in rows}
    versions = {(r["probe_text"], r["choices_text"]) for r in rows}
    assert code == 0 and len(probes) == 6 and len(versions) == len(rows)
    shown = {line.removeprefix("probe: ") for line in out.splitlines()
             if line.startswith("probe: ")}
    assert shown == {" ".join(p.split())[:197] + "..." if len(" ".join(p.split())) > 200
                     else " ".join(p.split()) for p in probes}
    assert out.count("\n-- ") == len(versions)
    assert page.read_text().count("<h4>Probe</h4>") == len(versions)


def test_compare_has_the_run_directory_first_shortened_in_the_middle(capsys, tables_dir):
    code, out, _ = run(capsys, "compare", "July2025-PS-train", "--data-dir",
                       str(tables_dir))
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("run directory"))
    assert code == 0 and header.split()[:3] == ["run", "directory", "adm"]
    firsts = [line.split()[0] for line in lines if line.strip()]
    live = [f for f in firsts if "..." in f and f.endswith("__09-12-01")]
    assert live and all(f.startswith("phase2") for f in live)


def _search(capsys, data: Path, *argv: str) -> tuple[int, str, str]:
    return run(capsys, "search", "--data-dir", str(data), *argv)


@pytest.mark.parametrize("width", [100, 80, 60])
def test_search_fits_the_terminal_width(capsys, monkeypatch, tables_dir, width):
    monkeypatch.setenv("COLUMNS", str(width))
    code, out, _ = _search(capsys, tables_dir, "--limit", "0")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 + len(table_rows(tables_dir, "scenes")) + 2
    assert max(map(len, lines[:-2])) <= width
    assert "did not fit" in lines[-2] and lines[-1].endswith("scenes rows")


def test_search_without_a_terminal_is_80_wide(capsys, tables_dir):
    code, out, _ = _search(capsys, tables_dir, "--table", "experiments", "--limit", "0")
    lines = out.splitlines()
    assert code == 0 and max(map(len, lines[:-2])) <= 80 < max(
        len(r["experiment_path"]) + len(r["adm"]) + 2
        for r in table_rows(tables_dir, "experiments"))


def test_long_paths_keep_their_end(capsys, monkeypatch, tables_dir):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = _search(capsys, tables_dir, "--table", "experiments", "--limit", "0",
                           "--columns", "experiment_path,adm", "--sort", "experiment_path")
    paths = sorted(r["experiment_path"] for r in table_rows(tables_dir, "experiments"))
    shown = [line.split()[0] for line in out.splitlines()[2:-1]]
    long = [(p, s) for p, s in zip(paths, shown, strict=True) if p != s]
    assert code == 0 and long  # some paths are longer than their column
    for path, cut in long:
        head, tail = cut.split("...")
        assert path.startswith(head) and path.endswith(tail) and len(tail) > len(head)


def test_sort_and_columns(capsys, tables_dir):
    code, out, _ = _search(capsys, tables_dir, "--table", "experiments", "--limit", "0",
                           "--json", "--columns", "adm,timing_avg_seconds,experiment_path",
                           "--sort", "adm", "--sort", "timing_avg_seconds:desc")
    rows = json.loads(out)["rows"]
    expected = sorted(table_rows(tables_dir, "experiments"),
                      key=lambda r: (r["adm"], -(r["timing_avg_seconds"] or -1e9)))
    assert code == 0 and [list(r) for r in rows[:1]] == [
        ["adm", "timing_avg_seconds", "experiment_path"]]
    assert [(r["adm"], r["timing_avg_seconds"]) for r in rows] == [
        (r["adm"], r["timing_avg_seconds"]) for r in expected]
    code, out, _ = _search(capsys, tables_dir, "--table", "experiments", "--limit", "3",
                           "--columns", "timing_avg_seconds,adm", "--sort",
                           "timing_avg_seconds:desc")
    lines = out.splitlines()
    slowest = sorted((r["timing_avg_seconds"] for r in table_rows(tables_dir, "experiments")
                      if r["timing_avg_seconds"] is not None), reverse=True)[:3]
    assert lines[0].split() == ["timing_avg_seconds", "adm"]
    assert [float(line.split()[0]) for line in lines[2:5]] == [
        float(f"{t:.4g}") for t in slowest]


def test_sort_ties_follow_the_rows_keys(capsys, tables_dir):
    """The same sorted answer every time: DuckDB's parallel sort keeps no order of its own
    among equal values."""
    code, out, _ = _search(capsys, tables_dir, "--limit", "0", "--json", "--sort", "adm:desc",
                           "--columns", "adm,partition_key,scene_index")
    rows = [tuple(r.values()) for r in json.loads(out)["rows"]]
    expected = sorted(((r["adm"], r["partition_key"], r["scene_index"])
                       for r in table_rows(tables_dir, "scenes")),
                      key=lambda r: (_Desc(r[0]), r[1], r[2]))
    assert code == 0 and rows == expected


class _Desc(str):
    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)


@pytest.mark.parametrize(("argv", "message"), [
    (["--columns", "adm,nosuch"], "--columns: no column 'nosuch' in scenes; valid: "
                                  + ", ".join(columns_of("scenes"))),
    (["--sort", "nosuch"], "--sort: no column 'nosuch' to sort scenes by; valid: "
                           "partition_key, "),
    (["--sort", "adm:down"], "the direction after ':' is asc or desc"),
])
def test_unknown_sort_or_columns_exit_2_naming_it(capsys, tables_dir, argv, message):
    code, out, err = _search(capsys, tables_dir, *argv)
    assert (code, out) == (2, "") and message in err, err


def test_control_characters_from_the_data_are_escaped(capsys, tmp_path):
    """A justification holding a terminal title change, a bell, a carriage return and a C1
    escape: shown as their codes, on one line, the table still 80 wide."""
    tree = tmp_path / "tree"
    shutil.copytree(SAMPLE_TREE / "random" / "unaligned", tree / "random" / "unaligned")
    path = tree / "random" / "unaligned" / "input_output.json"
    items = json.loads(path.read_text())
    items[0]["output"]["action"]["justification"] = "a\x1b]0;owned\x07b\rc\x9b2Jd\x00e"
    path.write_text(json.dumps(items))
    data = write_tables(tree, tmp_path / "data")
    code, out, _ = _search(capsys, data, "--columns", "scene_index,justification",
                           "--sort", "scene_index")
    first = out.splitlines()[2]
    assert code == 0 and first.split(None, 1)[1] == "a\\x1b]0;owned\\x07b\\rc\\x9b2Jd\\x00e"
    assert not any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in out.replace("\n", ""))
