"""Summaries of a dataset folder, from its manifest and per-shard stats (no shard is read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vistok.shards.manifest import STATS_DIR, read_json


def token_counts(source) -> np.ndarray:
    """Token histogram of a dataset folder (summed from its stats) or a packed store (one pass over it)."""
    from vistok.shards.store import PackedStore

    if isinstance(source, PackedStore):
        return source.token_counts()
    counts = np.zeros(source.manifest["vocabulary"]["size"], dtype=np.int64)
    for st_path in sorted((Path(source.folder) / STATS_DIR).glob("shard-*.json")):
        tc = read_json(st_path)["token_counts"]
        np.add.at(counts, np.asarray(tc["ids"], dtype=np.int64), np.asarray(tc["counts"], dtype=np.int64))
    return counts


def summarize(folder: str | Path) -> dict[str, Any]:
    from vistok.shards.store import PackedStore, open_any

    folder = Path(folder)
    src = open_any(folder)
    m = src.manifest
    vocab = m["vocabulary"]["size"]
    counts = token_counts(src)
    total = int(counts.sum())
    p = counts[counts > 0] / max(total, 1)
    entropy = float(-(p * np.log2(p)).sum()) if total else 0.0
    samples = m["counts"]["samples"]
    if isinstance(src, PackedStore):
        shard_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    else:
        shard_bytes = sum(s["bytes"] for s in m["shards"])
    return {
        "folder": str(folder),
        "samples": samples,
        "shards": len(m["shards"]),
        "kind": "store" if isinstance(src, PackedStore) else "shards",
        "inputs": m["counts"]["inputs"],
        "errors": m["counts"]["errors"],
        "tokens_per_sample": {k: m["tokens"].get(k) for k in ("mean", "p50", "p95", "max")},
        "tokens_total": m["tokens"]["total"],
        "bytes_per_sample": round(shard_bytes / samples, 1) if samples else None,
        "bytes_total": shard_bytes,
        "vocab_size": vocab,
        "vocab_used": int((counts > 0).sum()),
        "vocab_used_fraction": round(float((counts > 0).mean()), 4),
        "unigram_entropy_bits": round(entropy, 4),
        "codec": m["codec"],
        "config_hash": m["config_hash"],
    }


def psnr_sample(folder: str | Path, n: int) -> dict[str, Any]:
    """PSNR of the first `n` decoded records against their source media (rebuilt from the source files)."""
    from vistok.errors import InputError
    from vistok.pipelines.job import reference_media
    from vistok.shards.store import open_any

    src = open_any(folder)
    codec, pre = src.codec, src.manifest.get("preprocess", {})
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


def format_summary(s: dict[str, Any]) -> str:
    t = s["tokens_per_sample"]
    lines = [
        f"dataset           {s['folder']}",
        f"codec             {s['codec']}",
        f"samples           {s['samples']} in {s['shards']} shards ({s['inputs']} inputs, {s['errors']} errors)",
        f"tokens/sample     mean {t['mean']}  p50 {t['p50']}  p95 {t['p95']}  max {t['max']}",
        f"bytes/sample      {s['bytes_per_sample']} on disk ({s['bytes_total']} bytes in all)",
        f"vocabulary        {s['vocab_used']}/{s['vocab_size']} ids used ({100 * s['vocab_used_fraction']:.1f}%)",
        f"unigram entropy   {s['unigram_entropy_bits']} bits/token",
        f"config hash       {s['config_hash']}",
    ]
    if "psnr" in s:
        p = s["psnr"]
        lines.append(f"PSNR vs sources   mean {p['mean_db']} dB, min {p['min_db']} dB over {p['records']} records"
                     f" ({p['exact']} exact, {p['skipped']} without a readable source)")
    return "\n".join(lines)
