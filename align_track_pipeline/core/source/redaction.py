"""Masking credentials in a config before it is stored or logged anywhere, and nothing else.

A value is masked when its key names a credential, or when the value itself looks like one.
A key that merely contains a word such as "token" is a research setting
(`max_generator_tokens`, `max_new_tokens`, `tokenizer`) and is kept: masking it lost the
settings people compare runs by. User names and service endpoints count as credentials of the
evaluation interface (they identify an account on a hosted service).
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***REDACTED***"

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
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)[^/@\s:]+:[^/@\s]+@")


def redact(value: Any) -> Any:
    """A copy of a config with credential keys and credential-like values masked, at any
    depth; a URL keeps its host and path, only its `user:password@` is masked."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(k) and v is not None else redact(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _redact_text(value)
    return value


def is_secret_key(key: Any) -> bool:
    """Whether a config key names a credential (`api_key`, `hf_token`, `password`...), not a
    setting that merely mentions one (`max_new_tokens`, `tokenizer`, `session_type`)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(key)).lower().replace("-", "_")
    return bool(_SECRET_KEY.search(snake))


def looks_like_credential(text: str) -> bool:
    """A bare value shaped like an API key, bearer token or secret hash."""
    text = text.strip()
    if _SECRET_VALUE.match(text) or _HEX.match(text):
        return True
    if any(c.isspace() for c in text) or len(text) > 256:  # prose, multi-line blobs
        return False
    return any(_mixed(m.group()) for m in _KEY_LIKE.finditer(text))


def _mixed(run: str) -> bool:
    return sum(c.isdigit() for c in run) >= 3 and sum(c.isalpha() for c in run) >= 3


def _redact_text(text: str) -> str:
    if looks_like_credential(text):
        return REDACTED
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
