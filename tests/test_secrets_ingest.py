"""Credentials in a run directory reach no store: `align-track ingest` into the real Parquet
tables, MLflow SQLite store (with its copied source files) and Aim repo of a data dir."""

import json
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import yaml

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.source.redaction import REDACTED

REL = "random/unaligned"
SECRETS = ("SECRET1-wandb-0d5f", "SECRET2-api-9c1e")


def _plant(run_dir: Path) -> None:
    """`wandb_key` in the Hydra config and `api_key` in meta.json, beside settings whose
    names end in `_key` too."""
    config_path = run_dir / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["wandb_key"] = SECRETS[0]
    config["adm"]["sort_key"] = "scene_id"
    config["adm"]["kdma_key"] = "Moral judgement"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta |= {"api_key": SECRETS[1], "group_key": "scenario"}
    meta_path.write_text(json.dumps(meta, indent=2))


def _files_holding(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.mark.slow
def test_no_credential_of_a_run_dir_reaches_any_store(capsys, small_tree, data_dir):
    _plant(small_tree / REL)
    code = main(["ingest", "--experiments-dir", str(small_tree), "--data-dir", str(data_dir),
                 "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["failed"] == [] and len(report["materialized"]) == 3

    for secret in SECRETS:
        assert _files_holding(data_dir, secret) == []  # Parquet, MLflow, Aim, Dagster's logs

    rows = ds.dataset(data_dir / "parquet" / "experiments").to_table().to_pylist()
    stored = next(r["hydra_config"] for r in rows if r["partition_key"] == REL)
    config = yaml.safe_load(stored)  # the column read back, whatever Parquet compressed
    assert config["wandb_key"] == REDACTED and not any(s in stored for s in SECRETS)
    assert config["adm"]["sort_key"] == "scene_id"
    assert config["adm"]["kdma_key"] == "Moral judgement"

    copied = list((data_dir / "mlflow-artifacts").rglob("source/meta.json"))
    assert len(copied) == 1
    meta = json.loads(copied[0].read_text())
    assert meta["api_key"] == REDACTED and meta["group_key"] == "scenario"
    assert meta["version"] == json.loads((small_tree / REL / "meta.json").read_text())["version"]
