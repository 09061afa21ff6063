"""Checks of a dataset against its sources: the pixels a record was made from, rebuilt from the source
file and the dataset's preprocessing, and the PSNR of the decoded records against them (`inspect --psnr`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vistok.errors import InputError
from vistok.media.preprocess import Preprocess
from vistok.media.sources import load_image
from vistok.media.video import decode_clips
from vistok.record import TokenRecord, parse_key
from vistok.shards.store import open_any


def reference_media(record: TokenRecord, preprocess: dict[str, Any]) -> np.ndarray:
    """The pixels a record was made from ((H, W, 3), or (T, H, W, 3) for a clip): what the codec saw."""
    source = record.meta.get("source", "")
    if not source or not os.path.isfile(source):
        raise InputError(f"record {record.key}: source {source!r} is not a readable file here")
    pre = Preprocess(**preprocess)
    data = Path(source).read_bytes()
    key = parse_key(record.key)
    if key.clip is not None:
        for i, clip in enumerate(decode_clips(data, pre.video())):
            if i == key.clip:
                frames = np.stack([pre.frame(f, key.input) for f in clip])
                return frames[0] if len(frames) == 1 else frames
        raise InputError(f"record {record.key}: clip {key.clip} not found in {source}")
    if pre.identity():
        return np.asarray(load_image(data, pre.max_pixels))
    for k, pix in pre.apply(load_image(data, pre.max_pixels, pre.draft), key.input):
        if k == record.key:
            return pix
    raise InputError(f"record {record.key}: no matching crop of {source}")


def psnr_sample(folder: str | Path, n: int) -> dict[str, Any]:
    """PSNR of the first `n` decoded records against their source media (rebuilt from the source files)."""
    src = open_any(folder)
    codec, pre = src.codec, src.manifest.preprocess
    scores, skipped = [], 0
    for i, rec in enumerate(src):
        if i >= n:
            break
        try:
            ref = reference_media(rec, pre)
        except InputError:
            skipped += 1
            continue
        out = np.asarray(codec.decode(rec), dtype=np.float64)
        mse = float(np.mean((out - ref.astype(np.float64)) ** 2))
        scores.append(float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse))
    finite = [x for x in scores if np.isfinite(x)]
    return {"records": len(scores), "skipped": skipped, "exact": len(scores) - len(finite),
            "mean_db": round(float(np.mean(finite)), 3) if finite else None,
            "min_db": round(float(np.min(finite)), 3) if finite else None}
