"""Gates on the library versions whose internals the pipeline was verified against.

The fast paths reach into Aim, MLflow and Dagster internals. Each library has one gate here:
open only on an installed version listed in `VERIFIED`; on any other version (or with
`ALIGN_TRACK_PUBLIC_APIS=1`) the callers take the public API path instead, slower and
correct, and the log says so once per library. tests/test_verified.py fails, naming the gate,
when an upgrade (`uv lock --upgrade`) closes one.
"""

from __future__ import annotations

import functools
import logging
from importlib.metadata import PackageNotFoundError, version

from align_track_pipeline.core.settings import current

# Library (the gate) -> distribution -> the versions its internals were verified on.
VERIFIED: dict[str, dict[str, frozenset[str]]] = {
    "aim": {"aim": frozenset({"3.29.1"}), "aimrocks": frozenset({"0.5.2"})},
    "mlflow": {"mlflow": frozenset({"3.17.2"}), "mlflow-skinny": frozenset({"3.17.2"})},
    "dagster": {"dagster": frozenset({"1.13.27"})},
}
PUBLIC_ENV = "ALIGN_TRACK_PUBLIC_APIS"  # "1": every gate closed (public APIs only)


def aim_internals() -> bool:
    """Aim's internals (staged runs, lean runs, direct indexing) may be used."""
    return _open("aim")


def mlflow_internals() -> bool:
    """MLflow's SQLAlchemy models may be written directly (the bulk SQL path)."""
    return _open("mlflow")


def dagster_internals() -> bool:
    """Dagster's private event APIs and run settings may be used."""
    return _open("dagster")


def mismatches(library: str) -> dict[str, str | None]:
    """Distributions of `library` whose installed version (None: missing) is not verified."""
    return {dist: installed(dist) for dist, ok in VERIFIED[library].items()
            if installed(dist) not in ok}


def _open(library: str) -> bool:
    if current().get(PUBLIC_ENV):
        _warn_once(library, f"{PUBLIC_ENV}=1")
        return False
    wrong = mismatches(library)
    if wrong:
        _warn_once(library, ", ".join(f"{d} {v or 'missing'} is not among the verified "
                                      f"{sorted(VERIFIED[library][d])}" for d, v in wrong.items()))
    return not wrong


@functools.cache
def installed(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@functools.cache
def _warn_once(library: str, why: str) -> None:
    logging.getLogger(__name__).warning(
        "%s: using its public API only (slower): %s", library, why)
