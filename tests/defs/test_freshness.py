"""The freshness rules: a partition is fresh only with the version its folder has now."""

import dagster as dg
import pytest

from align_track_pipeline.core.versions import table_version as data_version
from align_track_pipeline.defs.freshness import (
    FRESH,
    MISSING,
    STALE,
    latest_data_versions,
    partition_states,
)


@pytest.fixture
def instance(tmp_path, dagster_storage):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        inst.add_dynamic_partitions("experiments", ["a", "b", "c", "d"])
        yield inst


def _record(instance, asset: str, partition: str, version: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset, partition=partition,
                                tags={"dagster/data_version": version})
    )


def test_latest_data_versions(instance):
    _record(instance, "scenes", "a", "v1")
    _record(instance, "scenes", "a", "v2")
    assert latest_data_versions(instance, "scenes") == {"a": "v2"}


def test_states(instance):
    for asset in ("experiments", "scenes"):
        _record(instance, asset, "a", data_version("src-a"))
        _record(instance, asset, "b", data_version("old-b"))
    _record(instance, "experiments", "c", data_version("src-c"))
    states = partition_states(instance, {"a": "src-a", "b": "src-b", "c": "src-c", "d": "src-d"})
    assert states == {"a": FRESH, "b": STALE, "c": MISSING, "d": MISSING}


def test_parser_version_is_part_of_freshness(monkeypatch, instance):
    from align_track_pipeline.core import versions

    for asset in ("experiments", "scenes"):
        _record(instance, asset, "a", data_version("src-a"))
    monkeypatch.setattr(versions, "PARSER_VERSION", "999")
    assert partition_states(instance, {"a": "src-a"}) == {"a": STALE}

