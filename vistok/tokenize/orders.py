"""Token orderings: a record's units -> a permutation of its tokens that keeps each unit's tokens together.

An ordering is named by a string (``canonical``, ``random``) and built with `get_order(name)`; calling
it with a record's per-token unit indices and a seeded generator returns `perm` such that
``tokens[perm]`` is the reordered stream. `inverse(perm)` undoes it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vistok.errors import UsageError

Order = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def inverse(perm: np.ndarray) -> np.ndarray:
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size, dtype=perm.dtype)
    return inv


def units_to_tokens(units: np.ndarray, unit_order: np.ndarray) -> np.ndarray:
    """Token permutation visiting units in `unit_order`, each unit's tokens in their canonical order.

    `units` must be non-decreasing (canonical streams are); one stable argsort, no per-unit Python.
    """
    rank = np.empty(int(units.max()) + 1 if units.size else 0, dtype=np.int64)
    rank[unit_order] = np.arange(unit_order.size)
    return np.argsort(rank[units], kind="stable")


def canonical(units: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.arange(units.size)


def random_units(units: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded random permutation of units; tokens inside a unit stay in canonical order."""
    if units.size == 0:
        return np.arange(0)
    n = int(units.max()) + 1
    return units_to_tokens(units, rng.permutation(n))


ORDERS: dict[str, Order] = {"canonical": canonical, "raster": canonical, "random": random_units}


def get_order(name: str) -> Order:
    if name not in ORDERS:
        raise UsageError(f"unknown order {name!r}; available: {', '.join(sorted(ORDERS))}")
    return ORDERS[name]
