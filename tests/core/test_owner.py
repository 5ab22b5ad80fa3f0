"""A store holds one tree's runs: a data dir of another tree is refused before it writes, a
data dir moved to a new tree (`--new-tree`) takes its store along."""

from __future__ import annotations

import pytest

from align_track_pipeline.core.guard import remember_tree
from align_track_pipeline.core.trackers.aim.tracker import AimTracker
from align_track_pipeline.core.trackers.mlflow.tracker import MlflowTracker
from align_track_pipeline.core.trackers.owner import OWNER, OWNER_FILE, OtherTreesStore, claimed


def test_the_first_writer_marks_the_store_and_another_tree_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    remember_tree(a, tmp_path / "treeA")
    remember_tree(b, tmp_path / "treeB")
    assert claimed(None, str(a), "S", "fix") == str(tmp_path / "treeA")
    assert claimed(str(tmp_path / "treeA"), str(a), "S", "fix") is None
    refused = (f"S holds the runs of the tree {tmp_path}/treeA, not of this data dir's tree "
               f"{tmp_path}/treeB: .* Nothing was written. fix")
    with pytest.raises(OtherTreesStore, match=refused):
        claimed(str(tmp_path / "treeA"), str(b), "S", "fix")
    assert claimed("anything", str(tmp_path / "never-ingested"), "S", "fix") is None


def test_a_data_dir_moved_to_a_new_tree_takes_its_store_along(tmp_path):
    data = tmp_path / "data"
    remember_tree(data, tmp_path / "old")
    remember_tree(data, tmp_path / "new")  # --new-tree
    assert claimed(str(tmp_path / "old"), str(data), "S", "fix") == str(tmp_path / "new")
    other = tmp_path / "other"
    remember_tree(other, tmp_path / "third")
    with pytest.raises(OtherTreesStore):
        claimed(str(tmp_path / "new"), str(other), "S", "fix")


def test_mlflow_and_aim_stores_are_claimed_when_opened(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    remember_tree(a, tmp_path / "treeA")
    remember_tree(b, tmp_path / "treeB")
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    def trackers(data):
        return (MlflowTracker(tracking_uri=uri, artifact_root=str(tmp_path / "art"),
                              data_dir=str(data)),
                AimTracker(repo=str(tmp_path / "aim"), data_dir=str(data)))

    for tracker in trackers(a):
        tracker.open().close()
    assert (tmp_path / "aim" / OWNER_FILE).read_text() == f"{tmp_path / 'treeA'}\n"
    from mlflow import MlflowClient

    experiment = MlflowClient(uri).get_experiment_by_name("align-system")
    assert experiment.tags[OWNER] == str(tmp_path / "treeA")
    for tracker in trackers(b):
        with pytest.raises(OtherTreesStore, match="holds the runs of the tree"):
            tracker.open()
    for tracker in trackers(a):  # its own tree's writer, again
        tracker.open().close()


def _open_and_close(uri: str, experiment: str, data_dir: str) -> None:
    MlflowTracker(tracking_uri=uri, experiment=experiment, data_dir=data_dir).open().close()


@pytest.mark.slow
def test_first_writers_of_one_tree_at_once_through_a_server_all_go_ahead(tmp_path,
                                                                         mlflow_server):
    """A server takes no lock: several first writers mark the experiment at the same moment
    (the server refuses all inserts of the tag but one); the mark is theirs, so they go on."""
    import multiprocessing

    data = tmp_path / "data"
    remember_tree(data, tmp_path / "tree")
    experiment = f"owner-race-{tmp_path.name}"
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        pool.starmap(_open_and_close, [(mlflow_server, experiment, str(data))] * 6)
        # Let the workers end on their own: the `with` block's terminate() sends SIGTERM,
        # which the package's handlers may take as a recorded interrupt, so that a worker
        # waiting for its next task never exits (a CI run hung here for 900 s).
        pool.close()
        pool.join()
    from mlflow import MlflowClient

    found = MlflowClient(mlflow_server).get_experiment_by_name(experiment)
    assert found.tags[OWNER] == str(tmp_path / "tree")
