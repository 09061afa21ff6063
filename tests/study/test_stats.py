"""`vistok.study.stats`: intervals over seeds, Welch's test against the best row, the spread and the seeds it
asks for, checked against scipy and against intervals' own coverage."""

import math

import numpy as np
import pytest
from scipy import stats

from vistok.study.stats import interval, seeds_needed, spread, summarize, verdict, welch_p


def test_the_interval_is_students_t_over_the_seeds():
    got = interval([0.70, 0.74, 0.72, 0.75])
    v = np.array([0.70, 0.74, 0.72, 0.75])
    half = stats.t.ppf(0.975, 3) * v.std(ddof=1) / math.sqrt(4)
    assert got["n"] == 4 and got["mean"] == pytest.approx(v.mean()) and got["ci"] == pytest.approx(half)
    assert interval([0.7]) == {"n": 1, "mean": 0.7, "std": None, "ci": None}  # one seed: no interval claimed


def test_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        x = rng.normal(0.8, 0.02, 3)
        c = interval(list(x))
        hits += abs(c["mean"] - 0.8) <= c["ci"]
    assert 0.93 < hits / 2000 < 0.97


def test_welch_matches_scipy_and_says_nothing_from_one_seed():
    a, b = [0.71, 0.73, 0.72], [0.75, 0.78, 0.74, 0.77]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p([0.7], b) is None
    assert welch_p([0.5, 0.5], [0.5, 0.5]) == 1.0 and welch_p([0.5, 0.5], [0.6, 0.6]) == 0.0


def test_seeds_needed_grows_with_the_spread_and_shrinks_with_the_difference():
    assert seeds_needed(0.01, 0.01) == math.ceil(2 * (1.959964 + 0.841621) ** 2)  # 16 a row
    assert seeds_needed(0.02, 0.01) > seeds_needed(0.01, 0.01) > seeds_needed(0.01, 0.02)


def _run(codec, order, seed, top1, bits=100.0):
    return {"codec": codec, "order": order, "parallel": "none", "seed": seed, "bits_per_image": bits,
            "trained": {"linear_top1": top1, "knn_top1": top1 - 0.1}, "finetune": None,
            "random_init": {"linear_top1": 0.5, "knn_top1": 0.4}, "pixels": {"linear_top1": 0.6, "knn_top1": 0.5}}


def test_rows_are_grouped_by_seed_and_compared_with_the_best_row():
    runs = [_run("c", "raster", s, v) for s, v in enumerate([0.80, 0.81, 0.79])]
    runs += [_run("c", "random", s, v) for s, v in enumerate([0.70, 0.71, 0.69])]
    runs += [_run("c", "hilbert", s, v) for s, v in enumerate([0.79, 0.82, 0.78])]
    runs += [{"codec": "c", "order": "squares:2", "parallel": "none", "seed": 0, "refused": "no"}]
    rows = summarize(runs)
    assert [(r["order"], r["seeds"]) for r in rows[:3]] == [("raster", [0, 1, 2]), ("random", [0, 1, 2]),
                                                            ("hilbert", [0, 1, 2])]
    assert rows[0]["figures"]["linear_top1"]["mean"] == pytest.approx(0.80)
    assert verdict(rows[0], "linear_top1") == "best"
    assert verdict(rows[1], "linear_top1").startswith("differs")  # 10 points apart, tight seeds
    assert verdict(rows[2], "linear_top1").startswith("not different")  # within the noise
    assert rows[3]["refused"] == "no" and "figures" not in rows[3]
    assert min(rows[:3], key=lambda r: r["figures"]["bits_per_image"]["mean"])  # every row has bits
    s = spread(rows)
    pooled = math.sqrt(np.mean([np.var([0.80, 0.81, 0.79], ddof=1), np.var([0.70, 0.71, 0.69], ddof=1),
                                np.var([0.79, 0.82, 0.78], ddof=1)]))
    assert s["linear_top1"]["pooled_std"] == pytest.approx(pooled)
    assert s["linear_top1"]["seeds_for_one_point"] == seeds_needed(pooled, 0.01)
    assert "bits_per_image" in s and "seeds_for_one_point" not in s["bits_per_image"]


def test_one_seed_a_row_compares_nothing():
    rows = summarize([_run("c", "raster", 0, 0.8), _run("c", "random", 0, 0.7)])
    assert verdict(rows[0], "linear_top1") == "best" and verdict(rows[1], "linear_top1") == "untested (one seed)"
    assert spread(rows) == {}
