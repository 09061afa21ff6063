"""Content-aware orders a decoder can follow (`dc-first:*`) against content-blind ones, at equal steps.

Data: the embedded photos as JPEG quality 20 coefficients, 64x64 random crops (six per photo), 4:4:4 so the
unit grid is 8x8 (at 4:2:0 a 64x64 crop is 4x4 MCUs, too few units for superpixels to mean anything), the
held-out split by key. One dataset stores the pixel gradient walk (`--store-order gradwalk:max`) for its row;
every row reads it (the same records, the same held-out images). Token-by-token rows use the rle layout;
the group-parallel rows (`--parallel segments`) the dense layout at 32x32, since the layout must give
every coefficient a place. Each row trains `tiny` for the same number of optimizer steps of 4,096
positions (4 rows of 1,024 token by token, 2 of 2,048 in parallel) and reports, per
held-out image: bits (order bits included), order bits, the DC image's bits and the rest's (`eval --parts`)
and model steps per image.

    python benchmarks/bench_dc_first.py [--steps 120] [--out bench-out/dc-first]
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
from vistok.tokenize import JpegCodec  # noqa: E402
from vistok.train.data import DataConfig  # noqa: E402
from vistok.train.evaluate import evaluate  # noqa: E402
from vistok.train.trainer import TrainConfig, train  # noqa: E402

TOKEN_ROWS = ["canonical", "dc-first", "dc-first:slic:8", "dc-first:slic:24", "dc-first:gradwalk:max",
              "gradwalk:max", "dc-first:frontier", "randsac:11,5"]
PARALLEL_ROWS = ["randsac:11,5", "dc-first:slic:8", "dc-first:frontier"]
HELDOUT = 0.2


def _datasets(out: Path) -> tuple[Path, Path]:
    rle = run_job(["sample"], out / "rle", JpegCodec(quality=20, subsampling="444"), Preprocess(size=64, crops=2 if smoke() else 6),
                  shard_size=64, executor="local", quiet=True, store_orders=("gradwalk:max",)).folder
    dense = run_job(["sample"], out / "dense", JpegCodec(quality=20, subsampling="444", layout="dense"),
                    Preprocess(size=32, crops=2 if smoke() else 6), shard_size=64, executor="local", quiet=True).folder
    return rle, dense


def _row(ds: Path, out: Path, order: str, parallel: str, steps: int, block: int, batch: int) -> dict:
    run_dir = out / f"{order.replace(':', '-').replace(',', '-')}-{parallel or 'tokens'}"
    data = DataConfig(datasets=[str(ds)], block_size=block, batch_size=batch, num_workers=1, heldout=HELDOUT,
                      order=order, parallel=parallel, seed=0)
    t0 = time.perf_counter()
    train(data, TrainConfig(out=str(run_dir), preset="tiny", max_steps=steps, warmup=min(30, steps // 4),
                            eval_every=0, ckpt_every=steps, log_every=10), quiet=True)
    minutes = (time.perf_counter() - t0) / 60
    ev = evaluate(run_dir, split="heldout", parts=True)
    return {"order": order, "parallel": parallel or "none", "steps": steps, "images": ev["images"],
            "bits_per_image": round(ev["bits_per_image"], 1), "order_bits": round(ev["order_bits"], 1),
            "dc_bits": round(ev["dc_bits_per_image"], 1), "rest_bits": round(ev["rest_bits_per_image"], 1),
            "steps_per_image": round(ev["steps_per_image"], 1), "vs_jpeg_scan": round(ev["model_to_jpeg_ratio"], 4),
            "train_minutes": round(minutes, 2)}


def run(steps: int = 120, out: Path = Path("bench-out/dc-first"), token_rows=TOKEN_ROWS,
        parallel_rows=PARALLEL_ROWS) -> list[dict]:
    shutil.rmtree(out, ignore_errors=True)  # everything is measured afresh
    out.mkdir(parents=True)
    rle, dense = _datasets(out)
    results = []
    for order in token_rows:
        results.append(_row(rle, out, order, "", steps, 1024, 4))
        print(json.dumps(results[-1]), flush=True)
    for order in parallel_rows:
        results.append(_row(dense, out, order, "segments", steps, 2048, 2))
        print(json.dumps(results[-1]), flush=True)
    return results


def summary(steps: int = 10) -> dict:
    """`make bench`: a short run of a few rows, flattened."""
    out = {}
    for r in run(steps, Path("bench-out/dc-first-make"), ["canonical", "dc-first:slic:8", "gradwalk:max"],
                 ["dc-first:frontier"]):
        key = f"{r['order']}_{r['parallel']}".replace(":", "").replace(",", "-")
        out.update({f"{key}_{k}": r[k] for k in ("bits_per_image", "order_bits", "dc_bits", "steps_per_image")})
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--out", default="bench-out/dc-first")
    a = ap.parse_args()
    run(a.steps, Path(a.out))
