"""Run artefacts for people: a loss-curve PNG (matplotlib, Agg backend) and `report.md`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_metrics(run: str | Path) -> list[dict]:
    return [json.loads(ln) for ln in (Path(run) / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def smooth(y: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average with the usual span -> alpha = 2 / (span + 1), bias-corrected at the start."""
    alpha, out, acc, norm = 2.0 / (span + 1), np.empty_like(y, dtype=np.float64), 0.0, 0.0
    for i, v in enumerate(y):
        acc, norm = (1 - alpha) * acc + alpha * v, (1 - alpha) * norm + alpha
        out[i] = acc / norm
    return out


def loss_curve_png(run: str | Path, out: str | Path, smoothing: int = 10) -> Path:
    """Training loss (raw, faint; smoothed over `smoothing` logged rows) and held-out loss, in bits per
    token against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = read_metrics(run)
    tr = np.array([(r["step"], r["loss_bits"]) for r in rows if "loss_bits" in r], dtype=np.float64).reshape(-1, 2)
    ev = np.array([(r["step"], r["eval_bits_per_token"]) for r in rows if "eval_bits_per_token" in r],
                  dtype=np.float64).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(7.2, 4.2), dpi=100)
    if len(tr):
        ax.plot(tr[:, 0], tr[:, 1], color="tab:blue", alpha=0.25, linewidth=1, label="train (per logged step)")
        ax.plot(tr[:, 0], smooth(tr[:, 1], smoothing), color="tab:blue", linewidth=2,
                label=f"train (EMA over {smoothing} rows)")
    if len(ev):
        ax.plot(ev[:, 0], ev[:, 1], "o-", color="tab:red", linewidth=2, markersize=4, label="held-out")
    both = np.concatenate([tr[:, 1], ev[:, 1]])
    if both.size:  # the first steps' loss is far above the rest: keep the interesting range in view
        ax.set_ylim(max(0.0, float(np.percentile(both, 1)) - 0.2), float(np.percentile(both, 99)) + 0.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (bits / token)")
    ax.set_title(f"{Path(run).name}: next-token loss")
    ax.grid(alpha=0.3)
    if len(tr) or len(ev):
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def write_report(path: str | Path, ev: dict, dataset: dict, train_info: dict, images: list[str]) -> Path:
    lines = [
        "# vistok pretrain report",
        "",
        f"Model: `{train_info['preset']}` preset, {train_info['params'] / 1e6:.2f}M parameters, "
        f"{train_info['steps']} steps in {train_info['minutes']:.1f} minutes on {train_info['device']}.",
        f"Data: {dataset['samples']} samples of {dataset['codec']['id']} tokens (quality {dataset['codec'].get('quality')}), "
        f"{dataset['tokens_per_sample']['mean']} tokens/sample on average; {ev['images']} held-out images.",
        "",
        "| held-out measure | value |",
        "| --- | --- |",
        f"| model bits / token | {ev['bits_per_token']:.4f} |",
        f"| unigram entropy baseline, bits / token | {ev['unigram_bits_per_token']:.4f} |",
        f"| model bits / image | {ev['bits_per_image']:.1f} |",
    ]
    if "jpeg_bits_per_image" in ev:
        lines += [f"| JPEG (optimized Huffman) bits / image, same coefficients | {ev['jpeg_bits_per_image']:.1f} |",
                  f"| model / JPEG | {ev['model_to_jpeg_ratio']:.3f} |"]
    lines += [
        "",
        f"The model codes held-out tokens in {ev['bits_per_token']:.3f} bits against {ev['unigram_bits_per_token']:.3f} "
        f"for a unigram model ({100 * (1 - ev['bits_per_token'] / ev['unigram_bits_per_token']):.1f}% fewer).",
        "",
    ]
    lines += [f"![{Path(i).stem}]({Path(i).name})" for i in images]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)
