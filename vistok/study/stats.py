"""A study's seeds, summed up: every figure of a row as its mean over seeds with a 95% confidence interval
(Student's t on the seeds' values), each row tested against the best row (Welch's two-sided t-test, 5%), and
the run-to-run spread turned into the seeds a given difference needs.

Pure functions of the runs' `result.json` rows: the table, the JSON and the figure read what `summarize`
returns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

LEVEL = 0.95  # confidence of every interval
ALPHA = 0.05  # a row differs from the best row when Welch's p is below this

# figure -> (what it reads from a run, higher is better)
FIGURES: dict[str, tuple[str, bool]] = {
    "linear_top1": ("trained linear top-1", True),
    "knn_top1": ("trained k-NN top-1", True),
    "finetune_top1": ("fine-tuned top-1", True),
    "bits_per_image": ("held-out bits per image", False),
    "masked_bits_per_image": ("held-out bits of the masked part", False),
    "random_init_linear_top1": ("random-init linear top-1", True),
    "random_init_knn_top1": ("random-init k-NN top-1", True),
    "pixels_linear_top1": ("pixels linear top-1", True),
    "pixels_knn_top1": ("pixels k-NN top-1", True),
}


def interval(values: Sequence[float], level: float = LEVEL) -> dict[str, Any]:
    """Mean, standard deviation (n - 1) and the half-width of the `level` interval of the mean; a single
    value has no spread and no interval (None)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return {"n": n, "mean": mean, "std": std, "ci": float(stats.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)}


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p of Welch's t-test that the two means are equal; None below two values a side. Two
    constant samples: 1.0 when equal, 0.0 when not (the test is undefined there)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def seeds_needed(std: float, difference: float, alpha: float = ALPHA, power: float = 0.8) -> int:
    """Seeds per row for a two-row difference of `difference` to come out significant at `alpha` with
    probability `power`, when each run's figure spreads by `std` (normal approximation: n = 2 (z_a + z_b)^2
    std^2 / d^2)."""
    from scipy import stats

    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return max(2, math.ceil(2 * (z * std / difference) ** 2))


def run_figures(run: dict[str, Any]) -> dict[str, float]:
    """The figures of one run's result row (those it has)."""
    out: dict[str, float] = {}
    trained = run.get("trained") or {}
    for key, src in (("linear_top1", trained), ("knn_top1", trained)):
        if key in src:
            out[key] = src[key]
    if run.get("finetune"):
        out["finetune_top1"] = run["finetune"]["top1"]
    for key in ("bits_per_image", "masked_bits_per_image"):
        if run.get(key) is not None:
            out[key] = run[key]
    for name in ("random_init", "pixels"):
        for key in ("linear_top1", "knn_top1"):
            if key in (run.get(name) or {}):
                out[f"{name}_{key}"] = run[name][key]
    return out


def _groups(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs grouped by row (codec, order, parallel), in first-seen order."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        key = (r["codec"], r["order"], r["parallel"])
        g = groups.setdefault(key, {"codec": key[0], "order": key[1], "parallel": key[2], "seeds": [], "runs": []})
        g["seeds"].append(r.get("seed", 0))
        g["runs"].append(r)
    return list(groups.values())


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per row: its seeds, each figure's interval (`figures`), and for each figure whether the row
    differs from the best row by it (`vs_best`: best, or Welch's p and `differs`). A row any of whose
    runs was refused or failed says so (`refused` / `failed`) and enters no comparison."""
    rows = []
    for g in _groups(runs):
        bad = next((r for r in g["runs"] if "refused" in r or "failed" in r), None)
        row = {k: g[k] for k in ("codec", "order", "parallel", "seeds")}
        if bad:
            row.update({k: bad[k] for k in ("refused", "failed") if k in bad})
        else:
            values: dict[str, list[float]] = {}
            for r in g["runs"]:
                for k, v in run_figures(r).items():
                    values.setdefault(k, []).append(v)
            row["values"] = values
            row["figures"] = {k: interval(v) for k, v in values.items() if len(v) == len(g["runs"])}
        rows.append(row)
    _compare(rows)
    return rows


def _compare(rows: list[dict[str, Any]]) -> None:
    for key, (_, higher) in FIGURES.items():
        have = [r for r in rows if key in r.get("figures", {})]
        if len(have) < 2:
            continue
        best = (max if higher else min)(have, key=lambda r: r["figures"][key]["mean"])
        for r in have:
            if r is best:
                r.setdefault("vs_best", {})[key] = {"best": True}
                continue
            p = welch_p(r["values"][key], best["values"][key])
            r.setdefault("vs_best", {})[key] = {"p": p, "differs": None if p is None else p < ALPHA}


def spread(rows: list[dict[str, Any]], difference: float = 0.01) -> dict[str, dict[str, Any]]:
    """The run-to-run spread of each figure: the standard deviation over seeds pooled across rows, and the
    seeds per row that a `difference` (one point of top-1) needs to show. Figures measured on one seed have
    none."""
    out = {}
    for key, (label, _) in FIGURES.items():
        parts = [(r["figures"][key]["n"] - 1, r["figures"][key]["std"] ** 2)
                 for r in rows if key in r.get("figures", {}) and r["figures"][key]["std"] is not None]
        dof = sum(d for d, _ in parts)
        if not dof:
            continue
        std = math.sqrt(sum(d * var for d, var in parts) / dof)
        entry: dict[str, Any] = {"label": label, "pooled_std": std, "dof": dof}
        if key.endswith("top1"):
            entry["seeds_for_one_point"] = seeds_needed(std, difference) if std > 0 else 2
        out[key] = entry
    return out


def cell(row: dict[str, Any], key: str, digits: int = 3) -> str:
    """`mean ± ci` of a row's figure (`mean` alone from one seed; `—` where the row has none)."""
    f = row.get("figures", {}).get(key)
    if f is None:
        return "—"
    if f["ci"] is None:
        return f"{f['mean']:.{digits}f}"
    return f"{f['mean']:.{digits}f} ± {f['ci']:.{digits}f}"


def verdict(row: dict[str, Any], key: str) -> str:
    """How a row stands against the best row by a figure, for the table."""
    v = row.get("vs_best", {}).get(key)
    if v is None:
        return ""
    if v.get("best"):
        return "best"
    if v["p"] is None:
        return "untested (one seed)"
    return f"{'differs' if v['differs'] else 'not different'} (p = {v['p']:.2g})"
