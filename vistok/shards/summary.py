"""Summaries of a dataset folder, from its manifest and per-shard stats (for clips, also tokens per frame
from the first records), with the cheap shard checks every reader makes (`integrity.check_shards`: each shard
present, of its listed size, headed for this dataset); `vistok verify` reads every byte."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vistok.errors import DamagedShard
from vistok.shards.integrity import check_shards
from vistok.shards.manifest import done_shards
from vistok.shards.reader import Dataset
from vistok.shards.store import PackedStore, open_any
from vistok.storage import Loc
from vistok.tokenize.base import frames_of


def token_counts(source) -> np.ndarray:
    """Token histogram of a dataset folder (summed from its stats) or a packed store (one pass over it)."""
    if isinstance(source, PackedStore):
        return source.token_counts()
    size = source.manifest.vocabulary["size"]
    return sum((st.counts_array(size) for st in done_shards(source.folder)), np.zeros(size, dtype=np.int64))


def record_keys(folder: str | Path | Loc) -> Iterator[tuple[str, str | None]]:
    """(key, label or None) of every record, in dataset order, streamed (a packed store reads no token)."""
    src = open_any(Loc(folder))
    if isinstance(src, PackedStore):
        for i, key in enumerate(src.keys()):
            yield key, src.label(i)
        return
    for rec in src:
        label = rec.meta.get("label")
        yield rec.key, None if label is None else str(label)


def summarize(folder: str | Path | Loc) -> dict[str, Any]:
    folder = Loc(folder)
    src = open_any(folder)
    m = src.manifest
    vocab = m.vocabulary["size"]
    counts = token_counts(src)
    total = int(counts.sum())
    p = counts[counts > 0] / max(total, 1)
    entropy = float(-(p * np.log2(p)).sum()) if total else 0.0
    samples = m.counts["samples"]
    if isinstance(src, PackedStore):
        shard_bytes = sum(stamp[0] for *_, stamp in folder.walk())
    else:
        shard_bytes = sum(s["bytes"] for s in m.shards)
    return {
        "folder": str(folder),
        "samples": samples,
        "shards": len(m.shards),
        "kind": "store" if isinstance(src, PackedStore) else "shards",
        "inputs": m.counts["inputs"],
        "errors": m.counts["errors"],
        "tokens_per_sample": {k: m.tokens.get(k) for k in ("mean", "p50", "p95", "max")},
        "tokens_total": m.tokens["total"],
        "bytes_per_sample": round(shard_bytes / samples, 1) if samples else None,
        "bytes_total": shard_bytes,
        "vocab_size": vocab,
        "vocab_used": int((counts > 0).sum()),
        "vocab_used_fraction": round(float((counts > 0).mean()), 4),
        "unigram_entropy_bits": round(entropy, 4),
        "tokens_by_kind": tokens_by_kind(m.vocabulary, counts),
        "codec": m.codec,
        "config_hash": m.config_hash,
        **frame_summary(src, counts),
        **({} if isinstance(src, PackedStore) else {"damaged_shards": damaged_shards(src)}),
    }


def tokens_by_kind(vocabulary: dict[str, Any], counts: np.ndarray) -> dict[str, float]:
    """Each named range of the vocabulary's share of the tokens (the syntax-element kinds of an avc dataset:
    mb_type, i4_mode, run, level, ...), largest first; ranges no token uses are left out."""
    total = max(1, int(counts.sum()))
    out = {r["name"]: int(counts[r["start"] : r["stop"]].sum()) / total for r in vocabulary.get("ranges", [])}
    return {k: round(v, 4) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0}


def damaged_shards(ds: Dataset) -> list[str]:
    """'NAME DAMAGE' for each shard the checks before reading find damaged (sizes and headers, not hashes)."""
    _, damages = check_shards(ds.folder, [s["name"] for s in ds.manifest.shards], ds.expect)
    return [f"{d.shard} {d.detail}" for d in damages]


def frame_summary(src, counts: np.ndarray, records: int = 1000) -> dict[str, Any]:
    """For clips: mean tokens of each frame index (FRAME separators left out) over the first `records`
    records; with temporal deltas, the share of blocks coded as SKIP (unchanged since the frame before)."""
    out: dict[str, Any] = {}
    skip = src.codec.vocab.specials.get("SKIP")
    if skip is not None:
        blocks = counts[skip] + counts[src.codec.vocab.specials["EOB"]]  # every block ends in EOB or is SKIP
        out["skip_share_of_blocks"] = round(float(counts[skip] / max(1, blocks)), 4)
    sums: list[float] = []
    n = 0
    with contextlib.suppress(DamagedShard):  # damage is reported on its own line (`damaged_shards`)
        for rec in src:
            if n >= records:
                break
            if int(rec.meta.get("frames", 1)) == 1:  # a dataset of images (clips share one frame count)
                break
            for f, fr in enumerate(frames_of(rec)):
                sums += [0.0] * (f + 1 - len(sums))
                sums[f] += fr.tokens.size
            n += 1
    if n:
        out["tokens_per_frame"] = [round(x / n, 1) for x in sums]
    return out


def _psnr_line(p: dict[str, Any]) -> str:
    """'mean 31.2 dB, min 28.0 dB over 16 records (2 exact, 0 without a readable source)'; every record exact,
    or none compared, said in words rather than as a mean of nothing."""
    if not p["records"]:
        return f"no record compared ({p['skipped']} without a readable source)"
    if p["mean_db"] is None:
        return f"all {p['records']} records exact (lossless)"
    return (f"mean {p['mean_db']} dB, min {p['min_db']} dB over {p['records'] - p['exact']} lossy records"
            f" ({p['exact']} exact, {p['skipped']} without a readable source)")


def _brief(config: dict[str, Any]) -> dict[str, Any]:
    """A codec config to print: long lists (a palette's colours) as their length."""
    return {k: f"{len(v)} entries" if isinstance(v, list) and len(v) > 8 else v for k, v in config.items()}


def format_summary(s: dict[str, Any]) -> str:
    t = {k: "-" if v is None else v for k, v in s["tokens_per_sample"].items()}
    lines = [
        f"dataset           {s['folder']}",
        f"codec             {_brief(s['codec'])}",
        f"samples           {s['samples']} in {s['shards']} shards ({s['inputs']} inputs, {s['errors']} errors)",
        f"tokens/sample     mean {t['mean']}  p50 {t['p50']}  p95 {t['p95']}  max {t['max']}",
        f"bytes/sample      {s['bytes_per_sample'] if s['bytes_per_sample'] is not None else '-'} on disk ({s['bytes_total']} bytes in all)",
        f"vocabulary        {s['vocab_used']}/{s['vocab_size']} ids used ({100 * s['vocab_used_fraction']:.1f}%)",
        f"unigram entropy   {s['unigram_entropy_bits']} bits/token",
        f"config hash       {s['config_hash']}",
    ]
    if len(s.get("tokens_by_kind", {})) > 1:
        lines.append("token kinds       " + "  ".join(f"{k} {100 * v:.1f}%" for k, v in s["tokens_by_kind"].items()))
    if "tokens_per_frame" in s:
        lines.append(f"tokens/frame      {' '.join(str(x) for x in s['tokens_per_frame'])}")
    if "skip_share_of_blocks" in s:
        lines.append(f"SKIP blocks       {100 * s['skip_share_of_blocks']:.1f}% (unchanged since the frame before)")
    if s.get("damaged_shards"):
        d = s["damaged_shards"]
        lines.append(f"damaged shards    {len(d)}: {d[0]}" + (f" (and {len(d) - 1} more)" if len(d) > 1 else "") +
                     "; `vistok verify` lists them all")
    elif "damaged_shards" in s:
        lines.append("shards            present, of their listed sizes, this dataset's (`vistok verify` reads every byte)")
    if "psnr" in s:
        lines.append(f"PSNR vs sources   {_psnr_line(s['psnr'])}")
    return "\n".join(lines)
