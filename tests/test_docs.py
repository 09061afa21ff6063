"""docs/commands: a page per command whose options table is the CLI's own, and docs/orders.md's table of the
registered orders and modes (`make docs` rewrites both)."""

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
