"""Every command's page, docs/commands/COMMAND.md, with its options table generated from the CLI itself.

`make docs` (python docs/options.py) writes the table between the page's `<!-- options -->` markers and
leaves the prose around it alone; a missing page starts from the command's own help. tests/test_docs.py
fails when a page's table and `vistok COMMAND --help` disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from vistok.cli import command

PAGES = Path(__file__).resolve().parent / "commands"
BLOCK = re.compile(r"<!-- options -->\n.*?<!-- /options -->\n", re.S)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def table(name: str, cmd) -> str:
    """The options of one command as `vistok NAME --help` prints them (arguments first), as a markdown table."""
    ctx = cmd.make_context(name, [], resilient_parsing=True)
    lines = ["| option | what it does |", "| --- | --- |"]
    for p in sorted(cmd.params, key=lambda p: p.param_type_name != "argument"):
        record = p.get_help_record(ctx)
        if record is None or p.name == "help":
            continue
        opt = f"{p.name.upper()}{'...' if p.nargs == -1 else ''}" if p.param_type_name == "argument" else record[0]
        lines.append(f"| `{_cell(opt)}` | {_cell(record[1])} |")
    return "<!-- options -->\n" + "\n".join(lines) + "\n<!-- /options -->\n"


def page(name: str, cmd, old: str | None) -> str:
    """The page with its table as the CLI has it now (a new page: the command's help, then the table)."""
    if old is None:
        return f"# `vistok {name}`\n\n{cmd.help.strip()}\n\n## Options\n\n{table(name, cmd)}"
    if not BLOCK.search(old):
        raise SystemExit(f"{name}.md has no <!-- options --> block")
    return BLOCK.sub(lambda _: table(name, cmd), old, count=1)


def main() -> int:
    PAGES.mkdir(exist_ok=True)
    changed = []
    for name, cmd in command().commands.items():
        path = PAGES / f"{name}.md"
        old = path.read_text() if path.exists() else None
        new = page(name, cmd, old)
        if new != old:
            path.write_text(new)
            changed.append(path.name)
    print(f"docs/commands: {', '.join(changed) or 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
