"""The sensor's store checks on their own: the ranges they request, and what they do with a
seen-generations file that does not parse or a tracker configuration that does not."""

import json

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType  # a run's own start and end

from align_track_pipeline.cli.reasons import unrepaired
from align_track_pipeline.core.trackers.aim.tracker import AimTracker
from align_track_pipeline.core.trackers.base import TargetError, Tracker
from align_track_pipeline.core.trackers.mlflow.tracker import MlflowTracker
from align_track_pipeline.core.trackers.sqlite_value import NONE
from align_track_pipeline.defs.partitions import RANGE_END, RANGE_START
from align_track_pipeline.defs.store_checks import (
    end_repairs,
    pending_repairs,
    remember_generations,
    remote_generations,
    seen_path,
    store_requests,
    store_resets,
    target_key,
)
from align_track_pipeline.defs.store_repairs import (
    RUN_KEY_TAG,
    follow_repair,
    keep_repairs,
    plan_repair,
    read_repairs,
    repair_partitions,
    repairs_path,
    retry_note,
)

ORDER = ["a", "b", "c", "d", "e", "f"]


def test_stale_partitions_go_in_contiguous_ranges_of_at_most_partitions_per_run(
        tmp_path, monkeypatch, instance):
    monkeypatch.setenv("ALIGN_TRACK_PARTITIONS_PER_RUN", "2")
    tracker = AimTracker(repo=str(tmp_path / "aim"))
    repair = plan_repair("g1", ["a", "b", "c", "e"], ORDER)
    requests = follow_repair(instance, tracker, "aim", repair, 0.0, ORDER)
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests] == [
        ("a", "b"), ("c", "c"), ("e", "e")]
    assert all(r.asset_selection == [dg.AssetKey("aim_runs")] for r in requests)
    assert len({r.run_key for r in requests}) == 3  # each range once per generation
    again = follow_repair(instance, tracker, "aim", plan_repair("g2", ["a"], ORDER), 0.0,
                          ORDER)
    assert not {r.run_key for r in requests} & {r.run_key for r in again}
    # no run of them yet: asked for again (Dagster launches each key once)
    assert follow_repair(instance, tracker, "aim", repair, 0.0, ORDER) == requests


def test_a_repair_range_whose_end_was_removed_asks_for_the_partitions_still_there(
        tmp_path, instance):
    """A range's run names its first and last partition: one of them removed, it would
    fail for good; the partitions still there go in ranges of their own."""
    tracker = AimTracker(repo=str(tmp_path / "aim"))
    repair = plan_repair("g1", ["a", "b", "c", "e"], ORDER)  # (a, c), (e, e)
    order = [k for k in ORDER if k not in ("c", "e")]
    requests = follow_repair(instance, tracker, "aim", repair, 0.0, order)
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests] == [("a", "b")]
    assert repair["ranges"] == [["a", "b", 0]]


@pytest.fixture
def instance(tmp_path, dagster_storage):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        yield inst


def test_a_seen_file_that_does_not_parse_is_read_as_empty_and_written_again(tmp_path,
                                                                           instance):
    seen = seen_path(tmp_path / "data")
    seen.parent.mkdir(parents=True)
    seen.write_text("{not json")
    tracker = AimTracker(repo=str(tmp_path / "aim"))
    assert store_requests(instance, lambda: [tracker], tmp_path / "data", ORDER) == []
    # nothing recorded: nothing to write again
    assert json.loads(seen.read_text()) == {target_key(tracker): "none"}


def test_a_tracker_configuration_that_does_not_parse_requests_nothing(tmp_path, instance):
    def refused() -> list:
        raise TargetError("unsupported MLflow tracking URI 'ftp://x'")

    assert store_requests(instance, refused, tmp_path / "data", ORDER) == []
    assert not seen_path(tmp_path / "data").exists()


class _Server(MlflowTracker):
    """An MLflow tracker on a server whose answers the test sets (`answer`; "": down)."""

    answer = ""

    def store_generation(self) -> str:
        return self.answer


def test_a_servers_generation_counts_only_after_one_it_held(tmp_path):
    """Seen first: only kept (else a first ingest after an upgrade would write everything
    again). Then another experiment, or none, is a reset, told again until an ingest wrote
    every partition; a server that does not answer concludes nothing and keeps what was
    seen; after none, a new experiment is not another reset (its partitions were written, or
    failed and are retried, when it went)."""
    data = tmp_path / "data"
    server = _Server("http://127.0.0.1:9", experiment="e")
    assert not server.generation_in_versions()

    def ingest(answer: str, settled: bool = True) -> set[str]:
        server.answer = answer
        start = remote_generations([server])
        resets = store_resets([server], data, start)
        remember_generations([server], data, start, {"mlflow"} if settled else set())
        return resets

    assert ingest("1.100") == set()
    assert ingest("1.100") == set()
    assert ingest("") == set()
    assert json.loads(seen_path(data).read_text()) == {target_key(server): "1.100"}
    assert ingest("2.200", settled=False) == {"mlflow"}  # a partition failed its rewrite
    assert ingest("2.200") == {"mlflow"}
    assert ingest("2.200") == set()
    assert ingest(NONE) == {"mlflow"}
    assert ingest("3.300") == set()


def test_generations_kept_by_tracker_name_alone_are_dropped_at_the_next_write(tmp_path):
    """Before generations were kept per target they were kept per tracker name: such an
    entry is never read again, and goes once the file is next written."""
    data = tmp_path / "data"
    seen_path(data).parent.mkdir(parents=True)
    seen_path(data).write_text(json.dumps({"mlflow": "1.100", "aim": "g7"}))
    server = _Server("http://127.0.0.1:9", experiment="e")
    server.answer = "1.100"
    start = remote_generations([server])
    assert store_resets([server], data, start) == set()  # a first sight under its target
    remember_generations([server], data, start, {"mlflow"})
    assert json.loads(seen_path(data).read_text()) == {target_key(server): "1.100"}


def test_a_server_that_does_not_answer_tells_no_generation():
    down = MlflowTracker("http://127.0.0.1:9", experiment="e")
    assert (down.store_generation(), down.generation_in_versions()) == ("", False)
    assert down.data_version("v") == Tracker.data_version(down, "v")  # never in versions


def test_a_tracker_pointed_at_another_target_sees_it_for_the_first_time(tmp_path):
    """Generations are kept per target: another experiment, or another server, is a first
    sight (only kept), not a reset of the one before; going back to it compares with what
    was seen there. Credentials never reach the file."""
    data = tmp_path / "data"
    here = _Server("http://alice:s3cret@127.0.0.1:9/?token=s3cret", experiment="e")
    elsewhere = _Server("http://127.0.0.1:9", experiment="other")
    for tracker, answer in [(here, "1.100"), (elsewhere, "2.200"), (here, "1.100")]:
        tracker.answer = answer
        start = remote_generations([tracker])
        assert store_resets([tracker], data, start) == set()
        remember_generations([tracker], data, start, {"mlflow"})
    here.answer = "3.300"
    assert store_resets([here], data, remote_generations([here])) == {"mlflow"}
    assert "s3cret" not in seen_path(data).read_text()


def test_an_ingest_ends_the_repairs_it_took_once_it_wrote_them(tmp_path):
    """An ingest takes the sensor's unfinished repairs (`pending_repairs`) and writes their
    partitions; once every partition it had to write was written they are done, but for the
    partitions it could not see (a folder it could not read). A repair of another
    generation, planned by the sensor meanwhile, goes on."""
    data = tmp_path / "data"
    server = _Server("http://127.0.0.1:9", experiment="e")
    key = target_key(server)
    cases = [(set(), {"a", "c"}, False, {"a", "c"}), ({"mlflow"}, {"a", "c"}, True, {"a"}),
             ({"mlflow"}, {"a", "c"}, False, set()), ({"mlflow"}, {"a"}, False, {"c"})]
    for settled, written, newer, left in cases:
        keep_repairs(data, {}, {key: plan_repair("2.200", ["a", "c"], ORDER)})
        taken = pending_repairs([server], data)
        assert repair_partitions(taken["mlflow"]) == {"a", "c"}
        if newer:  # the sensor saw the store made again once more meanwhile
            keep_repairs(data, read_repairs(data), {key: plan_repair("3.300", ["a"], ORDER)})
        end_repairs([server], data, taken, settled, written, ORDER)
        repairs = read_repairs(data)
        assert (repair_partitions(repairs[key]) if repairs else set()) == left


def test_a_tracker_pointed_elsewhere_drops_its_old_targets_repair_and_keeps_the_others(
        tmp_path, instance):
    """Its partitions are stale for the new target by their code version; another tracker's
    repair, or one of a tracker left out for now, goes on."""
    data = tmp_path / "data"
    old, new = (_Server("http://127.0.0.1:9", experiment=e) for e in ("e", "moved"))
    aim = AimTracker(repo=str(tmp_path / "aim"))
    keep_repairs(data, {}, {target_key(t): plan_repair("g", ["a"], ORDER) for t in (old, aim)})
    new.answer = old.answer = "1.100"
    store_requests(instance, lambda: [new], data, ORDER)
    assert set(read_repairs(data)) == {target_key(aim)}


@dg.op
def _nothing() -> None:
    pass


@dg.job
def _repair_job() -> None:
    _nothing()


class _Job:
    """Real runs of a trivial job in the instance, carrying a request's tags as the daemon
    gives them."""

    def __init__(self, instance):
        self.instance = instance

    def run(self, request: dg.RunRequest) -> dg.DagsterRun:
        return self.instance.create_run_for_job(
            _repair_job, tags={**request.tags, RUN_KEY_TAG: request.run_key})


def test_a_repair_waits_for_its_runs_and_asks_again_later_and_later_after_a_failure(
        tmp_path, instance):
    """A run not started yet is asked for again (the daemon launches it); one under way is
    waited for; one that failed is asked for again under a new key after 5 minutes, then
    10, ...; once one succeeded the range is done."""
    tracker = AimTracker(repo=str(tmp_path / "aim"))
    repair = plan_repair("g1", ["a", "b"], ORDER)
    jobs = _Job(instance)
    (first,) = follow_repair(instance, tracker, "aim", repair, 0.0, ORDER)
    run = jobs.run(first)  # NOT_STARTED
    assert follow_repair(instance, tracker, "aim", repair, 0.0, ORDER) == [first]
    instance.report_dagster_event(
        DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name=run.job_name),
        run_id=run.run_id)
    assert follow_repair(instance, tracker, "aim", repair, 1e12, ORDER) == []  # under way

    instance.report_run_failed(instance.get_run_by_id(run.run_id))
    ended = instance.get_run_record_by_id(run.run_id).end_time
    assert follow_repair(instance, tracker, "aim", repair, ended + 299, ORDER) == []
    (second,) = follow_repair(instance, tracker, "aim", repair, ended + 301, ORDER)
    assert second.run_key != first.run_key and repair["ranges"] == [["a", "b", 1]]
    assert retry_note(first) is None
    assert retry_note(second) == ("aim store changed: asking again (attempt 2) for a .. b: "
                                  "the last run of that repair failed or was cancelled")
    cancelled = jobs.run(second)
    instance.report_run_canceled(cancelled)
    ended = instance.get_run_record_by_id(cancelled.run_id).end_time
    assert follow_repair(instance, tracker, "aim", repair, ended + 599, ORDER) == []
    (third,) = follow_repair(instance, tracker, "aim", repair, ended + 601, ORDER)

    done = jobs.run(third)
    instance.report_dagster_event(
        DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=done.job_name),
        run_id=done.run_id)
    assert follow_repair(instance, tracker, "aim", repair, ended + 601, ORDER) == []
    assert repair["ranges"] == []


def test_a_repairs_file_with_an_entry_that_is_not_a_repair_keeps_the_others(tmp_path):
    data = tmp_path / "data"
    good = plan_repair("g1", ["a"], ORDER)
    keep_repairs(data, {}, {"good": good, "bad": good})
    text = repairs_path(data).read_text().replace('"bad": {"generation": "g1"',
                                                  '"bad": {"generation": 7')
    repairs_path(data).write_text(text)
    assert read_repairs(data) == {"good": good}
    unhashable = json.loads(text) | {"bad": {"generation": "g1", "stale": ["a", ["x"]],
                                             "ranges": [["a", "a", 0]]}}
    repairs_path(data).write_text(json.dumps(unhashable))
    assert read_repairs(data) == {"good": good}


def test_status_calls_a_fresh_partition_of_an_open_repair_stale_and_says_why(tmp_path):
    """Fresh by its versions, its runs gone from the store: stale until a repair wrote them.
    Only the fresh partitions of this target's ranges not written yet, and only for the
    trackers configured now."""
    data = tmp_path / "data"
    server = _Server("http://alice:s3cret@127.0.0.1:9", experiment="e")
    aim = AimTracker(repo=str(tmp_path / "aim"))
    repair = plan_repair("2.200", ["a", "b", "d"], ORDER)  # (a, b), (d, d)
    repair["ranges"][1][2] = 2  # its run failed twice
    keep_repairs(data, {}, {target_key(server): repair})
    states = dict.fromkeys(ORDER, "fresh") | {"b": "failed"}

    told = unrepaired([server, aim], data, states)
    assert sorted(told) == ["a", "d"]
    assert {state for state, _ in told.values()} == {"stale"}
    assert told["a"][1].startswith("mlflow: its runs were gone from "
                                   "mlflow:http://127.0.0.1:9 (reset")
    assert "asked for 1 run (tag align_track/repair)" in told["a"][1]
    assert "asked for 3 runs" in told["d"][1] and "s3cret" not in told["d"][1]
    assert unrepaired([aim], data, states) == {}  # not configured now
    elsewhere = _Server("http://127.0.0.1:9", experiment="other")
    assert unrepaired([elsewhere], data, states) == {}  # pointed at another target
