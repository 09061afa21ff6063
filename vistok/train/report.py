"""Run artefacts for people: a loss-curve PNG (drawn with Pillow) and `report.md`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def loss_curve_png(run: str | Path, out: str | Path, size: tuple[int, int] = (720, 420)) -> Path:
    from PIL import Image, ImageDraw

    rows = [json.loads(ln) for ln in (Path(run) / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    tr = [(r["step"], r["loss_bits"]) for r in rows if "loss_bits" in r]
    ev = [(r["step"], r["eval_bits_per_token"]) for r in rows if "eval_bits_per_token" in r]
    W, H = size
    L, R, T, B = 60, 20, 30, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    pts = tr + ev
    if not pts:
        img.save(out)
        return Path(out)
    xs = np.array([p[0] for p in pts], dtype=float)
    ys = np.array([p[1] for p in pts], dtype=float)
    x0, x1 = 0.0, max(xs.max(), 1.0)
    lo, hi = float(np.percentile(ys, 1)), float(np.percentile(ys, 99))
    lo, hi = max(0.0, lo - 0.2), hi + 0.2

    def px(x, y):
        return L + (x - x0) / (x1 - x0) * (W - L - R), T + (1 - (min(max(y, lo), hi) - lo) / (hi - lo)) * (H - T - B)

    d.rectangle([L, T, W - R, H - B], outline="black")
    for k in range(5):
        y = lo + (hi - lo) * k / 4
        _, yy = px(0, y)
        d.line([L - 4, yy, L, yy], fill="black")
        d.text((4, yy - 6), f"{y:.2f}", fill="black")
    for k in range(5):
        x = x0 + (x1 - x0) * k / 4
        xx, _ = px(x, lo)
        d.line([xx, H - B, xx, H - B + 4], fill="black")
        d.text((xx - 10, H - B + 8), f"{int(x)}", fill="black")
    for series, colour in ((tr, (31, 119, 180)), (ev, (214, 39, 40))):
        if len(series) > 1:
            d.line([px(x, y) for x, y in series], fill=colour, width=2)
        for x, y in series[-1:]:
            cx, cy = px(x, y)
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
    d.text((L, 8), "bits/token vs step   blue: train   red: held-out", fill="black")
    img.save(out)
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
