"""A change to the tables' columns comes with a new parser version: without one, the files
already written keep the old columns, `ingest` calls them fresh, and every reading command
fails on them until something else rewrites them."""

import hashlib

from align_track_pipeline.core.schema import TABLES
from align_track_pipeline.core.versions import PARSER_VERSION

# The tables' columns (name, type, nullable) as of each parser version that changed them.
COLUMNS_OF_VERSION = {"7": "eb7af8e7ae9feff5"}


def _columns_digest() -> str:
    columns = [(table, [(f.name, str(f.type), f.nullable) for f in schema])
               for table, schema in TABLES.items()]
    return hashlib.blake2b(repr(columns).encode(), digest_size=8).hexdigest()


def test_the_columns_changed_only_with_the_parser_version():
    assert COLUMNS_OF_VERSION.get(PARSER_VERSION) == _columns_digest(), (
        "the tables' columns changed: bump PARSER_VERSION (core/versions.py) and record "
        f"{{{PARSER_VERSION!r}+1: {_columns_digest()!r}}} here")
