"""What a run directory's Hydra config says: ADM, LLM, alignment target, redacted text."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from align_track_pipeline.core.source.files import SAFE_DUMPER, dig, number
from align_track_pipeline.core.source.redaction import redact, redact_override

UNALIGNED = "unaligned"


@dataclass(frozen=True)
class RunConfig:
    """The facts about a run that come from its config files (or, failing that, its path)."""

    adm: str
    adm_source: str
    llm_backbone: str | None
    target_id: str | None
    target_kdmas: dict[str, float] = field(default_factory=dict)
    redacted_yaml: str | None = None
    overrides: tuple[str, ...] = ()  # the run's command-line overrides, credentials masked
    # The Hydra config the ADM came from (`hydra.runtime.choices.adm`): `adm.name` is often
    # inherited (every few-shot config of 2025 is named after the zero-shot one it extends).
    adm_config: str | None = None


def read_run_config(config: dict | None, hydra: dict | None, rel_path: str) -> RunConfig:
    """Combine config.yaml, hydra.yaml and the path, in that order of trust."""
    adm, source = _adm_name(config, hydra, rel_path)
    target = dig(config, "alignment_target")
    target_id = target.get("id") if isinstance(target, dict) else None
    return RunConfig(
        adm=adm,
        adm_source=source,
        llm_backbone=_llm(config),
        target_id=str(target_id) if target_id is not None else None,
        target_kdmas=kdma_values(dig(target, "kdma_values")),
        redacted_yaml=(
            yaml.dump(redact(config), Dumper=SAFE_DUMPER, sort_keys=False, allow_unicode=True,
                      width=120)
            if config is not None
            else None
        ),
        overrides=_overrides(hydra),
        adm_config=_adm_choice(hydra),
    )


def _adm_choice(hydra: dict | None) -> str | None:
    choice = dig(hydra, "hydra", "runtime", "choices", "adm")
    return choice if isinstance(choice, str) and choice else None


def _overrides(hydra: dict | None) -> tuple[str, ...]:
    """The overrides the run was started with (`hydra.overrides.task`, as overrides.yaml
    lists them: `adm=...`, `+experiment=...`): what tells two runs of one ADM apart, where the
    config's own names often do not. Credentials among them masked (`interface.username=`)."""
    task = dig(hydra, "hydra", "overrides", "task")
    if not isinstance(task, list):
        return ()
    return tuple(redact_override(str(t)) for t in task if t is not None)


def _adm_name(config: dict | None, hydra: dict | None, rel_path: str) -> tuple[str, str]:
    name = dig(config, "adm", "name")
    if isinstance(name, str) and name:
        return name, "config"
    if choice := _adm_choice(hydra):
        return choice, "hydra"
    parts = [p for p in PurePosixPath(rel_path).parts if p != "."]
    guess = next((p for p in parts if p.startswith("pipeline_")), parts[0] if parts else "unknown")
    return guess, "path"


def _llm(config: dict | None) -> str | None:
    for keys in (("adm", "structured_inference_engine", "model_name"),
                 ("adm", "instance", "model_name")):
        value = dig(config, *keys)
        if isinstance(value, str) and value:
            return value
    return None


def kdma_values(entries: Any) -> dict[str, float]:
    """`[{kdma, value}]` -> {kdma: value}; `value: null` with parameters -> {kdma.param: value}.

    KDE blobs are never copied: only numbers come out.
    """
    out: dict[str, float] = {}
    for entry in entries if isinstance(entries, list) else []:
        name = dig(entry, "kdma")
        if not isinstance(name, str):
            continue
        value = number(entry.get("value"))
        if value is not None:
            out[name] = value
        for param in entry.get("parameters") or []:
            p_value = number(dig(param, "value"))
            if isinstance(dig(param, "name"), str) and p_value is not None:
                out[f"{name}.{param['name']}"] = p_value
    return out
