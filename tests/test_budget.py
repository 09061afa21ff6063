"""The house's size budget (`make lint` runs this): a narrow codec contract and functions that fit on a screen."""

import ast
from pathlib import Path

from vistok.tokenize.base import Codec

CODEC_PUBLIC = {"capabilities", "get_config", "from_config", "vocab", "encode", "encode_clip", "decode", "layout"}
CODEC_HOOKS = {"decode_frame", "frame_layout", "frame_tokens"}  # what a codec author implements besides encode
MAX_FUNCTION_LINES = 60


def test_the_codec_contract_stays_narrow():
    own = {n for n, v in vars(Codec).items() if callable(v) or isinstance(v, property | classmethod)}
    own = {n for n in own if not n.startswith("__")}
    assert {n for n in own if not n.startswith("_")} == CODEC_PUBLIC | CODEC_HOOKS
    assert len(CODEC_PUBLIC) <= 8 and len(CODEC_HOOKS) <= 3
    assert own - CODEC_PUBLIC - CODEC_HOOKS <= {"_config_key"}


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in sorted((Path(__file__).parent.parent / "vistok").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: " + ", ".join(long)
