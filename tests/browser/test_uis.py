"""What a user sees in the three UIs over the ingested bundled tree, in a real browser."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pyarrow.dataset as ds
from mlflow import MlflowClient
from playwright.sync_api import expect

from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.tables.numbers import DECIDED, TIME_MEAN
from align_track_pipeline.core.trackers.aim.manifest import complete_run_hashes, manifest_path
from align_track_pipeline.core.trackers.mlflow.traces import TAG_KEY
from align_track_pipeline.core.versions import scene_key
from tests.browser.shots import docs_screenshot
from tests.conftest import SAMPLE_TREE

ASSETS = ("experiment_folders", "experiments", "scenes", "mlflow_runs", "aim_runs", "aim_index",
          "scene_comparison", "dashboard")
PARTITION = "random/unaligned"


def _p1_scenes(stack) -> list[dict]:
    scenes = ds.dataset(stack.data / "parquet" / "scenes").to_table(
        columns=["partition_key", "scene_index", "scene_id", "justification", "probe_text",
                 "decision_text"]).to_pylist()
    return [s for s in scenes if s["scene_id"] == "P1"]


def _scenes_of(stack, partition: str) -> list[dict]:
    scenes = ds.dataset(stack.data / "parquet" / "scenes").to_table(
        columns=["partition_key", "scene_index", "timing_seconds"]).to_pylist()
    return [s for s in scenes if s["partition_key"] == partition]


def test_the_dagster_ui_starts_quietly(stack, page):
    """No warning from the command that starts it, no welcome modal."""
    log = (stack.logs / "dagster.log").read_text()
    assert "will not be used" not in log and "dg dev" not in log
    assert "Warning" not in log, log
    assert stack.graphql("{ shouldShowNux }") == {"shouldShowNux": False}
    page.goto(stack.dagster + "/assets", wait_until="domcontentloaded")
    expect(page.locator('a[href="/assets/scenes"]').first).to_be_visible()
    expect(page.get_by_text("Join the Dagster community")).to_have_count(0)


def test_the_asset_graph_shows_every_asset(stack, page):
    page.goto(stack.dagster + "/assets/experiment_folders?view=lineage"
              "&lineageScope=downstream&lineageDepth=10", wait_until="domcontentloaded")
    for asset in ASSETS:
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    expect(page.get_by_text("Loading...")).to_have_count(0)  # each node's status shown
    docs_screenshot(page, "dagster-assets")


def test_every_scenes_partition_is_materialized(stack, page):
    partitions = len(find_run_dirs(SAMPLE_TREE))
    stats = stack.graphql(
        '{ assetNodeOrError(assetKey: {path: ["scenes"]}) { ... on AssetNode {'
        " partitionStats { numMaterialized numPartitions numFailed } } } }"
    )["assetNodeOrError"]["partitionStats"]
    assert stats == {"numMaterialized": partitions, "numPartitions": partitions, "numFailed": 0}
    page.goto(stack.dagster + "/assets/scenes?view=partitions", wait_until="domcontentloaded")
    expect(page.get_by_text(f"Materialized ({partitions})")).to_be_visible()
    expect(page.get_by_text("Missing (0)")).to_be_visible()


def test_a_partitions_mlflow_link_opens_its_run(stack, page):
    page.goto(f"{stack.dagster}/assets/mlflow_runs?view=partitions"
              f"&partition={quote(PARTITION, safe='')}", wait_until="domcontentloaded")
    link = page.locator(f'a[href^="{stack.mlflow}/#/experiments/"][href*="/runs/"]').first
    expect(link).to_be_visible()
    href = link.get_attribute("href")
    run_id = href.rsplit("/", 1)[1]
    page.goto(href, wait_until="domcontentloaded")
    expect(page.get_by_text(run_id).first).to_be_visible()  # the run page's "Run ID"
    expect(page.get_by_text(f"{PARTITION} [unaligned]").first).to_be_visible()  # its name


def test_mlflow_filter_by_scene_lists_scene_runs_with_their_decision(stack, page):
    experiment = "1"
    page.goto(f"{stack.mlflow}/#/experiments/{experiment}/runs?searchFilter="
              + quote('params.scene_id = "P1"', safe=""), wait_until="domcontentloaded")
    row = page.locator("[role=row]", has_text=f"{PARTITION} [unaligned]").first
    row.locator('[col-id="attributes.`Run Name`"] button').first.click()  # expand the parent
    child = page.get_by_text(re.compile(r"^DryRunEval\.MJ1 P1 \|.*\| idx0 \|")).first
    expect(child).to_be_visible()
    docs_screenshot(page, "mlflow-scene-runs")
    child.click()
    for name in ("choice_index", "action_type", "action_id", "decision", "justification"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text("Random choice").first).to_be_visible()  # random's justification


def test_mlflow_traces_filtered_by_scene_list_one_per_run_and_show_probe_and_decision(
        stack, page):
    """The Traces tab, filtered with its own controls on the tag `scene_id`, lists the scene's
    trace of every run, and a trace shows the probe and the decision. The tab shows only a
    recent time range by default; traces keep their scenes' own times, so the range is "All"."""
    p1 = {scene_key(s["partition_key"], s["scene_index"]): s for s in _p1_scenes(stack)}
    page.goto(f"{stack.mlflow}/#/experiments/1/traces", wait_until="domcontentloaded")
    page.get_by_role("button", name="Got it").click()  # "Detect Issues" tip over the controls
    page.get_by_test_id("time-range-select-dropdown").click()
    page.get_by_role("option", name="All", exact=True).click()
    page.get_by_role("button", name="Filters", exact=True).click()
    page.get_by_label("Filter field").click()
    page.get_by_role("option", name="Tag", exact=True).click()
    page.get_by_label("Filter key").fill("scene_id")
    page.get_by_label("Filter value").fill("P1")
    page.get_by_role("button", name="Apply filters").click()
    opens = page.locator('a[aria-label^="Open trace tr-"][aria-label$="input"]')
    expect(opens).to_have_count(len(p1))
    ids = [re.search(r"tr-[0-9a-f]+", a.get_attribute("aria-label"))[0] for a in opens.all()]
    client = MlflowClient(stack.mlflow)  # which scene each listed trace is, by its tag
    keys = [client.get_trace(trace_id).info.tags[TAG_KEY] for trace_id in ids]
    assert sorted(keys) == sorted(p1)
    scene = p1[keys[0]]
    opens.first.click()
    drawer = page.get_by_role("dialog").filter(has_text="Inputs / Outputs")
    expect(drawer.get_by_text("probe", exact=True)).to_be_visible()
    expect(drawer.get_by_text(scene["probe_text"].strip()[:80]).first).to_be_visible()
    expect(drawer.get_by_text(scene["decision_text"], exact=True).first).to_be_visible()


def test_aim_query_by_scene_lists_runs_and_a_run_shows_its_justification(stack, page):
    p1 = _p1_scenes(stack)
    page.goto(stack.aim + "/runs", wait_until="domcontentloaded")
    page.locator(".monaco-editor").first.click()
    page.keyboard.type('run.scene_id == "P1"')
    page.get_by_role("button", name="Search").first.click()
    links = page.locator('a[href^="/runs/"]')
    expect(links).to_have_count(len(p1))
    expect(page.get_by_text("Processing...")).to_have_count(0)  # the table, not a progress bar
    docs_screenshot(page, "aim-scene-runs")
    hashes = complete_run_hashes(manifest_path(stack.data / "aim"),
                                 [scene_key(s["partition_key"], s["scene_index"]) for s in p1])
    by_hash = {run_hash: key for key, run_hash in hashes.items()}
    href = links.first.get_attribute("href")
    key = by_hash[href.rsplit("/", 1)[1]]
    scene = next(s for s in p1 if scene_key(s["partition_key"], s["scene_index"]) == key)
    page.goto(stack.aim + href, wait_until="domcontentloaded")
    expect(page.get_by_text("justification", exact=True).first).to_be_visible()
    shown = re.split(r'["\\\n]', scene["justification"])[0][:40]  # before any JSON escape
    expect(page.get_by_text(shown).first).to_be_visible()


def test_aims_runs_table_dates_a_live_runs_scenes_from_its_directory_name(stack, page):
    """The runs table's Date column (Aim's `creation_time`, `HH:mm:ss · DD MMM, YY` in the
    browser's zone) shows a live run directory's scenes on the day its name records,
    2025-06-12 (14:03:55 UTC), not on the day they were written, and its Duration column
    (`end_time - creation_time`) each scene's ADM time (`timing.json`), not a few ms."""
    live = "phase2_june_eval_live/baseline/2025-06-12__14-03-55"
    scenes = _scenes_of(stack, live)
    first = round(next(s for s in scenes if s["scene_index"] == 0)["timing_seconds"] * 1000)
    assert 1000 <= first < 60_000  # shown as `<s>sec <ms>ms`
    page.goto(stack.aim + "/runs", wait_until="domcontentloaded")
    page.locator(".monaco-editor").first.click()
    page.keyboard.type(f'run.experiment == "{live}"')
    page.get_by_role("button", name="Search").first.click()
    expect(page.locator('a[href^="/runs/"]')).to_have_count(len(scenes))
    expect(page.get_by_text("Processing...")).to_have_count(0)
    dates = page.get_by_text(re.compile(r"^\d\d:\d\d:\d\d · \d\d \w{3}, \d\d$"))
    expect(dates).to_have_count(len(scenes))
    expect(page.get_by_text(re.compile(r" · 12 Jun, 25$"))).to_have_count(len(scenes))
    expect(page.get_by_text(f"{first // 1000}sec {first % 1000}ms", exact=True)).to_be_visible()


def test_the_scenes_plots_show_research_numbers_not_bookkeeping(stack, page):
    """The asset's plots (Dagster 1.13 draws them in the overview's metadata section, there is
    no Plots tab any more) chart each partition's decision time and decided share; the size of
    the whole table is text, not a plot."""
    page.goto(stack.dagster + "/assets/scenes", wait_until="domcontentloaded")
    page.get_by_role("button", name=re.compile("Plots")).click()
    for name in (TIME_MEAN, DECIDED, "scores.score mean"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text("rows in table", exact=True)).to_have_count(0)


def test_the_dashboard_draws_every_chart_offline(stack, page):
    """The dashboard asset's page, as the ingest left it: every chart its metadata counts is
    drawn, with no request to any address (it is opened from the file)."""
    node = stack.graphql(
        '{ assetNodeOrError(assetKey: {path: ["dashboard"]}) { ... on AssetNode {'
        " assetMaterializations(limit: 1) { metadataEntries { label"
        " ... on IntMetadataEntry { intValue } ... on PathMetadataEntry { path } } } } } }"
    )["assetNodeOrError"]["assetMaterializations"][0]["metadataEntries"]
    entries = {e["label"]: e.get("intValue", e.get("path")) for e in node}
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.set_content(Path(entries["path"]).read_text(), wait_until="load")
    charts = page.locator("svg")
    expect(charts).to_have_count(entries["charts"])
    assert entries["charts"] >= 3 and charts.first.locator("[data-value]").count() > 0
    assert requests == []
