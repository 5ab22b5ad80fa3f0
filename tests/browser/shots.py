"""Pictures of the UIs for the docs, taken by the browser tests that checked what they show."""

from pathlib import Path

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def docs_screenshot(page, name: str) -> None:
    """The page as the docs show it, `docs/images/<name>.png`: real and current, since each
    run of the browser tests takes it anew."""
    DOCS_IMAGES.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS_IMAGES / f"{name}.png"))
