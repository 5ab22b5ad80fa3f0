"""Find the runs of a page of rows by their keys (tag `align_track.key`), in one lookup.

MLflow's search filter has no `IN` for tags. On a SQL store (the SQLite default, Postgres,
MySQL) one query over MLflow's tables finds every key of the page, on the MLflow versions those
tables were verified on (`core/verified.py`); through a tracking server, or MLflow's client on
any other version, one search per run directory on the page (tag `align_track.partition`),
never one per row.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from align_track_pipeline.core.secrets import without_credentials
from align_track_pipeline.core.trackers.mlflow.plan import TAG_KEY, TAG_PARTITION
from align_track_pipeline.core.trackers.sqlite_value import NONE, read_value
from align_track_pipeline.core.verified import mlflow_internals

log = logging.getLogger(__name__)
RunIds = dict[str, tuple[str, str]]  # run key -> (experiment id, run id)


def is_sql(uri: str) -> bool:
    """A database URI (MLflow's SQL store), not a tracking server."""
    return urlparse(uri).scheme.split("+")[0] in {"sqlite", "postgresql", "mysql", "mssql"}


def quote(value: str) -> str:
    """A value for a single-quoted string in an MLflow search filter."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def find_runs(tracking_uri: str, experiment: str, keys: dict[str, str]) -> RunIds:
    """The active runs of `keys` (run key -> its partition) in the experiment; nothing when
    the store was never written."""
    if not keys or _missing_sqlite(tracking_uri):
        return {}
    if _tables(tracking_uri):
        return _by_sql(tracking_uri, experiment, list(keys))
    return _by_api(tracking_uri, experiment, keys)


def _tables(uri: str) -> bool:
    """MLflow's tables may be read directly: a SQL store on a verified MLflow."""
    return is_sql(uri) and mlflow_internals()


# MLflow's own tables (pinned by tests/core/test_mlflow_compat.py); plain SQL, so a lookup
# does not import MLflow (seconds).
_FIND_KEYS = """
SELECT t.value, r.experiment_id, r.run_uuid FROM tags t
JOIN runs r ON r.run_uuid = t.run_uuid
JOIN experiments e ON e.experiment_id = r.experiment_id
WHERE t.key = :tag AND t.value IN :keys AND e.name = :experiment
  AND r.lifecycle_stage = 'active'
"""


def _by_sql(uri: str, experiment: str, keys: list[str]) -> RunIds:
    from sqlalchemy import bindparam, create_engine, text

    query = text(_FIND_KEYS).bindparams(bindparam("keys", expanding=True))
    engine = create_engine(uri, connect_args=_connect_timeout(uri))
    try:
        with engine.connect() as conn:
            found = conn.execute(query, {"tag": TAG_KEY, "keys": keys,
                                         "experiment": experiment}).all()
    finally:
        engine.dispose()
    return {key: (str(experiment_id), run_id) for key, experiment_id, run_id in found}


def _connect_timeout(uri: str) -> dict[str, int]:
    """A database server that is down or never answers gives up after LOOKUP_SECONDS, not the
    driver's default (none for libpq: a blackholed Postgres would hang the command)."""
    if urlparse(uri).scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
        return {"connect_timeout": LOOKUP_SECONDS}
    return {}


# A lookup is for a person waiting on a command: MLflow's own HTTP defaults (7 retries with
# backoff, 120 s per request: about 4 minutes on a server that is down) suit writes, not this.
LOOKUP_SECONDS = 2
UI_LOOKUP_SECONDS = 10  # a UI about to start: a slow server is still answered
_RETRIES, _TIMEOUT = "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"


REACH_SECONDS = 20  # a server starting (`docker compose up`) is waited for this long


def check_reachable(uri: str, seconds: float = REACH_SECONDS) -> None:
    """Raise ConnectionError, naming the server without credentials, when nothing answers a
    connection at a tracking server's address for `seconds` (down, a wrong port or host):
    MLflow's client retries each request for about four minutes first. Only connections are
    tried: a server that answers with errors is left to MLflow's retries. Skipped through a
    proxy (the proxy, not the server, is dialled) and for any other store."""
    parts = urlparse(uri)
    if parts.scheme not in ("http", "https") or _proxied(parts.scheme, parts.hostname or ""):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    end = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((parts.hostname, port), timeout=seconds).close()
            return
        except OSError as exc:
            if time.monotonic() >= end:
                raise ConnectionError(f"the MLflow tracking server {without_credentials(uri)} "
                                      f"cannot be reached: {exc.strerror or exc}") from None
            time.sleep(1)


def _proxied(scheme: str, host: str) -> bool:
    """Whether a request to `host` goes through a proxy (`no_proxy` alone sets none)."""
    return bool(urllib.request.getproxies().get(scheme)) and not urllib.request.proxy_bypass(
        host)


def _by_api(uri: str, experiment: str, keys: dict[str, str]) -> RunIds:
    """Raises TimeoutError, or MLflow's error, when the server does not answer in about
    LOOKUP_SECONDS all told."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    limit = _Deadline(LOOKUP_SECONDS)
    with limit.request():
        found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    out: RunIds = {}
    for partition in sorted(set(keys.values())):
        token = None
        while True:
            with limit.request():
                page = client.search_runs([found.experiment_id],
                                          f"tags.`{TAG_PARTITION}` = '{quote(partition)}'",
                                          max_results=1000, page_token=token)
            out |= {run.data.tags[TAG_KEY]: (run.info.experiment_id, run.info.run_id)
                    for run in page if run.data.tags.get(TAG_KEY) in keys}
            token = page.token
            if not token:
                break
    return out


def experiment_id(tracking_uri: str, experiment: str,
                  seconds: float = UI_LOOKUP_SECONDS) -> str | None:
    """The experiment's id, or None when the store or the experiment was never written (the
    lookup creates nothing). A tracking server that does not answer within `seconds` (no
    retries) raises TimeoutError, or MLflow's error."""
    if _missing_sqlite(tracking_uri):
        return None
    if _tables(tracking_uri):
        from sqlalchemy import create_engine, exc, text

        engine = create_engine(tracking_uri)
        try:
            with engine.connect() as conn:
                found = conn.execute(text("SELECT experiment_id FROM experiments "
                                          "WHERE name = :name"), {"name": experiment}).first()
        except (exc.OperationalError, exc.ProgrammingError):  # no schema: nothing written
            return None
        finally:
            engine.dispose()
        return str(found[0]) if found else None
    from mlflow import MlflowClient

    with _Deadline(seconds).request():
        found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    return found.experiment_id if found else None


# MLflow's own table (pinned by tests/core/test_mlflow_compat.py): a store deleted and made
# again, or the experiment removed for good and made again, gives another id or creation
# time. A soft-deleted experiment keeps both (the writer writes into it; restoring it shows
# the runs), so it is not a new generation.
_GENERATION = ("SELECT experiment_id || '.' || ifnull(creation_time, '') FROM experiments "
               "WHERE name = ?")


def generation_file(uri: str) -> Path | None:
    """The SQLite file whose experiment row tells the store's generation: a SQLite store on
    an MLflow whose tables were verified; None for any other store (not told)."""
    path = _sqlite_path(uri)
    return path if path is not None and mlflow_internals() else None


def store_generation(path: Path, experiment: str) -> str:
    """Which instance of the store at `path` (`generation_file`) holds the experiment: its
    id and creation time, `sqlite_value.NONE` when the file or the experiment is missing;
    read without MLflow, two stats when nothing changed."""
    return read_value(path, _GENERATION, (experiment,))


def remote_generation(uri: str, experiment: str) -> str:
    """The same for a store on a database server or behind a tracking server (one query or
    request): `NONE` when the experiment is missing; "" (not told) for a SQLite file without
    `generation_file` or a database whose MLflow tables were not verified (MLflow's client
    would create them), or a store that does not answer within about LOOKUP_SECONDS."""
    if _sqlite_path(uri) is not None or (is_sql(uri) and not _tables(uri)):
        return ""
    try:
        if is_sql(uri):
            return _generation_by_sql(uri, experiment)
        return _generation_by_api(uri, experiment)
    except Exception as error:  # noqa: BLE001  down, refusing, timed out: nothing concluded
        log.debug("the MLflow store did not tell its generation: %s", type(error).__name__)
        return ""


def _generation_by_sql(uri: str, experiment: str) -> str:
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(uri, connect_args=_connect_timeout(uri))
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("experiments"):
                return NONE  # an empty database: nothing was written
            found = conn.execute(text("SELECT experiment_id, creation_time FROM experiments "
                                      "WHERE name = :name"), {"name": experiment}).first()
    finally:
        engine.dispose()
    return _generation(*found) if found else NONE


def _generation_by_api(uri: str, experiment: str) -> str:
    from mlflow import MlflowClient

    with _Deadline(LOOKUP_SECONDS).request():
        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    return _generation(found.experiment_id, found.creation_time) if found else NONE


def _generation(experiment_id: object, creation_time: object) -> str:
    """As `_GENERATION` spells it."""
    return f"{experiment_id}.{'' if creation_time is None else creation_time}"


def _missing_sqlite(uri: str) -> bool:
    """A SQLite store that was never written: opening it would create it."""
    path = _sqlite_path(uri)
    return path is not None and not path.exists()


def _sqlite_path(uri: str) -> Path | None:
    """A SQLite store's database file: what follows `sqlite:///` (absolute when it starts
    with another `/`); None for any other store."""
    parts = urlparse(uri)
    return Path(parts.path[1:]) if parts.scheme == "sqlite" else None


class _Deadline:
    """One time budget for every request of a lookup, through MLflow's documented HTTP
    settings (read at each request): no retries, and each request may take what is left."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    @contextmanager
    def request(self) -> Iterator[None]:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the tracking server took more than {self.seconds} s")
        saved = {name: os.environ.get(name) for name in (_RETRIES, _TIMEOUT)}
        os.environ[_RETRIES] = "0"
        os.environ[_TIMEOUT] = str(max(1, math.ceil(left)))  # whole seconds only
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
