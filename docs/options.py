"""Every command's page, docs/commands/COMMAND.md, with its options table generated from the CLI itself;
docs/orders.md's tables of the registered orders and parallel modes, and docs/tokenize.md's table of the
registered codecs with their pages (docs/codecs/), generated from the registries.

`make docs` (python docs/options.py) writes each table between its page's `<!-- options -->` (or
`<!-- registry -->`) markers and leaves the prose around it alone; a missing page starts from the command's
own help. tests/test_docs.py fails when a page's table and `vistok COMMAND --help`, or the registries,
disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from vistok.cli import command
from vistok.tokenize.orders import order_class, order_examples
from vistok.tokenize.parallel import mode_examples, mode_usages, parse_mode

PAGES = Path(__file__).resolve().parent / "commands"
BLOCK = re.compile(r"<!-- options -->\n.*?<!-- /options -->\n", re.S)
ORDERS_PAGE = Path(__file__).resolve().parent / "orders.md"
REGISTRY = re.compile(r"<!-- registry -->\n.*?<!-- /registry -->\n", re.S)
TOKENIZE_PAGE = Path(__file__).resolve().parent / "tokenize.md"
CODEC_PAGES = Path(__file__).resolve().parent / "codecs"
ORDER_TRAITS = ("over_units", "axis", "scales", "segmented", "random", "uniform", "stored", "after_dc", "dc_first",
                "adaptive")
MODE_TRAITS = ("co_attend", "cut", "whole", "clips", "steps", "lanes", "unit_lanes", "default_order")


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


def registry() -> str:
    """The registered orders and modes with their declared traits, and which orders each mode takes."""
    from vistok.tokenize.orders import parse_order

    by_class: dict = {}
    for example in order_examples():
        by_class.setdefault(order_class(example.partition(":")[0]), []).append(example)
    lines = ["| order | what it is | " + " | ".join(ORDER_TRAITS) + " |", "|" + " --- |" * (len(ORDER_TRAITS) + 2)]
    for cls, examples in by_class.items():
        names = _cell(", ".join(f"`{e.partition(':')[0]}{cls.params}`" for e in examples))
        traits = [getattr(cls, t) for t in ORDER_TRAITS]
        cells = ["yes" if v is True else "" if v in (False, None) else "per inner order" if isinstance(v, property)
                 else f"`{v}`" for v in traits]
        lines.append(f"| {names} | {_cell(cls.summary)} | " + " | ".join(cells) + " |")
    lines += ["", "| mode | what it is | takes these orders (of the examples above) | " + " | ".join(MODE_TRAITS) + " |",
              "|" + " --- |" * (len(MODE_TRAITS) + 3)]
    for usage, example in zip(mode_usages(), mode_examples()):
        mode = parse_mode(example)
        takes = [o for o in order_examples() if mode.refusal(parse_order(o)) is None]
        cells = ["yes" if v is True else "" if v is False else f"`{v}`" for v in (getattr(mode, t) for t in MODE_TRAITS)]
        lines.append(f"| `{_cell(usage)}` | {_cell(mode.summary)} | {', '.join(f'`{o}`' for o in takes)} | "
                     + " | ".join(cells) + " |")
    return "<!-- registry -->\n" + "\n".join(lines) + "\n<!-- /registry -->\n"


def codec_page(codec_id: str) -> Path:
    """The page of a codec: the one in docs/codecs/ whose title names `--codec ID` (bsq and vq share one)."""
    pages = [p for p in sorted(CODEC_PAGES.glob("*.md")) if f"`--codec {codec_id}`" in p.read_text().split("\n")[0]]
    if len(pages) != 1:
        raise SystemExit(f"codec {codec_id}: {len(pages)} pages in docs/codecs/ name `--codec {codec_id}` in their title")
    return pages[0]


def codec_registry() -> str:
    """The registered codecs, each with its summary and its page."""
    from vistok.tokenize.base import codec_classes

    lines = ["| codec | what its tokens are | page |", "| --- | --- | --- |"]
    for cls in codec_classes():
        page = codec_page(cls.codec_id)
        lines.append(f"| `{cls.codec_id}` | {_cell(cls.summary)} | [{page.stem}](codecs/{page.name}) |")
    return "<!-- registry -->\n" + "\n".join(lines) + "\n<!-- /registry -->\n"


def _refresh(path: Path, block: str, changed: list[str]) -> None:
    old = path.read_text()
    if not REGISTRY.search(old):
        raise SystemExit(f"{path.name} has no <!-- registry --> block")
    new = REGISTRY.sub(lambda _: block, old, count=1)
    if new != old:
        path.write_text(new)
        changed.append(f"../{path.name}")


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
    _refresh(ORDERS_PAGE, registry(), changed)
    _refresh(TOKENIZE_PAGE, codec_registry(), changed)
    print(f"docs/commands: {', '.join(changed) or 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
