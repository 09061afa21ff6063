"""Learned tokenizer: images/s of `--codec bsq` encoding on CPU (one image per call, and batched), with a
tokenizer of the default architecture trained for a few steps (speed does not depend on training)."""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import photos_256
from vistok.nn.autoencoder import AEConfig
from vistok.tokenize import BSQCodec
from vistok.train.tokenizer import TokenizerTrainConfig, train_tokenizer


def run() -> dict:
    torch.set_num_threads(1)  # per core, as a shard worker runs it
    with tempfile.TemporaryDirectory() as d:
        train_tokenizer(AEConfig(kind="bsq"), TokenizerTrainConfig(out=str(Path(d) / "tok"), max_steps=5, batch=8,
                                                                    eval_crops=8), progress=io.StringIO())
        codec = BSQCodec(str(Path(d) / "tok"))
        crops = [np.ascontiguousarray(p[i : i + 64, i : i + 64]) for p in photos_256(8) for i in (0, 64, 128, 192)]
        t0 = time.perf_counter()
        for im in crops:
            codec.encode(im)
        single = len(crops) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        codec.encode_many(crops, [f"k{i}" for i in range(len(crops))], [None] * len(crops))
        batched = len(crops) / (time.perf_counter() - t0)
    return {"bsq_encode_img_s_64px": round(single, 1), "bsq_encode_img_s_64px_batched": round(batched, 1),
            "gpu": torch.cuda.is_available()}


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
