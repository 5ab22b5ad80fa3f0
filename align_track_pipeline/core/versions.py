"""Every version and key format of the pipeline, in one place.

- A run directory's *source version* is the content hash of its input files
  (`source.discovery.content_hash`).
- A table partition's *data version* is the source version plus the parser version: bump
  `PARSER_VERSION` and every partition is stale.
- A tracker's code version is its layout (and mode) plus a short hash of its target (which
  store, without secrets): bump a layout, or point the tracker at another store, and only that
  tracker re-writes. A tracker partition's data version is the table version plus that code
  version, so a partition is fresh only for the store it was written to.
- Keys: a scene is (partition, item index), an experiment row is (partition, alignment target).
  Stores use these keys to upsert, so a second write of the same content changes nothing.
"""

from __future__ import annotations

import hashlib

# Bump when parsing changes what lands in the tables: every partition becomes stale.
# 4: credentials written as text inside config values masked; 5: a scenario scored under
# several targets keeps each target's score in the scenes (the last one was taken for all);
# 6: credential keys run together, plural or numbered masked (`secretaccesskey`,
# `passwords`, `password1`, `auth_header`, `github_pat`): every store is written again masked;
# 7: columns `hydra_overrides` (credentials masked whole) and `adm_config`.
PARSER_VERSION = "7"
# Bump when what a tracker logs for a row changes: every partition's runs are then replaced.
# 6: the copied source files with credentials written as text masked too; 7: with the
# spellings of 2026-12-07 masked (`db_pass`, `openai: {key}`, `--openai-key VALUE`, webhooks);
# 8: a scene's scores named as its scenario's (`scenario.score`, not `scene.score.score`), an
# `incomplete` tag, params `overrides` and `adm_config`, the ADM's predicted KDMA values in
# traces, no end time where the data has no duration.
MLFLOW_LAYOUT_VERSION = "8"
# 4: runs dated and lasting as the data says (3: names); 5: `scenario.<name>`, not
# `score.<name>`, params `incomplete`, `overrides` and `adm_config`.
AIM_LAYOUT_VERSION = "5"

KEY_SEPARATOR = "::"


def table_version(source_version: str) -> str:
    """What an up-to-date partition's tables record: its input's content and the parser's
    version. The one definition of "changed": a partition is stale when this differs."""
    return f"{source_version}-p{PARSER_VERSION}"


def tracker_code_version(layout: str, target_id: str) -> str:
    """`<layout>@<8 hex of the target>`: the asset's code version."""
    return f"{layout}@{hashlib.blake2b(target_id.encode(), digest_size=4).hexdigest()}"


def tracker_version(source_version: str, tag: str, code_version: str) -> str:
    """What an up-to-date tracker partition records: the table version it was fed from and the
    tracker's code version, after the tracker's one-letter `tag` (`m` MLflow, `a` Aim)."""
    return f"{table_version(source_version)}-{tag}{code_version}"


def scene_key(partition: str, scene_index: int) -> str:
    """A scene's identity in every store: `<partition>::<item index>`."""
    return f"{partition}{KEY_SEPARATOR}{scene_index}"


def experiment_key(partition: str, alignment_target: str) -> str:
    """An experiment row's identity: `<partition>::<alignment target>` (a live run dir holds
    several targets)."""
    return f"{partition}{KEY_SEPARATOR}{alignment_target}"

