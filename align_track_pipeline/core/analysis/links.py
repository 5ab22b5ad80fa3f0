"""Links from result rows to their runs in the trackers' UIs, where the UI's address is known
(`ALIGN_TRACK_MLFLOW_UI_URL`, `ALIGN_TRACK_AIM_UI_URL`): one lookup per tracker for a whole
page of rows.

The rows come from Parquet; links are an extra. A tracker whose lookup fails (a tracking
server that is down or refuses us) leaves its links unavailable, with the reason (credentials
masked), and the rows are answered all the same."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from align_track_pipeline.core.secrets import mask_text
from align_track_pipeline.core.trackers.base import Tracker
from align_track_pipeline.core.versions import experiment_key, scene_key

UNAVAILABLE = "unavailable"  # in place of a link, where the tracker could not be asked


@dataclass(frozen=True)
class Links:
    """Per row: tracker name -> the URL of the row's run (trackers without one left out);
    and tracker name -> why its links are unavailable."""

    rows: list[dict[str, str]]
    unavailable: dict[str, str] = field(default_factory=dict)


def row_key(table: str, row: Mapping) -> str:
    """A row's identity in every store: the scene key or the experiment key."""
    if table == "scenes":
        return scene_key(row["partition_key"], row["scene_index"])
    return experiment_key(row["partition_key"], row["alignment_target_id"])


def run_links(trackers: list[Tracker], table: str, rows: list[dict]) -> Links:
    """The links of a page of rows, one lookup per tracker."""
    found: dict[str, dict[str, str]] = {}
    unavailable: dict[str, str] = {}
    for tracker in trackers:
        try:
            found[tracker.name] = tracker.links(table, rows)
        except Exception as exc:  # any store failure: the answer comes from Parquet alone
            unavailable[tracker.name] = f"{tracker.target_id()}: {_root_cause(exc)}"
    keys = [row_key(table, r) for r in rows]
    return Links([{name: urls[key] for name, urls in found.items() if key in urls}
                  for key in keys], unavailable)


def _root_cause(exc: BaseException, width: int = 200) -> str:
    """The innermost error of the chain, on one line, masked: "ConnectionRefusedError:
    [Errno 111] Connection refused" rather than the HTTP client's wrappers around it."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    line = " ".join(mask_text(f"{type(exc).__name__}: {exc}").split())
    return line if len(line) <= width else line[:width - 3] + "..."
