"""The registered trackers, in the order their phases run.

MLflow and Aim are built in. Another store registers a factory, from code (`register`) or from
an installed package's entry point in the group `align_track.trackers` (name = tracker name,
value = `module:factory`). A factory takes the `Settings` and returns a `Tracker`.

`--trackers NAME,...` or ALIGN_TRACK_TRACKERS keeps only the named ones (e.g. `aim` for a team
that has no MLflow): the others get no asset, no phase and no writes. Unset: all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points

from align_track_pipeline.core.trackers.aim.tracker import aim_tracker
from align_track_pipeline.core.trackers.base import Settings, TargetError, Tracker
from align_track_pipeline.core.trackers.mlflow.tracker import mlflow_tracker

ENTRY_POINT_GROUP = "align_track.trackers"
TRACKERS_ENV = "ALIGN_TRACK_TRACKERS"


__all__ = ["Settings", "TrackerFactory", "register", "create", "create_all", "create_every"]

TrackerFactory = Callable[[Settings], Tracker]

_BUILT_IN: dict[str, TrackerFactory] = {"mlflow": mlflow_tracker, "aim": aim_tracker}
_REGISTERED: dict[str, TrackerFactory] = {}


def register(name: str, factory: TrackerFactory) -> None:
    """Add a tracker; it runs after the ones registered before it."""
    if name in factories():
        raise ValueError(f"a tracker named {name!r} is already registered")
    _REGISTERED[name] = factory


def unregister(name: str) -> None:
    _REGISTERED.pop(name, None)


@contextmanager
def registered(name: str, factory: TrackerFactory) -> Iterator[None]:
    """A tracker registered for the duration of a block (tests, one-off scripts)."""
    register(name, factory)
    try:
        yield
    finally:
        unregister(name)


def factories() -> dict[str, TrackerFactory]:
    """Name -> factory: built-ins, then installed entry points, then `register` calls."""
    plugins = {ep.name: ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**_BUILT_IN, **plugins, **_REGISTERED}


def create_all(settings: Settings) -> list[Tracker]:
    """The chosen trackers (every registered one unless `chosen` names some), configured for
    `settings`, in the order of the registry."""
    known = factories()
    names = chosen(settings, list(known))
    return [_checked(name, known[name](settings)) for name in names]


def create_every(settings: Settings) -> list[Tracker]:
    """Every registered tracker, chosen or not: for cleaning up after removed folders in the
    stores that a run with other choices wrote."""
    return [_checked(name, factory(settings)) for name, factory in factories().items()]


def chosen(settings: Settings, known: list[str]) -> list[str]:
    """The trackers `--trackers` / ALIGN_TRACK_TRACKERS names (comma-separated), in the
    order of `known`; all of `known` when neither is set."""
    given = settings.get("trackers", TRACKERS_ENV)
    if not given.strip():
        return known
    names = {n.strip() for n in given.split(",") if n.strip()}
    if not names:
        raise TargetError(f"{TRACKERS_ENV} / --trackers {given!r} names no tracker; "
                          f"registered: {', '.join(known)}")
    unknown = sorted(names - set(known))
    if unknown:
        raise TargetError(f"{TRACKERS_ENV} / --trackers names {', '.join(unknown)}: no such "
                          f"tracker; registered: {', '.join(known)}")
    return [name for name in known if name in names]


def create(name: str, settings: Settings) -> Tracker:
    known = factories()
    if name not in known:
        raise KeyError(f"no tracker named {name!r}; registered: {', '.join(known)}")
    return _checked(name, known[name](settings))


def _checked(name: str, tracker: Tracker) -> Tracker:
    if tracker.name != name:
        raise ValueError(f"tracker registered as {name!r} calls itself {tracker.name!r}")
    tracker.check()
    return tracker
