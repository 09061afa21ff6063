"""Orders and parallel modes are registered objects: what they allow is declared once, read everywhere.

The matrix of codecs x orders x modes comes from the registries (a new order or mode is in it the moment it is
registered), every registered name is exercised, and no module outside the registries tells orders or modes
apart by name (a grep over the package's syntax trees).
"""

import ast
from pathlib import Path

import numpy as np
import pytest

import vistok
from vistok.errors import UsageError
from vistok.tokenize import JpegCodec, PixelCodec, WaveletCodec
from vistok.tokenize.orders import (
    DcFirst,
    Order,
    compute_stored,
    order_class,
    order_examples,
    order_names,
    parse_order,
)
from vistok.tokenize.parallel import ParallelMode, mode_examples, mode_names, parse_mode
from vistok.tokenize.stream import StreamSpec, check_parallel, order_record

PACKAGE = Path(vistok.__file__).parent
REGISTRIES = {"tokenize/orders.py", "tokenize/parallel.py"}


ORDERS = order_examples()
MODES = ["", *mode_examples()]


def test_every_registered_name_has_an_example_that_parses():
    assert {o.partition(":")[0] for o in ORDERS} == set(order_names())
    assert {m.partition(":")[0] for m in MODES if m} == set(mode_names())
    for o in ORDERS:
        assert isinstance(parse_order(o), Order) and str(parse_order(o)) == o
    for m in MODES[1:]:
        assert isinstance(parse_mode(m), ParallelMode) and str(parse_mode(m)) == m


def _codecs():
    return {"jpeg-dense": JpegCodec(quality=50, layout="dense"), "jpeg-rle": JpegCodec(quality=50),
            "wavelet-dense": WaveletCodec(levels=2, layout="dense"), "pixels": PixelCodec(bits=4, unit=2)}


@pytest.mark.parametrize("mode", MODES)
def test_the_matrix_from_the_registries_is_followed_or_refused_with_a_reason(mode, photo):
    """Every codec x registered order x this mode: a plan whose groups are whole and in stream order, or one
    UsageError line. A spec refused without data is refused with data too (`StreamSpec.parse` first)."""
    planned = 0
    for codec in _codecs().values():
        rec = codec.encode(photo[200:232, 200:232], "r")
        rec.orders.update(compute_stored(codec, rec, None, ("gradwalk:max",)))
        for order in ORDERS:
            try:
                spec = StreamSpec.parse(order, mode, block_size=256)
            except UsageError as exc:
                assert "\n" not in str(exc)
                with pytest.raises(UsageError):
                    order_record(codec, rec, StreamSpec.parse(order, mode), np.random.default_rng(0))
                continue
            try:
                check_parallel(codec, spec.order, spec.parallel)
                o = order_record(codec, rec, spec, np.random.default_rng(0))
            except UsageError as exc:
                assert "\n" not in str(exc) and str(exc)
                continue
            planned += 1
            assert sorted(o.perm.tolist()) == list(range(len(rec.tokens)))
            if spec.parallel is not None:
                assert o.groups is not None and (np.diff(o.groups) >= 0).all() and o.groups[0] == 0
    assert planned > 0, f"no order of any codec takes --parallel {mode or '(none)'}"


def test_traits_are_what_the_refusals_read():
    assert parse_mode("segments").refusal(parse_order("randsac:4")) is None
    assert "segments" in parse_mode("segments").refusal(parse_order("raster"))
    assert parse_mode("any").refusal(parse_order("dc-first")) is None
    assert parse_mode("masked:0.5").refusal(parse_order("random")) is None
    assert parse_mode("scales").refusal(parse_order("next-scale")) is None
    assert isinstance(parse_order("dc-first:slic:3"), DcFirst) and parse_order("dc-first:slic:3").thumbnail
    assert parse_order("dc-first:randsac:3").segmented and not parse_order("dc-first:hilbert").segmented
    assert order_class("gradwalk").stored and not order_class("random").stored
    with pytest.raises(UsageError, match="available"):
        parse_order("nonsense")
    with pytest.raises(UsageError, match="--parallel takes"):
        parse_mode("bogus")


def _order_strings(node) -> list[str]:
    """String constants a comparison or call tests against (one, or a tuple/list/set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _order_strings(e)]
    return []


def _registered(text: str) -> bool:
    base = text.partition(":")[0]
    return base in order_names() or base in mode_names()


def _name_tests(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):  # x == "random", x in ("segments", "scales")
            for side in [node.left, *node.comparators]:
                found += [(node.lineno, s) for s in _order_strings(side) if _registered(s)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "startswith", "endswith"):  # order.startswith("gradwalk")
            found += [(node.lineno, s) for a in node.args for s in _order_strings(a) if _registered(s)]
        elif isinstance(node, ast.Dict):  # {"any": True, "segments": False}: a table keyed by names
            keys = [s for k in node.keys if k is not None for s in _order_strings(k) if _registered(s)]
            if len(keys) >= 2:
                found.append((node.lineno, ", ".join(keys)))
    return found


def test_no_module_outside_the_registries_tells_orders_or_modes_apart_by_name():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in REGISTRIES:
            continue
        offenders += [f"vistok/{rel}:{line}: {s!r}" for line, s in _name_tests(ast.parse(path.read_text()))]
    assert not offenders, "read the order's or mode's traits instead:\n" + "\n".join(offenders)


def test_the_grep_finds_what_it_is_for():
    src = 'if order == "random" or p in ("segments", "any") or o.startswith("gradwalk"): t = {"any": 1, "masked": 2}'
    assert [s for _, s in _name_tests(ast.parse(src))] == ["random", "segments", "any", "gradwalk", "any, masked"]
