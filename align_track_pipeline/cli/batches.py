"""Runs over contiguous partition ranges, in this process: one run per range, never one per
partition, and what each run reported (partition -> error)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from align_track_pipeline.cli.liveness import cli_run_tags
from align_track_pipeline.cli.signals import raise_if_received
from align_track_pipeline.core.secrets import MaskedError, mask_text
from align_track_pipeline.defs.dagster_compat import record_failed_attempts
from align_track_pipeline.defs.partitions import RANGE_END, RANGE_START, contiguous_ranges


@dataclass(frozen=True)
class InProcess:
    """Runs jobs of `defs` in this process, tagged with who runs them (so a killed run can be
    told from a running one), with the caller's run config (e.g. its logger)."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    run_config: dict = field(default_factory=dict)

    def run(self, job: str, config: dict | None = None, tags: dict | None = None,
            raise_on_error: bool = True, assets: list[dg.AssetKey] | None = None
            ) -> dg.ExecuteInProcessResult:
        """Raises KeyboardInterrupt after a run during which a signal came that the run
        dropped (see `raise_if_received`), and for a step the signal interrupted when
        `raise_on_error` (Dagster raises its own error for it)."""
        try:
            result = self.defs.resolve_job_def(job).execute_in_process(
                instance=self.instance, run_config=self.run_config | (config or {}),
                tags=cli_run_tags() | (tags or {}), raise_on_error=raise_on_error,
                asset_selection=assets)
        except dg.DagsterExecutionInterruptedError:  # a BaseException, as KeyboardInterrupt
            raise KeyboardInterrupt(f"{job} run") from None
        raise_if_received(f"{job} run {result.run_id}")
        return result


def split(keys: list[str], order: list[str], parts: int) -> list[list[str]]:
    """`keys` in partition order, cut into at most `parts` contiguous batches of near-equal
    size (so each batch is as few runs as its gaps allow)."""
    wanted = set(keys)
    ordered = [k for k in order if k in wanted]
    size = max(1, math.ceil(len(ordered) / max(1, parts)))
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


@dataclass(frozen=True)
class Crashed:
    """A run whose step failed as a whole: what is needed to mark its unfinished partitions
    failed from outside the run (picklable: it may come from a worker process)."""

    run_id: str
    job: str
    steps: list[str]
    assets: list[dg.AssetKey]
    keys: list[str]

    def mark_failed(self, instance: dg.DagsterInstance, unfinished: set[str]) -> None:
        failed = [k for k in self.keys if k in unfinished]
        for step in self.steps:
            for asset in self.assets:
                record_failed_attempts(instance, self.run_id, self.job, step, asset, failed)


@dataclass
class Found:
    """What a phase's runs reported: partition -> error, and the runs whose step failed as a
    whole."""

    errors: dict[str, str] = field(default_factory=dict)
    crashed: list[Crashed] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        return self.errors.get(key) or self.errors.get("*")

    def merge(self, other: Found) -> None:
        self.errors |= other.errors
        self.crashed += other.crashed


def run_ranges(runner: InProcess, job: str, keys: list[str], order: list[str],
               progress: Callable[[str], None]) -> Found:
    """Run `job` over `keys`, one run per contiguous range."""
    found = Found()
    wanted = set(keys)
    for n, (first, last) in enumerate(ranges := contiguous_ranges(keys, order), 1):
        progress(f"{job} run {n}/{len(ranges)}: partitions {first} .. {last}")
        result = runner.run(job, raise_on_error=False,
                            tags={RANGE_START: first, RANGE_END: last})
        errors = failures(result)
        if "*" in errors:
            span = order[order.index(first):order.index(last) + 1]
            found.crashed.append(Crashed(
                result.run_id, result.job_def.name,
                [e.step_key for e in result.get_step_failure_events()],
                list(result.job_def.asset_layer.executable_asset_keys),
                [k for k in span if k in wanted]))
        found.errors |= errors
    return found


_INTERRUPTS = ("DagsterExecutionInterruptedError", "KeyboardInterrupt")


def failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Partition -> error, from the `failures` metadata the assets attach to their Failure.
    Raises KeyboardInterrupt if a step was interrupted (Ctrl-C, SIGTERM): stop, do not retry."""
    events = result.get_step_failure_events()
    if any((e := ev.step_failure_data.error) and e.cls_name in _INTERRUPTS for ev in events):
        raise KeyboardInterrupt(f"{result.job_def.name} run {result.run_id}")
    return step_errors(events)


def step_errors(events: list[dg.DagsterEvent]) -> dict[str, str]:
    """Partition -> error of these step failures; "*" for a step that failed as a whole.
    What `ingest` reports of its own runs and `status` of the runs that left a partition
    failed."""
    out: dict[str, str] = {}
    for event in events:
        error = event.step_failure_data.error
        data = event.step_failure_data.user_failure_data
        failures = data.metadata.get("failures") if data else None
        if failures is not None:
            out |= {key: mask_text(text) for key, text in failures.value.items()}
        elif error:  # the step itself crashed: every partition failed
            out["*"] = mask_text(f"{event.step_key}: {_root_cause(error)}")
    return out


def _root_cause(error) -> str:
    """The innermost error of a chain: Dagster's own wrapper only says that the op failed.
    An error re-raised with its credentials masked is told as the original it stands for."""
    while error.cause is not None:
        error = error.cause
    message = error.message.strip()
    if error.cls_name == MaskedError.__name__:
        return message.split(": ", 1)[-1]
    kind, _, said = message.partition(": ")  # `module.Class: message`
    if kind.startswith("align_track_pipeline.") and kind.endswith(f".{error.cls_name}"):
        return said  # the project's own errors are written to be read as they are
    return message
