"""The sensor's store checks on their own: the ranges they request, and what they do with a
seen-generations file that does not parse or a tracker configuration that does not."""

import dagster as dg
import pytest

from align_track_pipeline.core.trackers.aim.tracker import AimTracker
from align_track_pipeline.core.trackers.base import TargetError
from align_track_pipeline.defs.partitions import RANGE_END, RANGE_START
from align_track_pipeline.defs.store_checks import _requests, seen_path, store_requests

ORDER = ["a", "b", "c", "d", "e", "f"]


def test_stale_partitions_go_in_contiguous_ranges_of_at_most_partitions_per_run(
        tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGN_TRACK_PARTITIONS_PER_RUN", "2")
    tracker = AimTracker(repo=str(tmp_path / "aim"))
    requests = _requests(tracker, "g1", ["a", "b", "c", "e"], ORDER)
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests] == [
        ("a", "b"), ("c", "c"), ("e", "e")]
    assert all(r.asset_selection == [dg.AssetKey("aim_runs")] for r in requests)
    assert len({r.run_key for r in requests}) == 3  # each range once per generation
    again = _requests(tracker, "g2", ["a", "b", "c", "e"], ORDER)
    assert not {r.run_key for r in requests} & {r.run_key for r in again}


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
    assert seen.read_text() == '{"aim": "none"}'  # nothing recorded: nothing to write again


def test_a_tracker_configuration_that_does_not_parse_requests_nothing(tmp_path, instance):
    def refused() -> list:
        raise TargetError("unsupported MLflow tracking URI 'ftp://x'")

    assert store_requests(instance, refused, tmp_path / "data", ORDER) == []
    assert not seen_path(tmp_path / "data").exists()
