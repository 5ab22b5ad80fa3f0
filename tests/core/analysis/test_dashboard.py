"""`align-track dashboard`: one page that fetches nothing, whose charts hold the numbers
computed independently from the pyarrow rows (pandas and plain Python)."""

from __future__ import annotations

import json
import re
import shutil

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.analysis.pivot import PivotSpec
from tests.conftest import SAMPLE_TREE, write_tables
from tests.core.analysis.expected import table_rows
from tests.core.analysis.test_analysis_charts import _expected, _same, _svg_cells

SVG_NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


def _sections(page: str) -> dict[str, str]:
    parts = re.findall(r'<section id="([^"]+)">(.*?)</section>', page, re.DOTALL)
    return dict(parts)


def _chart(section: str) -> dict[tuple[str, str], float]:
    svg = section[section.index("<svg"):section.index("</svg>") + 6]
    return _svg_cells(svg.replace("<svg", f"<svg {SVG_NS}", 1))


def expected_agreement(data) -> dict[str, tuple[int, int]]:
    """Scenario -> (scenes compared, scenes where all ADMs agree), in plain Python."""
    units: dict[tuple, list[tuple[str, str]]] = {}
    for s in table_rows(data, "scenes"):
        if s["action_id"] is None and s["choice_index"] is None:
            continue
        scene = (s["scene_id"] if s["scene_id"] is not None
                 else ("probe", s["probe_text"], s["choices_text"]))
        action = s["action_id"] if s["action_id"] is not None else f"choice {s['choice_index']}"
        units.setdefault((s["scenario_id"], s["alignment_target_id"], scene), []).append(
            (s["adm"], action))
    counts: dict[str, tuple[int, int]] = {}
    for (scenario, _, _), decisions in units.items():
        if len({adm for adm, _ in decisions}) < 2:
            continue
        compared, agreed = counts.get(scenario, (0, 0))
        counts[scenario] = (compared + 1, agreed + (len({a for _, a in decisions}) == 1))
    return counts


def test_the_page_holds_the_numbers_and_fetches_nothing(capsys, tables_dir, tmp_path):
    target = tmp_path / "out" / "dash.html"
    assert main(["dashboard", "--data-dir", str(tables_dir), "-o", str(target)]) == 0
    agreement = expected_agreement(tables_dir)
    assert capsys.readouterr().out == (f"wrote {target}: 7 charts, {len(agreement)} scenarios "
                                       "compared\n")
    page = target.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http" not in page and "<script" not in page and "@import" not in page
    sections = _sections(page)
    names = sorted({k for r in table_rows(tables_dir, "experiments") for k in r["scores"]
                    if not k.startswith("num_")})
    assert {"accuracy", "score", "kdma.Moral judgement", "kdma.Ingroup Bias"} <= set(names)
    anchors = [f"scores-{name.replace(' ', '-')}" for name in names]
    assert list(sections) == [*anchors, "decision-time", "agreement"]
    for name, anchor in zip(names, anchors, strict=True):
        spec = PivotSpec("experiments", ("adm", "llm_backbone"), ("alignment_target_id",),
                         f"scores.{name}", "mean")
        assert _same(_chart(sections[anchor]), _expected(tables_dir, spec))
    assert "<h2>Measured Moral judgement (KDMA) by ADM and target</h2>" in page
    assert "<h2>Alignment score by ADM and target</h2>" in page
    time = PivotSpec("experiments", ("adm",), ("llm_backbone",), "timing_avg_seconds", "mean")
    assert _same(_chart(sections["decision-time"]), _expected(tables_dir, time))
    shares = {(s, "agreement share"): agreed / compared
              for s, (compared, agreed) in agreement.items()}
    assert _same(_chart(sections["agreement"]), shares)
    assert agreement["DryRunEval.MJ1"][0] >= 4  # the sample compares several ADMs there
    for scenario, (compared, agreed) in agreement.items():
        assert f"<td>{scenario}</td><td class=\"n\">{compared}</td><td class=\"n\">{agreed}" \
               f"</td>" in sections["agreement"]


def test_the_dashboard_is_a_page(capsys, tables_dir, tmp_path):
    code = main(["dashboard", "--data-dir", str(tables_dir), "-o", str(tmp_path / "d.png")])
    assert code == 2 and "must end in .html" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_chart_whose_numbers_did_not_change_is_kept_not_drawn_again(capsys, tables_dir,
                                                                      tmp_path):
    """Drawing a chart takes matplotlib most of a second; the scene comparison's rebuild
    after each ingest writes the page again, mostly with the same numbers."""
    target = tmp_path / "dash.html"
    assert main(["dashboard", "--data-dir", str(tables_dir), "-o", str(target)]) == 0
    figures = re.findall(r'<figure data-chart="([0-9a-f]{32})"><svg ', target.read_text())
    assert len(figures) == 7
    earlier = target.read_text().replace("><svg ", '><svg data-drawn="earlier" ')
    other_numbers = "0" * 32  # the decision-time chart as drawn from other numbers
    time_chart = re.search(r'data-chart="([0-9a-f]{32})"',
                           _sections(earlier)["decision-time"])[1]
    target.write_text(earlier.replace(time_chart, other_numbers))

    assert main(["dashboard", "--data-dir", str(tables_dir), "-o", str(target)]) == 0
    capsys.readouterr()
    sections = _sections(target.read_text())
    kept = {name for name, html in sections.items() if 'data-drawn="earlier"' in html}
    assert kept == set(sections) - {"decision-time"}
    assert f'data-chart="{time_chart}"' in sections["decision-time"]
    time = PivotSpec("experiments", ("adm",), ("llm_backbone",), "timing_avg_seconds", "mean")
    assert _same(_chart(sections["decision-time"]), _expected(tables_dir, time))


def test_scenes_without_a_scene_id_are_matched_by_probe_not_position(capsys, tmp_path):
    """2024 runs have no scene ids, and two ADMs need not meet the probes in the same order:
    the same decisions in reverse order agree on every scene (by position: most disagreed)."""
    base = tmp_path / "tree" / "dry_run_2024_05" / "baseline_adept_high"
    shutil.copytree(SAMPLE_TREE / "dry_run_2024_05" / "baseline_adept_high", base)
    other = base.with_name("aligned_adept_high")
    shutil.copytree(base, other)
    hydra = other / ".hydra" / "hydra.yaml"
    hydra.write_text(hydra.read_text().replace("adm: single_kdma_baseline",
                                               "adm: single_kdma_aligned"))
    items = json.loads((other / "input_output.json").read_text())
    (other / "input_output.json").write_text(json.dumps(items[::-1]))
    data = write_tables(tmp_path / "tree", tmp_path / "data")
    assert {r["adm"] for r in table_rows(data, "experiments")} == {
        "single_kdma_baseline", "single_kdma_aligned"}
    target = tmp_path / "dash.html"
    assert main(["dashboard", "--data-dir", str(data), "-o", str(target)]) == 0
    agreement = expected_agreement(data)
    assert agreement and all(agreed == compared for compared, agreed in agreement.values())
    section = _sections(target.read_text())["agreement"]
    for scenario, (compared, agreed) in agreement.items():
        assert f"<td>{scenario}</td><td class=\"n\">{compared}</td><td class=\"n\">{agreed}" \
               f"</td>" in section
