"""Ordered streams: the cells of a record in an order a decoder can follow, and the grammar that follows it.

An order never looks at the tokens. `plan` permutes a geometry's cells (`Codec.cells`: self-delimiting
pieces whose places are fixed by the geometry) with the named order and its seeded generator, so where
every next token goes is a function of the stream's prefix and of content-independent randomness. Two
kinds of request are refused, with the reason:

- an order over units (spatial, random, randsac, gradwalk) when a cell spans every unit (a run-length
  coded wavelet band), and an order over an axis that is not known before its tokens (JPEG `freq-major`
  with rle blocks: which blocks have a coefficient at a frequency is content);
- group-parallel prediction (`parallel`) where a cell is not exactly one token, and on clips but by scales.

Group-parallel plans cut the order into groups predicted at once: randsac segments (`segments`), whole
scales (`scales`; on clips a group per frame and scale, its FRAME separator in the frame's coarsest group),
or with `any` a random order cut by a step schedule (`vistok.tokenize.schedule`), drawn per document in
training and fixed by `--steps N` at test time. A long stream is read in windows of whole groups, each
after as many earlier tokens as the row holds (`group_windows`). A wavefront plan (`ParallelMode.unit_lanes`)
is in waves of units, a lane per unit, its cells of any length (`Plan.lanes`; rows:
`vistok.train.data._lane_docs`).

Orders and parallel modes are registered objects (`orders.Order`, `parallel.ParallelMode`): what a request
needs, and why it is refused, is read from their declared traits, and `StreamSpec` is the checked request.

Side information is counted, not hidden: a stored `gradwalk` order is computed from the pixels, so a
decoder needs it sent; `order_bits` is the length of a simple code for it (see `orders.walk_bits`).

`StreamGrammar` runs a codec's cell grammar along a plan: `allowed()` (a vocabulary mask), `step(tok)`
(the token's coordinates), `next_known()` (where the next token goes, on the known axes), and for
group-parallel sampling `group()` (the places and masks of every token of the next group). Rebuilding
a record from an ordered stream is `canonical()`: the tokens gathered back by cell.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from vistok.errors import UsageError
from vistok.record import TokenRecord
from vistok.tokenize.base import BOS, EOS, FRAME, Codec, Layout
from vistok.tokenize.orders import (
    DC_ORDERS,
    DcFirst,
    DcImageOrder,
    Order,
    as_order,
    dc_unit_order,
    stored_key,
    units_to_tokens,
    walk_bits,
)
from vistok.tokenize.parallel import Cut, ParallelMode, as_mode
from vistok.tokenize.region import Region


@dataclass(frozen=True)
class Plan:
    cells: np.ndarray  # (n_cells,) cell ids in stream order
    groups: np.ndarray | None = None  # (n_cells,) group of each cell in stream order, 0, 1, ... (parallel)
    order_bits: float = 0.0  # bits a decoder must be sent to know the order (stored, content-aware orders)
    segments: np.ndarray | None = None  # (n_cells,) randsac segment of each cell in stream order (visit rank)
    # an order computed from the DC image (`dc-first:slic:N`...): cells from `pending_from` on are placeholders
    # until the DC cells are decoded; `complete_from(thumbnail)` then gives the whole plan (`StreamGrammar` calls it)
    pending_from: int = 0
    complete_from: Callable[[np.ndarray], Plan] | None = field(default=None, compare=False, repr=False)
    # an order the model chooses (`Order.adaptive`, `--order confident`): the groups are fixed, and the cells of
    # each are chosen when it comes (`StreamGrammar.choose`); until then they are the rest in canonical order
    adaptive: Order | None = field(default=None, compare=False, repr=False)
    given: int = 0  # a completion (`known_first`): its first `given` cells are the known region's
    lanes: np.ndarray | None = None  # (n_cells,) a wavefront plan (`Plan.groups`: waves): the lane (unit) of each cell

    def rank(self) -> np.ndarray:
        """(n_cells,) each cell's position in the stream (the inverse of `cells`)."""
        out = np.empty(self.cells.size, dtype=np.int64)
        out[self.cells] = np.arange(self.cells.size)
        return out

    @property
    def n_groups(self) -> int:
        return int(self.groups[-1]) + 1 if self.groups is not None and self.groups.size else 0


@dataclass(frozen=True)
class StreamSpec:
    """An ordered stream as a run names it: the order, the parallel mode (None: token by token), the model
    steps of an `any` run at test time (None: as in training), and the row (context `block_size`, `stride`)
    whose windows cut its groups. `parse` refuses, with the reason, whatever needs no data; `plan` refuses
    what the codec and the geometry decide. Old runs' strings parse into the same spec."""

    order: Order
    parallel: ParallelMode | None = None
    steps: int | None = None
    block_size: int = 0
    stride: int = 0

    @classmethod
    def parse(cls, order: str | Order = "canonical", parallel: str | ParallelMode | None = "", steps: int | None = None,
              block_size: int = 0, stride: int = 0) -> StreamSpec:
        o, mode = as_order(order), as_mode(parallel)
        if mode is not None and (why := mode.refusal(o)) is not None:
            raise UsageError(why)
        if steps is not None and not (mode is not None and mode.steps):
            raise UsageError(f"--steps takes a run trained with --parallel any, not "
                             f"{'--parallel ' + str(mode) if mode else 'token by token'}")
        return cls(o, mode, steps, block_size, stride)

    @property
    def max_group(self) -> int:
        """The largest group a row holds (`group_limit`); 0 (no cut) token by token or without a context."""
        return group_limit(self.block_size, self.stride) if self.parallel is not None and self.block_size else 0


def _refuse(codec: Codec, what: str) -> UsageError:
    hint = f" ({codec.layout_hint})" if codec.layout_hint else ""
    return UsageError(f"codec {codec.codec_id}{_layout_words(codec)}: {what}{hint}")


def _layout_words(codec: Codec) -> str:
    layout = codec.get_config().get("layout")
    return f" with layout {layout}" if layout else ""


def refuse_partial(parallel: str | ParallelMode | None, what: str) -> None:
    """A mode that predicts part of an image from the rest (`masked:R`) cannot make a whole stream."""
    mode = as_mode(parallel)
    if mode is not None and not mode.whole:
        raise UsageError(f"a --parallel {mode} run predicts the masked units of an image from its visible ones; "
                         f"it cannot {what} a whole image (`vistok eval` scores it: bits of the masked part)")


def check_parallel(codec: Codec, order: str | Order, parallel: str | ParallelMode | None) -> None:
    """Refuse a parallel mode that does not fit the order (the mode's `refusal`) or the codec, before any data
    is read."""
    _check_cells(codec, StreamSpec.parse(order, parallel).parallel)


def _check_cells(codec: Codec, mode: ParallelMode | None) -> None:
    """A parallel mode needs one token per place, which a layout of variable-length cells does not have (but
    lanes, which go token by token)."""
    if mode is not None and not mode.unit_lanes and not codec.single_token_cells:
        raise _refuse(codec, "--parallel needs one token per place (a fixed number of tokens per unit), "
                             "and this layout's tokens are variable-length")


def cut_groups(groups: np.ndarray, most: int) -> np.ndarray:
    """Groups of more than `most` cells cut into consecutive runs of at most `most`, renumbered 0, 1, ...
    (a row must hold a group's tokens and its queries). A function of the plan alone, so a decoder cuts alike."""
    if most <= 0 or not groups.size:
        return groups
    first = np.flatnonzero(np.diff(groups, prepend=-1))  # each group's first cell
    offset = np.arange(groups.size) - np.repeat(first, np.diff(np.append(first, groups.size)))
    piece = offset // most
    return np.cumsum(np.concatenate([[True], (np.diff(groups) != 0) | (np.diff(piece) != 0)])) - 1


def as_spec(spec: StreamSpec | str | Order) -> StreamSpec:
    """A spec, or an order's name alone (token by token, no context): `plan("raster")` for short."""
    return spec if isinstance(spec, StreamSpec) else StreamSpec.parse(spec)


def plan(codec: Codec, meta: dict, spec: StreamSpec | str | Order, rng: np.random.Generator,
         stored: dict | None = None, thumbnail: np.ndarray | None = None, known: Region | None = None) -> Plan:
    """The cells of a stream with geometry `meta` as `spec` names it (see the module docstring): its order; its
    parallel mode, whose groups larger than `spec.max_group` are cut into runs of that many (`cut_groups`: what
    the spec's context holds); with `any`, `spec.steps` model steps on the test schedule (`schedule.ALL`: one
    token per step), or None: steps and schedule drawn from `rng` after the order, as in training
    (`vistok.tokenize.schedule`). `stored`: the record's stored orders (gradwalk). `thumbnail`: the DC image
    (`Layout.thumbnail`) for orders computed from it; without it such a plan is pending (`Plan`). `known`: a
    completion's stream, the known region's units first (`known_first`)."""
    spec = as_spec(spec)
    order, mode, max_group, steps = spec.order, spec.parallel, spec.max_group, spec.steps
    _check_cells(codec, mode)  # the spec has checked the pair already
    if known is not None:
        _check_completion(codec, meta, order, mode)
    if order.dc_first:
        return _dc_first(codec, meta, order, rng, mode, max_group, steps, thumbnail)
    if mode is not None and mode.unit_lanes:
        return _wavefront(codec, meta, mode, rng)
    cells = codec.layout(meta).cells
    pos = cells.positions if not stored else replace(cells.positions, stored=stored)
    if order.over_units and (pos.units < 0).any():
        raise _refuse(codec, f"order {str(order)!r} moves units around, but a cell of this layout spans every unit")
    _check_axis(codec, order)
    if order.adaptive:
        return _adaptive(cells, order, mode, rng, max_group, steps)
    res = order(pos, rng)
    perm, segments = res.perm, res.segments
    if known is not None:
        inside = known.units(pos.grid, pos.unit_pixels, int(meta["height"]), int(meta["width"]))
        u = pos.units[perm]
        return known_first(order, mode, perm, (u >= 0) & inside[np.maximum(u, 0)], rng, steps, max_group)
    clip = len(cells) > cells.per_frame
    if clip:  # clips: each frame's FRAME separator opens it
        o = np.lexsort((cells.in_frame[perm] >= 0, cells.frame[perm]))
        perm, segments = perm[o], None if segments is None else segments[o]
    bits = 0.0
    if order.stored:
        walk = np.asarray(stored[stored_key(str(order))], dtype=np.int64)
        per = pos.grid[0] * pos.grid[1]
        bits = sum(walk_bits(walk[f * per : (f + 1) * per] - f * per, pos.grid) for f in range(walk.size // per))
    if mode is None:
        return Plan(perm.astype(np.int64), None, bits, segments)
    if clip and not mode.clips:
        raise UsageError(f"--parallel {mode} predicts groups inside one image; clips take --parallel scales "
                         "(a group per frame and scale)")

    def scale_key() -> np.ndarray:  # a group per (frame, scale): coarser scales and earlier frames first
        scale = cell_scales(codec.layout(meta), order)
        return cells.frame[perm] * (int(scale.max()) + 1) + scale[perm]

    groups = mode.groups(Cut(perm.size, rng, steps, segments, pos.units[perm], scale_key)).astype(np.int64)
    return Plan(perm.astype(np.int64), cut_groups(groups, max_group) if mode.cut else groups, bits, segments)


def _wavefront(codec: Codec, meta: dict, mode: ParallelMode, rng: np.random.Generator) -> Plan:
    """A plan in lanes (`ParallelMode.unit_lanes`): the mode's waves in turn, each wave's units side by side in
    raster order, each unit's cells canonical. Its lanes run at once, token by token, blind to each other."""
    layout = codec.layout(meta)
    cells, pos = layout.cells, layout.cells.positions
    if len(cells) > cells.per_frame:
        raise UsageError(f"--parallel {mode} decodes one picture in waves; clips are predicted token by token")
    if (pos.units < 0).any():
        raise _refuse(codec, f"--parallel {mode} runs a lane per unit, but a cell of this layout spans every unit")
    if layout.grammar().open_ended:
        raise _refuse(codec, f"--parallel {mode} needs cells that end themselves; this layout's cells end at the "
                             "next cell's token, which another lane holds")
    waves = mode.groups(Cut(len(cells), rng, units=pos.units, grid=pos.grid)).astype(np.int64)
    perm = np.lexsort((np.arange(len(cells)), pos.units, waves))
    return Plan(perm.astype(np.int64), waves[perm], lanes=pos.units[perm].astype(np.int64))


def lane_steps(waves: np.ndarray, lanes: np.ndarray) -> int:
    """Model steps of a wavefront stream given per token in stream order (wave, lane): the sum over waves of
    their longest lane's tokens (the lanes of a wave run at once)."""
    if not waves.size:
        return 0
    starts = np.flatnonzero(np.diff(lanes, prepend=-1) != 0)  # each lane's first token
    longest = np.zeros(int(waves.max()) + 1, np.int64)
    np.maximum.at(longest, waves[starts], np.diff(np.append(starts, lanes.size)))
    return int(longest.sum())


def _check_completion(codec: Codec, meta: dict, order: Order, mode: ParallelMode | None) -> None:
    """Refuse a completion (a stream that starts with a known region) that no run of this kind can follow."""
    if int(meta.get("frames", 1)) > 1:
        raise UsageError("--known/--given complete an image; clips continue a prompt (vistok sample --prompt)")
    if order.dc_first or order.adaptive:
        raise UsageError(f"order {order} cannot start from a region: "
                         f"{'it sends the whole DC image first' if order.dc_first else 'the model chooses its places'}"
                         "; a run trained with --order random (token by token or --parallel any) can")
    if mode is not None and not mode.steps:
        raise UsageError(f"--parallel {mode} groups the stream its own way; completion takes a run that predicts "
                         "token by token or --parallel any")


def known_first(order: Order, mode: ParallelMode | None, perm: np.ndarray, inside: np.ndarray,
                rng: np.random.Generator, steps: int | None, max_group: int) -> Plan:
    """A completion's plan: the cells in `order`'s permutation `perm` with the known ones (`inside`, per cell in
    stream order) moved first. An order that draws every order of the units alike (`Order.uniform`) is still
    itself in both parts: the known units in a random order, then the rest in a random order, a stream such a
    run was trained on. Any other order follows only a region that its own stream sends first (raster: the
    top); asked for another, it is refused, saying why. With `--parallel any` the stream is cut by the step
    schedule (`steps`) and split where the region ends: the region's groups are given when sampling (no model
    step), and scoring sees both parts grouped as the run's schedule groups them."""
    k = int(inside.sum())
    if k == 0 or k == inside.size:
        raise UsageError(f"the known region covers {'no' if k == 0 else 'every'} unit of the image")
    if order.uniform:
        perm = np.concatenate([perm[inside], perm[~inside]])
    elif not inside[:k].all():
        raise UsageError(f"a run trained with --order {order} predicts each unit from the ones its order sends before "
                         "it, and the known region is not where its stream starts, so it cannot condition on it "
                         "(a raster model cannot predict the top from the bottom); train with --order random "
                         "(token by token or --parallel any) to complete from any region")
    if mode is None:
        return Plan(perm.astype(np.int64), given=k)
    groups = mode.groups(Cut(perm.size, rng, steps)).astype(np.int64)
    starts = np.diff(groups, prepend=-1) != 0
    starts[k] = True  # no group straddles the region's end
    return Plan(perm.astype(np.int64), cut_groups(np.cumsum(starts) - 1, max_group), given=k)


def _adaptive(cells, order: Order, mode: ParallelMode | None, rng: np.random.Generator, max_group: int,
              steps: int | None) -> Plan:
    """The plan of an order the model chooses: the mode's groups over the cells, their cells chosen later."""
    if mode is None or not mode.steps:
        raise UsageError(f"order {order} is chosen by an --parallel any run's model, a group per step: it takes "
                         f"--parallel any (got {'--parallel ' + str(mode) if mode else 'token by token'})")
    if len(cells) > cells.per_frame:
        raise UsageError(f"order {order} orders one image; clips are not supported")
    n = len(cells)
    groups = cut_groups(mode.groups(Cut(n, rng, steps)).astype(np.int64), max_group)
    return Plan(np.arange(n, dtype=np.int64), groups, 0.0, None, adaptive=order)


def _check_axis(codec: Codec, order: Order) -> None:
    """Refuse an order by an axis the codec lacks, or one known only once a token is read."""
    axis = order.axis
    if axis is not None and axis not in codec.axes:
        raise UsageError(f"order {str(order)!r} needs a {axis!r} axis; codec {codec.codec_id}'s axes are "
                         f"{', '.join(codec.axes)}")
    if axis is not None and axis not in codec.known_axes:
        raise _refuse(codec, f"order {str(order)!r} sorts by {axis!r}, which is known only once a token is read, so "
                             "the order would tell the model what the tokens are and the stream would not decode")


@lru_cache(maxsize=64)
def cell_scales(layout: Layout, order: str | Order) -> np.ndarray:
    """(n_cells,) the scale of each cell within its frame for a scale order (`Order.scales`), 0 = coarsest: a
    learned codec's `scale` axis; a wavelet's levels, the coarsest approximation (LL) a scale before its
    level's details (levels + 1 scales). A FRAME separator is at scale 0: it opens its frame's coarsest group.
    The geometry fixes it (read-only)."""
    pos, cells, order = layout.cells.positions, layout.cells, as_order(order)
    axis = order.axis
    if axis not in pos.axes:
        raise UsageError(f"order {str(order)!r} needs a {axis!r} axis; codec {layout.codec.codec_id}'s known axes are "
                         f"{', '.join(pos.axes)}")
    key = pos.coords[:, pos.axes.index(axis)] * 2
    if "band" in pos.axes:  # wavelet: the coarsest approximation (LL) is a scale before its level's details
        key = key + (pos.coords[:, pos.axes.index("band")] == 0)
    if order.descending:  # the highest level is the coarsest
        key = -key
    real = cells.in_frame >= 0
    out = np.zeros(len(cells), dtype=np.int64)
    out[real] = np.unique(key[real], return_inverse=True)[1].ravel()
    out.setflags(write=False)
    return out


def _dc_first(codec: Codec, meta: dict, order: DcFirst, rng: np.random.Generator, mode: ParallelMode | None,
              max_group: int, steps: int | None, thumb: np.ndarray | None) -> Plan:
    """`dc-first[:INNER]`: every DC cell in canonical order, then every other cell in INNER over the units.

    INNER is a geometry order (canonical, hilbert, random, randsac:K...) or one computed from the decoded DC
    image (`orders.DC_ORDERS`: slic:N, gradwalk:max|min; frontier is geometry). The DC image comes first, so
    a decoder computes the rest of the plan from the stream's prefix: without `thumb` a content order's plan
    is pending (the grammar completes it once the DC cells are decoded). Groups (parallel): the DC cells unit
    row by unit row, then the inner order's segments; or with `any` the schedule over the whole stream."""
    layout = codec.layout(meta)
    if layout.dc_cells is None:
        raise UsageError(f"codec {codec.codec_id}{_layout_words(codec)}: order {str(order)!r} sends the DC image first, and "
                         "this codec has no DC cells (--codec jpeg has them, without --temporal delta, whose SKIP "
                         "codes a block in one token; a wavelet's canonical order already sends its LL band first)")
    cells = layout.cells
    if len(cells) > cells.per_frame:
        raise UsageError(f"order {str(order)!r} orders one image; clips are not supported")
    inner = order.inner
    if not isinstance(inner, DcImageOrder) and not inner.after_dc:
        raise UsageError(f"dc-first takes an inner order of {', '.join(DC_ORDERS)} or any unit order, got {str(inner)!r}")
    pending = order.thumbnail and thumb is None
    start = copy.deepcopy(rng) if pending else None  # a pending plan is completed from the same draws
    dc, ac = np.flatnonzero(layout.dc_cells), np.flatnonzero(~layout.dc_cells)
    pos = cells.positions
    sub = replace(pos, units=pos.units[ac], coords=pos.coords[ac])
    if pending:
        perm, seg = np.arange(ac.size), None
    elif isinstance(inner, DcImageOrder):
        unit_order, unit_seg = dc_unit_order(str(inner), thumb, pos.grid)
        perm = units_to_tokens(sub.units, unit_order)
        seg = None if unit_seg is None else unit_seg[sub.units[perm]]
    else:
        res = inner(sub, rng)
        perm, seg = res.perm, res.segments
    out = np.concatenate([dc, ac[perm]]).astype(np.int64)
    groups = None
    if mode is not None:
        # the DC cells go unit by unit (canonical): its unit rows, then the inner order's segments (a placeholder
        # cell each while pending); mode `segments` (check_parallel refused layouts without one token per place)
        dc_rows = pos.units[dc] // pos.grid[1]
        regions = np.concatenate([dc_rows, dc_rows.max() + 1 + (np.arange(ac.size) if pending else seg)]) if (
            pending or seg is not None) else None
        regions = None if regions is None else np.concatenate([[0], np.cumsum(np.diff(regions) != 0)])
        groups = cut_groups(mode.groups(Cut(out.size, rng, steps, regions)).astype(np.int64), max_group)
    segments = None if seg is None else np.concatenate([np.full(dc.size, -1), seg]).astype(np.int64)
    if not pending:
        return Plan(out, groups, 0.0, segments)

    def complete(t: np.ndarray) -> Plan:
        return _dc_first(codec, meta, order, copy.deepcopy(start), mode, max_group, steps, t)

    return Plan(out, groups, 0.0, None, int(dc.size), complete)


def record_thumbnail(codec: Codec, record: TokenRecord) -> np.ndarray | None:
    """The DC image of a record (`Layout.thumbnail` of its DC cells' tokens), None for codecs without one."""
    layout = codec.layout(record.meta)
    if layout.dc_cells is None or int(record.meta.get("frames", 1)) > 1:
        return None
    return layout.thumbnail(record.tokens[layout.dc_cells[layout.token_cells(record)]])


@dataclass(frozen=True)
class Ordered:
    """A record's tokens in the order of a plan."""

    perm: np.ndarray  # (T,) tokens[perm] is the ordered stream
    cells: np.ndarray  # (T,) the cell of each token of the ordered stream
    groups: np.ndarray | None  # (T,) group of each token (parallel)
    plan: Plan
    segments: np.ndarray | None = None  # (T,) randsac segment of each token
    lanes: np.ndarray | None = None  # (T,) a wavefront stream: the lane of each token (`groups`: its wave)


def group_limit(block_size: int, stride: int = 0) -> int:
    """The largest group a window holds with one query slot per token (`group_windows`)."""
    return _new_positions(block_size, stride) // 2


def _new_positions(block_size: int, stride: int) -> int:
    """Positions a group-parallel window gives its new groups' tokens and queries (BOS takes one)."""
    return min(stride or block_size, block_size - 1)


def group_windows(groups: np.ndarray, block_size: int, stride: int = 0) -> list[tuple[int, int, int]]:
    """(start, new, stop) of the windows over a group-parallel stream (indices into the ordered stream): window
    w holds BOS, the tokens [start, stop), and a query slot for each token of [new, stop), whole groups that it
    predicts. The new groups take at most N = min(stride, block_size - 1) positions with their queries
    (2 (stop - new) <= N, greedily); the tokens just before them fill the rest of the row, C = block_size - 1
    - N of them (start = max(0, new - C)). With stride = block_size (a context's length: 0) C = 0 and every
    window starts from BOS alone (independent pieces); with a smaller stride every group after the first
    window is predicted from at least C tokens before it (a clip's frame from the frames before it). A
    function of the plan alone, so training, eval, sampling and a decoder cut alike."""
    n_new = _new_positions(block_size, stride)
    context = block_size - 1 - n_new
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], groups, [groups[-1] + 1]])))  # group starts, and the end
    widest = int(np.diff(bounds).max())
    if 2 * widest > n_new:
        raise UsageError(f"a group of {widest} tokens needs {2 * widest} positions with its queries; a window gives "
                         f"its new groups {n_new} (--block-size {block_size}, --stride {stride or block_size})")
    out, a = [], 0
    while a < len(bounds) - 1:
        b = a + 1
        while b < len(bounds) - 1 and 2 * (bounds[b + 1] - bounds[a]) <= n_new:
            b += 1
        new, stop = int(bounds[a]), int(bounds[b])
        out.append((max(0, new - context), new, stop))
        a = b
    return out


def order_record(codec: Codec, record: TokenRecord, spec: StreamSpec | str, rng: np.random.Generator,
                 known: Region | None = None) -> Ordered:
    spec = as_spec(spec)
    thumb = record_thumbnail(codec, record) if spec.order.thumbnail else None  # only orders that read it
    p = plan(codec, record.meta, spec, rng, record.orders, thumb, known)
    if p.adaptive is not None:  # training and teacher-forced scoring need every place known in advance
        raise UsageError(f"order {p.adaptive} is chosen by an --parallel any run's model while it decodes: train "
                         f"with --order random --parallel any, then eval, sample or compress with --order {p.adaptive}")
    tc = codec.layout(record.meta).token_cells(record)
    perm = units_to_tokens(tc, p.cells)
    cells = tc[perm]
    groups = lanes = None
    if p.lanes is not None:  # lanes go token by token: each token in its cell's wave and lane
        at = p.rank()[cells]
        groups, lanes = p.groups[at], p.lanes[at]
    elif p.groups is not None:
        if cells.size != p.cells.size:
            raise UsageError(f"record {record.key} uses escapes ({cells.size} tokens for {p.cells.size} places): "
                             "--parallel needs one token per place")
        groups = p.groups
    segments = None
    if p.segments is not None:
        segments = p.segments[p.rank()[cells]]
    return Ordered(perm, cells, groups, p, segments, lanes)


@lru_cache(maxsize=64)
def cell_places(layout: Layout) -> np.ndarray:
    """(n_cells, 2) each cell's place for local attention (`vistok.nn.attention`): (frame, unit row within its
    frame); -1 (everywhere) for FRAME separators and cells that span every unit. The geometry fixes it, so
    it is computed once per layout (read-only)."""
    cells = layout.cells
    u, (rows, cols) = cells.positions.units, cells.positions.grid
    per = rows * cols
    out = np.stack([u // per, (u % per) // cols], axis=1).astype(np.int64)
    out[(u < 0) | (cells.in_frame < 0)] = -1
    out.setflags(write=False)
    return out


def check_local(codec: Codec, meta: dict) -> None:
    """Refuse local attention where a cell spans every unit (it has no place to be near)."""
    cells = codec.layout(meta).cells
    if ((cells.positions.units < 0) & (cells.in_frame >= 0)).any():
        raise _refuse(codec, "--attention local needs every cell on a unit, but a cell of this layout spans every unit")


def known_columns(codec: Codec) -> np.ndarray:
    """Indices in `codec.axes` of the known axes (the columns of a cell's coordinates)."""
    return np.array([codec.axes.index(a) for a in codec.known_axes], dtype=np.int64)


class StreamGrammar:
    """A codec's grammar along a plan (see the module docstring)."""

    bos = BOS

    def __init__(self, codec: Codec, meta: dict, p: Plan):
        self.codec, self.plan = codec, p
        self.layout = codec.layout(meta)
        self.cells = self.layout.cells
        self.cg = codec.layout(meta).grammar()
        self.known = known_columns(codec)
        self.A = len(codec.axes)
        size = codec.vocab.size
        self._eos, self._frame = np.zeros(size, bool), np.zeros(size, bool)
        self._eos[EOS], self._frame[FRAME] = True, True
        self.i, self.done = 0, False
        self.chosen = -1  # an adaptive plan: the stream position whose group was chosen last
        self.taken: list[tuple[int, int]] = []  # (cell, token) in stream order
        self.places = cell_places(codec.layout(meta))
        self.last_place = np.full(2, -1, dtype=np.int64)  # the place of the token taken last (-1: none yet, EOS)
        self._enter()

    # --- where we are -----------------------------------------------------------------------------
    def _cell(self) -> int:
        return int(self.plan.cells[self.i])

    def _separator(self) -> bool:
        return self.cells.in_frame[self._cell()] < 0

    def _enter(self) -> None:
        if self.plan.complete_from is not None and self.i == self.plan.pending_from:
            self._complete()
        if self.i < self.plan.cells.size and not self._separator():
            self.cg.frame = int(self.cells.frame[self._cell()])
            self.cg.begin(int(self.cells.in_frame[self._cell()]))

    def _complete(self) -> None:
        """The DC cells are decoded: compute the rest of a content order's plan from their thumbnail."""
        cells, toks = np.array(self.taken, dtype=np.int64).reshape(-1, 2).T
        full = self.plan.complete_from(self.layout.thumbnail(toks[np.argsort(cells, kind="stable")]))
        n = self.plan.pending_from
        if not np.array_equal(full.cells[:n], self.plan.cells[:n]):  # pragma: no cover - a broken order
            raise AssertionError("a completed plan must keep its DC prefix")
        self.plan = full

    @property
    def phase(self) -> str:
        return "done" if self.done else ("end" if self.i >= self.plan.cells.size else "cells")

    def _full(self, cell: int) -> np.ndarray:
        out = np.zeros(self.A, dtype=np.int64)
        out[self.known] = self.cells.positions.coords[cell]
        return out

    # --- token by token ---------------------------------------------------------------------------
    def allowed(self) -> np.ndarray:
        if self.i >= self.plan.cells.size:
            return self._eos
        if self._separator():
            return self._frame
        m = self.cg.allowed()
        if self.cg.open_ended and self.cg.can_end:
            nxt = self.i + 1
            m = m | (self._frame if nxt < self.plan.cells.size else self._eos)
        return m

    def next_known(self) -> np.ndarray | None:
        """The next token's coordinates on the known axes (other axes 0), or None at the end."""
        return None if self.i >= self.plan.cells.size else self._full(self._cell())

    def next_place(self) -> np.ndarray:
        """The next token's place for local attention (`cell_places`), -1 at the end."""
        return self.places[self._cell()] if self.i < self.plan.cells.size else np.full(2, -1, dtype=np.int64)

    def next_input(self) -> np.ndarray:
        """`next_known` as a model input: the known axes shifted by one, 0 elsewhere and at the end."""
        out = np.zeros(self.A, dtype=np.int64)
        if self.i < self.plan.cells.size:
            out[self.known] = self._full(self._cell())[self.known] + 1
        return out

    def step(self, tok: int) -> np.ndarray | None:
        """Consume an allowed token; return its coordinates (None for EOS)."""
        if self.i >= self.plan.cells.size:
            self.done = True
            self.last_place = np.full(2, -1, dtype=np.int64)
            return None
        cell = self._cell()
        self.last_place = self.places[cell]
        if self._separator():
            self.taken.append((cell, tok))
            self.i += 1
            self._enter()
            return self._full(cell)
        if self.cg.open_ended and self.cg.can_end and tok in (FRAME, EOS):  # the token ends the open cell
            self.i += 1
            self._enter()
            return self.step(tok)
        coords = self.cg.step(tok).copy()
        coords[0] = self.cells.frame[cell]
        self.taken.append((cell, tok))
        if not self.cg.open:
            self.i += 1
            self._enter()
        return coords

    # --- group by group (parallel) -----------------------------------------------------------------
    def group(self) -> tuple[np.ndarray, np.ndarray]:
        """The next group: ((k, A) coordinates of its places, (k, V) allowed tokens at each, escapes left out)."""
        if self.plan.adaptive is not None and self.chosen != self.i:
            raise RuntimeError("the model chooses an adaptive plan's groups: `choose` the next one first")
        g = self.plan.groups
        j = int(np.searchsorted(g, g[self.i], side="right"))
        cells = self.plan.cells[self.i : j]
        return np.stack([self._full(int(c)) for c in cells]), self._masks(cells)

    def _masks(self, cells: np.ndarray) -> np.ndarray:
        """(k, V) the tokens allowed at each of `cells` (cells of one token: no state between them)."""
        masks = []
        for c in cells:
            if self.cells.in_frame[c] < 0:  # a FRAME separator opens its frame's first group: FRAME, surely
                masks.append(self._frame)
                continue
            self.cg.begin(int(self.cells.in_frame[c]))
            m = self.cg.allowed()
            masks.append(m & ~self.cg.escape if self.cg.escape is not None else m)
        self._enter()
        return np.stack(masks)

    def group_size(self) -> int:
        """Cells in the next group."""
        g = self.plan.groups
        return int(np.searchsorted(g, g[self.i], side="right")) - self.i

    # --- an order the model chooses (`Plan.adaptive`) --------------------------------------------------
    def candidates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The cells not yet taken, in cell order: ((R, A) coordinates of their places, (R, V) allowed tokens,
        (R, 2) places for local attention). The model scores them all; `choose` takes its pick."""
        cells = np.sort(self.plan.cells[self.i :])
        return np.stack([self._full(int(c)) for c in cells]), self._masks(cells), self.places[cells]

    def choose(self, picked: np.ndarray) -> None:
        """The next group is the picked candidates (indices into `candidates()`), the rest follow in cell order."""
        rest = np.sort(self.plan.cells[self.i :])
        picked = np.asarray(picked, dtype=np.int64)
        if picked.size != self.group_size() or np.unique(picked).size != picked.size:
            raise ValueError(f"a group of {self.group_size()} cells was asked for, {picked.size} distinct ones given")
        cells = np.concatenate([self.plan.cells[: self.i], rest[picked], np.delete(rest, picked)])
        self.plan, self.chosen = replace(self.plan, cells=cells), self.i
        self._enter()

    def group_places(self) -> np.ndarray:
        """(k, 2) the places (`cell_places`) of the next group's cells."""
        g = self.plan.groups
        return self.places[self.plan.cells[self.i : int(np.searchsorted(g, g[self.i], side="right"))]]

    def canonical(self) -> np.ndarray:
        """The tokens taken so far, back in canonical order (gathered by cell, stable)."""
        if not self.taken:
            return np.zeros(0, dtype=np.int64)
        cells, toks = np.array(self.taken, dtype=np.int64).T
        return toks[np.argsort(cells, kind="stable")]


def mask_rows(codec: Codec, meta: dict, p: Plan, tokens: np.ndarray) -> Iterator[np.ndarray]:
    """(V,) the tokens the grammar allows at each predicted position of an ordered stream, in turn: every
    token then EOS, or with groups (parallel) every token, group by group. What a decoder knows cannot come
    gets no probability when bits are counted (`vistok eval`) or coded (`vistok compress`). A generator, so
    a long clip is followed without holding a (positions, V) array."""
    g = StreamGrammar(codec, meta, p)
    if p.lanes is not None:  # lanes: each token from its lane's prefix, no EOS (the last wave ends the stream)
        for t in tokens:
            yield g.allowed().copy()
            g.step(int(t))
        return
    if p.groups is not None:
        i = 0
        while i < tokens.size:
            _, masks = g.group()
            yield from masks
            for t in tokens[i : i + len(masks)]:
                g.step(int(t))
            i += len(masks)
        return
    for t in tokens:
        yield g.allowed().copy()
        g.step(int(t))
    yield g.allowed().copy()  # EOS


def stream_masks(codec: Codec, meta: dict, p: Plan, tokens: np.ndarray) -> np.ndarray:
    """`mask_rows` stacked: (n_targets, V)."""
    rows = list(mask_rows(codec, meta, p, tokens))
    return np.stack(rows) if rows else np.zeros((0, codec.vocab.size), bool)


def grammar(codec: Codec, meta: dict, spec: StreamSpec | str = "canonical", seed: int = 0) -> StreamGrammar:
    """The grammar of a stream with geometry `meta` as `spec` names it (random orders drawn from `seed`)."""
    return StreamGrammar(codec, meta, plan(codec, meta, spec, np.random.default_rng(seed)))
