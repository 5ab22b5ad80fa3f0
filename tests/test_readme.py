from align_track_pipeline.core.schema import schema_markdown
from tests.conftest import REPO


def test_schema_page_matches_the_schema_module():
    """Regenerate with `./dev python -m align_track_pipeline.cli.reference`."""
    assert schema_markdown() in (REPO / "docs" / "reference" / "schemas.md").read_text()


def test_readme_commands_are_the_ones_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    (test_command,) = [line for line in ci.splitlines() if line.startswith("./dev pytest")]
    assert "./dev align-track ingest" in readme and test_command in readme
    assert ci.index("./dev mkdocs build --strict") < ci.index(test_command)
    assert ci.index(".ci/provision") < ci.index(test_command)
