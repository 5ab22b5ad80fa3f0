"""The `align-track` command and its in-process runner (phases, progress, interrupts, the
local Dagster instance): a second way to run the pipeline, beside the daemon."""

from align_track_pipeline.cli.main import main

__all__ = ["main"]
