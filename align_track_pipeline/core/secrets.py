"""Credentials in URIs kept out of whatever is shown or stored.

A user may write a password into a store's URI (`http://alice:PASSWORD@host:5000`,
`postgresql+psycopg2://user:PASSWORD@host/db`); the real URI is what connects, and only a
masked one is ever printed, logged or recorded. Libraries put the URI they were given into
their error messages ("API request to http://alice:PASSWORD@... failed"), so every error text
that is reported or stored goes through `mask_text` first.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

MASK = "***"

# `scheme://userinfo@`: the userinfo (`user:password` or a bare token) runs to the last `@`
# before any `/`, whitespace or quote, as HTTP clients read it: a password holding an
# unencoded `@`, `#` or `:` is masked whole.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)(?:[^/\s'\"<>@]*@)+")


# A secret in a URI's query (`postgresql+psycopg2://host/db?password=PASSWORD`, which libpq and
# psycopg2 take, or `?token=...`): its value, to the next `&`, `#`, whitespace or quote.
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|sslpassword|token|access_token|secret|api_key|"
    r"apikey|key|sig|signature|client_secret|x-amz-signature|x-amz-credential|"
    r"x-amz-security-token|x-goog-signature|x-goog-credential)=)[^&#\s'\"<>]*", re.IGNORECASE)
# A webhook's address is its credential: whoever has it can post (Slack, Discord).
_WEBHOOK = re.compile(r"(?P<base>https?://(?:hooks\.slack\.com/(?:services|workflows|triggers)/"
                      r"|(?:www\.)?discord(?:app)?\.com/api/webhooks/))[^\s'\"<>]+")


def without_credentials(uri: str) -> str:
    """The URI without its `user:password@` part, and with the value of a secret in its query
    masked: safe to show and to record, and the same for every user of one store (part of a
    partition's freshness)."""
    return _masked_query(_USERINFO.sub(lambda m: m["scheme"], uri))


def mask_text(text: str, mask: str = MASK) -> str:
    """Any text (an error message, a traceback, a log line, a config value) with the userinfo
    of every URI in it replaced by `mask`: `http://***@host:5000/api/...`, and the value of
    every secret in a query: `...?password=***`."""
    return _masked_query(_USERINFO.sub(lambda m: f"{m['scheme']}{mask}@", text), mask)


def _masked_query(text: str, mask: str = MASK) -> str:
    """The secrets in a URI's query, and a webhook's path, masked."""
    text = _WEBHOOK.sub(lambda m: f"{m['base']}{mask}", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{mask}", text)


class MaskedError(Exception):
    """An error whose text held credentials, raised again with them masked. Its message is
    the original's, `module.Type: message`; the original is dropped (its text holds them)."""


@contextmanager
def credentials_masked(log: Callable[[str], None]) -> Iterator[None]:
    """Errors raised in the block leave it without credentials: one whose message or
    traceback holds a URI's userinfo is logged through `log` as a masked traceback and
    replaced by a `MaskedError`; any other is raised as it is."""
    try:
        yield
    except Exception as exc:
        text = "".join(traceback.format_exception(exc))
        masked = mask_text(text)
        if masked == text:
            raise
        log(masked)
        kind = type(exc)
        raise MaskedError(mask_text(f"{kind.__module__}.{kind.__qualname__}: {exc}")) from None
