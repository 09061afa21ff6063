"""`vistok compress` against JPEG's own files and Lepton, on held-out photos, all measured in this run.

A `tiny` model is trained for `minutes` on CPU on the embedded photos as JPEG quality 20 coefficients
(rle): 64x64 crops (the pretrain setting) and 256x256 centre crops, 3:1. Its held-out photos (the split
is by photo) are coded as 64x64 crops and as 256x256 centre crops. For each set, bytes per image of:
- the q20 JPEG file (standard Huffman tables), and with optimized Huffman tables (libjpeg's optimize);
- Lepton (`lepton-jpeg-python`) recompressing the standard file, losslessly;
- the `vistok compress` file (its 16-byte container included: format 2, no --keep-meta) and its payload alone;
and images per second of compress, decompress and Lepton on one CPU thread.

    python benchmarks/bench_compress.py [--minutes 3] [--out bench-out/compress]
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
from vistok.train.compress import Coder  # noqa: E402
from vistok.train.container import DESCRIPTIVE, payload_bits  # noqa: E402
from vistok.train.data import DataConfig, heldout_records  # noqa: E402
from vistok.train.evaluate import record_bits  # noqa: E402
from vistok.train.trainer import TrainConfig, train  # noqa: E402


def _per_s(n: int, fn) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, round(n / (time.perf_counter() - t0), 2)


def measure(coder: Coder, recs: list, name: str) -> dict:
    import lepton_jpeg_python as lepton
    import torch

    codec = coder.codec
    std = [codec.to_jpeg(r, optimize=False) for r in recs]
    opt = [codec.to_jpeg(r, optimize=True) for r in recs]
    torch.set_num_threads(1)
    lep, lep_s = _per_s(len(std), lambda: [lepton.compress_bytes(j) for j in std])
    blobs, c_s = _per_s(len(recs), lambda: [b for _, b in coder.compress(recs)])
    back, d_s = _per_s(len(recs), lambda: list(coder.decompress(blobs)))
    for b, r in zip(back, recs, strict=True):  # a file (no --keep-meta) gives the tokens and what decoding needs
        assert (b.tokens == r.tokens).all() and b.meta == {k: v for k, v in r.meta.items() if k not in DESCRIPTIVE}, \
            "a file did not decode to its record"
    bits = sum(r.bits for r in record_bits(coder.model, codec, recs, coder.data, "cpu"))
    n = len(recs)
    out = {"set": name, "images": n, "jpeg_bytes": sum(map(len, std)) / n, "jpeg_optimized_bytes": sum(map(len, opt)) / n,
           "lepton_bytes": sum(map(len, lep)) / n, "vistok_file_bytes": sum(map(len, blobs)) / n,
           "vistok_payload_bytes": sum(payload_bits(b) for b in blobs) / 8 / n, "eval_bytes": bits / 8 / n,
           "compress_images_per_s": c_s, "decompress_images_per_s": d_s, "lepton_images_per_s": lep_s}
    for k in ("jpeg_bytes", "jpeg_optimized_bytes", "lepton_bytes"):
        out[f"vistok_file_vs_{k.removesuffix('_bytes')}"] = round(out["vistok_file_bytes"] / out[k], 4)
    return {k: round(v, 1) if isinstance(v, float) and k.endswith("bytes") else v for k, v in out.items()}


def run(minutes: float = 3.0, out: Path = Path("bench-out/compress"), n64: int = 48) -> list[dict]:
    shutil.rmtree(out, ignore_errors=True)  # everything is measured afresh
    out.mkdir(parents=True)
    codec = JpegCodec(quality=20)
    sets = {size: run_job(["sample"], out / f"ds{size}", codec, Preprocess(size=size, crops=crops), shard_size=256,
                          executor="local", quiet=True).folder for size, crops in ((64, 2 if smoke() else 40), (256, 0))}
    runp = out / "run"
    # both sizes in training (3:1), so that the model's coordinate tables reach 256x256; the split is by photo
    data = DataConfig(datasets=[str(sets[64]), str(sets[256])], weights=[3.0, 1.0], block_size=512, batch_size=8,
                      num_workers=1, heldout=0.2, seed=0)
    train(data, TrainConfig(out=str(runp), preset="tiny", max_steps=100_000, max_minutes=minutes, warmup=30,
                            eval_every=0, ckpt_every=100_000, log_every=50), quiet=True)
    coder = Coder.load(runp)
    held = {size: list(heldout_records([Dataset(sets[size])], data.heldout, n64)) for size in sets}
    rows = [measure(coder, held[64], "64x64 crops"), measure(coder, held[256], "256x256")]
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows


def summary(minutes: float = 2.0) -> dict:
    """`make bench`: the figures of both sets in one flat dict."""
    out = {}
    for r in run(minutes, Path("bench-out/compress-make"), n64=2 if smoke() else 24):
        name = r["set"].split()[0]
        for k, v in r.items():
            if k != "set":
                out[f"{name}_{k}"] = v
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--out", default="bench-out/compress")
    a = ap.parse_args()
    run(a.minutes, Path(a.out))
