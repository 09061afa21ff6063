"""`vistok study` / `make study`: one controlled comparison, one folder.

A grid of runs (codecs x orders x parallel modes) on one labelled dataset, each trained with the same preset
for the same time budget, then evaluated (held-out bits/image, order bits, steps/image) and probed (linear
and k-NN top-1 of the trained model, of its random-init twin and of raw pixels). Written to OUT:

    data/<codec>/        the dataset per codec (reused when up to date)
    runs/<row>/          each run, its `result.json` written last: a finished row is skipped on a rerun,
                         an interrupted one resumes from its last checkpoint
    study.json           every row; study.md, the table; study.png, the probes as bars

Pairs that do not go together are left out of the grid (`--parallel segments` needs a randsac order or
dc-first with slic, frontier or randsac inside, `scales` next-scale or coarse-to-fine, `any` random or dc-first; an `any` row is scored at two step counts,
`any_steps`, one token per step and 16 steps by default); pairs a codec refuses (an rle layout with --parallel) are rows that
say why. The default (`make study`): Fashion-MNIST (12,000 training images of the Debian package) at
16x16 as grayscale JPEG quality 50 coefficients in the dense layout (2x2 blocks, 256 tokens per image: the
layout that group prediction needs, kept for every row so the rows differ only in order and mode); orders
canonical, random, hilbert and randsac:11,5, token by token and segment-parallel; `tiny`, 16 images per
step, 4 minutes per run on CPU. At 28x28 (`--size 0`) a run sees ~4x fewer images in the same budget,
and at that budget the trained features did not beat the random-init floor (README).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vistok.errors import UsageError, VistokError
from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.shards.manifest import write_json
from vistok.tokenize.base import get_codec
from vistok.tokenize.schedule import ALL
from vistok.tokenize.stream import PARALLEL, SCALE_AXES, SEGMENTED_INNER
from vistok.train.data import DataConfig
from vistok.train.evaluate import evaluate
from vistok.train.probe import ProbeConfig, probe
from vistok.train.trainer import TrainConfig, pick_device, train


@dataclass
class StudyConfig:
    out: str = "runs/study"
    sources: list[str] = field(default_factory=lambda: ["fashion-mnist:train:12000"])
    codecs: list[dict[str, Any]] = field(default_factory=lambda: [{"id": "jpeg", "quality": 50, "layout": "dense"}])
    gray: bool = True
    size: int = 16  # resize inputs to this side (0: keep)
    orders: list[str] = field(default_factory=lambda: ["canonical", "random", "hilbert", "randsac:11,5"])
    parallel: list[str] = field(default_factory=lambda: ["", "segments"])
    any_steps: list[int] = field(default_factory=lambda: [ALL, 16])  # `any` rows: scored at these step counts
    preset: str = "tiny"
    minutes: float = 4.0  # training budget per run
    max_steps: int = 1_000_000  # and a step limit (tests)
    batch_size: int = 16
    lr: float = 2e-3
    heldout: float = 0.2
    eval_images: int = 200
    probe_train: int = 1000
    probe_test: int = 500
    executor: str = "local"
    device: str = "auto"
    seed: int = 0


def split_orders(text: str) -> list[str]:
    """Comma-separated orders, where a randsac order's own commas (randsac:11,5, dc-first:randsac:11,5) stay
    inside it."""
    out: list[str] = []
    for part in text.split(","):
        if out and part.isdigit() and "randsac:" in out[-1]:
            out[-1] += "," + part
        elif part:
            out.append(part)
    return out


def _fits(order: str, parallel: str) -> bool:
    base, _, inner = order.partition(":")
    segmented = base == "randsac" or (base == "dc-first" and inner.partition(":")[0] in SEGMENTED_INNER)
    return (not parallel or (parallel == "segments" and segmented) or (parallel == "scales" and base in SCALE_AXES)
            or (parallel == "any" and base in ("random", "dc-first")))


def _codec_name(cfg: dict[str, Any]) -> str:
    return "-".join(str(cfg[k]) for k in ("id", "layout", "quality") if k in cfg)


def grid(cfg: StudyConfig) -> list[tuple[dict[str, Any], str, str]]:
    bad = [p for p in cfg.parallel if p and p not in PARALLEL]
    if bad:
        raise UsageError(f"--parallel takes none, {', '.join(PARALLEL)}; got {', '.join(bad)}")
    return [(c, o, p) for c in cfg.codecs for o in cfg.orders for p in cfg.parallel if _fits(o, p)]


def _row_name(codec: dict[str, Any], order: str, parallel: str) -> str:
    return f"{_codec_name(codec)}_{order.replace(':', '').replace(',', '-')}_{parallel or 'tokens'}"


def run_row(cfg: StudyConfig, data_dir: Path, codec: dict[str, Any], order: str, parallel: str, device: str) -> dict:
    """Train (or resume), evaluate and probe one row; its `result.json` is written last."""
    run = Path(cfg.out) / "runs" / _row_name(codec, order, parallel)
    done = run / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    row: dict[str, Any] = {"codec": _codec_name(codec), "order": order, "parallel": parallel or "none"}
    from vistok.shards.manifest import load_manifest

    longest = int(load_manifest(data_dir).tokens.get("max", 0))
    block = 16 * math.ceil(((2 * longest + 1) if parallel else longest + 1) / 16)  # one whole image per row
    data = DataConfig(datasets=[str(data_dir)], block_size=block, batch_size=cfg.batch_size, num_workers=1,
                      heldout=cfg.heldout, order=order, parallel=parallel, seed=cfg.seed)
    tcfg = TrainConfig(out=str(run), preset=cfg.preset, max_steps=cfg.max_steps, max_minutes=cfg.minutes, lr=cfg.lr,
                       warmup=min(30, cfg.max_steps), eval_every=0, ckpt_every=200, log_every=20, device=device, seed=cfg.seed)
    try:
        res = train(data, tcfg, resume=True, quiet=True)
    except UsageError as exc:  # a pair this codec refuses: the row says why
        row["refused"] = str(exc)
        write_json(done, row)
        return row
    ev = evaluate(run, limit=cfg.eval_images, device=device, steps=cfg.any_steps if parallel == "any" else None)
    pr = probe(run, cfg=ProbeConfig(train_limit=cfg.probe_train, test_limit=cfg.probe_test, seed=cfg.seed),
               device=device)
    row.update(steps=res["step"], block_size=block, bits_per_image=round(ev["bits_per_image"], 1),
               order_bits=round(ev["order_bits"], 1), steps_per_image=round(ev["steps_per_image"], 1),
               trained=pr["trained"], random_init=pr["random_init"], pixels=pr["pixels"],
               probe_images={"train": pr["train_images"], "test": pr["test_images"]})
    if "steps_curve" in ev:  # one any model at several step counts: the headline is the first
        row["at_steps"] = [{"steps": p["steps"], "bits_per_image": round(p["bits_per_image"], 1),
                            "steps_per_image": round(p["steps_per_image"], 1)} for p in ev["steps_curve"]]
    write_json(done, row)
    return row


def study(cfg: StudyConfig, progress=sys.stderr) -> list[dict]:
    """Run (or finish) the grid and write study.json, study.md and study.png; returns the rows."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    rows = []
    pre = Preprocess(size=cfg.size, gray=cfg.gray)
    cells = grid(cfg)
    for i, (codec, order, parallel) in enumerate(cells):
        ds = run_job(cfg.sources, out / "data" / _codec_name(codec), get_codec(codec), pre, shard_size=2000,
                     compress=True, executor=cfg.executor, quiet=True).folder
        print(f"[{i + 1}/{len(cells)}] {_row_name(codec, order, parallel)}", file=progress, flush=True)
        rows.append(run_row(cfg, ds, codec, order, parallel, device))
    write_json(out / "study.json", {"config": asdict(cfg), "rows": rows})
    (out / "study.md").write_text(table(rows, cfg))
    bar_chart(rows, out / "study.png")
    return rows


def table(rows: list[dict], cfg: StudyConfig) -> str:
    head = (f"Study: {', '.join(cfg.sources)}; preset {cfg.preset}, {cfg.minutes:g} minutes per run; probes on "
            "the held-out split (linear: logistic regression; k-NN: cosine, k = 20; every layer under both masks, "
            "the layer and mask chosen on a validation fifth of the training images).\n\n"
            "| codec | order | parallel | steps | bits/image | order bits | steps/image | linear top-1 | k-NN top-1 "
            "| layer, mask | random-init linear / k-NN | pixels linear / k-NN |\n" + "| --- " * 12 + "|\n")
    lines = []
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['codec']} | {r['order']} | {r['parallel']} | refused: {r['refused']} |" + " |" * 8)
            continue
        t, z, p = r["trained"], r["random_init"], r["pixels"]
        lines.append(f"| {r['codec']} | {r['order']} | {r['parallel']} | {r['steps']} | {r['bits_per_image']} | "
                     f"{r['order_bits']} | {r['steps_per_image']} | {t['linear_top1']:.3f} | {t['knn_top1']:.3f} | "
                     f"{t.get('layer', '')}, {t.get('mask', 'train')} | {z['linear_top1']:.3f} / {z['knn_top1']:.3f} | {p['linear_top1']:.3f} / {p['knn_top1']:.3f} |")
        for a in r.get("at_steps", [])[1:]:  # the same any model, scored in fewer steps
            lines.append(f"| {r['codec']} | {r['order']} | any, --steps {a['steps']} | {r['steps']} | "
                         f"{a['bits_per_image']} | {r['order_bits']} | {a['steps_per_image']} | (same model) |" + " |" * 4)
    return head + "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in rows if "refused" not in r]
    if not ok:
        return
    names = [f"{r['order']}\n{r['parallel']}" for r in ok]
    x = np.arange(len(ok))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(ok)), 4.2), dpi=100)
    for j, (key, label) in enumerate((("trained", "trained"), ("random_init", "random init"))):
        for k, (m, hatch) in enumerate((("linear_top1", ""), ("knn_top1", "//"))):
            ax.bar(x + (2 * j + k - 1.5) * 0.2, [r[key][m] for r in ok], 0.2, hatch=hatch,
                   color=("tab:blue", "tab:gray")[j], alpha=1.0 - 0.35 * k, label=f"{label}, {m.split('_')[0]}")
    ax.axhline(ok[0]["pixels"]["linear_top1"], color="tab:red", linestyle="--", label="pixels, linear")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("top-1 on held-out images")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = StudyConfig()
    ap.add_argument("--out", default=d.out)
    ap.add_argument("--minutes", type=float, default=d.minutes, help="training budget per run")
    ap.add_argument("--orders", default=",".join(d.orders), help="comma-separated (randsac:11,5 stays whole)")
    ap.add_argument("--parallel", default="none,segments", help="comma-separated: none, segments, scales, any")
    ap.add_argument("--source", action="append", help="sources to shard (default: fashion-mnist:train:12000)")
    a = ap.parse_args(argv)
    cfg = StudyConfig(out=a.out, minutes=a.minutes, orders=split_orders(a.orders), sources=a.source or d.sources,
                      parallel=["" if p == "none" else p for p in a.parallel.split(",")])
    try:
        rows = study(cfg)
    except VistokError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, UsageError) else 1)
    print(table(rows, cfg))


if __name__ == "__main__":
    main()
