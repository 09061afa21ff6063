"""Held-out evaluation in bits: per token, per image, against JPEG's own entropy coder and a unigram model.

Bits per image sum -log2 p over every predicted position of a record: its tokens and the EOS that ends
it (BOS is given). A record longer than the context is scored chunk by chunk, as it was trained.
For JPEG datasets the same held-out records are written as JPEG files with optimized Huffman tables and
the entropy-coded scan bytes (headers excluded) are counted: model/JPEG < 1 means the model codes the
coefficients in fewer bits than JPEG does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vistok.errors import DatasetError
from vistok.nn.gpt import GPT
from vistok.shards.inspect import token_counts
from vistok.tokenize.base import EOS, JPEG_FILE, Codec
from vistok.train.checkpoint import load_model
from vistok.train.data import DataConfig, heldout_records, open_datasets, record_docs

LN2 = math.log(2)


@torch.no_grad()
def record_bits(model: GPT, codec: Codec, records: list, data: DataConfig, device: str, batch: int = 16) -> list[tuple[float, int]]:
    """(bits, predicted positions) per record."""
    model.eval()
    T = model.cfg.block_size
    A = len(codec.axes)
    docs, owner = [], []
    for i, rec in enumerate(records):
        rng = np.random.default_rng([data.seed, 0, i])
        for d in record_docs(codec, rec, data.order, rng, T, "split"):
            docs.append(d)
            owner.append(i)
    bits = np.zeros(len(records))
    count = np.zeros(len(records), dtype=np.int64)
    for s in range(0, len(docs), batch):
        chunk = docs[s : s + batch]
        n = len(chunk)
        idx = torch.zeros(n, T, dtype=torch.long)
        tgt = torch.zeros(n, T, dtype=torch.long)
        crd = torch.zeros(n, T, A, dtype=torch.long)
        nxt = torch.zeros(n, T, A, dtype=torch.long)
        mask = torch.zeros(n, T)
        for j, d in enumerate(chunk):
            m = d.tokens.size - 1
            idx[j, :m] = torch.from_numpy(d.tokens[:-1])
            tgt[j, :m] = torch.from_numpy(d.tokens[1:])
            crd[j, :m] = torch.from_numpy(d.coords[:-1])
            nxt[j, :m] = torch.from_numpy(d.next_coords[:-1])
            mask[j, :m] = 1
        logits, _ = model(idx.to(device), crd.to(device), nxt.to(device) if model.cfg.next_axes else None)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), tgt.to(device).reshape(-1), reduction="none")
        nll = (nll.view(n, T).cpu() * mask).sum(1).numpy() / LN2
        for j in range(n):
            bits[owner[s + j]] += nll[j]
            count[owner[s + j]] += int(mask[j].sum())
    return list(zip(bits.tolist(), count.tolist()))


def heldout_bits(model: GPT, codec: Codec, sets: list, data: DataConfig, limit: int, device: str) -> dict:
    recs = list(heldout_records(sets, data.heldout, limit))
    if not recs:
        raise DatasetError("no held-out records: raise --heldout")
    res = record_bits(model, codec, recs, data, device)
    b = sum(r[0] for r in res)
    n = sum(r[1] for r in res)
    return {"bits_per_token": b / n, "bits_per_image": b / len(res), "images": len(res)}


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


def evaluate(run: str | Path, datasets: list[str] | None = None, limit: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Held-out figures of a run (see the module docstring) on its own datasets or on `datasets`.

    A dataset the run trained on is scored on its held-out split only; any other dataset (a separate test
    set) is scored whole. `split` in the result says which: "heldout", "all", or "heldout+all"."""
    model, state = load_model(run, device)
    data = DataConfig(**state["data"])
    sets, codec = open_datasets(datasets or data.datasets)
    if codec.vocab.size != model.cfg.vocab_size:
        raise DatasetError("the dataset's vocabulary does not match the model's")
    trained = training_hashes(state, data)
    test_sets = frozenset(ds.manifest.config_hash for ds in sets) - trained
    recs = list(heldout_records(sets, data.heldout, limit, whole=test_sets))
    if not recs:
        raise DatasetError("no held-out records in the dataset (the split is by key hash; raise --heldout when training)")
    own = any(ds.manifest.config_hash in trained for ds in sets)
    split = "heldout+all" if own and test_sets else ("all" if test_sets else "heldout")
    res = record_bits(model, codec, recs, data, device)
    bits = np.array([r[0] for r in res])
    n = np.array([r[1] for r in res])
    out: dict[str, Any] = {
        "run": str(run), "step": state["step"], "images": len(recs), "split": split, "order": data.order,
        "bits_per_token": float(bits.sum() / n.sum()),
        "bits_per_image": float(bits.mean()),
        "tokens_per_image": float(n.mean()),
        "unigram_bits_per_token": float(unigram_bits(sets, recs, codec)),
    }
    if JPEG_FILE in codec.capabilities:
        jbits = np.array([8 * jpeg_scan_bytes(codec.to_jpeg(r, optimize=True)) for r in recs], dtype=np.float64)
        out["jpeg_bits_per_image"] = float(jbits.mean())
        out["model_to_jpeg_ratio"] = float(bits.sum() / jbits.sum())
    return out
