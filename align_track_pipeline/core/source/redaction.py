"""Masking credentials in a config before it is stored or logged anywhere, and nothing else.

A value is masked when its key names a credential, or when the value itself looks like one.
A key that merely contains a word such as "token" is a research setting
(`max_generator_tokens`, `max_new_tokens`, `tokenizer`) and is kept: masking it lost the
settings people compare runs by. User names and service endpoints count as credentials of the
evaluation interface (they identify an account on a hosted service). A key ending in `_key`
(`wandb_key`, `openai_key`) is a credential unless it is a known setting (`SETTING_KEYS`).

Files copied out of a run directory go through `redact_file`: the same masking for YAML and
JSON, and for a file that does not parse, the same keys masked line by line.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import yaml

from align_track_pipeline.core.secrets import mask_text

REDACTED = "***REDACTED***"
# Keys ending in `_key` that name a setting, not a credential: kept. No config of align-system
# has one (its only `*_key` config key is `api_key`); these are the names its code and this
# project use for such settings.
SETTING_KEYS = frozenset({"kdma_key", "group_key", "range_key", "sort_key", "partition_key"})

# Matched against the key in snake_case (`apiKey` -> `api_key`), anchored on word parts.
_SECRET_KEY = re.compile(
    r"(^|_)(password|passwd|passphrase|pwd|secrets?|credentials?|cookies?|authorization"
    r"|username|user_name|endpoint|private_key|access_key|api_key|apikey)(_|$)"
    r"|^user$|(^|_)auth$|(^|_)token$|(^|_)(access|auth|bearer|refresh|api|id|session)_token",
)
# Values that are credentials whatever their key: well-known key prefixes, bearer headers,
# JWTs, a single token of 24+ key characters mixing letters and digits, long hex.
_SECRET_VALUE = re.compile(
    r"^(sk-[\w-]{16,}|hf_\w{20,}|gh[pousr]_\w{20,}|xox[abpr]-[\w-]{10,}|AKIA[0-9A-Z]{16}"
    r"|glpat-[\w-]{20,}|eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,})$"
    r"|^(Bearer|Basic|Token)\s+\S{8,}$",
    re.IGNORECASE,
)
_KEY_LIKE = re.compile(r"[A-Za-z0-9+=]{24,}")
_HEX = re.compile(r"^[0-9a-fA-F]{32,}$")
_SPACE = re.compile(r"\s")


def redact(value: Any) -> Any:
    """A copy of a config with credential keys and credential-like values masked, at any
    depth; a URL keeps its host and path, only its `user:password@` is masked."""
    return _redact(value, {})


def _redact(value: Any, seen: dict[str, str]) -> Any:
    """`redact`, each distinct string checked once (`seen`): `input_output.json` repeats its
    texts in every item, 1,773 strings of which 149 differ."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(k) and v is not None else _redact(v, seen)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, seen) for v in value]
    if isinstance(value, str):
        masked = seen.get(value)
        if masked is None:
            masked = seen[value] = _redact_text(value)
        return masked
    return value


@lru_cache(maxsize=4096)  # a file's keys repeat in every item: `input_output.json`'s by thousands
def is_secret_key(key: Any) -> bool:
    """Whether a config key names a credential (`api_key`, `hf_token`, `password`...), not a
    setting that merely mentions one (`max_new_tokens`, `tokenizer`, `session_type`)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(key)).lower().replace("-", "_")
    if snake.endswith("_key") and snake not in SETTING_KEYS:
        return True
    return bool(_SECRET_KEY.search(snake))


def redact_file(name: str, data: bytes) -> bytes:
    """A source file's bytes with credentials masked: a `.json`, `.yaml` or `.yml` file is
    parsed and masked like a config (its bytes kept as they were when nothing is masked);
    any other file, or one that does not parse, is masked line by line wherever a credential
    key is followed by `:` or `=` and a value."""
    text = data.decode("utf-8", errors="replace")
    suffix = name.rsplit(".", 1)[-1].lower()
    if suffix in ("json", "yaml", "yml"):
        try:
            parsed = json.loads(text) if suffix == "json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError):
            parsed = _UNPARSED
        if parsed is not _UNPARSED:
            masked = redact(parsed)
            if masked == parsed:
                return data
            if suffix == "json":
                return json.dumps(masked, indent=2, ensure_ascii=False).encode()
            return yaml.safe_dump(masked, sort_keys=False, allow_unicode=True).encode()
    return "".join(_redact_line(line) for line in text.splitlines(keepends=True)).encode()


_UNPARSED = object()
# `key: value`, `"key": "value"`, `key=value`: the value quoted, or up to a separator.
_PAIR = re.compile(r"""(?P<q>["']?)(?P<key>[A-Za-z_][\w.-]*)(?P=q)(?P<sep>\s*[:=]\s*)"""
                   r"""(?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;}\]#]+)""")


def _redact_line(line: str) -> str:
    def mask(m: re.Match) -> str:
        value = m["value"]
        if not is_secret_key(m["key"]) or value in ("null", "~", '""', "''"):
            return m[0]
        quote = value[0] if value[0] in "\"'" else ""
        return f"{m['q']}{m['key']}{m['q']}{m['sep']}{quote}{REDACTED}{quote}"

    return _redact_text_in_line(_PAIR.sub(mask, line))


def _redact_text_in_line(line: str) -> str:
    return mask_text(line, REDACTED)


def looks_like_credential(text: str) -> bool:
    """A bare value shaped like an API key, bearer token or secret hash."""
    text = text.strip()
    if _SECRET_VALUE.match(text) or _HEX.match(text):
        return True
    if len(text) > 256 or _SPACE.search(text):  # prose, multi-line blobs
        return False
    return any(_mixed(m.group()) for m in _KEY_LIKE.finditer(text))


def _mixed(run: str) -> bool:
    return sum(c.isdigit() for c in run) >= 3 and sum(c.isalpha() for c in run) >= 3


def _redact_text(text: str) -> str:
    if looks_like_credential(text):
        return REDACTED
    return mask_text(text, REDACTED)
