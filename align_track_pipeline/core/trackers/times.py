"""When a partition's runs started and ended, from what the data holds (both trackers).

align-system records no clock time per action: `timing.json` holds durations, and only live
evaluation runs carry a start time, in their directory name (`YYYY-MM-DD__HH-MM-SS`, or Hydra's
`YYYY-MM-DD/HH-MM-SS`; read as UTC, the zone is not recorded). So a scene starts where the
previous scenes' ADM time ends, measured from the run's start when the directory name gives
it. Else the run is taken to have ended when it is written: its spans count back from the write
time, so nothing shows in the future. Scene runs then sort by scene index in the MLflow and Aim
UIs (which order by start time), and every run's duration is its ADM time instead of 0 ms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

_STAMP = re.compile(r"^(\d{4})-(\d{2})-(\d{2})__(\d{2})-(\d{2})-(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_CLOCK = re.compile(r"^(\d{2})-(\d{2})-(\d{2})$")

FROM_RUN_DIR, FROM_WRITE_TIME = "run_dir_name", "write_time"


@dataclass(frozen=True)
class Span:
    """Milliseconds from the run directory's start (`RunTimes.base_ms`); where the data has no
    start, from the write time, and then never after it (at most 0)."""

    start: int
    end: int


@dataclass(frozen=True)
class RunTimes:
    base_ms: int | None  # epoch ms of the run's start, None: not in the data (use write time)
    scenes: dict[int, Span]  # scene index -> span

    @property
    def source(self) -> str:
        return FROM_WRITE_TIME if self.base_ms is None else FROM_RUN_DIR

    def span(self, indices: list[int], total_seconds: float | None) -> Span:
        """A parent's span: its first scene's start to its last scene's end, at least as long
        as its recorded total ADM time (scenes may lack per-scene timing)."""
        spans = [self.scenes[i] for i in indices if i in self.scenes]
        start = min((s.start for s in spans), default=0)
        end = max((s.end for s in spans), default=start)
        end = max(end, start + _ms(total_seconds))
        if self.base_ms is None and end > 0:  # no start in the data: it ended by the write
            return Span(start - end, 0)
        return Span(start, end)


def epoch_span(base_ms: int | None, span: Span, now_ms: int) -> tuple[int, int]:
    """A span's start and end in epoch ms: from the data's start, or counted from the write
    time `now_ms` where the data has none."""
    base = now_ms if base_ms is None else base_ms
    return base + span.start, base + span.end


def run_times(experiment_path: str, scenes: list[dict]) -> RunTimes:
    """Scenes in item order, each starting after the previous ones' ADM time (at least 1 ms
    apart, so the order holds where timing is missing)."""
    spans, at, previous = {}, 0, -1
    for scene in sorted(scenes, key=lambda s: s["scene_index"]):
        start = max(at, previous + 1)
        spans[scene["scene_index"]] = Span(start, start + _ms(scene["timing_seconds"]))
        at, previous = spans[scene["scene_index"]].end, start
    base = started_at_ms(experiment_path)
    if base is None:  # the run ended by the time it was written: count back from then
        spans = {i: Span(s.start - at, s.end - at) for i, s in spans.items()}
    return RunTimes(base, spans)


def started_at_ms(experiment_path: str) -> int | None:
    """The start time a directory name records, in epoch ms (UTC), or None."""
    parts = PurePosixPath(experiment_path).parts
    for i, part in enumerate(parts):
        if m := _STAMP.match(part):
            return _epoch_ms(*m.groups())
        if (day := _DAY.match(part)) and i + 1 < len(parts) and (
                clock := _CLOCK.match(parts[i + 1])):
            return _epoch_ms(*day.groups(), *clock.groups())
    return None


def _epoch_ms(*fields: str) -> int | None:
    try:
        return int(datetime(*map(int, fields), tzinfo=UTC).timestamp() * 1000)
    except ValueError:  # 2025-13-45: not a date after all
        return None


def _ms(seconds: float | None) -> int:
    return round(seconds * 1000) if seconds else 0
