"""docs/commands: a page per command whose options table is the CLI's own; docs/orders.md's table of the
registered orders and modes and docs/tokenize.md's of the codecs, each with its page (`make docs` rewrites them);
links that resolve."""

import importlib.util
import re
from pathlib import Path

import pytest

from vistok.cli import command, main

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("docs_options", ROOT / "docs" / "options.py")
options = importlib.util.module_from_spec(spec)
spec.loader.exec_module(options)


@pytest.mark.parametrize("name", sorted(command().commands))
def test_each_command_has_a_page_whose_options_are_its_help(name, capsys):
    cmd = command().commands[name]
    page = (ROOT / "docs" / "commands" / f"{name}.md").read_text()
    assert options.table(name, cmd) in page, f"docs/commands/{name}.md is stale: run make docs"
    with pytest.raises(SystemExit):
        main([name, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for flag in re.findall(r"^\| `(-[^` ,]+)", page, re.M):  # every option of the page is one --help lists
        assert flag in shown, (name, flag)


def test_a_page_keeps_its_prose_when_the_table_is_rewritten():
    cmd = command().commands["verify"]
    old = "# verify\n\nwords a person wrote\n\n<!-- options -->\n| stale |\n<!-- /options -->\n\nmore words\n"
    new = options.page("verify", cmd, old)
    assert new.startswith("# verify\n\nwords a person wrote\n\n") and new.endswith("\nmore words\n")
    assert options.table("verify", cmd) in new and "| stale |" not in new


def test_the_orders_page_lists_the_registries_as_they_are():
    assert options.registry() in (ROOT / "docs" / "orders.md").read_text(), "docs/orders.md is stale: run make docs"


def test_every_codec_has_a_page_and_the_codec_table_is_the_registry():
    from vistok.tokenize.base import codec_ids

    pages = {options.codec_page(c).name for c in codec_ids()}  # each codec's one page, or SystemExit
    assert pages == {p.name for p in (ROOT / "docs" / "codecs").glob("*.md")}, "a page in docs/codecs names no codec"
    assert options.codec_registry() in (ROOT / "docs" / "tokenize.md").read_text(), "docs/tokenize.md is stale: run make docs"


def test_every_relative_link_in_the_docs_resolves():
    pages = [*(ROOT / "docs").rglob("*.md"), ROOT / "README.md", ROOT / "ARCHITECTURE.md"]
    broken = [f"{p.relative_to(ROOT)}: {link}" for p in pages for link in re.findall(r"\]\(([^)\s]+)\)", p.read_text())
              if not link.startswith(("http:", "https:", "#", "mailto:"))
              and not (p.parent / link.split("#")[0]).exists()]
    assert not broken, broken
