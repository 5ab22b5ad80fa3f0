"""The fault table in docs/faults.md names, for each row, the tests that show it: each must
exist, so the table cannot cite a test that was renamed or deleted."""

import re

from tests.conftest import REPO


def test_every_test_the_fault_table_names_exists():
    table = (REPO / "docs" / "faults.md").read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", table)
    assert len(cited) >= 9
    for path, name in cited:
        source = (REPO / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name} not found"
