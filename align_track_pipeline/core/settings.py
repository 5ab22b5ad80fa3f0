"""Every environment variable the project reads, in one place, so the configuration reference
is generated from it and a test can tell when code reads a variable this list does not name.

This is documentation only: modules still read their variables themselves.
Regenerate the page with `./dev python -m align_track_pipeline.cli.reference`.
"""

from __future__ import annotations

from typing import NamedTuple


class Setting(NamedTuple):
    name: str
    default: str
    meaning: str


# The project's own variables, in the order a reader meets them.
SETTINGS: tuple[Setting, ...] = (
    Setting("ALIGN_TRACK_EXPERIMENTS_DIR", "`examples/experiment-data` (bundled)",
            "the experiment-data tree (`ingest` defaults to the tree the data dir was built "
            "from)"),
    Setting("ALIGN_TRACK_DATA_DIR", "`./align-track-data`",
            "Parquet tables (and, by default, the local stores and the Dagster instance)"),
    Setting("ALIGN_TRACK_POSTGRES_URL", "unset",
            "`postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB`: the Dagster instance (runs, "
            "event log, schedules) in that database, for `align-track`, `dagster dev` and the "
            "daemon alike; unset: SQLite under `DAGSTER_HOME`. The driver is named because "
            "SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3, on which dagster-postgres "
            "fails; a bare one is refused with that hint"),
    Setting("ALIGN_TRACK_MLFLOW_ARTIFACTS", "`<data dir>/mlflow-artifacts`",
            "where experiments the pipeline creates keep their artifacts: a shared folder or "
            "any artifact URI MLflow accepts (behind a server with `--serve-artifacts`, leave it "
            "unset: the server stores them)"),
    Setting("ALIGN_TRACK_MLFLOW_EXPERIMENT", "`align-system`", "MLflow experiment name"),
    Setting("ALIGN_TRACK_MLFLOW_FLAT", "unset",
            "`1`: one MLflow run per experiment row instead of parent + scene runs"),
    Setting("ALIGN_TRACK_MLFLOW_TRACES", "on",
            "`off` (or `0`, `false`, `no`): no MLflow trace per scene; switching it rewrites "
            "every partition's MLflow data once"),
    Setting("ALIGN_TRACK_MLFLOW_UI_URL",
            "`http://127.0.0.1:5000` (`mlflow-ui`), or the tracking server",
            "MLflow UI address, for links to runs in the Dagster UI and `align-track search`"),
    Setting("ALIGN_TRACK_AIM_UI_URL", "`http://127.0.0.1:43800` (`aim-ui`)",
            "Aim UI address, for links to scene runs in the Dagster UI and `align-track search`"),
    Setting("ALIGN_TRACK_AIM_REPO", "`<data dir>/aim`", "the Aim repo (a local disk)"),
    Setting("ALIGN_TRACK_AIM_STAGE", "`/dev/shm`",
            "where new Aim runs are built before they are moved into the repo: a folder "
            "(created if missing; a memory file system or a local disk, never a network share), "
            "or `off` to build them in the repo directly"),
    Setting("ALIGN_TRACK_TRACKERS", "every registered tracker",
            "a comma-separated choice, e.g. `aim`: the others get no asset, no ingest phase and "
            "no writes (CLI, workers and code location alike), except that a removed folder's "
            "runs are still deleted (or archived) from a left-out tracker that holds them"),
    Setting("ALIGN_TRACK_ON_REMOVED", "`delete`",
            "`archive`: keep a removed folder's data out of sight instead of deleting it"),
    Setting("ALIGN_TRACK_TIMEZONE", "`UTC`",
            "timezone of the nightly schedule (an IANA name, e.g. `Europe/Berlin`)"),
    Setting("ALIGN_TRACK_SENSOR_INTERVAL_SECONDS", "`5`",
            "minimum interval of the discovery sensor, which ingests a new or changed folder "
            "in one run (5 s is the daemon's floor)"),
    Setting("ALIGN_TRACK_AUTOMATION_INTERVAL_SECONDS", "`30`",
            "minimum interval of the automation sensor (the safety net: many folders at once, "
            "failed runs, code-version bumps) and of the Aim index sensor"),
    Setting("ALIGN_TRACK_PARTITIONS_PER_RUN", "`50`",
            "the most partitions in one run of a UI backfill or an automation request (read "
            "when the definitions load)"),
    Setting("ALIGN_TRACK_PARSE_PROCESSES", "min(cores, 4)",
            "processes that parse run directories in the tables phase (from 8 partitions in a "
            "run); `ingest --workers N` sets it in each worker to that worker's share of the "
            "cores"),
    Setting("ALIGN_TRACK_DEAD_WRITER_SECONDS", "`120`",
            "an `align-track` run on another host whose heartbeat is older is failed and frees "
            "its pool slots"),
    Setting("ALIGN_TRACK_POOL_WAIT_SECONDS", "`600`",
            "how long `ingest` waits for a tracker's pool held by a live writer before giving "
            "up (exit 1)"),
    Setting("ALIGN_TRACK_CACHE_DIR",
            "`<data dir>/state`, or `~/.cache/align-track/` for a data dir on a network "
            "filesystem",
            "this host's fingerprint cache (a local disk; never shared)"),
    Setting("ALIGN_TRACK_COMPUTE_LOGS", "unset (`DAGSTER_HOME/storage`)",
            "read by `deploy/dagster.yaml`: the step logs, on a volume the code server and "
            "the webserver share"),
    Setting("ALIGN_TRACK_FAULT", "unset",
            "a test hook, not a setting: `NAME[:N[:kill|sigint|sigterm]]` kills (default) or "
            "interrupts the process at the N-th hit of a named point in the writers "
            "(`core/faults.py`)"),
)

# Variables of other tools that the project reads or passes on.
OTHER_SETTINGS: tuple[Setting, ...] = (
    Setting("DAGSTER_HOME", "`<data dir>/dagster`",
            "the Dagster instance's home (its `dagster.yaml`; SQLite storage unless "
            "`ALIGN_TRACK_POSTGRES_URL` is set)"),
    Setting("MLFLOW_TRACKING_URI", "`sqlite:///<data dir>/mlflow.db`",
            "any MLflow tracking URI: `http(s)://` a server, `postgresql+psycopg2://` its "
            "database, `sqlite:///` a file"),
    Setting("MLFLOW_TRACKING_USERNAME", "unset",
            "with `MLFLOW_TRACKING_PASSWORD`: credentials of an `mlflow server --app-name "
            "basic-auth`, read by MLflow's client itself (never shown or recorded)"),
    Setting("MLFLOW_TRACKING_PASSWORD", "unset", "see `MLFLOW_TRACKING_USERNAME`"),
)


def settings_markdown() -> str:
    """The configuration reference's tables."""
    return (_table(SETTINGS) + "\nVariables of other tools the project reads:\n\n"
            + _table(OTHER_SETTINGS))


def _table(settings: tuple[Setting, ...]) -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {s.default} | {s.meaning} |" for s in settings]
    return "\n".join(lines) + "\n"
