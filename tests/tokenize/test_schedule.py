"""Step schedules of `--parallel any`: every N from 1 to n cuts n tokens into N non-empty consecutive groups."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vistok.errors import UsageError
from vistok.tokenize.schedule import ALL, boundaries, draw, groups, parse_steps


@given(st.integers(1, 5000), st.integers(1, 6000), st.floats(0.0, 1.0))
def test_a_schedule_cuts_every_token_into_min_n_steps_groups(n, steps, mix):
    b = boundaries(n, steps, mix)
    assert b[0] == 0 and b[-1] == n and b.size - 1 == min(n, steps)
    assert (np.diff(b) >= 1).all()  # every step predicts something
    g = groups(n, steps, mix)
    assert g.size == n and g[0] == 0 and g[-1] == min(n, steps) - 1 and (np.diff(g) >= 0).all()


def test_one_token_per_step_and_the_cosine_member():
    assert (np.diff(boundaries(100, ALL)) == 1).all() and (np.diff(boundaries(100, 100, 0.3)) == 1).all()
    cos = np.diff(boundaries(4096, 8))  # MaskGIT's cosine: few tokens first, many last
    assert cos[0] < 4096 / 8 / 4 and cos[-1] > 4096 / 8 and (np.diff(cos) >= 0).all()
    even = np.diff(boundaries(4096, 8, 0.0))
    assert even.max() - even.min() <= 1  # mix 0: equal groups


def test_training_draws_cover_one_step_to_one_token_per_step():
    rng = np.random.default_rng(0)
    drawn = [draw(1024, rng) for _ in range(4000)]
    steps = np.array([s for s, _ in drawn])
    assert steps.min() == 1 and steps.max() >= 900 and (steps <= 1024).all()
    assert 0.05 < np.mean(steps >= 512) < 0.2 and 0.05 < np.mean(steps <= 2) < 0.2  # log-uniform: an octave each
    mixes = np.array([m for _, m in drawn])
    assert mixes.min() < 0.02 and mixes.max() > 0.98


def test_steps_are_parsed_or_refused():
    assert parse_steps("8,32, all") == [8, 32, ALL]
    for bad in ("0", "-3", "x", "8,,9"):
        with pytest.raises(UsageError, match="--steps"):
            parse_steps(bad)
