"""Step schedules of `--parallel any`: how a random order is cut into consecutive groups, one per model step.

A schedule of N steps over n tokens gives step t (1..N) the tokens up to

    b_t = t + round((n - N) * f(t / N)),   f(u) = (1 - mix) * u + mix * (1 - cos(pi * u / 2))

so every step predicts at least one token, b_N = n, and the n - N tokens beyond one per step are shared
out by f: `mix = 0` spreads them evenly (groups of equal size), `mix = 1` is MaskGIT's cosine schedule (few
tokens early, when little is known, many late). N = n is one token per step whatever the mix.

The family a model is trained on (`draw`): per document, N log-uniform on [1, n] (as many documents
with 2-4 steps as with 256-512) and mix uniform on [0, 1]. At test time (`vistok eval/sample/compress
--steps N`) the schedule is the family's cosine member, `mix = 1`. The groups depend on n, N and mix
only, never on tokens, so a decoder that knows N and the order's seed knows every step's places.
"""

from __future__ import annotations

import math

import numpy as np

from vistok.errors import UsageError

ALL = 0  # `--steps all`: one token per step
TEST_MIX = 1.0  # the cosine schedule


def boundaries(n: int, steps: int, mix: float = TEST_MIX) -> np.ndarray:
    """(N + 1,) b_0 = 0 < b_1 < ... < b_N = n: step t predicts stream positions [b_{t-1}, b_t). N = min(steps, n),
    and `steps` = ALL is n."""
    if n <= 0:
        return np.zeros(1, dtype=np.int64)
    N = n if steps == ALL else min(int(steps), n)
    u = np.arange(N + 1) / N
    f = (1 - mix) * u + mix * (1 - np.cos(np.pi * u / 2))
    b = np.arange(N + 1) + np.round((n - N) * f).astype(np.int64)
    b[-1] = n  # float rounding at u = 1
    return b


def groups(n: int, steps: int, mix: float = TEST_MIX) -> np.ndarray:
    """(n,) the step (group) of each stream position, 0, 1, ..., N - 1."""
    b = boundaries(n, steps, mix)
    return np.repeat(np.arange(b.size - 1), np.diff(b)).astype(np.int64)


def draw(n: int, rng: np.random.Generator) -> tuple[int, float]:
    """(steps, mix) of one training document of n tokens (the family in the module docstring)."""
    steps = int(math.exp(rng.uniform(0.0, math.log(n + 1)))) if n > 0 else 1
    return max(1, min(n, steps)), float(rng.uniform(0.0, 1.0))


def parse_steps(text: str) -> list[int]:
    """`--steps` as given: comma-separated step counts >= 1 or `all` (ALL)."""
    out = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part == "all":
            out.append(ALL)
            continue
        try:
            v = int(part)
        except ValueError:
            v = 0
        if v < 1:
            raise UsageError(f"--steps takes step counts >= 1 or 'all', comma-separated; got {text!r}")
        out.append(v)
    return out


def steps_name(steps: int) -> str:
    return "all" if steps == ALL else str(steps)
