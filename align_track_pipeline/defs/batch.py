"""The shape every tracker asset shares: one event per partition, failures isolated."""

from collections.abc import Callable

import dagster as dg


def materialize_each(
    context: dg.AssetExecutionContext,
    materialize: Callable[[str], dg.AssetMaterialization],
) -> None:
    """Call `materialize` for each partition of the run and log its event; a partition that
    raises fails alone, and the run fails at the end naming every failed partition."""
    keys = context.partition_keys
    failures: dict[str, str] = {}
    for n, key in enumerate(keys, 1):
        try:
            event = materialize(key)
        except Exception as exc:  # one partition's failure must not sink the others
            failures[key] = f"{key}: {type(exc).__name__}: {exc}"
            context.log.error(f"[{n}/{len(keys)}] {failures[key]}")
            continue
        context.log_event(event)
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} of {len(keys)} partitions failed: "
            + "; ".join(failures.values()),
            metadata={"failures": dg.MetadataValue.json(failures)},
        )
