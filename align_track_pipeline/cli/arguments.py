"""Argument types of the command line: a value they refuse is a usage error (exit 2) naming
the option, before any work."""

from __future__ import annotations

import argparse
from pathlib import Path


def folder(value: str) -> Path:
    """A folder path; an empty one would silently mean the working directory. A leading `~`
    is the home folder, as the shell would have made it (`--data-dir=~/x` it leaves alone)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path (give a folder, or leave the option "
                                         "out for its default)")
    return Path(value).expanduser()


def file_path(value: str) -> Path:
    """An output file's path; an empty one would name the working directory, and a folder
    cannot be written over."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path (give a file name)")
    path = Path(value).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder (give a file name)")
    return path


def port(value: str) -> int:
    """A TCP port to listen on: 1 to 65535 (0 would pick one nobody is told)."""
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, not {value!r}")
    return int(value)


def positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {value!r}")
    return int(value)


def count(value: str) -> int:
    if not value.isdigit() or int(value) >= 2**63:  # DuckDB's LIMIT is a 64-bit number
        raise argparse.ArgumentTypeError(f"expected a whole number (0 or more), not {value!r}")
    return int(value)
