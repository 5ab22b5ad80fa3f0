"""Pins every Dagster internal the pipeline uses (`defs/dagster_compat.py`) and the tests use
(`tests/dagster_probes.py`): if a Dagster upgrade moves one, the test named after it fails here."""

import importlib
import uuid
import warnings
from contextlib import nullcontext

import dagster as dg
import pytest

from align_track_pipeline.core.quiet import quiet_about
from align_track_pipeline.defs import dagster_compat as compat
from tests import dagster_probes as probes

PARTS = dg.DynamicPartitionsDefinition(name="parts")


@pytest.fixture
def instance(tmp_path, dagster_storage):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        inst.add_dynamic_partitions("parts", ["a", "b", "bad", "c"])
        yield inst


def _record(instance, partition: str, version: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="thing", partition=partition, tags={compat.DATA_VERSION_TAG: version}))


def test_latest_tag_and_storage_id_by_partition(instance):
    _record(instance, "a", "v1")
    _record(instance, "a", "v2")
    _record(instance, "b", "v1")
    assert compat.latest_tag_by_partition(instance, "thing", compat.MATERIALIZATION,
                                          compat.DATA_VERSION_TAG) == {"a": "v2", "b": "v1"}
    ids = compat.latest_storage_ids(instance, "thing", compat.MATERIALIZATION)
    assert set(ids) == {"a", "b"} and ids["b"] > ids["a"]
    assert compat.last_event_id(instance) == max(ids.values())
    # a few partitions: their rows only, the same answers
    assert compat.latest_tag_by_partition(instance, "thing", compat.MATERIALIZATION,
                                          compat.DATA_VERSION_TAG, {"a"}) == {"a": "v2"}
    assert compat.latest_storage_ids(instance, "thing", compat.MATERIALIZATION, ["b"]) == {
        "b": ids["b"]}
    many = [f"p{i}" for i in range(compat.FEW_PARTITIONS)] + ["b"]  # more: read them all
    assert compat.latest_storage_ids(instance, "thing", compat.MATERIALIZATION, many) == ids


@dg.asset(partitions_def=PARTS, backfill_policy=dg.BackfillPolicy.single_run())
def thing(context: dg.AssetExecutionContext) -> None:
    """Materializes every partition but `bad`, which it marks as a failed attempt."""
    for key in context.partition_keys:
        if key == "bad":
            compat.record_failed_attempt(context, context.asset_key, key)
        else:
            context.log_event(dg.AssetMaterialization(asset_key="thing", partition=key))
    raise dg.Failure("bad failed")


def _run(instance) -> dg.ExecuteInProcessResult:
    job = dg.Definitions(assets=[thing]).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, raise_on_error=False, tags={
        "dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"})


def _planned(instance, result) -> int:
    return len(instance.all_logs(result.run_id, of_type=compat.PLANNED))


@pytest.mark.parametrize("one_event", [True, False])
def test_failed_partitions_are_marked_with_or_without_one_planned_event(instance, one_event):
    if one_event:
        with compat.one_planned_event_per_asset():
            result = _run(instance)
        assert _planned(instance, result) == 2  # the range's, and the failed partition's
    else:
        result = _run(instance)
        assert _planned(instance, result) == 5  # one per partition, and the failed one again
    assert compat.failed_partitions(instance, "thing") == {"bad"}
    assert compat._SUBSET_PLANNED_EVENTS not in __import__("os").environ


def test_on_an_unverified_dagster_runs_plan_each_partition_and_fail_the_same(instance,
                                                                            monkeypatch):
    """With the Dagster gate closed no private event or setting is used: the run plans each
    partition (Dagster's default), records nothing of its own, and the same partitions end
    up failed."""
    from align_track_pipeline.core import verified

    monkeypatch.setitem(verified.VERIFIED, "dagster", {"dagster": frozenset({"0.0.0"})})
    with compat.one_planned_event_per_asset():
        assert compat._SUBSET_PLANNED_EVENTS not in __import__("os").environ
        result = _run(instance)
    assert _planned(instance, result) == 4  # one per partition, none recorded by the asset
    assert compat.failed_partitions(instance, "thing") == {"bad"}
    verified._warn_once.cache_clear()


def test_failed_attempts_recorded_from_outside_a_crashed_run(instance):
    with compat.one_planned_event_per_asset():
        result = _run(instance)
    step = result.get_step_failure_events()[0].step_key
    compat.record_failed_attempts(instance, result.run_id, result.job_def.name, step,
                                  dg.AssetKey("thing"), ["c"])
    assert compat.failed_partitions(instance, "thing") == {"bad", "c"}


def test_pool_slots_claimed_counted_and_released(tmp_path, dagster_storage):
    pools = {"concurrency": {"pools": {"default_limit": 1}}}
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=pools) as instance:
        run_id = str(uuid.uuid4())
        instance.add_run(dg.DagsterRun(job_name="j", run_id=run_id,
                                       status=dg.DagsterRunStatus.STARTED))
        assert probes.claim_pool_slot(instance, "mlflow", run_id, "log_mlflow_runs")
        assert probes.active_pool_slots(instance, "mlflow") == 1
        assert not probes.claim_pool_slot(instance, "mlflow", str(uuid.uuid4()), "other")
        compat.release_pool_slots(instance, run_id)
        assert probes.active_pool_slots(instance, "mlflow") == 0


def test_a_pool_limit_set_in_the_instance_wins_over_the_default(tmp_path, dagster_storage):
    pools = {"concurrency": {"pools": {"default_limit": 1}}}
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=pools) as instance:
        compat.set_pool_limit(instance, "aim", 3)
        runs = [str(uuid.uuid4()) for _ in range(4)]
        claimed = [probes.claim_pool_slot(instance, "aim", r, "log_aim_runs") for r in runs]
        assert claimed == [True, True, True, False]
        assert compat.pool_holders(instance, "aim") == (3, sorted(runs[:3]))
        assert compat.pool_holders(instance, "mlflow")[0] in (None, 1)  # untouched


@dg.asset(code_version="1")
def upstream() -> None: ...


@dg.asset(deps=[upstream], code_version="1")
def downstream() -> None: ...


def test_stale_status_and_its_reasons(instance):
    defs = dg.Definitions(assets=[upstream, downstream])
    assert dg.materialize([upstream, downstream], instance=instance).success
    assert probes.stale_status(defs, instance, "downstream", None) == ("FRESH", [])
    bumped = downstream.map_asset_specs(lambda spec: spec.replace_attributes(code_version="2"))
    assert probes.stale_status(dg.Definitions(assets=[upstream, bumped]), instance,
                               "downstream", None) == ("STALE", ["has a new code version"])


def test_quiet_about_silences_only_what_it_names():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_about(dg.BetaWarning):
            warnings.warn("beta", dg.BetaWarning, stacklevel=1)
            warnings.warn("other", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["other"]


def test_no_defs_state_storage_resets_what_an_instance_left_behind(instance):
    before = probes.current_defs_state_storage()  # the fixture's instance is entered
    with probes.no_defs_state_storage():
        assert probes.current_defs_state_storage() is None
        instance.__enter__()  # entered again, never exited: its storage stays set
        assert probes.current_defs_state_storage() is instance.defs_state_storage
    assert probes.current_defs_state_storage() is before



@dg.multi_asset(specs=[dg.AssetSpec("checked")],
                check_specs=[dg.AssetCheckSpec("ok", asset="checked")])
def checked(context: dg.AssetExecutionContext):
    """Logs its check's evaluation as an event, as the tables do per partition."""
    context.log_event(dg.AssetMaterialization("checked"))
    context.log_event(dg.AssetCheckEvaluation(asset_key=dg.AssetKey("checked"), check_name="ok",
                                              passed=True))
    yield from compat.evaluated_check_outputs(context)


def test_evaluated_check_outputs(instance):
    result = dg.materialize([checked], instance=instance)
    assert result.success
    logged = [e.user_message for e in instance.all_logs(result.run_id)]
    assert not [m for m in logged if "did not yield" in m]
    assert [e.passed for e in result.get_asset_check_evaluations()] == [True]  # no second one


def test_silence_owners_warning():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        compat.silence_owners_warning()
        warnings.warn(dg.BetaWarning("Parameter `owners` of initializer X is currently in beta"),
                      stacklevel=1)
        warnings.warn(dg.BetaWarning("something else"), stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else"]


@dg.multi_asset(specs=[dg.AssetSpec("logged", partitions_def=PARTS, skippable=True)],
                partitions_def=PARTS)
def logged(context: dg.AssetExecutionContext):
    """Logs its partitions one by one, as the tables do, then unblocks its consumers."""
    for key in context.partition_keys:
        context.log_event(dg.AssetMaterialization("logged", partition=key, tags={"mine": "1"}))
    yield compat.unblocking_output("logged")


@dg.asset(partitions_def=PARTS, deps=[logged])
def consumer() -> None:
    pass


def test_unblocking_output_starts_the_consumer_and_records_no_event(instance):
    result = dg.materialize([logged, consumer], instance=instance, partition_key="a")
    assert result.success
    assert [e.step_key for e in result.all_events if e.is_step_skipped] == []
    records = instance.fetch_materializations(dg.AssetKey("logged"), limit=10).records
    assert [r.asset_materialization.tags.get("mine") for r in records] == ["1"]  # ours alone
    assert len(instance.fetch_materializations(dg.AssetKey("consumer"), limit=10).records) == 1


def test_partitions_in_progress(instance):
    job = dg.Definitions(assets=[thing], jobs=[dg.define_asset_job("j", [thing])]).resolve_job_def(
        "j")
    run = instance.create_run_for_job(job, tags={"dagster/partition": "b"},
                                      status=dg.DagsterRunStatus.NOT_STARTED)
    assert compat.partitions_in_progress(instance, "thing") == {"b"}
    instance.report_run_failed(run)
    assert compat.partitions_in_progress(instance, "thing") == set()


def test_silence_mixed_backfill_policy_warning():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        compat.silence_mixed_backfill_policy_warning("jobx")
        warnings.warn("Asset job jobx materializes assets with varying BackfillPolicies. x",
                      UserWarning, stacklevel=1)
        warnings.warn("Asset job other materializes assets with varying BackfillPolicies.",
                      UserWarning, stacklevel=1)
    assert len(seen) == 1


def _observe_all(batched: bool):
    @dg.op
    def observe(context: dg.OpExecutionContext) -> None:
        with compat.observations_in_one_write(context.instance) if batched else nullcontext():
            for n, part in enumerate(["a", "b", "c", "a"]):
                context.log_event(dg.AssetObservation(
                    "folders", partition=part, tags={compat.DATA_VERSION_TAG: f"v{n}"}))
            context.log.info("between")  # another kind of event: written in its place
            context.log_event(dg.AssetObservation(
                "folders", partition="b", tags={compat.DATA_VERSION_TAG: "last"}))

    @dg.job
    def observe_job() -> None:
        observe()

    return observe_job


def _stored(instance, run_id: str) -> tuple:
    observations = instance.fetch_observations(dg.AssetKey("folders"), limit=100).records
    return (
        [(r.partition_key, r.event_log_entry.tags) for r in observations],
        [(e.dagster_event_type, e.user_message if not e.is_dagster_event else None)
         for e in instance.all_logs(run_id)],
        compat.latest_tag_by_partition(instance, "folders", compat.OBSERVATION,
                                       compat.DATA_VERSION_TAG),
        instance.get_latest_data_version_record(dg.AssetKey("folders"), is_source=True,
                                                partition_key="b").partition_key,
    )


def test_observations_in_one_write_stores_what_one_by_one_stores(tmp_path):
    """The same records, tags, order and latest versions as Dagster's per-event writes, and
    the ids of the batch are the storage ids the latest-version index points at."""
    stored = []
    for batched in (False, True):
        home = tmp_path / str(batched)
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home)) as inst:
            inst.add_dynamic_partitions("parts", ["a", "b", "c"])
            result = _observe_all(batched).execute_in_process(instance=inst)
            stored.append(_stored(inst, result.run_id))
            ids = compat.latest_storage_ids(inst, "folders", compat.OBSERVATION)
            records = inst.fetch_observations(dg.AssetKey("folders"), limit=100).records
            assert ids == {p: max(r.storage_id for r in records if r.partition_key == p)
                           for p in "abc"}
    assert stored[0] == stored[1]
    assert stored[1][2] == {"a": "v3", "b": "last", "c": "v2"}


def test_observations_logged_before_an_error_are_stored(tmp_path, dagster_storage):
    """The run fails, and the observations made before the error are kept, as one by one."""
    @dg.op
    def observe_then_fail(context: dg.OpExecutionContext) -> None:
        with compat.observations_in_one_write(context.instance):
            for part in ("a", "b"):
                context.log_event(dg.AssetObservation(
                    "folders", partition=part, tags={compat.DATA_VERSION_TAG: part}))
            raise RuntimeError("folder vanished")

    @dg.job
    def failing() -> None:
        observe_then_fail()

    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        result = failing.execute_in_process(instance=inst, raise_on_error=False)
        assert not result.success
        assert compat.latest_tag_by_partition(inst, "folders", compat.OBSERVATION,
                                              compat.DATA_VERSION_TAG) == {"a": "a", "b": "b"}
        assert "store_event" not in vars(inst.event_log_storage)  # the storage is as it was


def test_sqlite_storage_modules_import_and_only_on_a_verified_dagster(monkeypatch):
    from align_track_pipeline.cli.preload import sqlite_storage_modules
    from align_track_pipeline.core import verified

    modules = sqlite_storage_modules()
    assert len(modules) == 2
    for name in modules:
        assert importlib.import_module(name).__name__ == name
    monkeypatch.setitem(verified.VERIFIED, "dagster", {"dagster": frozenset({"0.0.0"})})
    assert sqlite_storage_modules() == ()
    verified._warn_once.cache_clear()
