"""Whole 256x256 images in context on the CPU: windows of 512 against the whole image, with full and local
attention, the same optimizer steps and positions per step in every row, all measured in this run.

Data: the embedded photos as JPEG quality 20 coefficients (rle), 256x256 random crops for training (four
per photo) and 256x256 centre crops of the held-out photos (the split is by photo) for scoring. Each row
trains `tiny` for `steps` optimizer steps of 8,192 positions (16 rows of 512, or one row of 8,192) and
reports, per held-out image: the model's bits (what `vistok compress` codes, windows and masks as trained),
the scan bits of the same JPEG with optimized Huffman tables, Lepton's file bits, and training tokens/s.

    python benchmarks/bench_long.py [--steps 120] [--out bench-out/long]
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
from vistok.train.data import DataConfig, heldout_records  # noqa: E402
from vistok.train.evaluate import evaluate, jpeg_scan_bytes  # noqa: E402
from vistok.train.trainer import TrainConfig, train  # noqa: E402

# (name, context, rows per step, --attention): every row 8,192 positions per optimizer step
ROWS = [("windows of 512", 512, 16, "full"), ("whole image", 8192, 1, "full"),
        ("whole image, local:1", 8192, 1, "local:1"), ("whole image, local:3", 8192, 1, "local:3")]
HELDOUT = 0.2


def _datasets(out: Path) -> tuple[Path, Path]:
    codec = JpegCodec(quality=20)
    crops = run_job(["sample"], out / "crops", codec, Preprocess(size=256, crops=1 if smoke() else 4), shard_size=64,
                    executor="local", quiet=True).folder
    centre = run_job(["sample"], out / "centre", codec, Preprocess(size=256, crops=0), shard_size=64,
                     executor="local", quiet=True).folder
    return crops, centre


def _tokens_per_s(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r.get("step", 0) > 2]
    return round(sum(speeds) / max(1, len(speeds)), 1)


def reference(centre: Path) -> dict:
    """Optimized-Huffman scan bits and Lepton's file bits of the held-out photos (the same for every row)."""
    import lepton_jpeg_python as lepton

    codec = Dataset(centre).codec
    recs = list(heldout_records([Dataset(centre)], HELDOUT))
    scan = [8 * jpeg_scan_bytes(codec.to_jpeg(r, optimize=True)) for r in recs]
    lep = [8 * len(lepton.compress_bytes(codec.to_jpeg(r, optimize=False))) for r in recs]
    n = len(recs)
    return {"images": n, "tokens_per_image": round(sum(r.tokens.size for r in recs) / n, 1),
            "jpeg_scan_bits": round(sum(scan) / n, 1), "lepton_bits": round(sum(lep) / n, 1),
            "lepton_vs_scan": round(sum(lep) / sum(scan), 4)}


def run(steps: int = 120, out: Path = Path("bench-out/long"), rows=ROWS) -> list[dict]:
    shutil.rmtree(out, ignore_errors=True)  # everything is measured afresh
    out.mkdir(parents=True)
    crops, centre = _datasets(out)
    ref = reference(centre)
    print(json.dumps({"set": "held-out 256x256 centre crops, JPEG q20 rle", **ref}), flush=True)
    results = []
    for name, context, batch, attention in rows:
        run_dir = out / name.replace(" ", "_").replace(",", "").replace(":", "")
        data = DataConfig(datasets=[str(crops)], block_size=context, stride=context // 2, batch_size=batch,
                          num_workers=1, heldout=HELDOUT, seed=0)
        t0 = time.perf_counter()
        train(data, TrainConfig(out=str(run_dir), preset="tiny", max_steps=steps, warmup=min(30, steps // 4),
                                attention=attention, eval_every=0, ckpt_every=steps, log_every=5), quiet=True)
        minutes = (time.perf_counter() - t0) / 60
        ev = evaluate(run_dir, datasets=[str(centre)], split="heldout")
        assert ev["images"] == ref["images"], "every row is scored on the same held-out photos"
        bits = ev["bits_per_image"]
        row = {"row": name, "steps": steps, "context": context, "attention": attention, "bits_per_image": round(bits, 1),
               "vs_jpeg_scan": round(bits / ref["jpeg_scan_bits"], 4), "vs_lepton": round(bits / ref["lepton_bits"], 4),
               "train_tokens_per_s": _tokens_per_s(run_dir), "train_minutes": round(minutes, 2)}
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def summary(steps: int = 20) -> dict:
    """`make bench`: a short run of every row, flattened."""
    out = {}
    for r in run(steps, Path("bench-out/long-make")):
        key = r["row"].replace(" ", "_").replace(",", "").replace(":", "")
        out.update({f"{key}_{k}": v for k, v in r.items() if k in ("bits_per_image", "vs_jpeg_scan", "vs_lepton",
                                                                       "train_tokens_per_s")})
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--out", default="bench-out/long")
    a = ap.parse_args()
    run(a.steps, Path(a.out))
