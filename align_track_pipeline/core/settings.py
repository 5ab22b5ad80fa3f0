"""Every environment variable the project reads, in one typed registry, read and validated
once: a bad value stops a command (exit 2) or the code location's load with one message naming
the variable and what it accepts, instead of an error wherever the value is first used.

Modules read their variables through `current()` (the environment as it is now, loaded again
only when one of these variables changed, so a test that sets one per test sees it). The
configuration reference (`docs/reference/configuration.md`) and `align-track config` are
generated from the registry; a test fails when code reads a variable it does not name.
Regenerate the page with `./dev python -m align_track_pipeline.cli.reference`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from align_track_pipeline.core.secrets import MASK, mask_text, unencoded_in_password


class SettingError(ValueError):
    """One or more variables hold a value their setting does not accept (exit 2)."""


class Hint(ValueError):
    """A bad value with a word on how to fix it (added to the message)."""


class Kind(NamedTuple):
    """How a variable's text becomes its value: `parse` raises ValueError on a bad one, and
    `accepts` says what a good one is."""

    parse: Callable[[str], Any]
    accepts: str


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError
    return value.strip()


def _whole(least: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value.strip())
        if number < least:
            raise ValueError
        return number
    return parse


def _seconds(above: float, inclusive: bool) -> Callable[[str], float]:
    def parse(value: str) -> float:
        number = float(value.strip())
        if not (number >= above if inclusive else number > above) or number != number:
            raise ValueError
        return number
    return parse


_TRUE, _FALSE = ("1", "on", "true", "yes"), ("0", "off", "false", "no")


def _switch(value: str) -> bool:
    word = value.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ValueError
    return word in _TRUE


def _choice(*options: str) -> Kind:
    def parse(value: str) -> str:
        if value.strip() not in options:
            raise ValueError
        return value.strip()
    return Kind(parse, " or ".join(f"`{o}`" for o in options))


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError from None
    return value.strip()


def _web_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError
    return value.strip()


def _postgres_url(value: str) -> str:
    """dagster-postgres needs psycopg2: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3,
    on which dagster-postgres fails (server-side parameters in its NOTIFY)."""
    if bad := unencoded_in_password(value):
        raise Hint(f"the user or password holds an unencoded {bad!r}, which ends the host "
                   f"part: write it as {quote(bad, safe='')}")
    parts = urlsplit(value)
    if parts.scheme != POSTGRES_SCHEME or not parts.hostname or not parts.path.strip("/"):
        if parts.scheme in ("postgresql", "postgres"):
            raise Hint("name the driver: postgresql+psycopg2://, as psycopg 3 does not "
                             "work with dagster-postgres")
        raise ValueError
    return value


def _trackers(value: str) -> str:
    """Names only; which names exist is the tracker registry's to say (plugins add some)."""
    if value.strip() and not [n for n in value.split(",") if n.strip()]:
        raise ValueError
    return value.strip()


_FAULT = re.compile(r"[\w.-]+(:[1-9]\d*(:(kill|sigint|sigterm))?)?")


def _fault(value: str) -> str:
    if not _FAULT.fullmatch(value.strip()):
        raise ValueError
    return value.strip()


POSTGRES_SCHEME = "postgresql+psycopg2"
TEXT = Kind(_text, "a non-empty text")
PATH = Kind(_text, "a path")
URI = Kind(_text, "a URI")
SECONDS_TICK = Kind(_whole(1), "a whole number of seconds >= 1")
COUNT = Kind(_whole(1), "a whole number >= 1")
SECONDS_ABOVE_0 = Kind(_seconds(0, inclusive=False), "a number of seconds > 0")
SECONDS_FROM_0 = Kind(_seconds(0, inclusive=True), "a number of seconds >= 0")
SWITCH = Kind(_switch, "on or off (also 1/0, true/false, yes/no)")
TIMEZONE = Kind(_timezone, "an IANA timezone name, e.g. Europe/Berlin")
WEB_URL = Kind(_web_url, "an http(s)://HOST[:PORT] address")
POSTGRES = Kind(_postgres_url, f"{POSTGRES_SCHEME}://USER:PASSWORD@HOST:PORT/DATABASE")
TRACKERS = Kind(_trackers, "comma-separated tracker names, e.g. aim")
STAGE = Kind(_text, "a folder, or `off`")
FAULT = Kind(_fault, "NAME[:N[:kill|sigint|sigterm]] with N >= 1")


class Setting(NamedTuple):
    name: str
    default: str  # as the docs say it (a value, or how it is derived)
    meaning: str
    kind: Kind = TEXT
    fallback: Any = None  # the value when unset; None: derived where it is used (or none)
    secret: bool = False  # never shown (and any value shown has its URIs' userinfo masked)


# The project's own variables, in the order a reader meets them.
SETTINGS: tuple[Setting, ...] = (
    Setting("ALIGN_TRACK_EXPERIMENTS_DIR", "`examples/experiment-data` (bundled)",
            "the experiment-data tree (`ingest` defaults to the tree the data dir was built "
            "from)", PATH),
    Setting("ALIGN_TRACK_DATA_DIR", "`./align-track-data`",
            "Parquet tables (and, by default, the local stores and the Dagster instance)", PATH),
    Setting("ALIGN_TRACK_POSTGRES_URL", "unset",
            "`postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB`: the Dagster instance (runs, "
            "event log, schedules) in that database, for `align-track`, `dagster dev` and the "
            "daemon alike; unset: SQLite under `DAGSTER_HOME`. The driver is named because "
            "SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3, on which dagster-postgres "
            "fails; a bare one is refused with that hint", POSTGRES),
    Setting("ALIGN_TRACK_MLFLOW_ARTIFACTS", "`<data dir>/mlflow-artifacts`",
            "where experiments the pipeline creates keep their artifacts: a shared folder or "
            "any artifact URI MLflow accepts (behind a server with `--serve-artifacts`, leave it "
            "unset: the server stores them)", URI),
    Setting("ALIGN_TRACK_MLFLOW_EXPERIMENT", "`align-system`", "MLflow experiment name",
            TEXT, "align-system"),
    Setting("ALIGN_TRACK_MLFLOW_FLAT", "off",
            "on: one MLflow run per experiment row instead of parent + scene runs", SWITCH,
            False),
    Setting("ALIGN_TRACK_MLFLOW_TRACES", "on",
            "off: no MLflow trace per scene; switching it rewrites every partition's MLflow "
            "data once", SWITCH, True),
    Setting("ALIGN_TRACK_MLFLOW_UI_URL",
            "`http://127.0.0.1:5000` (`mlflow-ui`), or the tracking server",
            "MLflow UI address, for links to runs in the Dagster UI and `align-track search`",
            WEB_URL),
    Setting("ALIGN_TRACK_AIM_UI_URL", "`http://127.0.0.1:43800` (`aim-ui`)",
            "Aim UI address, for links to scene runs in the Dagster UI and `align-track search`",
            WEB_URL),
    Setting("ALIGN_TRACK_AIM_REPO", "`<data dir>/aim`", "the Aim repo (a local disk)", PATH),
    Setting("ALIGN_TRACK_AIM_STAGE", "`/dev/shm`",
            "where new Aim runs are built before they are moved into the repo: a folder "
            "(created if missing; a memory file system or a local disk, never a network share), "
            "or `off` to build them in the repo directly", STAGE),
    Setting("ALIGN_TRACK_PUBLIC_APIS", "off",
            "on: use only the public APIs of Aim, MLflow and Dagster (slower), as on a library "
            "version the fast paths were not verified on (`core/verified.py`)", SWITCH, False),
    Setting("ALIGN_TRACK_TRACKERS", "every registered tracker",
            "a comma-separated choice, e.g. `aim`: the others get no asset, no ingest phase and "
            "no writes (CLI, workers and code location alike), except that a removed folder's "
            "runs are still deleted (or archived) from a left-out tracker that holds them",
            TRACKERS),
    Setting("ALIGN_TRACK_ON_REMOVED", "`delete`",
            "`archive`: keep a removed folder's data out of sight instead of deleting it",
            _choice("delete", "archive"), "delete"),
    Setting("ALIGN_TRACK_TIMEZONE", "`UTC`",
            "timezone of the nightly schedule (an IANA name, e.g. `Europe/Berlin`)", TIMEZONE,
            "UTC"),
    Setting("ALIGN_TRACK_SENSOR_INTERVAL_SECONDS", "`5`",
            "minimum interval of the discovery sensor, which ingests a new or changed folder "
            "in one run (5 s is the daemon's floor)", SECONDS_TICK, 5),
    Setting("ALIGN_TRACK_AUTOMATION_INTERVAL_SECONDS", "`30`",
            "minimum interval of the automation sensor (the safety net: many folders at once, "
            "failed runs, code-version bumps) and of the follow-up (Aim index) sensors",
            SECONDS_TICK, 30),
    Setting("ALIGN_TRACK_PARTITIONS_PER_RUN", "`50`",
            "the most partitions in one run of a UI backfill or an automation request (read "
            "when the definitions load)", COUNT, 50),
    Setting("ALIGN_TRACK_PARSE_PROCESSES", "min(cores, 4)",
            "processes that parse run directories in the tables phase (from 8 partitions in a "
            "run), which `ingest` runs in its own process whatever its `--workers`", COUNT),
    Setting("ALIGN_TRACK_DEAD_WRITER_SECONDS", "`120`",
            "an `align-track` run on another host whose heartbeat is older is failed and frees "
            "its pool slots", SECONDS_ABOVE_0, 120.0),
    Setting("ALIGN_TRACK_POOL_WAIT_SECONDS", "`600`",
            "how long `ingest` waits for a store's pool held by a live writer before giving "
            "up (exit 1)", SECONDS_FROM_0, 600.0),
    Setting("ALIGN_TRACK_CACHE_DIR",
            "`<data dir>/state`, or `~/.cache/align-track/` for a data dir on a network "
            "filesystem",
            "this host's fingerprint cache (a local disk; never shared)", PATH),
    Setting("ALIGN_TRACK_COMPUTE_LOGS", "unset (`DAGSTER_HOME/storage`)",
            "read by `deploy/dagster.yaml`: the step logs, on a volume the code server and "
            "the webserver share", PATH),
    Setting("ALIGN_TRACK_FAULT", "unset",
            "a test hook, not a setting: `NAME[:N[:kill|sigint|sigterm]]` kills (default) or "
            "interrupts the process at the N-th hit of a named point in the writers "
            "(`core/faults.py`)", FAULT),
)

# Variables of other tools that the project reads or passes on.
OTHER_SETTINGS: tuple[Setting, ...] = (
    Setting("DAGSTER_HOME", "`<data dir>/dagster`",
            "the Dagster instance's home (its `dagster.yaml`; SQLite storage unless "
            "`ALIGN_TRACK_POSTGRES_URL` is set)", PATH),
    Setting("MLFLOW_TRACKING_URI", "`sqlite:///<data dir>/mlflow.db`",
            "any MLflow tracking URI: `http(s)://` a server, `postgresql+psycopg2://` its "
            "database, `sqlite:///` a file", URI),
    Setting("MLFLOW_TRACKING_USERNAME", "unset",
            "with `MLFLOW_TRACKING_PASSWORD`: credentials of an `mlflow server --app-name "
            "basic-auth`, read by MLflow's client itself (never shown or recorded)", TEXT),
    Setting("MLFLOW_TRACKING_PASSWORD", "unset", "see `MLFLOW_TRACKING_USERNAME`", TEXT,
            secret=True),
)

REGISTRY: dict[str, Setting] = {s.name: s for s in (*SETTINGS, *OTHER_SETTINGS)}


@dataclass(frozen=True)
class Settings:
    """The registered variables, typed and validated: `given` holds the ones the environment
    sets (parsed), the rest take their registered fallback."""

    given: Mapping[str, Any]

    def get(self, name: str) -> Any:
        """The value of `name`: as set, else its fallback (None: unset, derived by the
        reader). A name not in the registry is a bug: KeyError."""
        return self.given.get(name, REGISTRY[name].fallback)

    def is_set(self, name: str) -> bool:
        REGISTRY[name]  # noqa: B018  (a name not in the registry is a bug)
        return name in self.given


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Read, type and validate every registered variable of `environ`; raise `SettingError`
    naming each bad one and what it accepts. An empty value counts as unset."""
    given, errors = {}, []
    for setting in REGISTRY.values():
        raw = environ.get(setting.name, "")
        if not raw.strip():
            continue
        try:
            given[setting.name] = setting.kind.parse(raw)
        except ValueError as exc:
            hint = f" ({exc})" if isinstance(exc, Hint) else ""
            errors.append(f"{setting.name}={shown(setting, raw)}: expected "
                          f"{setting.kind.accepts}{hint}")
    if errors:
        raise SettingError("; ".join(errors))
    return Settings(given)


_cache: tuple[tuple, Settings] | None = None


def current() -> Settings:
    """The settings of this process's environment now: loaded again only when a registered
    variable changed since the last call (cheap: one lookup per variable)."""
    global _cache
    key = tuple(os.environ.get(name) for name in REGISTRY)
    if _cache is None or _cache[0] != key:
        _cache = (key, load_settings(os.environ))
    return _cache[1]


def shown(setting: Setting, value: str) -> str:
    """A value as it may be printed: a secret replaced by the mask, any other with the
    userinfo (`user:password@`) of the URIs in it masked."""
    return MASK if setting.secret else mask_text(value)


def settings_markdown() -> str:
    """The configuration reference's tables."""
    return (_table(SETTINGS) + "\nVariables of other tools the project reads:\n\n"
            + _table(OTHER_SETTINGS))


def _table(settings: tuple[Setting, ...]) -> str:
    lines = ["| variable | default | accepts | meaning |", "|---|---|---|---|"]
    lines += [f"| `{s.name}` | {s.default} | {s.kind.accepts.replace('|', chr(92) + '|')} | "
              f"{s.meaning} |" for s in settings]
    return "\n".join(lines) + "\n"
