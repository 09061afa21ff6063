"""Orders and group-parallel prediction at one time budget per row: held-out bits/image (order bits
included), order bits, model steps/image and sampling images/s, for JPEG dense coefficients and BSQ codes.

Each row trains the `tiny` preset for `minutes` on CPU on the same dataset and evaluates the same held-out
images; the baseline of every ratio is the first row of the same codec (canonical, token by token), in
the same run.
The BSQ tokenizers (10 bits; one scale, and four scales for next-scale) are trained here for 400 steps:
their codes are coarse, but every row of a codec sees the same codes.

    python benchmarks/bench_group_orders.py [--minutes 1.0] [--out bench-out/orders]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import smoke  # noqa: E402
from vistok.media.preprocess import Preprocess  # noqa: E402
from vistok.pipelines.job import run_job  # noqa: E402
from vistok.shards.reader import Dataset  # noqa: E402
from vistok.tokenize import JpegCodec  # noqa: E402
from vistok.tokenize.stream import StreamSpec  # noqa: E402
from vistok.train.checkpoint import load_model  # noqa: E402
from vistok.train.data import DataConfig  # noqa: E402
from vistok.train.evaluate import evaluate  # noqa: E402
from vistok.train.sample import sample_images  # noqa: E402
from vistok.train.trainer import TrainConfig, train  # noqa: E402

ROWS = [  # (dataset, order, parallel)
    ("jpeg", "canonical", ""), ("jpeg", "random", ""), ("jpeg", "hilbert", ""), ("jpeg", "randsac:11,5", ""),
    ("jpeg", "randsac:11,5", "segments"),
    ("bsq", "canonical", ""), ("bsq", "random", ""), ("bsq", "hilbert", ""), ("bsq", "randsac:11,5", ""),
    ("bsq", "randsac:11,5", "segments"),
    ("bsq4", "next-scale", ""), ("bsq4", "next-scale", "scales"),  # next-scale is bsq4's canonical order
]
SMOKE_ROWS = [("jpeg", "canonical", ""), ("jpeg", "randsac:11,5", "segments"), ("bsq4", "next-scale", "scales")]
BLOCK = {"jpeg": (1024, 1600), "bsq": (520, 520), "bsq4": (520, 520)}  # (token by token, parallel)


def _tokenizer(name: str, out: Path, scales: int) -> Path:
    """A 10-bit BSQ tokenizer (1024 codes, so that the `tiny` model's output layer stays small) trained here."""
    if (out / name / "model.safetensors").exists():
        return out / name
    from vistok.nn.autoencoder import AEConfig
    from vistok.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    cfg = TokenizerTrainConfig(sources=["sample"], out=str(out / name), crop=64, batch=16, max_steps=5 if smoke() else 400,
                               seed=1)
    train_tokenizer(AEConfig(kind="bsq", bits=10, scales=scales), cfg, quiet=True)
    return out / name


def datasets(out: Path) -> dict[str, Path]:
    from vistok.tokenize.learned import BSQCodec

    few = smoke()
    codecs = {"jpeg": (JpegCodec(quality=30, layout="dense", subsampling="444"), Preprocess(size=16, crops=4 if few else 60)),
              "bsq": (BSQCodec(str(_tokenizer("bsq", out, 1))), Preprocess(size=64, crops=2 if few else 40)),
              "bsq4": (BSQCodec(str(_tokenizer("bsq4", out, 4))), Preprocess(size=64, crops=2 if few else 40))}
    return {k: run_job(["sample"], out / f"ds-{k}", c, p, shard_size=256, executor="local", quiet=True).folder
            for k, (c, p) in codecs.items()}


def row(ds: Path, name: str, order: str, parallel: str, minutes: float, out: Path) -> dict:
    run = out / f"run-{name}-{order.replace(':', '').replace(',', '_')}-{parallel or 'tokens'}"
    shutil.rmtree(run, ignore_errors=True)
    block = BLOCK[name][1 if parallel else 0]
    data = DataConfig(datasets=[str(ds)], block_size=block, batch_size=4 if name == "jpeg" else 8, num_workers=1,
                      heldout=0.1, order=order, parallel=parallel, seed=0)
    cfg = TrainConfig(out=str(run), preset="tiny", max_steps=100_000, max_minutes=minutes, warmup=30, eval_every=0,
                      ckpt_every=100_000, log_every=50)
    res = train(data, cfg, quiet=True)
    ev = evaluate(run, limit=4 if smoke() else 64)
    model, _ = load_model(run)
    codec = Dataset(ds).codec
    rec = next(iter(Dataset(ds)))
    meta = {k: rec.meta[k] for k in ("height", "width", "components", "subsampling") if k in rec.meta}
    t0 = time.perf_counter()
    n = 1 if smoke() else 4
    sample_images(model, codec, meta, n, seed=0, spec=StreamSpec.parse(order, parallel))
    return {"dataset": name, "order": order, "parallel": parallel or "none", "steps_trained": res["step"],
            "bits_per_image": round(ev["bits_per_image"], 1), "order_bits": round(ev["order_bits"], 1),
            "steps_per_image": round(ev["steps_per_image"], 1), "tokens_per_image": ev["tokens_per_image"],
            "sample_images_per_s": round(n / (time.perf_counter() - t0), 3), "heldout_images": ev["images"]}


def run(minutes: float = 1.0, out: Path = Path("bench-out/orders"), only: str = "") -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    sets = datasets(out)
    rows, base = [], {}
    for name, order, parallel in ROWS:
        if (only and only != name) or (smoke() and (name, order, parallel) not in SMOKE_ROWS):
            continue
        r = row(sets[name], name, order, parallel, minutes, out)
        base.setdefault(name, r["bits_per_image"])  # the first row of a codec: token by token, canonical
        r["bits_vs_canonical"] = round(r["bits_per_image"] / base[name], 4) if name in base else None
        print(json.dumps(r), flush=True)
        rows.append(r)
    return rows


def summary(minutes: float = 0.5) -> dict:
    """`make bench`: every row's figures in one flat dict (a shorter budget than the README's table)."""
    out = {}
    for r in run(minutes, Path("bench-out/orders-make" + ("-smoke" if smoke() else ""))):
        name = f"{r['dataset']}_{r['order']}_{r['parallel']}"
        for k in ("bits_per_image", "order_bits", "steps_per_image", "sample_images_per_s", "bits_vs_canonical"):
            out[f"{name}_{k}"] = r[k]
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--out", default="bench-out/orders")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    run(a.minutes, Path(a.out), a.only)
