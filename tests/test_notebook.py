"""The example notebook runs top to bottom on the bundled tree, in a real kernel, and shows
the numbers the tables hold."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO
from tests.core.analysis.expected import comparison_rows, table_rows

NOTEBOOK = REPO / "examples" / "analysis.ipynb"


def _text(cell) -> str:
    """Everything a code cell printed or displayed, as text and HTML."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(parts)


@pytest.mark.slow
def test_the_example_notebook_runs_on_the_bundled_tree(tmp_path, monkeypatch, tables_dir):
    """It ingests the bundled tree into a temporary data dir (under TMPDIR) through the
    command line, then answers with the API."""
    for name in [n for n in os.environ if n.startswith("ALIGN_TRACK_")] + [
            "DAGSTER_HOME", "MLFLOW_TRACKING_URI"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert "discovered 20: 20 materialized" in _text(code[0])
    experiments, scenes = (table_rows(tables_dir, t) for t in ("experiments", "scenes"))
    assert f"{len(experiments)} experiments rows, {len(scenes)} scenes rows" in _text(code[-1])
    p1 = _text(next(c for c in code if '"P1"' in c.source))
    assert all(r["experiment_path"] in p1
               for r in comparison_rows(tables_dir, "DryRunEval.MJ1", "P1"))
    assert not [c for c in code if "Empty DataFrame" in _text(c)]  # each cell shows rows
    runs_of_p1 = len({r["experiment_path"]
                      for r in comparison_rows(tables_dir, "DryRunEval.MJ1", "P1")})
    scenes = _text(next(c for c in code if 'groupby("scene_id")' in c.source))
    assert any(line.split()[:2] == ["P1", str(runs_of_p1)] for line in scenes.splitlines())
    best = max(dict(r["scores"])["score"] for r in experiments if "score" in dict(r["scores"]))
    assert f"{best:.6f}" in _text(code[-1])
    [data_dir] = [p for p in tmp_path.iterdir() if p.name.startswith("align-track-notebook-")]
    assert len(list((data_dir / "parquet" / "scenes").glob("*.parquet"))) == 20
