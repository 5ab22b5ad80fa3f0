"""Hostile text in the tree (an ADM name that is a spreadsheet formula, HTML in a decision,
terminal escape sequences in a justification and a probe) reaches every output as inert text:
xlsx cells are strings, CSV/TSV text cells cannot start a formula, Markdown carries no raw
tag, and the terminal gets no escape sequence."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from openpyxl import load_workbook

from align_track_pipeline.cli.main import main
from tests.conftest import write_tables

FORMULA = '=HYPERLINK("http://evil.example/","click me")'
HTML = '<img src=x onerror="alert(1)"> & co'
OSC8 = "\x1b]8;;http://evil\x07click\x1b]8;;\x07"
CLEAR = "\x1b[2J"
SCENARIO = "Hostile.S1"


@pytest.fixture
def hostile_data(sample_tree: Path, tmp_path: Path) -> Path:
    """The random/unaligned run dir of the sample tree, its ADM named `FORMULA`, its first
    scene's decision `HTML`, justification and probe holding escape sequences, and a
    negative time; written into tables by the project's own parser and writer."""
    tree = tmp_path / "tree"
    shutil.copytree(sample_tree / "random" / "unaligned", tree / "random" / "unaligned")
    run = tree / "random" / "unaligned"
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    config["adm"]["name"] = FORMULA
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    items = json.loads((run / "input_output.json").read_text())
    for item in items:
        item["input"]["scenario_id"] = SCENARIO
    first = items[0]
    first["output"]["action"]["unstructured"] = HTML
    first["output"]["action"]["justification"] = f"because {OSC8} and {CLEAR}"
    first["input"]["state"] = f"probe {CLEAR}{OSC8}"
    (run / "input_output.json").write_text(json.dumps(items))
    timing = json.loads((run / "timing.json").read_text())
    timing["raw_times_s"][0] = -1.5
    (run / "timing.json").write_text(json.dumps(timing))

    return write_tables(tree, tmp_path / "data")


def _run(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_xlsx_cells_are_strings_never_formulas(capsys, hostile_data, tmp_path):
    out = tmp_path / "r.xlsx"
    _run(capsys, "report", "--data-dir", str(hostile_data), "--cols", "adm", "-o", str(out))
    header = next(load_workbook(out).active.iter_rows(max_row=1))
    (cell,) = [c for c in header if c.value == FORMULA]
    assert cell.data_type == "s"


def test_xlsx_shows_control_characters_as_their_codes(capsys, hostile_data, tmp_path):
    """xlsx cannot hold control characters: they are written as their codes, never dropped
    and never a crash."""
    out = tmp_path / "r.xlsx"
    _run(capsys, "report", "--data-dir", str(hostile_data), "--table", "scenes", "--rows",
         "justification", "--values", "timing_seconds", "-o", str(out))
    texts = [c.value for row in load_workbook(out).active.iter_rows() for c in row
             if isinstance(c.value, str)]
    (hostile,) = [t for t in texts if t.startswith("because ")]
    assert "\x1b" not in hostile and "\\x1b]8;;http://evil\\x07" in hostile


def test_csv_and_tsv_text_cells_cannot_start_a_formula(capsys, hostile_data, tmp_path):
    _run(capsys, "report", "--data-dir", str(hostile_data), "--cols", "adm", "-o",
         str(tmp_path / "r.csv"))
    header = next(csv.reader((tmp_path / "r.csv").open()))
    assert "'" + FORMULA in header and FORMULA not in header
    for fmt, delimiter in (("csv", ","), ("tsv", "\t")):
        path = tmp_path / f"e.{fmt}"
        _run(capsys, "export", "--data-dir", str(hostile_data), "-o", str(path))
        rows = list(csv.DictReader(path.open(), delimiter=delimiter))
        assert rows and {r["adm"] for r in rows} == {"'" + FORMULA}
        first = next(r for r in rows if r["scene_index"] == "0")
        assert first["timing_seconds"] == "-1.5"  # a negative number stays a number
        assert first["decision_text"] == HTML


def test_markdown_cells_hold_no_raw_html(capsys, hostile_data, tmp_path):
    out = tmp_path / "r.md"
    _run(capsys, "report", "--data-dir", str(hostile_data), "--table", "scenes", "--rows",
         "decision_text", "--values", "timing_seconds", "-o", str(out))
    text = out.read_text()
    assert "<" not in text and "&lt;img src=x onerror=" in text and "&amp; co" in text


def test_search_and_compare_print_no_escape_sequences(capsys, monkeypatch, hostile_data):
    monkeypatch.setenv("COLUMNS", "1000")  # every column shown
    for argv in (["search", "--adm", FORMULA], ["search", "--limit", "0"],
                 ["compare", SCENARIO]):
        out = _run(capsys, *argv, "--data-dir", str(hostile_data))
        assert "because" in out and "\x1b" not in out and "\x07" not in out, argv
    assert "probe" in _run(capsys, "compare", SCENARIO, "--data-dir", str(hostile_data))
