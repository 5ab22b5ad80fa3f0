"""`align-track config`: every registered variable's effective value and where it comes from:
`env` (set), `option` (a flag of this command), `derived` (computed from the data dir, the
tracking store or the cores) or `default`. Secrets are masked, and so is the userinfo of every
URI shown. No Dagster import."""

from __future__ import annotations

from pathlib import Path

from align_track_pipeline.core.cores import usable_cores
from align_track_pipeline.core.locations import default_experiments_dir, fingerprint_cache_path
from align_track_pipeline.core.settings import REGISTRY, Setting, current, shown
from align_track_pipeline.core.trackers.aim.tracker import aim_tracker
from align_track_pipeline.core.trackers.base import Settings as TrackerSettings
from align_track_pipeline.core.trackers.mlflow.tracker import mlflow_tracker
from align_track_pipeline.core.trackers.registry import factories

ENV, OPTION, DERIVED, DEFAULT = "env", "option", "derived", "default"


def derived(data: Path) -> dict[str, object]:
    """What the code uses for the variables whose default depends on the data dir, the
    tracking store or the host (the trackers' own factories say it, so it cannot drift)."""
    tracker_settings = TrackerSettings(data)
    mlflow, aim = mlflow_tracker(tracker_settings), aim_tracker(tracker_settings)
    return {
        "ALIGN_TRACK_EXPERIMENTS_DIR": default_experiments_dir(data),
        "ALIGN_TRACK_MLFLOW_ARTIFACTS": mlflow.artifact_root,
        "ALIGN_TRACK_MLFLOW_UI_URL": mlflow.ui_url,
        "ALIGN_TRACK_AIM_UI_URL": aim.ui_url,
        "ALIGN_TRACK_AIM_REPO": aim.repo,
        "ALIGN_TRACK_TRACKERS": ",".join(factories()),
        "ALIGN_TRACK_PARSE_PROCESSES": min(usable_cores(), 4),
        "ALIGN_TRACK_CACHE_DIR": str(fingerprint_cache_path(data).parent),
        "DAGSTER_HOME": str(data / "dagster"),
        "MLFLOW_TRACKING_URI": mlflow.tracking_uri,
    }


def effective(data: Path, data_given: bool) -> dict[str, dict[str, str]]:
    """Name -> {"value", "source"} for every registered variable, in the registry's order;
    values as they may be shown."""
    values, computed = current(), derived(data)
    out = {}
    for name, setting in REGISTRY.items():
        if name == "ALIGN_TRACK_DATA_DIR" and data_given:
            value, source = data, OPTION
        elif values.is_set(name):
            value, source = values.get(name), ENV
        elif name == "ALIGN_TRACK_DATA_DIR":
            value, source = data, DEFAULT
        elif name in computed:
            value, source = computed[name], DERIVED
        elif setting.fallback is not None:
            value, source = setting.fallback, DEFAULT
        else:
            value, source = setting.default.replace("`", ""), DEFAULT
        shown_value = str(value) if setting.secret and source != ENV else _text(setting, value)
        out[name] = {"value": shown_value, "source": source}  # an unset secret: its default
    return out


def _text(setting: Setting, value: object) -> str:
    if isinstance(value, bool):
        value = "on" if value else "off"
    return shown(setting, str(value))
