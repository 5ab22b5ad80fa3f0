"""What the tests need from the system (Postgres, Chromium) is installed by `.ci/provision`, not
by the tests: missing here, a test skips and says why; missing in CI, it fails."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks.postgres import server_binaries
from tests.conftest import REPO, require


def test_a_missing_tool_skips_with_the_reason_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^frobnicator is not installed "
                                                    r"\(\.ci/provision installs it\)$"):
        require(False, "frobnicator")
    require(True, "frobnicator")  # present: nothing happens


@pytest.mark.parametrize("value", ["1", "true"])
def test_a_missing_tool_fails_in_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="frobnicator is not installed"):
        require(False, "frobnicator")


def test_provision_does_nothing_once_done():
    """Everything present (as after a first run), `.ci/provision` installs nothing, says
    nothing and returns at once: `.ci/run` calls it every time."""
    require(server_binaries() is not None, "PostgreSQL")  # where the Postgres tests look
    require(Path("/usr/bin/chromium").exists(), "chromium")
    done = subprocess.run([str(REPO / ".ci" / "provision")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
