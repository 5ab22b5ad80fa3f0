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
from urllib.parse import quote

MASK = "***"

# `scheme://userinfo@`: the userinfo (`user:password` or a bare token) runs to the last `@`
# before any `/`, whitespace or quote, as HTTP clients read it: a password holding an
# unencoded `@`, `#` or `:` is masked whole.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)(?:[^/\s'\"<>@]*@)+")
# A password holding an unencoded `/` (generated ones often do): a URI parser ends the host part
# at it, so the pattern above stops there too. `user:` then a `/` and an `@` later in the same
# word is taken as userinfo to that word's last `@`, unless digits alone stand between the `:`
# and the `/`: that is a port (`host:5000/proxy/team@corp`).
_USERINFO_WITH_SLASH = re.compile(
    r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)[^/\s'\"<>@:]*:(?!\d*/)[^\s'\"<>@/]*/[^\s'\"<>]*@")


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
    return _masked_query(_userinfo_replaced(uri, lambda m: m["scheme"]))


def unencoded_in_password(uri: str) -> str | None:
    """A `/`, `?` or `#` the URI's user or password holds unencoded (generated passwords often
    do), which ends its host part for every URI parser: no client reaches the host meant.
    None when there is none."""
    for pattern in (_USERINFO_WITH_SLASH, _USERINFO):
        if found := pattern.search(uri):
            userinfo = found[0][len(found["scheme"]):]
            if bad := next((c for c in "/?#" if c in userinfo), None):
                return bad
    return None


def unencoded_message(what: str, uri: str) -> str | None:
    """The error for `unencoded_in_password`, naming the URI masked; None when it is fine."""
    bad = unencoded_in_password(uri)
    if bad is None:
        return None
    return (f"{what} {mask_text(uri)!r}: its user or password holds an unencoded {bad!r}, "
            f"which ends the host part: write it as {quote(bad, safe='')}")


def _userinfo_replaced(text: str, by: Callable[[re.Match], str]) -> str:
    return _USERINFO.sub(by, _USERINFO_WITH_SLASH.sub(by, text))


def mask_text(text: str, mask: str = MASK) -> str:
    """Any text (an error message, a traceback, a log line, a config value) with the userinfo
    of every URI in it replaced by `mask`: `http://***@host:5000/api/...`, and the value of
    every secret in a query: `...?password=***`."""
    return _masked_query(_userinfo_replaced(text, lambda m: f"{m['scheme']}{mask}@"), mask)


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
