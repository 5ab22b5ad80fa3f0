"""Masking credentials in a config before it is stored or logged anywhere, and nothing else.

A value is masked when its key names a credential, or when the value itself looks like one.
A key that merely contains a word such as "token" is a research setting
(`max_generator_tokens`, `max_new_tokens`, `tokenizer`) and is kept: masking it lost the
settings people compare runs by. User names and service endpoints count as credentials of the
evaluation interface (they identify an account on a hosted service). A key ending in `_key`
(`wandb_key`, `openai_key`) is a credential unless it is a known setting (`SETTING_KEYS`).

Inside any string value, and on each line of a file that does not parse, a credential written
as text is masked too, its key kept: a `KEY: value` or `KEY=value` pair whose key names a
credential (a header `Authorization: Bearer ...`, `X-Api-Key: ...`, an environment variable
`HF_TOKEN=...`, a Hydra override `interface.password=...`), a command-line flag whose name
does (`--api-key VALUE`, `--hf-token=VALUE`; `--max-new-tokens 512` is a setting, kept), and a
credential after `Bearer`, `Basic` or `Token` anywhere ("Token economy" is prose, kept). In an
argument list (`meta.json`'s argv) the item after a credential flag is masked; `key`, `api`,
`secret` and `token` are credentials under a service or account (`openai: {key: ...}`); a
switch (`use_auth: true`) is never masked.

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
# A few words count wherever they stand, as keys run them together (`secretaccesskey`,
# `clientsecret`, `privatekey`); a word part may end in digits (`password1`).
_SECRET_KEY = re.compile(
    r"(^|_)(passwords?|passwd|passphrase|pwd|secrets?|credentials?|cookies?|authorization"
    r"|username|user_name|endpoint|private_keys?|access_keys?|api_keys?|apikeys?|bearer)\d*"
    r"(_|$)"
    r"|secret|password|passwd|privatekey|accesskey|apikey"
    r"|^user$|(^|_)auth(_headers?)?$|(^|_)(token|pat)$"
    r"|(^|_)(access|auth|bearer|refresh|api|id|session)_token"
    r"|^(pass|pw)$|passcode|(^|_)(db|smtp|user|admin|root|mysql|pg|postgres|redis|s?ftp|mail"
    r"|email|ldap|proxy|sql|login|account|ssh|vpn|wifi)_?(pass|pw)$",
)
# A key that names a credential only under a parent that names a service or an account
# (`openai: {key: ...}`, `wandb: {api: ...}`): alone, `key` is as often a setting.
_SCOPED_KEYS = frozenset({"key", "api", "secret", "token"})
_SERVICE = re.compile(
    r"(^|_)(openai|anthropic|wandb|hf|huggingface|azure|aws|gcp|google|cohere|together|groq"
    r"|api|auth|login|account|credentials?|secrets?|smtp)(_|$)")
# A flag alone in an argument list (`["--openai-key", "VALUE"]`, `meta.json`'s argv): the next
# argument is its value.
_FLAG_ALONE = re.compile(r"^--?(?P<key>[A-Za-z][\w.-]*)$")
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


def redact(value: Any, texts: bool = False) -> Any:
    """A copy of a config with credential keys and credential-like values masked, at any
    depth; a URL keeps its host and path, only its `user:password@` is masked. `texts`: the
    strings are an LLM's prompts and answers (`input_output.json`), not settings: a
    credential written inside one (`password: ...`) is not looked for, as prose such as
    "Primary endpoint: mortality" or "User: B" would read as one."""
    return _redact(value, {}, texts)


def _redact(value: Any, seen: dict[str, str], texts: bool, parent: Any = None) -> Any:
    """`redact`, each distinct string checked once (`seen`): `input_output.json` repeats its
    texts in every item, 1,773 strings of which 149 differ. `parent`: the key `value` is
    under."""
    if isinstance(value, dict):
        return {k: REDACTED if _maskable(v) and (is_secret_key(k) or _scoped_secret(parent, k))
                else _redact(v, seen, texts, k) for k, v in value.items()}
    if isinstance(value, list):  # a list's items are under the list's key
        return _flag_values_masked([_redact(v, seen, texts, parent) for v in value])
    if isinstance(value, str):
        masked = seen.get(value)
        if masked is None:
            masked = seen[value] = _redact_text(value, texts)
        return masked
    return value


def _maskable(value: Any) -> bool:
    """A value that can hold a credential: not a null, nor a switch (`use_auth: true`,
    `first_pass: false` are settings)."""
    return value is not None and not isinstance(value, bool)


def _scoped_secret(parent: Any, key: Any) -> bool:
    return (isinstance(key, str) and key.lower() in _SCOPED_KEYS and isinstance(parent, str)
            and bool(_SERVICE.search(_snake(parent))))


def _flag_values_masked(items: list) -> list:
    """An argument list with the value after each credential flag masked."""
    for i in range(len(items) - 1):
        flag = _FLAG_ALONE.match(items[i]) if isinstance(items[i], str) else None
        if flag and is_secret_key(flag["key"].rsplit(".", 1)[-1]) \
                and isinstance(items[i + 1], str) \
                and not items[i + 1].startswith("-"):
            items[i + 1] = REDACTED
    return items


def _snake(key: Any) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(key)).lower().replace("-", "_")


@lru_cache(maxsize=4096)  # a file's keys repeat in every item: `input_output.json`'s by thousands
def is_secret_key(key: Any) -> bool:
    """Whether a config key names a credential (`api_key`, `hf_token`, `password`...), not a
    setting that merely mentions one (`max_new_tokens`, `tokenizer`, `session_type`)."""
    snake = _snake(key)
    if snake.endswith("_key") and snake not in SETTING_KEYS:
        return True
    return bool(_SECRET_KEY.search(snake))


def redact_override(item: str) -> str:
    """A Hydra override (`interface.password=VALUE`, `+env.GITHUB_PAT=VALUE`,
    `interface={username: bob, password: x}`) with its credentials masked: the whole value
    when a dotted part of its key names one (a value may hold `,`, `]` or spaces that end a
    pair written in text), the credentials inside a dict or list value, else what
    `redact` masks in any string."""
    key, sep, value = item.partition("=")
    name = key.lstrip("+~")
    if not sep or not name:
        return redact(item)
    if any(is_secret_key(part) for part in name.split(".")) and value not in _EMPTY:
        return f"{key}={REDACTED}"
    if value[:1] in "[{":  # Hydra's dict syntax: `{username:bob,password:x}`
        value = _OVERRIDE_ENTRY.sub(lambda m: f"{m['key']}{m['sep']}{REDACTED}" if (
            is_secret_key(m["key"]) and m["value"].strip()) else m[0], value)
    return redact(f"{key}={value}")


# A `key:value` entry of a dict value in a Hydra override, its value up to the next `,` or
# bracket.
_OVERRIDE_ENTRY = re.compile(r"(?P<key>[A-Za-z_][\w.-]*)(?P<sep>[ \t]*:[ \t]*)"
                             r"(?P<value>[^,{}\[\]]*)")


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
            masked = redact(parsed, texts=name.rsplit("/", 1)[-1] == TEXTS_FILE)
            if masked == parsed:
                return data
            if suffix == "json":
                return json.dumps(masked, indent=2, ensure_ascii=False).encode()
            return yaml.safe_dump(masked, sort_keys=False, allow_unicode=True).encode()
    return "".join(_redact_line(line) for line in text.splitlines(keepends=True)).encode()


_UNPARSED = object()
TEXTS_FILE = "input_output.json"  # an LLM's prompts and answers (`redact(texts=True)`)
_SCHEME = r"(?:(?i:bearer|basic|token|digest)[ \t]+)"
# `key: value`, `"key": "value"`, `key=value`: the value quoted, or up to a separator (a
# quote closing the text around it, `'Authorization: Bearer VALUE'`, kept); an
# `Authorization: Bearer VALUE` keeps its scheme word. A key starts a word (`(?<!...)`):
# scanning a long blob stays linear.
_PAIR = re.compile(r"""(?<![\w.-])(?P<q>["']?)(?P<key>[A-Za-z_][\w.-]*)(?P=q)"""
                   rf"""(?P<sep>[ \t]*[:=][ \t]*)(?P<scheme>{_SCHEME})?"""
                   r"""(?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;}\]#]*[^\s,;}\]#"'])""")
# A flag on a command line: `--api-key VALUE`, `--hf-token=VALUE`, `-password VALUE` (a value
# given apart from its flag does not start with `-`: that is the next flag).
_FLAG = re.compile(r"""(?<![\w-])(?P<flag>--?(?P<key>[A-Za-z][\w.-]*))"""
                   r"""(?P<sep>=|[ \t]+(?!-))"""
                   r"""(?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;}\]]*[^\s,;}\]"'])""")
# `Bearer|Basic|Token CREDENTIAL` anywhere; whether the word after it is one: `_credential_word`.
_AUTH = re.compile(r"(?<![\w-])(?P<scheme>(?i:bearer|basic|token)[ \t]+)"
                   r"(?P<value>[\w+/.~-]{8,}={0,2})(?![\w+/.~=-])")
# A word that every credential key holds (`is_secret_key`), and the schemes of `_AUTH`: a
# string (a run's LLM texts, mostly) holding none of them is not scanned, in a fraction of the
# time a scan takes.
_KEY_WORDS = ("pass", "pwd", "pw", "secret", "credential", "cookie", "auth", "user",
              "endpoint", "key", "token", "pat", "bearer")
_AUTH_WORDS = ("bearer", "basic", "token")
_EMPTY = frozenset({"null", "~", '""', "''", REDACTED})


def _redact_line(line: str) -> str:
    return mask_text(_mask_written_credentials(line, prose=False), REDACTED)


def _mask_written_credentials(text: str, prose: bool) -> str:
    """`text` with the values of its credential pairs, flags and `Bearer ...` masked. In
    `prose` (a string value: an LLM's text, a prompt) `User: What should I do?` is a speaker,
    not a user name: a `user` pair is masked there only when its value ends the line."""
    def mask_pair(m: re.Match) -> str:
        key = m["key"].rsplit(".", 1)[-1]  # `interface.password=...`, a Hydra override
        if not key or not is_secret_key(key) or m["value"] in _EMPTY:
            return m[0]
        if prose and key.lower() == "user" and ":" in m["sep"] and _more_words(m):
            return m[0]
        return f"{m['q']}{m['key']}{m['q']}{m['sep']}{m['scheme'] or ''}{_masked(m['value'])}"

    def mask_flag(m: re.Match) -> str:  # `--interface.password VALUE`: its last part
        if not is_secret_key(m["key"].rsplit(".", 1)[-1]) or m["value"] in _EMPTY:
            return m[0]
        return f"{m['flag']}{m['sep']}{_masked(m['value'])}"

    def mask_auth(m: re.Match) -> str:
        if not _credential_word(m["value"]):
            return m[0]
        return f"{m['scheme']}{REDACTED}"

    lower = text.lower()
    if any(word in lower for word in _KEY_WORDS):
        if ":" in text or "=" in text:
            text = _PAIR.sub(mask_pair, text)
        if "-" in text:
            text = _FLAG.sub(mask_flag, text)
    if any(word in lower for word in _AUTH_WORDS):
        text = _AUTH.sub(mask_auth, text)
    return text


def _masked(value: str) -> str:
    quote = value[0] if value[0] in "\"'" else ""
    return f"{quote}{REDACTED}{quote}"


def _more_words(m: re.Match) -> bool:
    """Whether more words follow a pair's value on its line: `User: What should I do?`."""
    rest = m.string[m.end():].partition("\n")[0]
    return bool(rest.strip(" \t\r,;"))


def _credential_word(word: str) -> bool:
    """Whether the word after `Bearer`, `Basic` or `Token` is a credential, not prose ("Token
    economy", "Basic principles"): letters mixed with digits, base64 padding, or base64's
    mixed case (`dXNlcjpwYXNz`)."""
    if any(c.isdigit() for c in word) and any(c.isalpha() for c in word):
        return True
    if word.endswith("="):
        return True
    return len(word) >= 12 and sum(c.isupper() for c in word) >= 3 and sum(
        c.islower() for c in word) >= 3


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


def _redact_text(text: str, texts: bool) -> str:
    if looks_like_credential(text):
        return REDACTED
    return mask_text(text if texts else _mask_written_credentials(text, prose=True), REDACTED)
