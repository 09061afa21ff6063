"""Any-step parallel prediction (`--parallel any`) against token by token and fixed partitions, at the same
number of optimizer steps per row: held-out bits per image at N = all, tokens/4, tokens/16, tokens/64, model
steps per image, sampling and compress images/s.

Rows per codec (the same held-out images in every row of a codec):
- `any`: one model, scored at every N after training (the cosine test schedule), with and without
  co-attending queries;
- `random`, token by token (the baseline of the any model's N = all);
- `randsac:11,5 --parallel segments`, with and without co-attending queries;
- BSQ 4 scales: `next-scale --parallel scales`, with and without co-attention.
Codecs: JPEG q30 dense coefficients of 32x32 grey crops of the embedded photos (16 blocks, 1,024 tokens);
codes of a 10-bit BSQ tokenizer trained here (64x64 crops, an 8x8 grid, 64 codes; 4 scales: 85).

Compress images/s: the any model at each N, and token by token (the `random` row's model, its 8 lanes),
on the same records in the same run; every file is decoded back and checked.

    python benchmarks/bench_any_steps.py [--steps 300] [--out bench-out/any-steps] [--only jpeg]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_group_orders import _tokenizer  # noqa: E402
from benchmarks.common import smoke  # noqa: E402
from vistok.media.preprocess import Preprocess  # noqa: E402
from vistok.pipelines.job import run_job  # noqa: E402
from vistok.shards.reader import Dataset  # noqa: E402
from vistok.tokenize import JpegCodec  # noqa: E402
from vistok.tokenize.schedule import ALL  # noqa: E402
from vistok.tokenize.stream import StreamSpec  # noqa: E402
from vistok.train.checkpoint import load_model  # noqa: E402
from vistok.train.compress import Coder  # noqa: E402
from vistok.train.data import DataConfig, heldout_records  # noqa: E402
from vistok.train.evaluate import evaluate  # noqa: E402
from vistok.train.sample import sample_images  # noqa: E402
from vistok.train.trainer import TrainConfig, train  # noqa: E402

ROWS = [  # (dataset, order, parallel, co_attend)
    ("jpeg", "random", "any", True), ("jpeg", "random", "any", False), ("jpeg", "random", "", False),
    ("jpeg", "randsac:11,5", "segments", True), ("jpeg", "randsac:11,5", "segments", False),
    ("bsq", "random", "any", True), ("bsq", "random", "any", False), ("bsq", "random", "", False),
    ("bsq", "randsac:11,5", "segments", True), ("bsq", "randsac:11,5", "segments", False),
    ("bsq4", "next-scale", "scales", True), ("bsq4", "next-scale", "scales", False),
]
SMOKE_ROWS = ROWS[:3] + ROWS[-1:]
BLOCK = {"jpeg": (1040, 2064), "bsq": (80, 144), "bsq4": (96, 176)}  # (token by token, parallel): one image a row
BATCH = {"jpeg": 4, "bsq": 16, "bsq4": 16}  # images per optimizer step, the same in every row of a codec
HELDOUT = 32  # held-out images scored per row
CODED = 8  # records compressed per timing


def datasets(out: Path) -> dict[str, Path]:
    from vistok.tokenize.learned import BSQCodec

    few = smoke()
    codecs = {"jpeg": (JpegCodec(quality=30, layout="dense"), Preprocess(size=32, crops=2 if few else 30, gray=True)),
              "bsq": (BSQCodec(str(_tokenizer("bsq", out, 1))), Preprocess(size=64, crops=2 if few else 40)),
              "bsq4": (BSQCodec(str(_tokenizer("bsq4", out, 4))), Preprocess(size=64, crops=2 if few else 40))}
    return {k: run_job(["sample"], out / f"ds-{k}", c, p, shard_size=256, executor="local", quiet=True).folder
            for k, (c, p) in codecs.items()}


def curve_steps(tokens: int) -> list[int]:
    """N = all, tokens/4, tokens/16, tokens/64 (at least 1, duplicates left out)."""
    out = [ALL]
    for d in (4, 16, 64):
        n = max(1, round(tokens / d))
        if n not in out:
            out.append(n)
    return out


def _images_per_s(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return round(n / (time.perf_counter() - t0), 3)


def _compress_speed(run: Path, recs: list, steps: int | None) -> float:
    """Images/s of compress at `steps`; the files are decoded back and must give the records."""
    coder = Coder.load(run, steps)
    t0 = time.perf_counter()
    blobs = [b for _, b in coder.compress(recs)]
    speed = len(recs) / (time.perf_counter() - t0)
    back = list(coder.decompress(blobs))
    if [r.tokens.tolist() for r in back] != [r.tokens.tolist() for r in recs]:
        raise AssertionError(f"{run}: a file did not decode to its record")
    return round(speed, 3)


def row(ds: Path, name: str, order: str, parallel: str, co_attend: bool, steps: int, out: Path) -> list[dict]:
    tag = f"{name}-{order.replace(':', '').replace(',', '_')}-{parallel or 'tokens'}{'-co' if co_attend else ''}"
    run = out / f"run-{tag}"
    shutil.rmtree(run, ignore_errors=True)
    data = DataConfig(datasets=[str(ds)], block_size=BLOCK[name][1 if parallel else 0], batch_size=BATCH[name],
                      num_workers=1, heldout=0.1, order=order, parallel=parallel, seed=0)
    cfg = TrainConfig(out=str(run), preset="tiny", max_steps=steps, warmup=min(30, steps // 5), eval_every=0,
                      ckpt_every=100_000, log_every=50, co_attend=co_attend)
    t0 = time.perf_counter()
    res = train(data, cfg, quiet=True)
    minutes = (time.perf_counter() - t0) / 60
    dset = Dataset(ds)
    codec, rec = dset.codec, next(iter(dset))
    tokens = int(rec.tokens.size)
    recs = list(heldout_records([dset], 0.1, 2 if smoke() else CODED))
    meta = {k: rec.meta[k] for k in ("height", "width", "components", "subsampling") if k in rec.meta}
    model, _ = load_model(run)
    base = {"dataset": name, "order": order, "parallel": parallel or "none", "co_attend": co_attend if parallel else None,
            "optimizer_steps": res["step"], "train_minutes": round(minutes, 1), "tokens_per_image": tokens}
    points = curve_steps(tokens) if parallel == "any" else [None]
    points = points[-1:] if smoke() else points  # the fewest steps: the quickest to sample and code
    ev = evaluate(run, limit=4 if smoke() else HELDOUT, steps=points if parallel == "any" else None)
    curve = ev.get("steps_curve") or [{"steps": "-", "bits_per_image": ev["bits_per_image"],
                                       "steps_per_image": ev["steps_per_image"]}]
    rows = []
    for n, point in zip(points, curve):
        r = {**base, "steps": point["steps"], "bits_per_image": round(point["bits_per_image"], 1),
             "steps_per_image": round(point["steps_per_image"], 1), "heldout_images": ev["images"]}
        r["sample_images_per_s"] = _images_per_s(
            lambda n=n: sample_images(model, codec, meta, 4, seed=0, spec=StreamSpec.parse(order, parallel, steps=n)), 4)
        r["compress_images_per_s"] = _compress_speed(run, recs, n)
        rows.append(r)
    return rows


def run(steps: int = 300, out: Path = Path("bench-out/any-steps"), only: str = "") -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    sets = datasets(out)
    rows = []
    for name, order, parallel, co in ROWS:
        if (only and only != name) or (smoke() and (name, order, parallel, co) not in SMOKE_ROWS):
            continue
        for r in row(sets[name], name, order, parallel, co, steps, out):
            print(json.dumps(r), flush=True)
            rows.append(r)
    add_ratios(rows)
    plot(rows, out / "bits_vs_steps.png")
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def add_ratios(rows: list[dict]) -> None:
    """bits vs the any model at one token per step, and compress speed vs token-by-token compress (the
    `random` row), each within its codec."""
    for r in rows:
        same = [x for x in rows if x["dataset"] == r["dataset"]]
        co = r["co_attend"] if r["parallel"] == "any" else True  # the any model of its kind, else the default
        anyall = next((x for x in same if x["parallel"] == "any" and x["steps"] == "all" and x["co_attend"] == co), None)
        tokens = next((x for x in same if x["parallel"] == "none"), None)
        if anyall:
            r["bits_vs_any_all"] = round(r["bits_per_image"] / anyall["bits_per_image"], 4)
        if tokens:
            r["bits_vs_tokens"] = round(r["bits_per_image"] / tokens["bits_per_image"], 4)
            r["compress_speed_vs_tokens"] = round(r["compress_images_per_s"] / tokens["compress_images_per_s"], 2)


def plot(rows: list[dict], path: Path) -> None:
    """Held-out bits per image against model steps per image: a line per any model, a point per fixed row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        same = [r for r in rows if r["dataset"] == name]
        for co in (True, False):
            anys = sorted((r for r in same if r["parallel"] == "any" and r["co_attend"] == co),
                          key=lambda r: r["steps_per_image"])
            if anys:
                ax.plot([r["steps_per_image"] for r in anys], [r["bits_per_image"] for r in anys], "o-" if co else "o--",
                        label=f"any {'co' if co else 'alone'}")
        for r in same:
            if r["parallel"] != "any":
                co = "" if r["co_attend"] is None else (" co" if r["co_attend"] else " alone")
                ax.plot(r["steps_per_image"], r["bits_per_image"], "s", label=f"{r['order']} {r['parallel']}{co}")
        ax.set_xscale("log")
        ax.set_xlabel("model steps per image")
        ax.set_ylabel("held-out bits per image")
        ax.set_title(f"{name}, {same[0]['optimizer_steps']} optimizer steps")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(steps: int = 40) -> dict:
    """`make bench`: the figures in one flat dict (a short budget; the README's table is the full one)."""
    out = {}
    for r in run(steps, Path("bench-out/any-steps-make" + ("-smoke" if smoke() else ""))):
        co = "" if r["co_attend"] is None else ("_co" if r["co_attend"] else "_alone")
        name = f"{r['dataset']}_{r['order']}_{r['parallel']}{co}_{r['steps']}"
        for k in ("bits_per_image", "steps_per_image", "sample_images_per_s", "compress_images_per_s",
                  "bits_vs_any_all", "compress_speed_vs_tokens"):
            if k in r:
                out[f"{name}_{k}"] = r[k]
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps per row")
    ap.add_argument("--out", default="bench-out/any-steps")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    run(a.steps, Path(a.out), a.only)
