"""`align-track ingest` looks ahead before it imports Dagster (`cli.ahead`): the fork server of
the fast path's analysis worker starts at once when a few folders of a tree ingested before
changed, and not otherwise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.discovery import CHANGED_RUNS_MAX, find_run_dirs
from tests.conftest import REPO


def _look_ahead(tree: Path, data: Path, workers: bool) -> dict:
    """`look_ahead` in a fresh interpreter: whether it imported Dagster, whether it peeked,
    and what a process forked from its fork server finds imported (None: no server)."""
    code = textwrap.dedent(f"""
        import json, os, sys
        from pathlib import Path
        from align_track_pipeline.cli.ahead import look_ahead
        from align_track_pipeline.core.lifeline import preloaded_pool, stop_fork_server

        def main():
            ahead = look_ahead(Path({str(tree)!r}), Path({str(data)!r}), {workers!r})
            dagster = "dagster" in sys.modules
            servers = [p for p in os.listdir("/proc") if p.isdigit() and _child_server(p)]
            preloaded = None
            if servers:
                with preloaded_pool(1, []) as pool:  # forked from the running server
                    preloaded = pool.submit(_loaded).result()
            stop_fork_server()
            print(json.dumps({{"dagster": dagster, "peeked": ahead.peeked is not None,
                              "servers": len(servers), "preloaded": preloaded}}))

        def _child_server(pid):
            try:
                stat = Path(f"/proc/{{pid}}/stat").read_text().rsplit(")", 1)[1].split()
                cmd = Path(f"/proc/{{pid}}/cmdline").read_bytes()
            except OSError:
                return False
            return int(stat[1]) == os.getpid() and b"forkserver" in cmd

        def _loaded():
            return [m for m in ("matplotlib.figure", "pandas", "align_track_pipeline.definitions")
                    if m in sys.modules]

        if __name__ == "__main__":
            main()
    """)
    script = data.parent / "look_ahead.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=True)
    return json.loads(proc.stdout)


def _change(run_dir: Path) -> None:
    timing = json.loads((run_dir / "timing.json").read_text())
    timing["raw_times_s"][0] += 1.0
    (run_dir / "timing.json").write_text(json.dumps(timing))


@pytest.fixture
def ingested(small_tree: Path, data_dir: Path) -> tuple[Path, Path]:
    code = main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
                 "--workers", "1"])
    assert code == 0
    return small_tree, data_dir


@pytest.mark.slow
def test_a_changed_folder_starts_the_analysis_fork_server_before_dagster_is_imported(
        ingested):
    tree, data = ingested
    _change(find_run_dirs(tree)[0].path)
    seen = _look_ahead(tree, data, workers=True)
    assert seen == {"dagster": False, "peeked": True, "servers": 1,
                    "preloaded": ["matplotlib.figure", "pandas",
                                  "align_track_pipeline.definitions"]}


@pytest.mark.slow
def test_no_server_when_nothing_changed_too_much_changed_or_no_workers(ingested):
    tree, data = ingested
    assert _look_ahead(tree, data, workers=True)["servers"] == 0  # nothing changed
    _change(find_run_dirs(tree)[0].path)
    assert _look_ahead(tree, data, workers=False)["servers"] == 0  # `--workers 1`
    source = find_run_dirs(tree)[1].path
    for n in range(CHANGED_RUNS_MAX):  # new folders: more than the fast path takes
        shutil.copytree(source, source.parent / f"copy-{n}", symlinks=True)
    assert _look_ahead(tree, data, workers=True)["servers"] == 0


def test_a_data_dir_never_ingested_is_not_peeked_at_nor_written(small_tree, data_dir):
    seen = _look_ahead(small_tree, data_dir, workers=True)
    assert seen == {"dagster": False, "peeked": False, "servers": 0, "preloaded": None}
    assert not data_dir.exists()


@pytest.mark.slow
def test_ingest_looks_ahead_before_it_imports_dagster_and_leaves_no_server(ingested):
    """Through `main`, as `align-track ingest` runs: the look-ahead comes before Dagster's
    imports, and no fork server is left once the command returned."""
    tree, data = ingested
    _change(find_run_dirs(tree)[0].path)
    script = data.parent / "ingest_spied.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, sys
        from pathlib import Path
        import align_track_pipeline.cli.main
        cli = sys.modules["align_track_pipeline.cli.main"]
        seen = {{}}
        look_ahead = cli.look_ahead

        def spy(*args, **kwargs):
            seen["dagster"] = "dagster" in sys.modules
            return look_ahead(*args, **kwargs)

        def servers():
            return [p for p in os.listdir("/proc") if p.isdigit()
                    and Path(f"/proc/{{p}}/cmdline").exists()
                    and b"forkserver" in Path(f"/proc/{{p}}/cmdline").read_bytes()
                    and Path(f"/proc/{{p}}/stat").read_text().rsplit(")", 1)[1].split()[1]
                    == str(os.getpid())]

        if __name__ == "__main__":
            cli.look_ahead = spy
            code = cli.main(["ingest", "--experiments-dir", {str(tree)!r},
                             "--data-dir", {str(data)!r}, "--json"])
            print(json.dumps({{"code": code, "dagster": seen["dagster"],
                              "servers": len(servers())}}), file=sys.stderr)
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=True)
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == {"code": 0, "dagster": False,
                                                               "servers": 0}
