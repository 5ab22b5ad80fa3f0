"""A tracker declares its follow-up asset (Aim: its index) and gets it, with a job and a sensor,
without the definitions naming any tracker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from align_track_pipeline.core.trackers import registry
from align_track_pipeline.core.trackers.base import FollowUp, Settings, Tracker
from align_track_pipeline.definitions import build_defs
from tests.conftest import REPO


@dataclass(frozen=True)
class Counting(Tracker):
    """A store whose follow-up writes a marker file saying how it was run."""

    folder: str
    name = "counting"
    version_tag = "c"
    description = "a tracker with a follow-up"

    def layout_version(self) -> str:
        return "1"

    def target_id(self) -> str:
        return self.folder

    def open(self):
        raise NotImplementedError  # never written in these tests

    def follow_up(self) -> FollowUp:
        return FollowUp("counting_upkeep", "counting_tidy", "tidies the store", self._tidy)

    def _tidy(self, full: bool) -> dict[str, object]:
        (Path(self.folder) / "tidied").write_text("full" if full else "outdated")
        return {"full": full}


def _counting(settings: Settings) -> Counting:
    return Counting(str(settings.data_dir))


def test_a_declared_follow_up_gets_its_asset_job_and_sensor(tmp_path, sample_tree, data_dir,
                                                            dagster_storage):
    data_dir.mkdir()
    with registry.registered("counting", _counting):
        defs = build_defs(str(sample_tree), str(data_dir), {"trackers": "counting"})
        graph = defs.resolve_asset_graph()
        assert graph.get(dg.AssetKey("counting_upkeep")).parent_keys == {
            dg.AssetKey("counting_runs")}
        assert defs.resolve_sensor_def("counting_tidy_sensor").asset_key == dg.AssetKey(
            "counting_runs")
        assert not graph.has(dg.AssetKey("aim_index"))  # Aim left out: no index either
        with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
            result = defs.resolve_job_def("counting_tidy").execute_in_process(
                instance=instance,
                run_config={"ops": {"counting_upkeep": {"config": {"full": True}}}})
        assert result.success
    assert (data_dir / "tidied").read_text() == "full"


def test_the_definitions_name_no_tracker():
    text = (REPO / "align_track_pipeline" / "definitions.py").read_text()
    assert '"aim"' not in text and '"mlflow"' not in text
