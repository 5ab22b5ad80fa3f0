"""Reading one run directory's files safely, with errors that name the file and the problem."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import yaml

# libyaml's safe loader when PyYAML was built with it (several times faster), else pure Python.
# Both construct only plain data: tags that would create Python objects are refused.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class ParseError(Exception):
    """A run directory that cannot be ingested: names the file and what is wrong with it."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def read_regular_file(path: Path | str) -> bytes:
    """A file's bytes; OSError for anything but a regular file: a FIFO (or a device) named
    like a source file would block the read for good. Opened without blocking, then told
    apart by the open descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise OSError(errno.EISDIR, "a folder, not a file")
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, device or socket)")
        os.set_blocking(fd, True)  # a file system that honours it on a file would give EAGAIN
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def read_text(path: Path, root: Path) -> str:
    """UTF-8 text of a file that must stay inside the tree (symlinks out are refused)."""
    real = os.path.realpath(path)
    real_root = os.path.realpath(root)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise ParseError(path, f"symlink leaves the experiment tree (points to {real})")
    try:
        data = read_regular_file(real)
    except OSError as exc:
        raise ParseError(path, f"cannot read file: {exc.strerror}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(
            path, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from exc


def read_json(path: Path, root: Path) -> Any:
    text = read_text(path, root)
    if not text.strip():
        raise ParseError(path, "empty file (the run may have crashed or still be writing it)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (truncated: the run may have crashed or still be running)" if (
            exc.pos >= len(text.rstrip()) - 1
        ) else ""
        raise ParseError(
            path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{hint}"
        ) from exc


def read_yaml(path: Path, root: Path) -> dict[str, Any]:
    """A YAML mapping through the safe loader: tags that would run code are refused."""
    text = read_text(path, root)
    try:
        data = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.constructor.ConstructorError as exc:
        raise ParseError(path, f"YAML tag not allowed (never executed): {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ParseError(path, f"invalid YAML: {_yaml_problem(exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParseError(path, f"expected a YAML mapping at top level, got {type(data).__name__}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
    return f"{getattr(exc, 'problem', None) or exc}{where}"


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (NaN, inf, text, null)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def dig(data: Any, *keys: str) -> Any:
    """data[k1][k2]... or None where any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data
