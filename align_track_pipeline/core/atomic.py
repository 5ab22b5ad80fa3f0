"""Files replaced whole: a reader (another process, a sensor tick, an ingest) sees the old
file or the new one, never half of one, and a failed write leaves no temporary file behind."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_text_atomically(path: Path, text: str) -> None:
    """`text` into `path` through a temporary file beside it, unique to this call (two
    processes writing the same file never share one), renamed over it. The temporary name
    keeps at most 64 characters of the target's: any name the target can have, it can."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name[:64]}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
