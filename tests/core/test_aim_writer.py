"""The Aim writer on a real repo: idempotent per scene, repaired after a kill."""

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from align_track_pipeline.core.source.discovery import RunDir
from align_track_pipeline.core.source.parse import parse_run_dir
from align_track_pipeline.core.trackers.aim import indexing, lean_runs, staging, storage
from align_track_pipeline.core.trackers.aim.manifest import CREATING
from align_track_pipeline.core.trackers.aim.plan import plan_scene_runs
from align_track_pipeline.core.trackers.aim.writer import AimWriter
from tests.conftest import aim_runs_held, aim_runs_seen_by_a_fresh_process

REL = "random/unaligned"
LIVE = "phase2_june_eval_live/baseline/2025-06-12__14-03-55"  # a live run: its start, named
LIVE_START = datetime(2025, 6, 12, 14, 3, 55, tzinfo=UTC).timestamp()


def _plan(root: Path, rel: str = REL):
    parsed = parse_run_dir(RunDir(root / rel, rel), root)
    return plan_scene_runs(parsed.experiments.to_pylist(), parsed.scenes.to_pylist())


@pytest.fixture(params=["staged", "in place"])
def writer(request, tmp_path, monkeypatch, aim_repo):
    """Both ways of building runs: on a memory file system and moved in (where there is one),
    or in the repo itself."""
    if request.param == "in place":
        monkeypatch.setattr(staging, "STAGE_ROOT", tmp_path / "no-such-folder")
    w = AimWriter(aim_repo)
    assert (w.stage is not None) == (request.param == "staged")
    yield w
    w.close()


class Killed(BaseException):
    pass


def _held(repo) -> set[str]:
    return aim_runs_held(Path(repo.path).parent)


def test_plan_has_the_scene_params_and_texts(sample_tree):
    runs = _plan(sample_tree, "multi_kdma_comp_reg_icl/MJ-high_IO-low")
    run = runs[1]
    assert run.name == (f"{run.params['scenario_id']} {run.params['scene_id']} | "
                        f"{run.params['adm']} | {run.params['alignment_target_id']} | idx1")
    assert run.experiment == "multi_kdma_comp_reg_icl/MJ-high_IO-low"
    assert run.params["kdma"] == {"Moral judgement": 0.8, "Ingroup Bias": 0.2}
    assert {"probe_text", "choices_text", "decision_text", "justification"} <= set(run.params)
    assert run.texts == {name: run.params[name] for name in (
        "probe_text", "choices_text", "decision_text", "justification")}
    assert "\n[1] " in run.texts["choices_text"]  # one choice per line
    assert "timing_seconds" in run.metrics


def test_upsert_writes_indexes_and_converges(writer, sample_tree, aim_repo):
    key = RunDir(sample_tree / REL, REL).key
    plan = _plan(sample_tree)
    first = writer.upsert(key, plan)
    assert len(first.created) == len(plan) == first.indexed
    seen = aim_runs_seen_by_a_fresh_process(aim_repo)
    assert sorted(r["name"] for r in seen) == sorted(r.name for r in plan)
    by_name = {r["name"]: r for r in seen}
    for spec in plan:
        got = by_name[spec.name]
        assert got["experiment"] == spec.experiment
        assert {k: got["params"][k] for k in spec.params} == spec.params
        assert got["metrics"] == spec.metrics
        assert got["texts"] == {name: [text] for name, text in spec.texts.items()}

    again = writer.upsert(key, _plan(sample_tree))
    assert again.created == [] and again.unchanged == len(plan)

    io = sample_tree / REL / "input_output.json"
    io.write_text(io.read_text().replace("Random choice", "Changed choice", 1))
    changed = writer.upsert(key, _plan(sample_tree))
    assert len(changed.created) == 1 and changed.deleted == 1
    assert len(aim_runs_seen_by_a_fresh_process(aim_repo)) == len(plan)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _by_scene(repo_path: Path) -> list[dict]:
    """The runs a fresh process reads back, in scene order."""
    return sorted(aim_runs_seen_by_a_fresh_process(repo_path),
                  key=lambda r: r["params"]["scene_index"])


def _one_after_another(runs: list[dict], plan) -> None:
    """Each run lasts its scene's ADM time and starts where the previous scene ended."""
    timing = {r.params["scene_index"]: r.metrics["timing_seconds"] for r in plan}
    assert len(runs) == len(timing) == len(plan)
    for previous, run in zip([None, *runs], runs, strict=False):
        duration = run["end_time"] - run["creation_time"]
        assert _ms(duration) == _ms(timing[run["params"]["scene_index"]]) > 0
        if previous is not None:
            assert _ms(run["creation_time"]) == _ms(previous["end_time"])


def test_a_live_runs_scenes_are_dated_from_its_directory_name(writer, sample_tree, tmp_path):
    """What the Aim UI shows as a run's date is its `creation_time` and as its duration
    `end_time - creation_time`: a live run's first scene starts at the time its directory
    name records, each next one where the previous ended, and each lasts its ADM time."""
    plan = _plan(sample_tree, LIVE)
    writer.upsert(RunDir(sample_tree / LIVE, LIVE).key, plan)
    runs = _by_scene(tmp_path / "aim")
    assert _ms(runs[0]["creation_time"]) == _ms(LIVE_START)
    _one_after_another(runs, plan)
    total = sum(r.metrics["timing_seconds"] for r in plan)
    assert _ms(runs[-1]["end_time"]) == _ms(LIVE_START) + sum(
        _ms(r.metrics["timing_seconds"]) for r in plan) and total > 60


def test_runs_without_a_start_in_the_data_end_by_the_write_time(writer, sample_tree,
                                                                tmp_path):
    """Without a start in the data a partition's scenes count back from the write time: the
    last ends then, none is in the future, and each lasts its ADM time."""
    plan = _plan(sample_tree)
    before = time.time()
    writer.upsert(RunDir(sample_tree / REL, REL).key, plan)
    after = time.time()
    runs = _by_scene(tmp_path / "aim")
    _one_after_another(runs, plan)
    assert _ms(before) - 1 <= _ms(runs[-1]["end_time"]) <= _ms(after)
    assert all(r["creation_time"] < r["end_time"] <= after for r in runs)


def test_a_stage_short_of_room_is_left_and_runs_are_written_in_place(sample_tree, tmp_path,
                                                                     monkeypatch, aim_repo):
    """Closing a run on a full file system makes RocksDB wait for space for ever: once the
    stage's file system runs short, the writer writes in the repo directly instead."""
    import shutil

    monkeypatch.setattr(staging, "STAGE_ROOT", tmp_path / "shm")
    (tmp_path / "shm").mkdir()
    key = RunDir(sample_tree / REL, REL).key
    writer = AimWriter(aim_repo)
    try:
        stage = writer.stage
        assert stage is not None
        writer.upsert(key, _plan(sample_tree))
        free = shutil.disk_usage(stage).free
        monkeypatch.setattr(staging, "STAGE_MIN_FREE", free + 2**30)
        io = sample_tree / REL / "input_output.json"
        io.write_text(io.read_text().replace("Random choice", "Changed choice", 1))
        changed = writer.upsert(key, _plan(sample_tree))
        assert writer.stage is None and not stage.exists()
        assert len(changed.created) == 1 and changed.indexed == 1
        assert (aim_repo / ".aim" / "meta" / "chunks" / changed.created[0]).is_dir()
    finally:
        writer.close()
    seen = aim_runs_seen_by_a_fresh_process(aim_repo)
    assert sorted(r["name"] for r in seen) == sorted(r.name for r in _plan(sample_tree))


def test_a_stage_that_runs_short_within_a_partition_leaves_no_run_behind(sample_tree, tmp_path,
                                                                         monkeypatch, aim_repo):
    """Room is checked before each run: the partition's first runs staged, the rest in
    place, every one indexed and seen."""
    monkeypatch.setattr(staging, "STAGE_ROOT", tmp_path / "shm")
    (tmp_path / "shm").mkdir()
    checks = []
    real = staging.stage_has_room

    def room_for_two_runs(stage, min_free=None):
        checks.append(stage)
        return len(checks) <= 3 and real(stage, min_free)  # 1: new_stage, 2-3: two runs

    monkeypatch.setattr(staging, "stage_has_room", room_for_two_runs)
    plan = _plan(sample_tree)
    writer = AimWriter(aim_repo)
    try:
        result = writer.upsert(RunDir(sample_tree / REL, REL).key, plan)
        assert writer.stage is None and len(plan) > 2
        assert len(checks) == 4  # the stage was dropped at the third run, never asked again
        assert len(result.created) == result.indexed == len(plan)
    finally:
        writer.close()
    seen = aim_runs_seen_by_a_fresh_process(aim_repo)
    assert sorted(r["name"] for r in seen) == sorted(r.name for r in plan)


@pytest.mark.slow
def test_the_stage_follows_its_variable(sample_tree, tmp_path, monkeypatch):
    """ALIGN_TRACK_AIM_STAGE: a folder (created if missing) or `off` (runs in the repo)."""
    key = RunDir(sample_tree / REL, REL).key
    for value, repo in ((str(tmp_path / "local" / "stage"), "staged"), ("off", "in-place")):
        monkeypatch.setenv("ALIGN_TRACK_AIM_STAGE", value)
        writer = AimWriter(tmp_path / repo)
        try:
            if value == "off":
                assert writer.stage is None
            else:
                assert writer.stage.parent == tmp_path / "local" / "stage"
            assert len(writer.upsert(key, _plan(sample_tree)).created) == len(_plan(sample_tree))
        finally:
            writer.close()
        assert len(aim_runs_seen_by_a_fresh_process(tmp_path / repo)) == len(_plan(sample_tree))
    monkeypatch.setenv("ALIGN_TRACK_AIM_STAGE", "/proc/no-stage-here")
    with pytest.raises(OSError, match="ALIGN_TRACK_AIM_STAGE=/proc/no-stage-here: cannot"):
        AimWriter(tmp_path / "refused")


def test_removed_scenes_are_deleted(writer, sample_tree, aim_repo):
    key = RunDir(sample_tree / REL, REL).key
    plan = _plan(sample_tree)
    writer.upsert(key, plan)
    result = writer.upsert(key, plan[:2])
    assert result.deleted == len(plan) - 2 and result.created == []
    assert len(aim_runs_seen_by_a_fresh_process(aim_repo)) == 2
    assert writer.delete_partition(key) == 2
    assert aim_runs_seen_by_a_fresh_process(aim_repo) == []


def test_kill_mid_partition_is_repaired(writer, sample_tree, monkeypatch, aim_repo):
    key = RunDir(sample_tree / REL, REL).key
    plan = _plan(sample_tree)
    real_pending = writer.manifest.pending
    calls = {"n": 0}

    def pending_then_die(partition, key, run_hash, content_hash):
        real_pending(partition, key, run_hash, content_hash)
        calls["n"] += not run_hash.startswith("creating:")
        if calls["n"] == 3:  # the third run exists and is registered, but never written
            raise Killed

    monkeypatch.setattr(writer.manifest, "pending", pending_then_die)
    with pytest.raises(Killed):
        writer.upsert(key, plan)
    monkeypatch.setattr(writer.manifest, "pending", real_pending)
    # in place the third run is a folder; staged it is cut short outside the repo, no row
    assert len(_held(writer.repo)) == (2 if writer.stage else 3)
    result = writer.upsert(key, plan)
    assert result.deleted == 3 and len(result.created) == len(plan)
    assert set(storage.all_run_hashes(writer.repo)) == _held(writer.repo)  # no leftovers
    assert len(_held(writer.repo)) == len(plan)  # nothing duplicated
    seen = aim_runs_seen_by_a_fresh_process(aim_repo)
    assert sorted(r["name"] for r in seen) == sorted(r.name for r in plan)


def test_run_deleted_behind_our_back_is_recreated(writer, sample_tree):
    key = RunDir(sample_tree / REL, REL).key
    plan = _plan(sample_tree)
    first = writer.upsert(key, plan)
    writer.repo.delete_runs(first.created[:1])
    again = writer.upsert(key, plan)
    assert len(again.created) == 1 and again.unchanged == len(plan) - 1


@pytest.mark.parametrize("rel", [REL, LIVE])
def test_kill_between_run_creation_and_manifest_is_repaired(writer, sample_tree, monkeypatch,
                                                            rel):
    """In place, the leftover is found by when it was written, not by its date (a live
    run's is in 2025); staged, nothing of the run is in the repo yet."""
    key = RunDir(sample_tree / rel, rel).key
    plan = _plan(sample_tree, rel)

    real_lean = lean_runs.lean_run
    monkeypatch.setattr(lean_runs, "lean_run", _create_then_die(real_lean))
    with pytest.raises(Killed):
        writer.upsert(key, plan)
    monkeypatch.setattr(lean_runs, "lean_run", real_lean)
    assert len(_held(writer.repo)) == (0 if writer.stage else 1)
    placeholders = [h for h, _, _ in writer.manifest.rows(key).values() if h.startswith(CREATING)]
    assert len(placeholders) == (0 if writer.stage else 1)  # staged: no run to look for
    writer.upsert(key, plan)
    assert set(storage.all_run_hashes(writer.repo)) == _held(writer.repo)
    assert len(_held(writer.repo)) == len(plan)


def _create_then_die(real_lean):
    """`lean_run` for a process killed right after Aim made a run, before the manifest
    learned its hash: in place the run has its folder and row; staged it is only on the
    stage, its row in memory."""

    def create_then_die(*args, **kwargs):
        real_lean(*args, **kwargs).close()
        raise Killed

    return create_then_die


def test_kill_between_a_staged_runs_row_and_its_data_is_repaired(tmp_path, sample_tree,
                                                                  monkeypatch, aim_repo):
    """Killed at the worst instant of moving a staged run in (`aim.run_row_inserted`): its
    row is in the run table, its data not in the repo; the manifest lists it as pending, so
    the next upsert deletes the row and writes the scene again: one run per scene, no
    orphan row."""
    monkeypatch.setenv("ALIGN_TRACK_AIM_STAGE", str(tmp_path / "stage"))
    writer = AimWriter(aim_repo)
    assert writer.stage is not None
    key = RunDir(sample_tree / REL, REL).key
    plan = _plan(sample_tree)
    real_insert = staging.insert_run_row
    inserted = []

    def insert_then_die(repo, row) -> None:
        real_insert(repo, row)
        inserted.append(row.hash)
        if len(inserted) == 3:
            raise Killed

    monkeypatch.setattr(staging, "insert_run_row", insert_then_die)
    with pytest.raises(Killed):
        writer.upsert(key, plan)
    monkeypatch.setattr(staging, "insert_run_row", real_insert)
    held = _held(writer.repo)
    assert inserted[2] in held and not storage.run_exists(writer.repo, inserted[2])  # row only
    assert len(held) == 3
    writer.upsert(key, plan)
    assert set(storage.all_run_hashes(writer.repo)) == _held(writer.repo)  # no orphan row
    assert len(_held(writer.repo)) == len(plan)
    writer.close()


def _in_thread(work) -> tuple:
    """Run `work(writer)` with a writer of its own in a thread (as another process would have;
    SQLite connections stay in their thread); returns the thread and its done event."""
    import threading

    done = threading.Event()

    def run() -> None:
        own = AimWriter(_in_thread.repo)
        try:
            work(own)
            done.set()
        finally:
            own.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done


def test_writers_of_other_partitions_run_side_by_side(sample_tree, aim_repo):
    """A writer of another partition, mid-way (holding its partition's lock and the shared
    repo lock, as another process would): this partition's writer does not wait for it."""
    from align_track_pipeline.core.trackers.aim.writer import partition_lock, repo_lock

    key = RunDir(sample_tree / REL, REL).key
    _in_thread.repo = aim_repo
    AimWriter(aim_repo).close()  # the first writer created the repo
    with partition_lock(aim_repo, "another/partition"), \
            repo_lock(aim_repo, shared=True):
        thread, done = _in_thread(lambda w: w.upsert(key, _plan(sample_tree)))
        assert done.wait(60), "a writer of another partition was waited for"
    thread.join()


def test_a_placeholder_is_repaired_only_once_no_writer_is_in_flight(sample_tree, monkeypatch,
                                                                    aim_repo):
    """A kill left a placeholder in partition P. Meanwhile another writer (of Q) has created a
    run whose hash its manifest row does not hold yet: the repair of P waits for it, and then
    deletes P's leftover run and never Q's."""
    import threading

    from align_track_pipeline.core.trackers.aim.writer import repo_lock

    key = RunDir(sample_tree / REL, REL).key
    plan = _plan(sample_tree)
    _in_thread.repo = aim_repo
    monkeypatch.setenv("ALIGN_TRACK_AIM_STAGE", "off")  # in place: a staged run leaves nothing
    killed = AimWriter(aim_repo)

    real_lean = lean_runs.lean_run
    monkeypatch.setattr(lean_runs, "lean_run", _create_then_die(real_lean))
    with pytest.raises(Killed):
        killed.upsert(key, plan)
    monkeypatch.setattr(lean_runs, "lean_run", real_lean)
    leftover = _held(killed.repo)
    killed.close()

    in_flight, release, q_run = threading.Event(), threading.Event(), {}

    def writer_of_q(w: AimWriter) -> None:  # as `_write` does, held between run and row
        with repo_lock(aim_repo, shared=True):
            w.manifest.placeholder("Q", "Q::0", "c")
            run = real_lean(w.repo, "q", w.stage)
            q_run["hash"] = run.hash
            in_flight.set()
            release.wait(60)
            w.manifest.pending("Q", "Q::0", run.hash, "c")
            run.close()
            if w.stage is not None:
                staging.publish_run(w.repo, run.hash, w.stage)
            w.manifest.complete(["Q::0"])

    q, _ = _in_thread(writer_of_q)
    assert in_flight.wait(60)
    p, done = _in_thread(lambda w: w.upsert(key, plan))
    assert not done.wait(2), "the repair ran while a writer was between run and row"
    release.set()
    q.join()
    assert done.wait(120)
    p.join()
    repo = storage.open_repo(aim_repo)
    hashes = _held(repo)
    assert q_run["hash"] in hashes  # the other writer's run survived the repair
    assert leftover and not leftover & hashes  # the killed writer's leftover is gone
    assert hashes == set(storage.all_run_hashes(repo))
    assert len(hashes) == len(plan) + 1


_INTERRUPTED = """
import sys
from pathlib import Path
from align_track_pipeline.core.source.discovery import RunDir
from align_track_pipeline.core.source.parse import parse_run_dir
from align_track_pipeline.core.trackers.aim.plan import plan_scene_runs
from align_track_pipeline.core.trackers.aim.writer import AimWriter

root, rel, repo = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
parsed = parse_run_dir(RunDir(root / rel, rel), root)
plan = plan_scene_runs(parsed.experiments.to_pylist(), parsed.scenes.to_pylist())
writer = AimWriter(repo)
try:
    writer.upsert(rel, plan)
except KeyboardInterrupt:
    print("interrupted", writer.stage is not None)
writer.close()
"""


def test_a_process_interrupted_mid_run_still_exits(sample_tree, aim_repo):
    """Ctrl-C inside a staged run: the run's open databases are closed before its stage is
    removed, so Aim's exit handler (which waits for ever once a close fails) lets the process
    end; the next upsert converges."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED, str(sample_tree), REL, str(aim_repo)],
        capture_output=True, text=True, timeout=120, check=False,
        env=os.environ | {"ALIGN_TRACK_FAULT": "aim.run_created:2:sigint"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["interrupted", str(staging.STAGE_ROOT.is_dir())]
    assert "Exception in thread" not in done.stderr
    writer = AimWriter(aim_repo)
    try:
        result = writer.upsert(RunDir(sample_tree / REL, REL).key, _plan(sample_tree))
    finally:
        writer.close()
    staged = staging.STAGE_ROOT.is_dir()  # the 1st run's row, and in place the 2nd's placeholder
    assert len(result.created) == len(_plan(sample_tree))
    assert result.deleted == (1 if staged else 2)
    assert set(storage.all_run_hashes(writer.repo)) == _held(writer.repo)


def test_a_kill_between_the_index_records_and_their_checksums_leaves_the_runs_outdated(sample_tree,
                                                                                       aim_repo):
    """The index takes a partition's records in one batch, the runs' checksums after it: a
    kill between leaves every run visible with its records and marked outdated (indexed
    again by `aim up` or `aim-reindex`), never marked indexed without its records."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED, str(sample_tree), REL, str(aim_repo)],
        capture_output=True, text=True, timeout=120, check=False,
        env=os.environ | {"ALIGN_TRACK_FAULT": "aim.index_records_written"})
    assert done.returncode == -9, done.stderr[-2000:]
    plan = _plan(sample_tree)
    repo = storage.open_repo(aim_repo)
    hashes = storage.all_run_hashes(repo)
    assert len(hashes) == len(plan) and sorted(indexing.outdated_runs(repo)) == hashes
    seen = aim_runs_seen_by_a_fresh_process(aim_repo)
    assert sorted(r["name"] for r in seen) == sorted(r.name for r in plan)
    assert indexing.index_runs(repo, hashes) == len(plan)
    assert indexing.outdated_runs(repo) == []



def test_a_manifest_that_disagrees_with_the_repo_is_rebuilt_from_the_runs(sample_tree, aim_repo):
    """Runs the manifest does not list (here: a scene written twice after its rows were
    lost) make the next writer rebuild it from the runs: one run per scene, the newest
    whole one, the other deleted; archived runs stay archived and are not taken back."""
    other = "random/unaligned"
    rel = "pipeline_baseline/moral_judgement-0.2"
    key, archived_key = RunDir(sample_tree / rel, rel).key, RunDir(sample_tree / other, other).key
    writer = AimWriter(aim_repo)
    try:
        archived = writer.upsert(archived_key, _plan(sample_tree, other)).created
        assert writer.archive_partition(archived_key) == len(archived)
        old = writer.upsert(key, _plan(sample_tree, rel)).created
        writer.manifest.forget(list(writer.manifest.rows(key)))  # the rows are lost
        new = writer.upsert(key, _plan(sample_tree, rel)).created
    finally:
        writer.close()
    assert len(_held(storage.open_repo(aim_repo))) == len(archived) + 2 * len(new)

    rebuilt = AimWriter(aim_repo)
    try:
        assert {h for h, _, done in rebuilt.manifest.rows(key).values() if done} == set(new)
        assert rebuilt.manifest.rows(archived_key) == {}
        again = rebuilt.upsert(key, _plan(sample_tree, rel))
    finally:
        rebuilt.close()
    assert again.created == [] and again.unchanged == len(new)
    assert _held(rebuilt.repo) == set(new) | set(archived) and not set(old) & _held(rebuilt.repo)
    assert storage.archived_runs(rebuilt.repo) == set(archived)
    assert indexing.outdated_runs(rebuilt.repo) == []


def test_a_run_not_ours_is_noted_without_a_rebuild(sample_tree, aim_repo):
    """A run someone logs into the repo with Aim itself is noted as not a scene's, reading
    that run alone: the manifest keeps its generation (no rebuild, no partition made stale),
    and the run stays in the repo untouched."""
    from aim import Run

    from align_track_pipeline.core.trackers.aim.manifest import generation, manifest_path

    key = RunDir(sample_tree / REL, REL).key
    writer = AimWriter(aim_repo)
    try:
        created = writer.upsert(key, _plan(sample_tree)).created
    finally:
        writer.close()
    before = generation(manifest_path(aim_repo))
    theirs = Run(repo=str(aim_repo), experiment="someone's own")
    theirs["lr"] = 0.1
    theirs.track(1.0, name="loss")
    their_hash = theirs.hash
    theirs.close()

    again = AimWriter(aim_repo)
    try:
        assert their_hash in again.manifest.others()
        result = again.upsert(key, _plan(sample_tree))
    finally:
        again.close()
    assert generation(manifest_path(aim_repo)) == before
    assert result.created == [] and result.unchanged == len(created)
    assert _held(again.repo) == set(created) | {their_hash}


def test_a_legacy_manifest_is_adopted_with_what_its_wal_holds(tmp_path, aim_repo):
    """A manifest from the data dir of earlier versions is taken over through SQLite's own
    backup: rows its writer has committed only to the WAL so far come along (a file copy
    left them behind)."""
    from align_track_pipeline.core.trackers.aim.manifest import Manifest, manifest_path

    legacy = tmp_path / "state" / "aim_manifest.sqlite"
    old = Manifest(legacy)  # kept open: the row stays in its WAL
    old.pending("p", "p::0", "somehash", "content")
    assert (tmp_path / "state" / "aim_manifest.sqlite-wal").stat().st_size > 0
    writer = AimWriter(aim_repo, legacy)
    try:
        assert writer.manifest.rows("p") == {"p::0": ("somehash", "content", False)}
        assert manifest_path(aim_repo).exists()
    finally:
        writer.close()
        old.close()
