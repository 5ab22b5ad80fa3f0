from align_track_pipeline.core.tables.schema import schema_markdown
from tests.conftest import REPO


def test_readme_schema_section_matches_the_schema_module():
    """Regenerate with `./dev python -m align_track_pipeline.core.tables.schema`."""
    assert schema_markdown() in (REPO / "README.md").read_text()


def test_readme_commands_are_the_ones_ci_runs():
    readme = (REPO / "README.md").read_text()
    assert "./dev align-track ingest" in readme and "./dev pytest" in readme
    assert "./dev pytest" in (REPO / ".ci" / "run").read_text()
