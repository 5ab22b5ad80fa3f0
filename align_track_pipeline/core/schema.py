"""The Arrow schemas of the `experiments` and `scenes` tables: the single source of truth.

The Parquet writer, the asset checks and the docs' schema page all read these
definitions, so a column is added in exactly one place.
"""

from __future__ import annotations

import pyarrow as pa

SECONDS = {b"unit": b"s"}
KDMA_MAP = pa.map_(pa.string(), pa.float64())


def _field(name: str, type_: pa.DataType, nullable: bool, doc: str, **meta: str) -> pa.Field:
    metadata = {b"doc": doc.encode()} | {k.encode(): v.encode() for k, v in meta.items()}
    return pa.field(name, type_, nullable=nullable, metadata=metadata)


EXPERIMENTS = pa.schema(
    [
        _field("partition_key", pa.string(), False, "Dagster partition key of the run directory"),
        _field("experiment_path", pa.string(), False, "run directory relative to the tree root"),
        _field("alignment_target_id", pa.string(), False, "target id, 'unaligned' when none"),
        _field("adm", pa.string(), False, "ADM name (config, hydra choice, or guessed from path)"),
        _field("adm_config", pa.string(), True, "the ADM's Hydra config (hydra choice `adm`): "
               "tells apart configs that share an `adm` name"),
        _field("adm_source", pa.string(), False, "where `adm` came from: config|hydra|path"),
        _field("llm_backbone", pa.string(), True, "model name of the ADM's inference engine"),
        _field("run_variant", pa.string(), False, "parent path of the run dir ('default' at root)"),
        _field("kdma_values", KDMA_MAP, False, "target KDMA values; `<kdma>.<param>` for params"),
        _field("num_scenes", pa.int64(), False, "items of input_output.json in this group"),
        _field("num_scenarios", pa.int64(), False, "distinct scenario ids in this group"),
        _field("timing_total_seconds", pa.float64(), True, "total ADM time", unit="s"),
        _field("timing_avg_seconds", pa.float64(), True, "mean ADM time per action", unit="s"),
        _field("timing_min_seconds", pa.float64(), True, "fastest ADM action", unit="s"),
        _field("timing_max_seconds", pa.float64(), True, "slowest ADM action", unit="s"),
        _field("scores", KDMA_MAP, False, "scores.json aggregates (score, accuracy, ...; "
               "kdma.NAME: the KDMA value measured in the ADM's choices)"),
        _field("has_hydra_config", pa.bool_(), False, "whether .hydra/config.yaml exists"),
        _field("align_system_version", pa.string(), True, "meta.json or wrapper `version`"),
        _field("hydra_config", pa.string(), True, "redacted .hydra/config.yaml as YAML text"),
        _field("hydra_overrides", pa.list_(pa.string()), False,
               "the run's command-line overrides (`adm=...`, `+experiment=...`), redacted"),
        _field("source_files", pa.list_(pa.string()), False, "input files of the run directory"),
        _field("source_version", pa.string(), False, "content fingerprint of the source files"),
    ]
)

SCENES = pa.schema(
    [
        _field("partition_key", pa.string(), False, "Dagster partition key of the run directory"),
        _field("experiment_path", pa.string(), False, "run directory relative to the tree root"),
        _field("scene_index", pa.int64(), False, "item index in input_output.json (unique key)"),
        _field("scenario_id", pa.string(), False, "input.scenario_id"),
        _field("scene_id", pa.string(), True, "meta_info.scene_id as text; repeats, not a key"),
        _field("alignment_target_id", pa.string(), False, "target id, 'unaligned' when none"),
        _field("adm", pa.string(), False, "ADM name of the run directory"),
        _field("adm_config", pa.string(), True, "the ADM's Hydra config (hydra choice `adm`)"),
        _field("llm_backbone", pa.string(), True, "model name of the ADM's inference engine"),
        _field("run_variant", pa.string(), False, "run directory's parent path"),
        _field("probe_text", pa.string(), True, "the situation shown to the ADM (input.state)"),
        _field("choices_text", pa.string(), True, "the choices, one `[i] text` per line"),
        _field("choice_index", pa.int64(), True, "output.choice (may be null)"),
        _field("action_id", pa.string(), True, "output.action.action_id"),
        _field("action_type", pa.string(), True, "output.action.action_type"),
        _field("decision_text", pa.string(), True, "output.action.unstructured"),
        _field("justification", pa.string(), True, "output.action.justification"),
        _field("decision_kdma", KDMA_MAP, False, "KDMA association of the chosen action"),
        _field("timing_seconds", pa.float64(), True, "ADM time, null when not alignable", unit="s"),
        _field("scenario_scores", KDMA_MAP, False,
               "scores.json values of this scenario under this scene's alignment target"),
        _field("item_json", pa.string(), False, "the complete original item, JSON text"),
    ]
)

TABLES: dict[str, pa.Schema] = {"experiments": EXPERIMENTS, "scenes": SCENES}

# The key of a row within its partition: what the uniqueness checks enforce.
ROW_KEYS: dict[str, tuple[str, ...]] = {
    "experiments": ("partition_key", "alignment_target_id"),
    "scenes": ("partition_key", "scene_index"),
}


# The columns a person scans first: previews in the UI show these.
PREVIEW_COLUMNS: dict[str, list[str]] = {
    "experiments": ["alignment_target_id", "adm", "llm_backbone", "num_scenes",
                    "timing_total_seconds"],
    "scenes": ["scene_index", "scenario_id", "scene_id", "alignment_target_id", "decision_text"],
}


def non_null_columns(schema: pa.Schema) -> list[str]:
    """Columns the schema declares non-nullable: the checks assert them."""
    return [f.name for f in schema if not f.nullable]


def describe(schema: pa.Schema) -> list[dict[str, str]]:
    """One row per column (name, type, nullable, unit, doc) for metadata and docs."""
    return [
        {
            "column": f.name,
            "type": str(f.type),
            "nullable": "yes" if f.nullable else "no",
            "unit": (f.metadata or {}).get(b"unit", b"").decode(),
            "doc": (f.metadata or {}).get(b"doc", b"").decode(),
        }
        for f in schema
    ]


def schema_markdown() -> str:
    """The docs' schema page, docs/reference/schemas.md (regenerated by
    `python -m align_track_pipeline.cli.reference`)."""
    out = []
    for name, schema in TABLES.items():
        out += [f"### `{name}`", "", "| column | type | nullable | unit | meaning |",
                "|---|---|---|---|---|"]
        out += [f"| `{r['column']}` | {r['type']} | {r['nullable']} | {r['unit']} | {r['doc']} |"
                for r in describe(schema)]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(schema_markdown())
