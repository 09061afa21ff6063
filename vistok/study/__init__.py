"""`vistok study` / `make study`: one controlled comparison, one folder.

A grid of runs (codecs x orders x parallel modes) on one labelled dataset, each trained with the same preset
for the same number of optimizer steps, then evaluated (held-out bits/image, order bits, steps/image),
probed (linear and k-NN top-1 of every layer under both masks, for the trained model, its random-init twin
and the decoded pixels) and fine-tuned. Written to OUT:

    tokenizer/           the study's own patch tokenizer (codecs naming TOKENIZER), trained first, resumably
    data/<codec>/        the dataset per codec (reused when up to date)
    runs/<row>/          each run, its `result.json` written last: a finished row is skipped on a rerun,
                         an interrupted one resumes from its last checkpoint
    study.json           every row; study.md, the table; study.png, the probes as bars

Pairs that do not go together are left out of the grid (`--parallel segments` needs an order with segments:
randsac, squares, or dc-first with slic, frontier or randsac inside; `scales` next-scale or coarse-to-fine;
`any` random or dc-first; an `any` row is scored at two step counts, `any_steps`, one token per step and 16
steps by default); pairs a codec refuses (an rle layout with --parallel) are rows that say why.

The default (`make study`) is RandSAC's geometry: Fashion-MNIST (12,000 training images of the Debian
package) placed on 32x32 without resampling (`--resize border`), as codes of a 4x4-patch BSQ tokenizer (an
8x8 grid, 64 tokens an image) that the study trains on the same training images first; orders raster,
random, hilbert, randsac:7, randsac:11,5 and squares:2 token by token, the three segment orders also
segment-parallel, and random with `--parallel any`; `tiny`, 32 images a step, `steps` optimizer steps per
row; probes on 5,000 training and 1,000 held-out images.

`--photos`: the same study on real photos instead, labelled by folder (`photo_folders`: the embedded
scikit-image photographs cut into 32x32 tiles, a class per photo) in OUT/photos, OUT runs/study-photos.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vistok.errors import UsageError, VistokError
from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.shards.manifest import write_json
from vistok.tokenize.base import get_codec
from vistok.tokenize.schedule import ALL
from vistok.tokenize.stream import SCALE_AXES, SEGMENT_ORDERS, SEGMENTED_INNER, check_mode
from vistok.train.data import DataConfig
from vistok.train.evaluate import evaluate
from vistok.train.probe import ProbeConfig, probe
from vistok.train.trainer import TrainConfig, pick_device, train

TOKENIZER = "study"  # a codec's `tokenizer` naming the study's own (OUT/tokenizer)


@dataclass
class StudyTokenizer:
    """The patch tokenizer a study trains for codecs whose `tokenizer` is TOKENIZER (`vistok train-tokenizer`
    options). It sees the study's training images only: every image of the study's held-out split (the
    probes' test images) is among those it holds out."""

    kind: str = "bsq"
    patch: int = 4
    bits: int = 10
    width: int = 64
    blocks: int = 1
    latent: int = 16
    crop: int = 28  # whole Fashion-MNIST images
    batch: int = 64
    steps: int = 1500


@dataclass
class StudyConfig:
    out: str = "runs/study"
    sources: list[str] = field(default_factory=lambda: ["fashion-mnist:train:12000"])
    label_from: str = ""  # labels of folder sources (`vistok shard --label-from`); fashion-mnist needs none
    codecs: list[dict[str, Any]] = field(default_factory=lambda: [{"id": "bsq", "tokenizer": TOKENIZER}])
    tokenizer: StudyTokenizer = field(default_factory=StudyTokenizer)
    gray: bool = True
    size: int = 32  # inputs to this side (0: keep)
    resize: str = "border"
    orders: list[str] = field(default_factory=lambda: ["raster", "random", "hilbert", "randsac:7", "randsac:11,5",
                                                       "squares:2"])
    parallel: list[str] = field(default_factory=lambda: ["", "segments", "any"])
    any_steps: list[int] = field(default_factory=lambda: [ALL, 16])  # `any` rows: scored at these step counts
    preset: str = "tiny"
    steps: int = 200  # optimizer steps per row: rows compare across machines and runs
    minutes: float = 0.0  # and a time budget per row (0: none)
    batch_size: int = 32
    lr: float = 2e-3
    heldout: float = 0.2
    eval_images: int = 1000
    probe_train: int = 5000
    probe_test: int = 1000
    finetune: int = 3  # epochs of fine-tuning per row (0: none)
    finetune_images: int = 0  # of the probe's training images, fine-tuned on (0: all: the linear probe's)
    executor: str = "local"
    device: str = "auto"
    seed: int = 0


# The embedded scikit-image photographs (`sample`) that are photos of one scene or texture each: not their
# drawings, text, binary silhouettes, synthetic images or the second of two near-identical shots.
PHOTO_CLASSES = ("astronaut", "brick", "camera", "cell", "chelsea", "coffee", "coins", "grass", "gravel",
                 "hubble_deep_field", "ihc", "moon", "motorcycle_left", "retina", "rocket")


def photo_folders(out: str | Path, side: int = 32, area: int = 512 * 512) -> Path:
    """OUT/<photo>/<row>-<col>.png, a labelled set of real photos for `--label-from parent`: every photo of
    PHOTO_CLASSES (gray) scaled down to at most `area` pixels and cut into disjoint side x side tiles; a tile's
    class is the photo it comes from (15 classes, 108 to 256 tiles each). Deterministic; written once."""
    from PIL import Image

    from vistok.media.sources import sample_files

    out = Path(out)
    done = out / ".complete"
    if done.exists():
        return out
    photos = {p.stem: p for p in sample_files()}
    for name in PHOTO_CLASSES:
        img = Image.open(photos[name]).convert("L")
        scale = min(1.0, math.sqrt(area / (img.width * img.height)))
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS) if scale < 1 else img
        (out / name).mkdir(parents=True, exist_ok=True)
        for r in range(img.height // side):
            for c in range(img.width // side):
                img.crop((c * side, r * side, (c + 1) * side, (r + 1) * side)).save(out / name / f"{r:02d}-{c:02d}.png")
    done.write_text("")
    return out


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
    segmented = base in SEGMENT_ORDERS or (base == "dc-first" and inner.partition(":")[0] in SEGMENTED_INNER)
    return (not parallel or (parallel == "segments" and segmented) or (parallel == "scales" and base in SCALE_AXES)
            or (parallel == "any" and base in ("random", "dc-first")) or (parallel.startswith("masked") and base == "random"))


def _codec_name(cfg: dict[str, Any]) -> str:
    return "-".join(str(cfg[k]) for k in ("id", "layout", "quality") if k in cfg)


def grid(cfg: StudyConfig) -> list[tuple[dict[str, Any], str, str]]:
    for p in cfg.parallel:
        check_mode(p)
    return [(c, o, p) for c in cfg.codecs for o in cfg.orders for p in cfg.parallel if _fits(o, p)]


def _row_name(codec: dict[str, Any], order: str, parallel: str) -> str:
    return f"{_codec_name(codec)}_{order.replace(':', '').replace(',', '-')}_{parallel or 'tokens'}"


def run_row(cfg: StudyConfig, data_dir: Path, codec: dict[str, Any], order: str, parallel: str, device: str) -> dict:
    """Train (or resume), evaluate, probe and fine-tune one row; its `result.json` is written last."""
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
    tcfg = TrainConfig(out=str(run), preset=cfg.preset, max_steps=cfg.steps, max_minutes=cfg.minutes, lr=cfg.lr,
                       warmup=min(30, cfg.steps), eval_every=0, ckpt_every=200, log_every=20, device=device, seed=cfg.seed)
    clock = [time.monotonic()]

    def lap() -> float:  # seconds since the last lap (this process's: a resumed row counts its last part only)
        clock.append(time.monotonic())
        return round(clock[-1] - clock[-2], 1)

    try:
        res = train(data, tcfg, resume=True, quiet=True)
    except UsageError as exc:  # a pair this codec refuses: the row says why
        row["refused"] = str(exc)
        write_json(done, row)
        return row
    seconds = {"train": lap()}
    ev = evaluate(run, limit=cfg.eval_images, device=device, steps=cfg.any_steps if parallel == "any" else None)
    seconds["eval"] = lap()
    # The pixels of a dataset, and the random-init twin of an architecture, are the same for every row that
    # shares them: probed once, by the first such row. The twin of the token-by-token architecture is read under
    # both masks (its training mask is causal in the canonical order whatever the row's order); that of the
    # group-parallel one under mask none only, where no order or group enters (its training mask would be
    # one twin per order).
    probes = f"{data_dir.name}-{cfg.probe_train}-{cfg.probe_test}-{cfg.seed}"
    twin_masks = ("none",) if parallel else ()
    shared = {"pixels": Path(cfg.out) / "shared" / f"pixels-{probes}.json",
              "random_init": Path(cfg.out) / "shared" / (f"random-init-{probes}-{cfg.preset}-{block}-"
                                                         f"{'parallel-none' if parallel else 'tokens'}.json")}
    pr = probe(run, cfg=ProbeConfig(train_limit=cfg.probe_train, test_limit=cfg.probe_test, seed=cfg.seed,
                                    finetune=cfg.finetune, finetune_images=cfg.finetune_images, twin_masks=twin_masks,
                                    **{k: not f.exists() for k, f in shared.items()}),
               device=device)
    seconds["probe"] = lap()
    for key, f in shared.items():
        if key in pr:
            f.parent.mkdir(parents=True, exist_ok=True)
            write_json(f, pr[key])
        pr[key] = json.loads(f.read_text())
    row.update(steps=res["step"], block_size=block, **_figures(ev), trained=pr["trained"],
               random_init=pr["random_init"], pixels=pr["pixels"], finetune=pr.get("finetune"),
               probe_images={"train": pr["train_images"], "test": pr["test_images"]}, seconds=seconds)
    write_json(done, row)
    return row


def _figures(ev: dict[str, Any]) -> dict[str, Any]:
    """A row's eval figures; a masked row's bits are of its masked part only (none of an image's are claimed)."""
    if "masked_bits_per_image" in ev:
        return {"bits_per_image": None, "order_bits": None, "steps_per_image": None,
                "masked_bits_per_image": round(ev["masked_bits_per_image"], 1)}
    out = {k: round(ev[k], 1) for k in ("bits_per_image", "order_bits", "steps_per_image")}
    if "steps_curve" in ev:  # one any model at several step counts: the headline is the first
        out["at_steps"] = [{"steps": p["steps"], "bits_per_image": round(p["bits_per_image"], 1),
                            "steps_per_image": round(p["steps_per_image"], 1)} for p in ev["steps_curve"]]
    return out


def _cell(value: Any) -> str:
    return "—" if value is None else str(value)


def _bits(row: dict[str, Any]) -> str:
    """A row's bits per image for the table; a masked row's are of its masked part, said so."""
    if row.get("masked_bits_per_image") is not None:
        return f"— (masked part: {row['masked_bits_per_image']})"
    return str(row["bits_per_image"])


def study_tokenizer(cfg: StudyConfig, progress=sys.stderr) -> Path:
    """OUT/tokenizer: trained once on the study's training images (resumed when interrupted), then reused."""
    from vistok.nn.autoencoder import AEConfig
    from vistok.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    out = Path(cfg.out) / "tokenizer"
    if (out / "config.json").exists():
        return out
    t = cfg.tokenizer
    print(f"tokenizer: {t.kind}, {t.patch}x{t.patch} patches, {t.steps} steps", file=progress, flush=True)
    ae = AEConfig(kind=t.kind, patch=t.patch, bits=t.bits, width=t.width, blocks=t.blocks, latent=t.latent)
    tcfg = TokenizerTrainConfig(sources=list(cfg.sources), out=str(out), crop=t.crop, batch=t.batch,
                                max_steps=t.steps, heldout=cfg.heldout, heldout_below=cfg.heldout, seed=cfg.seed,
                                device=cfg.device)
    rep = train_tokenizer(ae, tcfg, progress=progress, quiet=True, resume=True)
    print(f"tokenizer: held-out PSNR {rep['psnr']:.2f} dB, {rep['codes_used']} codes used", file=progress, flush=True)
    return out


def _resolved(cfg: StudyConfig, codec: dict[str, Any], progress) -> dict[str, Any]:
    if codec.get("tokenizer") != TOKENIZER:
        return codec
    return {**codec, "tokenizer": str(study_tokenizer(cfg, progress).resolve())}


def study(cfg: StudyConfig, progress=sys.stderr) -> list[dict]:
    """Run (or finish) the grid and write study.json, study.md and study.png; returns the rows."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    if cfg.steps < 1:
        raise UsageError("a study trains every row for the same number of optimizer steps: --steps must be >= 1")
    rows = []
    pre = Preprocess(size=cfg.size, resize=cfg.resize, gray=cfg.gray)
    cells = grid(cfg)
    for i, (codec, order, parallel) in enumerate(cells):
        ds = run_job(cfg.sources, out / "data" / _codec_name(codec), get_codec(_resolved(cfg, codec, progress)), pre,
                     shard_size=2000, compress=True, executor=cfg.executor, quiet=True, label_from=cfg.label_from).folder
        print(f"[{i + 1}/{len(cells)}] {_row_name(codec, order, parallel)}", file=progress, flush=True)
        rows.append(run_row(cfg, ds, codec, order, parallel, device))
    write_json(out / "study.json", {"config": asdict(cfg), "rows": rows})
    (out / "study.md").write_text(table(rows, cfg))
    bar_chart(rows, out / "study.png")
    return rows


def _top1(r: dict[str, Any], mask: str) -> str:
    m = r["trained"].get(mask)
    return f"{m['linear_top1']:.3f} (L{m['layer']})" if m else ""


def table(rows: list[dict], cfg: StudyConfig) -> str:
    budget = f"{cfg.steps} steps of {cfg.batch_size} images per run" + (f" (at most {cfg.minutes:g} minutes)" if cfg.minutes else "")
    head = (f"Study: {', '.join(cfg.sources)}; preset {cfg.preset}, {budget}; probes on the held-out split "
            "(linear: logistic regression; k-NN: cosine, k = 20; every layer under both masks, the layer and mask "
            "chosen on a validation fifth of the training images; fine-tuned: a linear head, the whole model "
            f"trained {cfg.finetune} epoch(s) on {cfg.finetune_images or cfg.probe_train} of the training images; "
            "random init: the same architecture untrained, under both masks for token-by-token rows, mask none for "
            "group-parallel ones).\n\n"
            "| codec | order | parallel | steps | bits/image | order bits | steps/image | linear top-1 (layer, mask) "
            "| linear, mask none | linear, mask train | k-NN top-1 | fine-tuned | random-init linear / k-NN "
            "| pixels linear / k-NN |\n" + "| --- " * 14 + "|\n")
    lines = []
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['codec']} | {r['order']} | {r['parallel']} | refused: {r['refused']} |" + " |" * 10)
            continue
        t, z, p = r["trained"], r["random_init"], r["pixels"]
        ft = f"{r['finetune']['top1']:.3f}" if r.get("finetune") else ""
        lines.append(f"| {r['codec']} | {r['order']} | {r['parallel']} | {r['steps']} | {_bits(r)} | "
                     f"{_cell(r['order_bits'])} | {_cell(r['steps_per_image'])} | {t['linear_top1']:.3f} ({t.get('layer', '')}, "
                     f"{t.get('mask', 'train')}) | {_top1(r, 'none')} | {_top1(r, 'train')} | {t['knn_top1']:.3f} | {ft} | "
                     f"{z['linear_top1']:.3f} / {z['knn_top1']:.3f} | {p['linear_top1']:.3f} / {p['knn_top1']:.3f} |")
        for a in r.get("at_steps", [])[1:]:  # the same any model, scored in fewer steps
            lines.append(f"| {r['codec']} | {r['order']} | any, --steps {a['steps']} | {r['steps']} | "
                         f"{a['bits_per_image']} | {r['order_bits']} | {a['steps_per_image']} | (same model) |" + " |" * 6)
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
    ap.add_argument("--steps", type=int, default=d.steps, help="optimizer steps per run")
    ap.add_argument("--minutes", type=float, default=d.minutes, help="and a training time limit per run (0: none)")
    ap.add_argument("--orders", default=",".join(d.orders), help="comma-separated (randsac:11,5 stays whole)")
    ap.add_argument("--parallel", default=",".join(p or "none" for p in d.parallel),
                    help="comma-separated: none, segments, scales, any")
    ap.add_argument("--source", action="append", help="sources to shard (default: fashion-mnist:train:12000)")
    ap.add_argument("--label-from", default="", help="labels of folder sources: parent, json:FIELD, cls")
    ap.add_argument("--photos", action="store_true",
                    help=f"the real-photo set instead: OUT/photos, {len(PHOTO_CLASSES)} embedded photos cut into 32x32 "
                         "tiles, a class per photo, labelled by folder (default OUT: runs/study-photos)")
    a = ap.parse_args(argv)
    out, sources, label_from = a.out, a.source or d.sources, a.label_from
    if a.photos:
        out = "runs/study-photos" if a.out == d.out else a.out
        sources, label_from = [str(photo_folders(Path(out) / "photos"))], "parent"
    cfg = StudyConfig(out=out, steps=a.steps, minutes=a.minutes, orders=split_orders(a.orders), sources=sources,
                      label_from=label_from, parallel=["" if p == "none" else p for p in a.parallel.split(",")])
    try:
        rows = study(cfg)
    except VistokError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, UsageError) else 1)
    print(table(rows, cfg))


if __name__ == "__main__":
    main()
