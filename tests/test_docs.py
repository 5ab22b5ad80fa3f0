"""The docs stay true: generated pages match the code, every variable the code reads and every
command-line option is documented, and the sample outputs shown are what the commands print."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from align_track_pipeline.cli.main import _parser, main
from align_track_pipeline.cli.reference import GENERATED, arguments, commands, render
from align_track_pipeline.core.settings import OTHER_SETTINGS, SETTINGS
from tests.conftest import REPO

VARIABLE = re.compile(r"ALIGN_TRACK_[A-Z0-9_]*[A-Z0-9]\b")
# What the project ships that may read a variable: the package (but the registry itself), and
# the deployment files.
SOURCES = [*(p for p in (REPO / "align_track_pipeline").rglob("*.py")
             if p != REPO / "align_track_pipeline" / "core" / "settings.py"),
           *(REPO / "align_track_pipeline").rglob("*.yaml"),
           *(p for p in (REPO / "deploy").rglob("*") if p.is_file())]
# A sample output: the marker names the command, the fenced block after it is what it prints
# (`output-file FILE:`: what it writes to FILE).
SAMPLE = re.compile(r"<!-- output(?:-file (\S+))?: align-track (.+?) -->\n```\w*\n(.*?)```", re.S)


def _pages() -> dict[str, str]:
    pages = {"README.md": (REPO / "README.md").read_text()}
    for path in sorted((REPO / "docs").rglob("*.md")):
        pages[str(path.relative_to(REPO))] = path.read_text()
    return pages


def _docs_text() -> str:
    return "\n".join(text for name, text in _pages().items() if name.startswith("docs/"))


def _variables_read() -> set[str]:
    found = set()
    for path in SOURCES:
        found |= set(VARIABLE.findall(path.read_text(errors="replace")))
    return found


def _samples() -> list[tuple[str, str | None, list[str], str]]:
    return [(page, file, args.split(), expected)
            for page, text in _pages().items()
            for file, args, expected in SAMPLE.findall(text)]


def test_readme_is_read_in_five_minutes():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def test_generated_parts_match_the_code():
    """Regenerate with `./dev python -m align_track_pipeline.cli.reference`."""
    for page in GENERATED:
        text = (REPO / page).read_text()
        assert render(page, text) == text, f"{page} is stale"


def test_every_variable_the_code_reads_is_in_the_registry():
    registered = {s.name for s in SETTINGS}
    read = _variables_read()
    assert "ALIGN_TRACK_PARSE_PROCESSES" in read and len(read) >= 20
    assert read - registered == set(), "add them to SETTINGS in core/settings.py"
    assert registered - read == set(), "no longer read: remove them from SETTINGS"


def test_every_variable_is_documented_under_docs():
    docs = _docs_text()
    names = _variables_read() | {s.name for s in OTHER_SETTINGS}
    assert sorted(n for n in names if f"`{n}`" not in docs) == []


def test_every_command_and_option_is_in_the_cli_reference():
    page = (REPO / "docs" / "reference" / "cli.md").read_text()
    sections = re.split(r"^## `align-track ([\w-]+)`$", page, flags=re.M)
    by_command = dict(zip(sections[1::2], sections[2::2], strict=True))
    found = commands(_parser())
    assert {"ingest", "status", "search", "compare", "report", "export"} <= {n for n, _, _ in found}
    for name, help_, cmd in found:
        assert help_, f"{name} has no help text"
        unhelped = [a.option_strings or a.dest for a in arguments(cmd) if not a.help]
        assert unhelped == [], f"align-track {name} --help says nothing of {unhelped}"
        options = [o for a in arguments(cmd) for o in a.option_strings]
        missing = [o for o in options if f"`{o}`" not in by_command[name]]
        assert missing == [], f"align-track {name}: {missing} not in docs/reference/cli.md"


def test_the_reference_reads_every_argument_argparse_parses():
    """`commands` and `arguments` use argparse's private attributes: if they change, this
    fails instead of the reference silently losing commands or options."""
    parser = _parser()
    ingest = dict((n, c) for n, _, c in commands(parser))["ingest"]
    dests = {a.dest for a in arguments(ingest)}
    parsed = vars(ingest.parse_args([]))
    assert {"experiments_dir", "workers", "confirm_removals", "json"} <= dests
    assert dests == set(parsed) - {"func", "loads_dagster"}


def test_there_are_sample_outputs_to_check():
    assert {page for page, *_ in _samples()} >= {"README.md", "docs/analysis.md"}


@pytest.mark.parametrize("page, file, args, expected",
                         [s for s in _samples() if s[2][0] != "ingest"],
                         ids=lambda v: v if isinstance(v, str) and v.endswith(".md") else "")
def test_sample_outputs_are_what_the_commands_print(page, file, args, expected, tables_dir,
                                                    tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COLUMNS", raising=False)  # the samples are 80 characters wide
    assert main([*args, "--data-dir", str(tables_dir)]) == 0
    printed = capsys.readouterr().out
    shown = (tmp_path / file).read_text() if file else printed
    assert shown.rstrip("\n") == expected.rstrip("\n"), f"{page}: align-track {' '.join(args)}"


@pytest.mark.slow
def test_the_ingest_output_in_the_readme_is_what_ingest_prints(tmp_path):
    """A fresh ingest of the bundled tree, run as the README says, from a new folder."""
    [(_, _, args, expected)] = [s for s in _samples() if s[2][0] == "ingest"]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ALIGN_TRACK_") and k not in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI")}
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "align-track"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.replace(str(tmp_path.resolve()), "$PWD").replace(str(tmp_path), "$PWD")
    assert printed.rstrip("\n") == expected.rstrip("\n")
