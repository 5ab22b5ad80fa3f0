"""The generated parts of the docs: the CLI reference from `align-track`'s own argument parser,
the configuration table from `core/settings.py` and the table schemas, so no flag, variable or
column can be documented differently from what the code does.

    ./dev python -m align_track_pipeline.cli.reference          # rewrite the generated parts
    ./dev python -m align_track_pipeline.cli.reference --check  # exit 1 when one is stale

Each generated part sits in its page between `<!-- generated: NAME -->` and
`<!-- end: NAME -->`; the text around it is written by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from align_track_pipeline.core.schema import schema_markdown
from align_track_pipeline.core.settings import settings_markdown

REPO = Path(__file__).resolve().parents[2]
USAGE_WIDTH = 100


def cli_markdown() -> str:
    """Every command's usage and options, in the parser's order."""
    from align_track_pipeline.cli.main import _parser

    parser = _parser()
    parts = [f"```\n{_usage(parser)}\n```\n"]
    for name, help_, cmd in commands(parser):
        parts.append(f"## `align-track {name}`\n\n{_sentence(help_)}\n\n"
                     f"```\n{_usage(cmd)}\n```\n\n{_options_table(cmd)}")
    return "\n".join(parts)


def commands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand. argparse keeps these in private attributes
    (`_actions`, `_choices_actions`); `tests/test_docs.py` fails if that changes."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    return [(name, helps.get(name, ""), cmd) for name, cmd in sub.choices.items()]


def arguments(cmd: argparse.ArgumentParser) -> list[argparse.Action]:
    """A command's arguments without `--help` (argparse's private `_actions`, as above)."""
    return [a for a in cmd._actions if not isinstance(a, argparse._HelpAction)]


def _usage(cmd: argparse.ArgumentParser) -> str:
    """The usage line as `--help` prints it, at a fixed width so the page is reproducible
    (the parser is built afresh for each page, so changing its formatter is harmless)."""
    cmd.formatter_class = partial(argparse.HelpFormatter, width=USAGE_WIDTH)
    return cmd.format_usage().strip()


def _options_table(cmd: argparse.ArgumentParser) -> str:
    lines = ["| argument | value | default | meaning |", "|---|---|---|---|"]
    for action in arguments(cmd):
        name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
        lines.append(f"| {name} | {_value(action)} | {_default(action)} | "
                     f"{_escape(_help(action, cmd.prog))} |")
    return "\n".join(lines) + "\n"


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices:
        return " \\| ".join(f"`{c}`" for c in action.choices)
    return f"`{action.metavar or action.dest.upper()}`"


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, [], argparse.SUPPRESS):
        return ""
    if action.required:
        return "required"
    return f"`{action.default}`"


def _help(action: argparse.Action, prog: str) -> str:
    """The help text with argparse's `%(...)s` and `%%` expanded, as `--help` shows it."""
    return action.help % {**vars(action), "prog": prog} if action.help else ""


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "." if text else ""


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


# page (relative to the repository) -> generated part name -> its text
GENERATED: dict[str, dict[str, Callable[[], str]]] = {
    "docs/reference/cli.md": {"cli": cli_markdown},
    "docs/reference/configuration.md": {"settings": settings_markdown},
    "docs/reference/schemas.md": {"schemas": schema_markdown},
}


def render(page: str, text: str) -> str:
    """`text` with each generated part of `page` replaced by what the code says now."""
    for name, make in GENERATED[page].items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{page}: no <!-- generated: {name} --> ... <!-- end: {name} -->")
        text = pattern.sub(lambda m, make=make: m.group(1) + "\n" + make() + "\n" + m.group(2),
                           text)
    return text


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = []
    for page in GENERATED:
        path = REPO / page
        old = path.read_text()
        new = render(page, old)
        if new != old:
            stale.append(page)
            if not check:
                path.write_text(new)
    for page in stale:
        print(f"{page}: {'stale' if check else 'rewritten'}", file=sys.stderr)
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
