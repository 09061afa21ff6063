"""Held-out evaluation in bits: per token, per image, against JPEG's own entropy coder and a unigram model.

Bits per image sum -log2 p over every predicted position of a record: its tokens and the EOS that ends
it (BOS is given). A record longer than the context is scored chunk by chunk, as it was trained.
For JPEG datasets the same held-out records are written as JPEG files with optimized Huffman tables and
the entropy-coded scan bytes (headers excluded) are counted: model/JPEG < 1 means the model codes the
coefficients in fewer bits than JPEG does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vistok.errors import DatasetError, UsageError
from vistok.nn.gpt import GPT
from vistok.shards.inspect import token_counts
from vistok.tokenize.base import EOS, JPEG_FILE, Codec
from vistok.tokenize.stream import stream_masks
from vistok.train.checkpoint import load_model
from vistok.train.data import (
    DataConfig,
    check_coords,
    doc_row,
    heldout_records,
    open_datasets,
    record_docs,
    record_rng,
)

LN2 = math.log(2)


@dataclass
class RecordBits:
    bits: float  # -log2 p summed over the record's predicted positions
    positions: int  # predicted positions: tokens and EOS, or tokens (parallel)
    order_bits: float  # side information of the order (stored gradwalk walks)
    steps: int  # model steps to generate the record


@torch.no_grad()
def record_bits(model: GPT, codec: Codec, records: list, data: DataConfig, device: str, batch: int = 16) -> list[RecordBits]:
    """Bits of each record under the run's order and parallel mode, one document per row. Tokens the grammar
    rules out at a position get no probability (a decoder knows they cannot come): the softmax runs over
    the allowed tokens, as `vistok compress` codes them."""
    model.eval()
    T = model.cfg.block_size
    limits = model.cfg.axis_sizes
    docs, owner, offset, streams, out = [], [], [], [], []
    for i, rec in enumerate(records):
        rd = record_docs(codec, rec, data.order, record_rng(data.seed, rec.key), T, "split", data.parallel)
        first = 0
        for d in rd.docs:
            docs.append(d)
            owner.append(i)
            offset.append(first)  # the doc's first target, counted along the record's stream
            first += int(d["loss_mask"].sum())
        streams.append(rd.stream)
        out.append(RecordBits(0.0, 0, rd.order_bits, rd.steps))
    masks: dict[int, np.ndarray] = {}  # record -> (targets, V), for the records of the current chunk only
    for s in range(0, len(docs), batch):
        chunk = docs[s : s + batch]
        rows = [doc_row(d, T) for d in chunk]
        b = {k: torch.from_numpy(np.stack([r[k] for r in rows])).to(device) for k in rows[0]}
        check_coords(b["coords"], limits, codec.axes)
        check_coords(b["next_coords"], limits, codec.axes)
        nxt = b["next_coords"] if model.cfg.next_axes else None
        logits, _ = model(b["idx"], b["coords"], nxt, doc_ids=b["doc_ids"], groups=b.get("groups"), query=b.get("query"))
        allowed = np.ones(logits.shape, dtype=bool)
        masks = {i: m for i, m in masks.items() if i >= owner[s]}
        for j, d in enumerate(chunk):
            i = owner[s + j]
            if i not in masks:
                o = streams[i]
                masks[i] = stream_masks(codec, records[i].meta, o.plan, records[i].tokens[o.perm])
            at = np.flatnonzero(d["loss_mask"])
            allowed[j, at] = masks[i][offset[s + j] : offset[s + j] + at.size]
        logits = logits.float().masked_fill(~torch.from_numpy(allowed).to(device), float("-inf"))
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), b["targets"].reshape(-1), reduction="none")
        mask = b["loss_mask"].float()
        nll = (nll.view(len(chunk), T) * mask).sum(1).cpu().numpy() / LN2
        if not np.isfinite(nll).all():
            raise DatasetError("a record holds a token its grammar does not allow")
        for j, n in enumerate(mask.sum(1).tolist()):
            r = out[owner[s + j]]
            r.bits += float(nll[j])
            r.positions += int(n)
    return out


def heldout_bits(model: GPT, codec: Codec, sets: list, data: DataConfig, limit: int, device: str) -> dict:
    recs = list(heldout_records(sets, data.heldout, limit))
    if not recs:
        raise DatasetError("no held-out records: raise --heldout")
    res = record_bits(model, codec, recs, data, device)
    b = sum(r.bits for r in res)
    n = sum(r.positions for r in res)
    return {"bits_per_token": b / n, "bits_per_image": (b + sum(r.order_bits for r in res)) / len(res),
            "images": len(res)}


def jpeg_scan_bytes(data: bytes) -> int:
    """Entropy-coded bytes of a JPEG: from the end of the first SOS header to EOI (all scans)."""
    pos = data.find(b"\xff\xda")
    if pos < 0:
        return 0
    length = int.from_bytes(data[pos + 2 : pos + 4], "big")
    end = data.rfind(b"\xff\xd9")
    return max(0, end - (pos + 2 + length))


def unigram_bits(sets: list, records: list, codec: Codec) -> float:
    """Held-out cross-entropy (bits per predicted position) of a unigram model fitted on the datasets' token
    counts (held-out records included, so the baseline is, if anything, flattered)."""
    counts = np.zeros(codec.vocab.size, dtype=np.float64)
    for ds in sets:
        counts += token_counts(ds)
    samples = sum(len(ds) for ds in sets)
    counts[EOS] = samples  # one EOS per sample
    p = (counts + 0.5) / (counts + 0.5).sum()
    bits = n = 0.0
    for rec in records:
        t = rec.tokens.astype(np.int64)
        bits += -np.log2(p[t]).sum() - math.log2(p[EOS])
        n += t.size + 1
    return bits / n


def training_hashes(state: dict[str, Any], data: DataConfig) -> frozenset[str]:
    """Config hashes of the datasets a run trained on: stored in its checkpoints, or, for checkpoints
    written before they were, read from the training datasets where they still are."""
    if "datasets" in state:
        return frozenset(state["datasets"])
    hashes = set()
    for path in data.datasets:
        try:
            hashes.add(open_datasets([path])[0][0].manifest.config_hash)
        except DatasetError:
            continue
    return frozenset(hashes)


SPLITS = ("auto", "all", "heldout")


def evaluate(run: str | Path, datasets: list[str] | None = None, limit: int | None = None, device: str = "cpu",
             split: str = "auto") -> dict[str, Any]:
    """Figures of a run (see the module docstring) on its own datasets or on `datasets`.

    `split`: "heldout" scores the held-out split of every dataset, "all" every record, and "auto" (the
    default) the held-out split of a dataset the run trained on and all of any other (a separate test
    set). `split` in the result says what was scored: "heldout", "all", or "heldout+all"."""
    if split not in SPLITS:
        raise UsageError(f"--split takes {', '.join(SPLITS)}, got {split!r}")
    model, state = load_model(run, device)
    data = DataConfig(**state["data"])
    sets, codec = open_datasets(datasets or data.datasets)
    if codec.vocab.size != model.cfg.vocab_size:
        raise DatasetError("the dataset's vocabulary does not match the model's")
    hashes = frozenset(ds.manifest.config_hash for ds in sets)
    trained = training_hashes(state, data)
    whole = {"auto": hashes - trained, "all": hashes, "heldout": frozenset()}[split]
    recs = list(heldout_records(sets, data.heldout, limit, whole=whole))
    if not recs:
        raise DatasetError("no held-out records in the dataset (the split is by key hash; raise --heldout when "
                           "training, or pass --split all)")
    split = "all" if whole == hashes else ("heldout+all" if whole else "heldout")
    res = record_bits(model, codec, recs, data, device)
    bits = np.array([r.bits for r in res])
    n = np.array([r.positions for r in res])
    order_bits = np.array([r.order_bits for r in res])
    out: dict[str, Any] = {
        "run": str(run), "step": state["step"], "images": len(recs), "split": split, "order": data.order,
        "parallel": data.parallel or "none",
        "bits_per_token": float(bits.sum() / n.sum()),
        "bits_per_image": float((bits + order_bits).mean()),  # everything a decoder needs, order included
        "order_bits": float(order_bits.mean()),
        "steps_per_image": float(np.mean([r.steps for r in res])),
        "tokens_per_image": float(np.mean([len(r.tokens) for r in recs])),
        "unigram_bits_per_token": float(unigram_bits(sets, recs, codec)),
    }
    if JPEG_FILE in codec.capabilities:
        jbits = np.array([8 * jpeg_scan_bytes(codec.to_jpeg(r, optimize=True)) for r in recs], dtype=np.float64)
        out["jpeg_bits_per_image"] = float(jbits.mean())
        out["model_to_jpeg_ratio"] = float((bits + order_bits).sum() / jbits.sum())
    return out
