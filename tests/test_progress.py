import io

from vistok.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal_and_nothing_when_quiet():
    out = io.StringIO()
    with Progress("shard", 4, "inputs", out, interval=3600) as p:
        for _ in range(4):
            p.advance(1, info="0 errors")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shard 4/4 inputs") and "inputs/s" in lines[0]
    assert "ETA" in lines[0] and lines[0].endswith("0 errors")
    quiet = io.StringIO()
    with Progress("shard", 4, "inputs", quiet, quiet=True) as p:
        p.advance(4)
        p.note("hello")
    assert quiet.getvalue() == ""


def test_a_terminal_gets_a_rich_bar():
    out = _Tty()
    with Progress("train", 10, "steps", out) as p:
        p.note("model tiny")
        p.advance(10, info="loss 1.0")
    text = out.getvalue()
    assert "train" in text and "10/10" in text and "steps/s" in text and "model tiny" in text
