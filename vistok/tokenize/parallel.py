"""Parallel modes: which tokens of an ordered stream a model predicts at once, as registered objects.

A mode cuts a plan's cells into groups (`groups`), predicted at once from the groups before them, each token
from a query slot that carries its place. It declares what it needs of the order (`refusal`: None, or why
not) and what the commands do with it: whether a group's queries see each other (`co_attend`), whether
groups too large for a row are cut, whether the stream it predicts is the whole image (`whole`: a masked
model predicts the masked part only), whether it applies to clips, whether the model steps are chosen at
test time (`--steps`), and whether `compress` codes several records at once (`lanes`).

  segments     an order's segments (randsac:K, squares:S, dc-first over slic/frontier/segmented orders)
  scales       whole scales of a scale order (next-scale, coarse-to-fine); on clips a group per frame and scale
  any          a random order cut by a step schedule (`vistok.tokenize.schedule`): drawn per document in
               training, `--steps N` at test time
  masked:R     MAE's objective as a baseline: the last R of a random order's units predicted from the rest
  wavefront    the units of each anti-diagonal (column + 2 x row, as H.264's wavefront decoders go) side by side,
               a lane per unit, each lane token by token: cells of any length (an H.264 macroblock)

A new mode is a subclass registered with `register_mode` in its own module; `parse_mode` finds it by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from vistok.errors import UsageError
from vistok.tokenize import schedule
from vistok.tokenize.orders import DC_IMAGE_ORDERS, DcImageOrder, Order, order_class, order_names


@dataclass(frozen=True)
class Cut:
    """What a mode reads to group a stream of `n` cells (all in stream order)."""

    n: int
    rng: np.random.Generator
    steps: int | None = None  # `any`: model steps at test time, None: drawn from `rng` as in training
    segments: np.ndarray | None = None  # (n,) the order's segment of each cell (visit rank)
    units: np.ndarray | None = None  # (n,) the unit of each cell
    scale_key: Callable[[], np.ndarray] | None = None  # -> (n,) a key per (frame, scale), coarser scales smaller
    grid: tuple[int, int] | None = None  # (rows, columns) of units


@dataclass(frozen=True)
class ParallelMode:
    """A `--parallel` mode: `name` and its parameters as written (`arg`: ``0.75`` of masked:0.75)."""

    name: str
    arg: str = ""

    params: ClassVar[str] = ""  # what `--parallel` takes after the name, as help shows it (":R")
    example: ClassVar[str] = ""  # parameters of one valid instance (":0.5"), for the test matrices
    summary: ClassVar[str] = ""
    co_attend: ClassVar[bool] = False  # a group's queries see each other (`nn.gpt.group_mask`)
    cut: ClassVar[bool] = True  # groups larger than a row holds are cut into runs (`stream.cut_groups`)
    whole: ClassVar[bool] = True  # predicts the whole stream (bits per image, sampling, coding)
    clips: ClassVar[bool] = False  # applies to clips
    steps: ClassVar[bool] = False  # the model steps are chosen at test time (`--steps N`)
    lanes: ClassVar[bool] = False  # `compress` codes several records at once, a group of each per step
    default_order: ClassVar[str] = "canonical"  # the order a run with this mode takes when none is given
    unit_lanes: ClassVar[bool] = False  # each unit's cells are a lane, token by token: cells may be of any length

    @classmethod
    def parse(cls, name: str, arg: str) -> ParallelMode:
        if arg:
            raise UsageError(f"--parallel {name} takes no parameter (got {name}:{arg})")
        return cls(name)

    def __str__(self) -> str:
        return f"{self.name}:{self.arg}" if self.arg else self.name

    def refusal(self, order: Order) -> str | None:
        """Why this mode cannot cut `order`'s streams, or None."""
        return None

    def groups(self, c: Cut) -> np.ndarray:
        """(n,) the group of each cell, 0, 1, ... in stream order."""
        raise NotImplementedError


_MODES: dict[str, type[ParallelMode]] = {}


def register_mode(*names: str) -> Callable[[type[ParallelMode]], type[ParallelMode]]:
    def add(cls: type[ParallelMode]) -> type[ParallelMode]:
        for name in names:
            if name in _MODES:
                raise ValueError(f"parallel mode {name!r} is registered twice")
            _MODES[name] = cls
        return cls

    return add


def mode_names() -> list[str]:
    return list(_MODES)


def mode_usages() -> list[str]:
    """Every mode as `--parallel` takes it (``masked:R``), for help and messages."""
    return [name + cls.params for name, cls in _MODES.items()]


def mode_help() -> str:
    """Every mode as `--parallel` takes it with its summary."""
    return "; ".join(f"{name}{cls.params} — {cls.summary}" for name, cls in _MODES.items())


def mode_examples() -> list[str]:
    return [name + cls.example for name, cls in _MODES.items()]


@lru_cache(maxsize=64)
def parse_mode(text: str) -> ParallelMode | None:
    """`--parallel` text -> its registered mode, checked; "" (token by token) -> None."""
    if not text:
        return None
    name, _, arg = str(text).partition(":")
    cls = _MODES.get(name)
    if cls is None:
        raise UsageError(f"--parallel takes {', '.join(mode_usages())}, got {text!r}")
    return cls.parse(name, arg)


def as_mode(mode: str | ParallelMode | None) -> ParallelMode | None:
    return mode if isinstance(mode, ParallelMode) or mode is None else parse_mode(mode)


def run_steps(parallel: str | ParallelMode | None, steps: int | None, run: object = "") -> int | None:
    """The model steps a run is scored, sampled or coded in: `steps` for a mode whose steps are chosen at test
    time (`any`; ALL, one token per step, when None), None for every other run, where `steps` is refused."""
    mode = as_mode(parallel)
    if mode is not None and mode.steps:
        return schedule.ALL if steps is None else steps
    if steps is not None:
        raise UsageError(f"--steps takes a run trained with --parallel any; {run} is "
                         f"{'parallel ' + str(mode) if mode else 'token by token'}")
    return None


def _named(order: Order) -> str:
    return str(order)


@register_mode("segments")
class Segments(ParallelMode):
    summary = "an order's segments, each at once (randsac:K, squares:S, dc-first over segments)"

    def refusal(self, order):
        if order.dc_first and not order.segmented:
            inner = [n for n in DC_IMAGE_ORDERS if DcImageOrder(n).segmented] + [
                n for n in order_names() if order_class(n).segmented and order_class(n).after_dc]
            return (f"--parallel segments with dc-first takes an inner order with segments: {', '.join(inner)} "
                    f"(got {_named(order)!r})")
        if not order.segmented:
            names = [n + order_class(n).params for n in order_names() if order_class(n).segmented]
            return f"--parallel segments predicts an order's segments: use --order {' or '.join(names)} (got {_named(order)!r})"
        return None

    def groups(self, c):
        return c.segments


@register_mode("scales")
class Scales(ParallelMode):
    summary = "whole scales of next-scale or coarse-to-fine (VAR); on clips a group per frame and scale"
    clips = True

    def refusal(self, order):
        if order.dc_first:
            return "--parallel scales predicts whole scales; dc-first takes --parallel segments or any"
        if not order.scales:
            names = [n for n in order_names() if order_class(n).scales]
            return f"--parallel scales predicts whole scales: use --order {' or '.join(names)} (got {_named(order)!r})"
        return None

    def groups(self, c):
        key = c.scale_key()
        return np.concatenate([[0], np.cumsum(np.diff(key) != 0)])


@register_mode("any")
class Any(ParallelMode):
    summary = "a random order in any number of steps (a step schedule; --steps N at test time)"
    co_attend = steps = lanes = True
    default_order = "random"

    def refusal(self, order):
        if not (order.uniform or order.dc_first or order.adaptive):
            return f"--parallel any predicts a random order in any number of steps: use --order random (got {_named(order)!r})"
        return None

    def groups(self, c):
        n_steps, mix = schedule.draw(c.n, c.rng) if c.steps is None else (c.steps, schedule.TEST_MIX)
        return schedule.groups(c.n, n_steps, mix)


@register_mode("masked")
class Masked(ParallelMode):
    params, example = ":R", ":0.5"
    summary = "MAE's baseline: the last R of a random order's units predicted at once from the rest"
    co_attend = True  # as MAE's decoder
    cut = whole = False
    default_order = "random"

    @classmethod
    def parse(cls, name, arg):
        try:
            ratio = float(arg)
        except ValueError:
            ratio = -1.0
        if not 0 < ratio < 1:
            raise UsageError(f"--parallel masked:R takes the share of units masked, 0 < R < 1 (MAE: 0.75), "
                             f"got {name + (':' + arg if arg else '')!r}")
        return cls(name, arg)

    @property
    def ratio(self) -> float:
        return float(self.arg)

    def refusal(self, order):
        if not order.uniform:
            return f"--parallel {self} masks random units: use --order random (got {_named(order)!r})"
        return None

    def groups(self, c):
        return masked_groups(c.units, self.ratio)


def masked_groups(units: np.ndarray, ratio: float) -> np.ndarray:
    """Group 0 (visible) or 1 (masked) of each cell of a random order: the last round(ratio x units) units of
    the order are masked (at least one unit each side), whole units as MAE masks patches."""
    first = np.flatnonzero(np.diff(units, prepend=-1) != 0)  # where each unit's run of cells starts
    n = first.size
    if n < 2:
        raise UsageError("--parallel masked:R needs at least two units an image")
    visible = n - min(n - 1, max(1, round(ratio * n)))
    return (np.arange(units.size) >= first[visible]).astype(np.int64)


@register_mode("wavefront")
class Wavefront(ParallelMode):
    summary = ("the units of each anti-diagonal (column + 2 x row) side by side, a lane per unit, each token by "
               "token and blind to the other lanes (H.264 macroblocks; any cell length)")
    unit_lanes = True
    cut = False

    def refusal(self, order):
        if str(order) != "canonical":
            return f"--parallel wavefront sets the order itself (wave by wave, column + 2 x row): use --order canonical (got {_named(order)!r})"
        return None

    def groups(self, c):
        """The wave of each cell, column + 2 x row of its unit: a unit's left, top-left, top and top-right
        neighbours (what H.264 predicts a macroblock from) are all in earlier waves."""
        return wave_of(c.units, c.grid)


def wave_of(units: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(n,) column + 2 x row of each unit on a grid of (rows, columns)."""
    rows, cols = divmod(np.asarray(units, dtype=np.int64), grid[1])
    return cols + 2 * rows
