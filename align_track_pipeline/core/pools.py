"""A store's pool name: what serialises the writers of one store, whichever trackers they are.

Dagster accepts any pool name without whitespace (`^\\S+$`); the name is shown in the UI
(Deployment > Concurrency) and in `align-track ingest`'s messages, and MySQL-backed instances
index it on 255 characters. A store's address is its pool name as it is when it fits; one
with whitespace or unprintable characters, or longer than `MAX_LENGTH`, keeps a readable
head and tail and gains a short hash of the whole address, so two stores never share a name.
"""

from __future__ import annotations

import hashlib
import re

MAX_LENGTH = 100
_UNSAFE = re.compile(r"[\s\x00-\x20\x7f-\xa0]+")  # whitespace and control characters
_HASH_CHARS = 10
_KEEP = (MAX_LENGTH - _HASH_CHARS - 3) // 2  # head and tail around `..`, then `#` and the hash


def pool_name(address: str) -> str:
    """`address` if it is a safe pool name, else a safe, readable one unique to it."""
    if address and len(address) <= MAX_LENGTH and not _UNSAFE.search(address):
        return address
    safe = _UNSAFE.sub("_", address) or "_"
    if len(safe) > MAX_LENGTH - _HASH_CHARS - 1:
        safe = f"{safe[:_KEEP]}..{safe[-_KEEP:]}"
    digest = hashlib.sha256(address.encode()).hexdigest()[:_HASH_CHARS]
    return f"{safe}#{digest}"
