"""`aim up` with the project named after this pipeline: `python -m` this module with `aim up`'s
options. Its uvicorn server imports `app` from here, which names the project first."""

from __future__ import annotations

import sys
from typing import Any

from align_track_pipeline.core.trackers.aim import compat


def __getattr__(name: str) -> Any:
    """`app`: Aim's own ASGI app, imported (in the server process) after the naming."""
    if name != "app":
        raise AttributeError(name)
    compat.name_project(compat.PROJECT_NAME)
    from aim.web.run import app

    return app


if __name__ == "__main__":
    compat.run_aim_up(sys.argv[1:], f"{__spec__.name}:app")
