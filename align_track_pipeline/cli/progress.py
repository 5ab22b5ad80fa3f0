"""A quiet logger for the CLI: the assets' own messages, one line each, no framework events."""

import logging
import sys

import dagster as dg


class _MessageOnly(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", {}) or {}
        return str(meta.get("orig_message", record.getMessage()))


# Not news to a CLI user: check outputs Dagster notes (we report them as events instead), and
# steps skipped after a failure (the failure's own line names what failed).
_NOISE = ("did not yield or return expected outputs", "Dependencies for step ")


def _user_message(record: logging.LogRecord) -> bool:
    meta = getattr(record, "dagster_meta", {}) or {}
    said = str(meta.get("orig_message"))
    return meta.get("dagster_event") is None and not any(n in said for n in _NOISE)


# Run config that selects this logger alone (otherwise Dagster adds its console logger).
PROGRESS_RUN_CONFIG = {"loggers": {"progress": {}}}


@dg.logger(description="Writes the assets' progress messages to stderr, one line each.")
def progress_logger(_init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("align_track.progress", level=logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MessageOnly())
    handler.addFilter(_user_message)
    logger.addHandler(handler)
    return logger
