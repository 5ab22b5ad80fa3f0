"""The trackers' writers imported on a background thread: done once `preloaded()` returns, and
a failing import there reaches no one (the writer's own import reports it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

WRITERS = ["align_track_pipeline.core.trackers.mlflow.writer",
           "align_track_pipeline.core.trackers.mlflow.compat",
           "align_track_pipeline.core.trackers.aim.writer", "mlflow", "aim"]


def _fresh_process(code: str) -> tuple[str, str]:
    """What `code` prints in a fresh interpreter (nothing imported yet), and its stderr."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                          capture_output=True, text=True, check=True, timeout=300)
    return proc.stdout.strip(), proc.stderr


def test_the_writers_are_imported_in_the_background_before_open(tmp_path):
    printed, _ = _fresh_process(f"""
        import sys, threading
        from align_track_pipeline.core.trackers.aim.tracker import AimTracker
        from align_track_pipeline.core.trackers.base import preload_writers, preloaded
        from align_track_pipeline.core.trackers.mlflow.tracker import MlflowTracker
        writers = {WRITERS!r}
        before = [m for m in writers if m in sys.modules]
        preload_writers([MlflowTracker("sqlite:///{tmp_path}/mlflow.db"),
                         AimTracker("{tmp_path}/aim")])
        preloaded()
        after = [m for m in writers if m in sys.modules]
        print(before, after, threading.active_count())
    """)
    assert printed == f"[] {WRITERS!r} 1"


def test_a_failing_preload_is_left_to_the_writers_own_import():
    printed, errors = _fresh_process("""
        from align_track_pipeline.core.trackers.base import preload_writers, preloaded
        from align_track_pipeline.core.trackers.mlflow.tracker import MlflowTracker

        class Broken(MlflowTracker):
            def preload(self):
                raise ImportError("no such module")

        preload_writers([Broken("sqlite:///unused.db")])
        preloaded()
        print("went on")
    """)
    assert printed == "went on"
    assert "Traceback" not in errors and "no such module" not in errors


def test_what_dagster_s_queries_share_with_the_writers_is_imported_before_the_thread_starts():
    """SQLAlchemy's ORM half-imported by the preload thread failed a Dagster query on the
    calling thread (`partially initialized module 'sqlalchemy.orm.exc'`): it is imported,
    whole, before `preload_writers` returns."""
    printed, _ = _fresh_process("""
        import sys
        from align_track_pipeline.core.trackers.base import preload_writers, preloaded
        from align_track_pipeline.core.trackers.mlflow.tracker import MlflowTracker
        before = "sqlalchemy.orm" in sys.modules
        preload_writers([MlflowTracker("sqlite:///unused.db")])
        whole = hasattr(sys.modules.get("sqlalchemy.orm.exc"), "UnmappedClassError")
        preloaded()
        print(before, whole)
    """)
    assert printed == "False True"
