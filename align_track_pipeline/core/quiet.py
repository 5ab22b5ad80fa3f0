"""Warnings silenced on purpose, in one block (no Dagster import: the CLI silences Dagster's
before it imports Dagster)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_about(*categories: type[Warning], message: str = "") -> Iterator[None]:
    """Silence Dagster's beta/preview warnings for APIs we use on purpose (noise a user cannot
    act on), in one block."""
    with warnings.catch_warnings():
        for category in categories:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
