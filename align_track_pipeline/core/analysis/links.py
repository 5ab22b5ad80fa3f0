"""Links from result rows to their runs in the trackers' UIs, where the UI's address is known
(`ALIGN_TRACK_MLFLOW_UI_URL`, `ALIGN_TRACK_AIM_UI_URL`): one lookup per tracker for a whole
page of rows."""

from __future__ import annotations

from collections.abc import Mapping

from align_track_pipeline.core.trackers.base import Tracker
from align_track_pipeline.core.versions import experiment_key, scene_key


def row_key(table: str, row: Mapping) -> str:
    """A row's identity in every store: the scene key or the experiment key."""
    if table == "scenes":
        return scene_key(row["partition_key"], row["scene_index"])
    return experiment_key(row["partition_key"], row["alignment_target_id"])


def run_links(trackers: list[Tracker], table: str, rows: list[dict]) -> list[dict[str, str]]:
    """Per row: tracker name -> the URL of the row's run (trackers without one are left out)."""
    found = {t.name: t.links(table, rows) for t in trackers}
    keys = [row_key(table, r) for r in rows]
    return [{name: urls[key] for name, urls in found.items() if key in urls} for key in keys]
