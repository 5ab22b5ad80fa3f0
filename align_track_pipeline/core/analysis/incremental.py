"""The comparison file updated from its previous version when a few partitions changed.

A full rebuild opens every partition file (half a millisecond each) and sorts every scene.
The previous file already holds the unchanged partitions' rows in order: streamed one row
group at a time, it loses the changed and removed partitions' rows and takes in their new
rows (a few, read from their own files and sorted) where they belong, the order DuckDB's
`ORDER BY` gives (strings by byte, nulls last). The result has the rows a rebuild writes.

The previous file is trusted only through its listing (`<file>.files.json`): the partition
files it was built from, whose fingerprint equals the one the file records, in the same
layout. Anything else (no listing, another layout, a listing of another file) is rebuilt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from align_track_pipeline.core.analysis.snapshot import FINGERPRINT_KEY, Listing, fingerprint_of
from align_track_pipeline.core.atomic import write_text_atomically
from align_track_pipeline.core.schema import TABLES
from align_track_pipeline.core.tables.store import ParquetStore

MAX_CHANGED_SHARE = 0.25  # more changed partition files than this: a rebuild is as cheap


def listing_path(comparison: Path) -> Path:
    return comparison.with_name(comparison.name.removesuffix(".parquet") + ".files.json")


def write_listing(comparison: Path, listing: Listing, layout: str) -> None:
    """Record what the comparison file (about to be put in place) was built from."""
    write_text_atomically(listing_path(comparison), json.dumps(
        {"layout": layout, "fingerprint": fingerprint_of(listing), "tables": listing}))


def open_base(comparison: Path, layout: str,
              columns: list[str]) -> tuple[pq.ParquetFile, Listing] | None:
    """The comparison file, opened (a file put in its place meanwhile is not read), and the
    listing it was built from; None when it cannot be trusted as the base of an update
    (missing, unreadable, other columns or layout, or a listing that is not the file's)."""
    try:
        recorded = json.loads(listing_path(comparison).read_text(encoding="utf-8"))
        listing = {t: [tuple(f) for f in recorded["tables"][t]] for t in TABLES}
        source = pq.ParquetFile(comparison)
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None
    schema = source.schema_arrow
    fingerprint = (schema.metadata or {}).get(FINGERPRINT_KEY.encode(), b"").decode()
    if (recorded.get("layout") != layout or schema.names != columns
            or fingerprint != fingerprint_of(listing)):
        source.close()
        return None
    return source, listing


def changed_names(old: Listing, new: Listing) -> set[str] | None:
    """Names of the partition files added, rewritten or removed in any table since `old`;
    None when so many changed that a rebuild costs no more."""
    changed: set[str] = set()
    for table in TABLES:
        changed |= set(old.get(table, [])) ^ set(new.get(table, []))
    names = {entry[0] for entry in changed}
    total = len({entry[0] for entries in new.values() for entry in entries})
    return None if len(names) > MAX_CHANGED_SHARE * max(total, 1) else names


def dropped_keys(previous: pq.ParquetFile, names: set[str], store: ParquetStore) -> list[str]:
    """The partition keys of the previous file whose partition file changed or went."""
    keys = previous.read(columns=["partition_key"])["partition_key"].unique()
    return [k for k in keys.to_pylist() if store.path("scenes", k).name in names]


def merge(source: pq.ParquetFile, drop: list[str], new_rows: pa.Table | None,
          order: list[str], out: Path, fingerprint: str, row_group_rows: int) -> int:
    """Write the previous file `source` without the rows of `drop`, with `new_rows` (sorted
    by `order`) merged in, to `out`, one row group in memory at a time; returns the rows
    written."""
    schema = source.schema_arrow.with_metadata(
        {**(source.schema_arrow.metadata or {}), FINGERPRINT_KEY.encode(): fingerprint.encode()})
    keys = [(c, "ascending", "at_end") for c in order]  # DuckDB: nulls last
    pending = (schema.empty_table() if new_rows is None
               else new_rows.select(schema.names).cast(schema))
    rows = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        buffer: list[pa.Table] = []
        for batch in source.iter_batches(batch_size=row_group_rows):
            kept = pa.Table.from_batches([batch]).filter(
                pc.invert(pc.is_in(batch["partition_key"], pa.array(drop, pa.string()))))
            merged, pending = _merged(kept, pending, keys)
            buffer.append(merged)
            rows += _flush(writer, buffer, schema, row_group_rows)
        buffer.append(pending)
        rows += _flush(writer, buffer, schema, row_group_rows, final=True)
    return rows


def _merged(kept: pa.Table, pending: pa.Table, keys: list) -> tuple[pa.Table, pa.Table]:
    """`kept` with the pending rows that sort before its last row, and the pending rest."""
    if not kept.num_rows or not pending.num_rows or _before(kept.slice(kept.num_rows - 1),
                                                            pending.slice(0, 1), keys):
        return kept, pending
    both = pa.concat_tables([kept, pending])
    ordered = pc.sort_indices(both, sort_keys=keys).to_numpy()
    last = int((ordered == kept.num_rows - 1).nonzero()[0][0])  # the last kept row's place
    taken = last + 1 - kept.num_rows  # pending rows placed before it
    return both.take(ordered[:last + 1]), pending.slice(taken)


def _before(a: pa.Table, b: pa.Table, keys: list) -> bool:
    """Whether row `a` sorts before row `b`."""
    both = pa.concat_tables([a, b])
    return pc.sort_indices(both, sort_keys=keys)[0].as_py() == 0


def _flush(writer: pq.ParquetWriter, buffer: list[pa.Table], schema: pa.Schema,
           row_group_rows: int, final: bool = False) -> int:
    """Write whole row groups of the buffered rows (the rest too when `final`)."""
    table = pa.concat_tables(buffer).cast(schema)
    whole = table.num_rows if final else table.num_rows // row_group_rows * row_group_rows
    for start in range(0, whole, row_group_rows):
        writer.write_table(table.slice(start, min(row_group_rows, whole - start)),
                           row_group_size=row_group_rows)
    buffer[:] = [table.slice(whole)]
    return whole
