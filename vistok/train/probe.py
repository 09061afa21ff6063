"""`vistok probe`: what a model learned, measured on frozen features with a linear and a k-NN classifier.

Features of an image: the residual stream at one or several layers (`GPT.hidden`), averaged over the
image's positions (token by token: BOS and every token; group-parallel runs: the token slots, not the
query slots), taken in the run's order. Labels are the records' `label` (`vistok shard --label-from`, or a
labelled source such as `fashion-mnist:train`).

Train and test images: the dataset's records outside and inside the run's held-out split (by input key),
or, with `test`, every record of DATA and every record of TEST. Each probe is fitted on the training
features and scored (top-1) on the test ones:
- linear: multinomial logistic regression (scikit-learn) on standardized features, its regularisation C
  chosen on a validation fifth of the training images, then refitted on all of them;
- k-NN: cosine distance, k = 20, majority vote.
The same probes run on the same architecture at random initialisation (the floor) and on the images'
decoded pixels (the classic baseline). Features stream in batches: memory grows with images x width only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vistok.errors import DatasetError, UsageError
from vistok.nn.gpt import GPT
from vistok.record import TokenRecord
from vistok.tokenize.base import Codec
from vistok.train.checkpoint import load_model
from vistok.train.data import DataConfig, check_coords, doc_row, is_heldout, open_datasets, record_docs

C_GRID = (0.01, 0.1, 1.0, 10.0)


@dataclass
class ProbeConfig:
    layers: list[int] = field(default_factory=list)  # residual-stream layers (0 = embeddings); [] = the last
    train_limit: int = 5000  # at most this many training images (0 = all)
    test_limit: int = 2000
    knn: int = 20
    batch: int = 16
    seed: int = 0


def _labelled(records: Iterator[TokenRecord], limit: int) -> Iterator[TokenRecord]:
    n = 0
    for rec in records:
        if "label" not in rec.meta:
            raise DatasetError(f"record {rec.key} has no label: shard with --label-from (or a labelled source)")
        yield rec
        n += 1
        if limit and n >= limit:
            return


def split_records(sets: list, test_sets: list | None, heldout: float) -> tuple[Iterator, Iterator]:
    """(training records, test records): outside / inside the held-out split, or DATA / TEST whole."""
    if test_sets:
        return (r for ds in sets for r in ds), (r for ds in test_sets for r in ds)
    return ((r for ds in sets for r in ds if not is_heldout(r.key, heldout)),
            (r for ds in sets for r in ds if is_heldout(r.key, heldout)))


@torch.no_grad()
def features(model: GPT, codec: Codec, records: Iterator[TokenRecord], data: DataConfig, layers: list[int],
             device: str, batch: int = 16) -> tuple[np.ndarray, list[str]]:
    """(N, len(layers) x C) mean features and the N labels of `records` (see the module docstring); raises
    when there are none."""
    model.eval()
    T = model.cfg.block_size
    feats, labels, pending = [], [], []

    def flush() -> None:
        rows = [r for _, r in pending]
        b = {k: torch.from_numpy(np.stack([r[k] for r in rows])).to(device) for k in rows[0]}
        check_coords(b["coords"], model.cfg.axis_sizes, codec.axes)
        nxt = b["next_coords"] if model.cfg.next_axes else None
        hs = model.hidden(b["idx"], b["coords"], nxt, b["doc_ids"], b.get("groups"), b.get("query"))
        keep = (b["doc_ids"] >= 0) & ((b["query"] == 0) if "query" in b else True)  # token slots of the image
        w = keep.float()[..., None]
        pooled = torch.cat([(hs[i] * w).sum(1) / w.sum(1).clamp(min=1) for i in layers], dim=1).cpu().numpy()
        for (owner, _), f in zip(pending, pooled):  # a long record's pieces are averaged
            feats[owner].append(f)
        pending.clear()

    for i, rec in enumerate(records):
        docs = record_docs(codec, rec, data.order, np.random.default_rng([data.seed, 1, i]), T, "split", data.parallel)
        feats.append([])
        labels.append(str(rec.meta["label"]))
        for d in docs.docs:
            pending.append((i, doc_row(d, T)))
            if len(pending) >= batch:
                flush()
    if pending:
        flush()
    if not feats:
        raise DatasetError("no images to probe")
    return np.stack([np.mean(f, axis=0) for f in feats]).astype(np.float32), labels


def pixel_features(codec: Codec, records: Iterator[TokenRecord], side: int = 32) -> tuple[np.ndarray, list[str]]:
    """Decoded pixels in [0, 1], resized to side x side when the images differ in size, and the labels."""
    from PIL import Image

    out, labels = [], []
    for rec in records:
        img = codec.decode(rec)
        if img.ndim == 4:  # a clip: its first frame
            img = img[0]
        pil = Image.fromarray(img)
        out.append(np.asarray(pil.resize((side, side), Image.BILINEAR), dtype=np.float32).ravel() / 255.0)
        labels.append(str(rec.meta["label"]))
    return np.stack(out), labels


def linear_top1(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, seed: int = 0) -> float:
    """Top-1 of multinomial logistic regression, C chosen on a validation fifth of the training images."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    order = np.random.default_rng(seed).permutation(len(ytr))
    n_val = max(1, len(ytr) // 5)
    val, fit = order[:n_val], order[n_val:]
    best_c, best = C_GRID[0], -1.0
    with warnings.catch_warnings():  # weakly regularised fits may stop at max_iter: they are scored as they are
        warnings.simplefilter("ignore", ConvergenceWarning)
        if len(np.unique(ytr[fit])) > 1:
            for c in C_GRID:
                acc = LogisticRegression(C=c, max_iter=500).fit(xtr[fit], ytr[fit]).score(xtr[val], ytr[val])
                if acc > best:
                    best_c, best = c, acc
        return float(LogisticRegression(C=best_c, max_iter=1000).fit(xtr, ytr).score(xte, yte))


def knn_top1(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, k: int = 20) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    return float(KNeighborsClassifier(n_neighbors=min(k, len(ytr)), metric="cosine").fit(xtr, ytr).score(xte, yte))


def _scores(tr: tuple[np.ndarray, list[str]], te: tuple[np.ndarray, list[str]], classes: dict[str, int],
            cfg: ProbeConfig) -> dict[str, float]:
    ytr = np.array([classes[y] for y in tr[1]])
    yte = np.array([classes.setdefault(y, len(classes)) for y in te[1]])
    return {"linear_top1": round(linear_top1(tr[0], ytr, te[0], yte, cfg.seed), 4),
            "knn_top1": round(knn_top1(tr[0], ytr, te[0], yte, cfg.knn), 4)}


def probe(run: str | Path, datasets: list[str] | None = None, test: list[str] | None = None,
          cfg: ProbeConfig | None = None, device: str = "cpu", storage_options: dict | None = None) -> dict[str, Any]:
    """Linear and k-NN top-1 of the trained model, its random-init twin and raw pixels (module docstring)."""
    cfg = cfg or ProbeConfig()
    model, state = load_model(run, device)
    data = DataConfig(**state["data"])
    sets, codec = open_datasets(datasets or data.datasets, storage_options)
    test_sets = open_datasets(test, storage_options)[0] if test else None
    layers = cfg.layers or [model.cfg.n_layer]
    if any(not 0 <= i <= model.cfg.n_layer for i in layers):
        raise UsageError(f"--layer takes 0..{model.cfg.n_layer} (0: the embeddings), got {layers}")

    def train_recs() -> Iterator[TokenRecord]:  # read again for each pass: memory stays bounded
        return _labelled(split_records(sets, test_sets, data.heldout)[0], cfg.train_limit)

    def test_recs() -> Iterator[TokenRecord]:
        return _labelled(split_records(sets, test_sets, data.heldout)[1], cfg.test_limit)

    names = sorted({n for ds in sets + (test_sets or []) for n in ds.manifest.labels})
    classes = {y: i for i, y in enumerate(names)}
    torch.manual_seed(cfg.seed)
    twin = GPT(model.cfg).to(device)  # the same architecture at random initialisation
    out: dict[str, Any] = {"run": str(run), "step": state["step"], "order": data.order,
                           "parallel": data.parallel or "none", "layers": layers, "classes": len(classes)}
    for name, m in (("trained", model), ("random_init", twin)):
        tr = features(m, codec, train_recs(), data, layers, device, cfg.batch)
        te = features(m, codec, test_recs(), data, layers, device, cfg.batch)
        out["train_images"], out["test_images"] = len(tr[1]), len(te[1])
        out[name] = _scores(tr, te, classes, cfg)
    out["pixels"] = _scores(pixel_features(codec, train_recs()), pixel_features(codec, test_recs()), classes, cfg)
    return out
