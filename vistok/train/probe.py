"""`vistok probe`: what a model learned, measured on frozen features with a linear and a k-NN classifier,
and by fine-tuning.

Features of an image: the residual stream at every layer (`GPT.hidden`: 0 = the embeddings), averaged over
the image's token positions (not query slots). They are read under two masks (`masks`):
- `none`: every token sees the whole image (no causal or group mask; RandSAC's linear probe), the tokens in
  the canonical order;
- `train`: the mask the model was trained with (iGPT's features): causal in the canonical order for a
  token-by-token run; a group-parallel run's own order and group mask (its groups need its order).
Labels are the records' `label` (`vistok shard --label-from`, or a labelled source such as
`fashion-mnist:train`).

Train and test images: the dataset's records outside and inside the run's held-out split (by input key),
or, with `test`, every record of DATA and every record of TEST. For each mask, every layer is probed:
- linear: multinomial logistic regression (scikit-learn) on standardized features; the layer is chosen on a
  validation fifth of the training images (never the test images), every layer fitted at C = 1 on the
  other four fifths (the per-layer table: each layer's validation and test top-1); then the chosen layer's
  regularisation C is chosen on the same fifth, and it is refitted on every training image and scored
  (top-1) on the test images;
- k-NN: cosine distance, k = 20, majority vote, on the chosen layer.
The headline figures are those of the mask and layer with the best validation top-1. The same probes run on
the same architecture at random initialisation (the floor) and on the images' decoded pixels (the classic
baseline; one channel when the three are equal or the images were sharded gray). `pixels=False` and `random_init=False` skip those, for
a caller that probes many runs of one dataset: the twin's weights depend on the architecture and the seed
only, and its features on the mask's order, so runs that share these share its figures. Features stream in batches: memory grows with images x layers x width only.

Fine-tuning (`finetune` epochs): a linear head on the pooled last layer (mask `none`), the whole model
trained with AdamW and a short cosine schedule on the training images, top-1 on the test images.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vistok.errors import DatasetError, UsageError
from vistok.nn.gpt import GPT
from vistok.progress import Progress
from vistok.record import TokenRecord
from vistok.tokenize.base import Codec
from vistok.tokenize.stream import StreamSpec
from vistok.train.checkpoint import load_model
from vistok.train.data import DataConfig, check_coords, doc_row, is_heldout, open_datasets, record_docs

C_GRID = (0.01, 0.1, 1.0, 10.0)
MAX_ITER = 200  # solver iterations of a validation fit (the final fit: twice)
NEWTON_DIMS = 512  # features up to this wide are fitted by Newton steps
MASKS = ("train", "none")


@dataclass
class ProbeConfig:
    layers: list[int] = field(default_factory=list)  # [] = every layer, the best chosen on validation; else these, concatenated
    masks: tuple[str, ...] = MASKS  # none: the whole image in view; train: the training mask
    train_limit: int = 5000  # at most this many training images (0 = all)
    test_limit: int = 2000
    knn: int = 20
    batch: int = 16
    seed: int = 0
    pixels: bool = True  # also probe the decoded pixels
    random_init: bool = True  # also probe the random-init twin
    twin_masks: tuple[str, ...] = ()  # the twin's masks (): the same as `masks`
    finetune: int = 0  # epochs of fine-tuning the whole model with a linear head (0: none)
    finetune_lr: float = 1e-3  # the body's; the new head learns 10x faster
    finetune_images: int = 0  # fine-tune on the first this many training images (0: all the probe's)


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


def feature_docs(data: DataConfig, mask: str) -> tuple[str, str]:
    """(order, parallel mode) the features are read in under `mask` (see the module docstring)."""
    if mask not in MASKS:
        raise UsageError(f"--mask takes {' or '.join(MASKS)}, got {mask!r}")
    return (data.order, data.parallel) if mask == "train" and data.parallel else ("canonical", "")


@torch.no_grad()
def _batch(rows: list[dict[str, np.ndarray]], device: str) -> dict[str, torch.Tensor]:
    """Rows stacked into tensors, cut after the last slot any of them fills: an image is shorter than the
    context (64 tokens in a parallel model's 144), and padding is masked out of every attention, so the cut
    changes no feature (tested) and saves the work on it."""
    b = {k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in rows[0]}
    filled = (b["doc_ids"] >= 0).any(0).nonzero()
    end = int(filled[-1]) + 1 if len(filled) else 1
    return {k: (v[:, :end] if v.dim() >= 2 and v.shape[1] == b["doc_ids"].shape[1] else v).to(device) for k, v in b.items()}


def features(model: GPT, codec: Codec, records: Iterator[TokenRecord], data: DataConfig, device: str,
             batch: int = 16, mask: str = "train") -> tuple[np.ndarray, list[str]]:
    """(N, n_layer + 1, C) mean features of every layer and the N labels of `records`, read under `mask` (see
    the module docstring); raises when there are none."""
    model.eval()
    T = model.cfg.block_size
    order, parallel = feature_docs(data, mask)
    spec = StreamSpec.parse(order, parallel, None, T, 0)  # windows of the whole context, no overlap
    if spec.parallel is not None and spec.parallel.unit_lanes:  # wavefront: each wave after the run's context
        spec = replace(spec, stride=data.stride)
    feats, labels, pending = [], [], []

    def flush() -> None:
        b = _batch([r for _, r in pending], device)
        check_coords(b["coords"], model.cfg.axis_sizes, codec.axes)
        nxt = b["next_coords"] if model.cfg.next_axes else None
        with torch.no_grad():
            hs = model.hidden(b["idx"], b["coords"], nxt, b["doc_ids"], b.get("groups"), b.get("query"),
                              bidirectional=mask == "none", places=b.get("places"), lane=b.get("lane"))
        keep = (b["doc_ids"] >= 0) & ((b["query"] == 0) if "query" in b else True)  # token slots of the image
        w = keep.float()[..., None]
        pooled = torch.stack([(h * w).sum(1) / w.sum(1).clamp(min=1) for h in hs], dim=1).cpu().numpy()
        for (owner, _), f in zip(pending, pooled):  # a long record's pieces are averaged
            feats[owner].append(f)
        pending.clear()

    for i, rec in enumerate(records):
        docs = record_docs(codec, rec, spec, np.random.default_rng([data.seed, 1, i]),
                           places=bool(model.cfg.neighbourhood) and mask != "none")
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


def pixel_features(codec: Codec, records: Iterator[TokenRecord], side: int = 32,
                   gray: bool = False) -> tuple[np.ndarray, list[str]]:
    """Decoded pixels in [0, 1], resized to side x side when the images differ in size, and the labels; `gray`
    (images sharded gray, which a tokenizer may decode as three slightly different channels): their mean."""
    from PIL import Image

    out, labels = [], []
    for rec in records:
        img = codec.decode(rec)
        if img.ndim == 4:  # a clip: its first frame
            img = img[0]
        pil = Image.fromarray(img)
        px = np.asarray(pil.resize((side, side), Image.BILINEAR), dtype=np.float32) / 255.0
        out.append(px.mean(-1) if px.ndim == 3 and gray else px)
        labels.append(str(rec.meta["label"]))
    return _one_width(out), labels


def _one_width(images: list[np.ndarray]) -> np.ndarray:
    """(N, side * side * C) features of one width for the whole set: one channel when every image is gray
    (single-channel, or RGB with equal channels: the same pixels, a third of the width), else three, a gray
    image's plane repeated (a colour set may hold images with R = G = B, which decode as one channel)."""
    if all(px.ndim == 2 or (px == px[..., :1]).all() for px in images):
        return np.stack([(px if px.ndim == 2 else px[..., 0]).ravel() for px in images])
    return np.stack([(np.repeat(px[..., None], 3, -1) if px.ndim == 2 else px).ravel() for px in images])


def _standardized(xtr: np.ndarray, xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(xtr)
    return scaler.transform(xtr), scaler.transform(xte)


def _model(c: float, max_iter: int, x: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    # Newton steps converge in ~10 iterations where L-BFGS takes hundreds (2x faster on 128-wide features), but
    # the Hessian grows with (dims x classes)^2: L-BFGS above NEWTON_DIMS. With fewer images than features the
    # classes separate, the weights grow without bound and every fit runs to max_iter: L-BFGS there too (a
    # Newton step cost 20x an L-BFGS one on 24 images of 128-wide features). warm_start: a refit at the next C
    # starts from the last C's weights (a regularisation path).
    n, dims = x.shape
    solver = "newton-cholesky" if dims <= NEWTON_DIMS and n > dims else "lbfgs"
    return LogisticRegression(C=c, max_iter=max_iter, solver=solver, warm_start=True)


def _fit(model, x: np.ndarray, y: np.ndarray):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # weakly regularised fits may stop at max_iter: they are scored as they are
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation fifth, fitting four fifths) of n training images."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, n // 5)
    return order[:n_val], order[n_val:]


def validated_c(xtr: np.ndarray, ytr: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """(C, validation top-1): the regularisation that scores best on a validation fifth of the (standardized)
    training features, fitted on the other four fifths (the smaller C on a tie; C_GRID walked upward, each fit
    starting from the last)."""
    val, fit = _split(len(ytr), seed)
    if len(np.unique(ytr[fit])) < 2:
        return C_GRID[0], 0.0
    best_c, best = C_GRID[0], -1.0
    model = _model(C_GRID[0], MAX_ITER, xtr[fit])
    for c in C_GRID:
        acc = _fit(model.set_params(C=c), xtr[fit], ytr[fit]).score(xtr[val], ytr[val])
        if acc > best:
            best_c, best = c, acc
    return best_c, float(best)


def _final(x: np.ndarray, y: np.ndarray, c: float):
    return _fit(_model(c, 2 * MAX_ITER, x), x, y)


def linear_top1(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, seed: int = 0) -> float:
    """Top-1 of multinomial logistic regression, C chosen on a validation fifth of the training images."""
    xtr, xte = _standardized(xtr, xte)
    c, _ = validated_c(xtr, ytr, seed)
    return float(_final(xtr, ytr, c).score(xte, yte))


def best_layer(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Every layer of (N, L, C) features probed linearly at C = 1 (fitted on four fifths of the training images;
    per_layer: its validation and test top-1); the layer with the best validation top-1 (never the test
    images) is chosen, then its C is chosen on the same validation fifth and it is refitted on every training
    image. -> {layer, val_top1, linear_top1 (the chosen layer's test top-1), per_layer}."""
    val, fit = _split(len(ytr), seed)
    rows = []
    for layer in range(xtr.shape[1]):
        a, b = _standardized(xtr[:, layer], xte[:, layer])
        m = _fit(_model(1.0, MAX_ITER, a[fit]), a[fit], ytr[fit])
        rows.append({"layer": layer, "val_top1": round(float(m.score(a[val], ytr[val])), 4),
                     "test_top1": round(float(m.score(b, yte)), 4)})
    best = max(rows, key=lambda r: (r["val_top1"], -r["layer"]))
    a, b = _standardized(xtr[:, best["layer"]], xte[:, best["layer"]])
    c, val_top1 = validated_c(a, ytr, seed)
    return {"layer": best["layer"], "val_top1": round(val_top1, 4),
            "linear_top1": round(float(_final(a, ytr, c).score(b, yte)), 4), "per_layer": rows}


def knn_top1(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, k: int = 20) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    return float(KNeighborsClassifier(n_neighbors=min(k, len(ytr)), metric="cosine").fit(xtr, ytr).score(xte, yte))


def _scores(tr: tuple[np.ndarray, list[str]], te: tuple[np.ndarray, list[str]], classes: dict[str, int],
            cfg: ProbeConfig) -> dict[str, float]:
    ytr, yte = _ids(tr[1], classes), _ids(te[1], classes)
    return {"linear_top1": round(linear_top1(tr[0], ytr, te[0], yte, cfg.seed), 4),
            "knn_top1": round(knn_top1(tr[0], ytr, te[0], yte, cfg.knn), 4)}


def _ids(labels: list[str], classes: dict[str, int]) -> np.ndarray:
    return np.array([classes.setdefault(y, len(classes)) for y in labels])


def _layer_scores(tr, te, classes: dict[str, int], cfg: ProbeConfig) -> dict[str, Any]:
    """One mask's probes on (N, L, C) features: every layer (the best chosen on validation), or `cfg.layers`
    concatenated."""
    ytr, yte = _ids(tr[1], classes), _ids(te[1], classes)
    if cfg.layers:
        xtr, xte = (x[:, cfg.layers].reshape(len(x), -1) for x in (tr[0], te[0]))
        a, b = _standardized(xtr, xte)
        c, val = validated_c(a, ytr, cfg.seed)
        res = {"layer": list(cfg.layers), "val_top1": round(val, 4),
               "linear_top1": round(float(_final(a, ytr, c).score(b, yte)), 4)}
    else:
        res = best_layer(tr[0], ytr, te[0], yte, cfg.seed)
        xtr, xte = tr[0][:, res["layer"]], te[0][:, res["layer"]]
    res["knn_top1"] = round(knn_top1(xtr, ytr, xte, yte, cfg.knn), 4)
    return res


def _probe_model(m: GPT, codec: Codec, train_recs, test_recs, data: DataConfig, classes: dict[str, int],
                 cfg: ProbeConfig, device: str, masks: tuple[str, ...]) -> tuple[dict[str, Any], int, int]:
    """The masks' probes of one model, and the headline: the mask and layer with the best validation top-1."""
    out: dict[str, Any] = {}
    for mask in masks:
        tr = features(m, codec, train_recs(), data, device, cfg.batch, mask)
        te = features(m, codec, test_recs(), data, device, cfg.batch, mask)
        out[mask] = _layer_scores(tr, te, classes, cfg)
    head = max(masks, key=lambda k: out[k]["val_top1"])
    out.update(mask=head, layer=out[head]["layer"], linear_top1=out[head]["linear_top1"], knn_top1=out[head]["knn_top1"])
    return out, len(tr[1]), len(te[1])


def probe(run: str | Path, datasets: list[str] | None = None, test: list[str] | None = None,
          cfg: ProbeConfig | None = None, device: str = "cpu", storage_options: dict | None = None,
          quiet: bool = True) -> dict[str, Any]:
    """Linear and k-NN top-1 of the trained model, its random-init twin and raw pixels, and fine-tuned top-1
    with `cfg.finetune` (module docstring); a progress bar counts the images read in every pass unless `quiet`."""
    with Progress("probe", 0, "images", quiet=quiet) as bar:
        return _probe(run, datasets, test, cfg or ProbeConfig(), device, storage_options, bar)


def _probe(run: str | Path, datasets: list[str] | None, test: list[str] | None, cfg: ProbeConfig, device: str,
           storage_options: dict | None, bar: Progress) -> dict[str, Any]:
    model, state = load_model(run, device)
    data = DataConfig.from_json(state["data"])
    sets, codec = open_datasets(datasets or data.datasets, storage_options)
    test_sets = open_datasets(test, storage_options)[0] if test else None
    if any(not 0 <= i <= model.cfg.n_layer for i in cfg.layers):
        raise UsageError(f"--layer takes 0..{model.cfg.n_layer} (0: the embeddings) or all, got {cfg.layers}")
    for mask in cfg.masks + cfg.twin_masks:
        feature_docs(data, mask)

    def train_recs() -> Iterator[TokenRecord]:  # read again for each pass: memory stays bounded
        return bar.each(_labelled(split_records(sets, test_sets, data.heldout)[0], cfg.train_limit))

    def test_recs() -> Iterator[TokenRecord]:
        return bar.each(_labelled(split_records(sets, test_sets, data.heldout)[1], cfg.test_limit))

    names = sorted({n for ds in sets + (test_sets or []) for n in ds.manifest.labels})
    classes = {y: i for i, y in enumerate(names)}
    torch.manual_seed(cfg.seed)
    twin = GPT(model.cfg).to(device)  # the same architecture at random initialisation
    out: dict[str, Any] = {"run": str(run), "step": state["step"], "order": data.order,
                           "parallel": data.parallel or "none", "layers": cfg.layers or "all", "classes": len(classes),
                           "feature_order": {m: "/".join(x for x in feature_docs(data, m) if x) for m in cfg.masks}}
    for name, m, masks in (("trained", model, cfg.masks), ("random_init", twin, cfg.twin_masks or cfg.masks)
                           )[: 2 if cfg.random_init else 1]:
        out[name], out["train_images"], out["test_images"] = _probe_model(m, codec, train_recs, test_recs, data,
                                                                         classes, cfg, device, masks)
    if cfg.pixels:
        gray = all(ds.manifest.preprocess.get("gray") for ds in sets + (test_sets or []))
        out["pixels"] = _scores(pixel_features(codec, train_recs(), gray=gray), pixel_features(codec, test_recs(), gray=gray),
                                classes, cfg)
    if cfg.finetune:
        def tune_recs() -> Iterator[TokenRecord]:
            return itertools.islice(train_recs(), cfg.finetune_images or None)

        out["finetune"] = {"epochs": cfg.finetune, "images": sum(1 for _ in tune_recs()),
                           "top1": finetune(model, codec, tune_recs, test_recs, data, classes, cfg, device)}
    return out


SHUFFLE_BUFFER = 1024  # fine-tuning images drawn at random from this many (datasets are often sorted by class)


def _shuffled(items: Iterator, rng: np.random.Generator | None, size: int = SHUFFLE_BUFFER) -> Iterator:
    """`items` in a random order drawn from a bounded buffer (as they come, without `rng`)."""
    if rng is None:
        yield from items
        return
    buf: list = []
    for item in items:
        buf.append(item)
        if len(buf) >= size:
            yield buf.pop(int(rng.integers(len(buf))))
    while buf:
        yield buf.pop(int(rng.integers(len(buf))))


def _image_rows(codec: Codec, records: Iterator[TokenRecord], T: int, batch: int, classes: dict[str, int],
                rng: np.random.Generator | None = None):
    """Batches of (first-window rows of tokens in the canonical order, labels) for fine-tuning, shuffled
    with `rng`."""
    rows, ys, first_window = [], [], StreamSpec.parse("canonical", block_size=T)
    for rec in _shuffled(records, rng):
        d = record_docs(codec, rec, first_window, np.random.default_rng(0), "crop").docs[0]
        rows.append(doc_row(d, T))
        ys.append(classes.setdefault(str(rec.meta["label"]), len(classes)))
        if len(rows) == batch:
            yield rows, ys
            rows, ys = [], []
    if rows:
        yield rows, ys


def finetune(model: GPT, codec: Codec, train_recs, test_recs, data: DataConfig, classes: dict[str, int],
             cfg: ProbeConfig, device: str) -> float:
    """Test top-1 after `cfg.finetune` epochs of training a copy of the whole model with a linear head on its
    pooled last layer (every token sees the whole image), AdamW with warmup and a cosine schedule."""
    import copy
    import math

    torch.manual_seed(cfg.seed)
    body = copy.deepcopy(model).to(device).train()
    # features standardized across images (as the linear probe's scaler does; MAE's BatchNorm head), then linear.
    # Pooled features of a barely trained model differ between images by ~1e-4 around a shared ~0.05: a usual
    # eps (1e-5, against variances of ~1e-8) would flatten them, so it is far below that.
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(body.cfg.n_embd, affine=False, eps=1e-12),
                               torch.nn.Linear(body.cfg.n_embd, max(2, len(classes))))
    head = head.to(device)
    params = list(body.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW([{"params": list(body.parameters()), "scale": 1.0},  # the new head learns 10x faster
                             {"params": list(head.parameters()), "scale": 10.0}], lr=cfg.finetune_lr, weight_decay=0.05)
    T, n_train = body.cfg.block_size, sum(1 for _ in train_recs())
    total = max(1, cfg.finetune * -(-n_train // cfg.batch))

    def logits(rows) -> torch.Tensor:
        b = _batch(rows, device)
        nxt = b["next_coords"] if body.cfg.next_axes else None
        h = body.hidden(b["idx"], b["coords"], nxt, b["doc_ids"], bidirectional=True)[-1]
        w = (b["doc_ids"] >= 0).float()[..., None]
        return head((h * w).sum(1) / w.sum(1).clamp(min=1))

    step = 0
    for epoch in range(cfg.finetune):
        for rows, ys in _image_rows(codec, train_recs(), T, cfg.batch, classes, np.random.default_rng([cfg.seed, epoch])):
            lr = cfg.finetune_lr * min(1.0, (step + 1) / max(1, total // 10)) * 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr * g["scale"]
            loss = torch.nn.functional.cross_entropy(logits(rows), torch.tensor(ys, device=device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
    body.eval()
    norm = head[0]  # its statistics, exactly, for the final body: one pass over the training images
    norm.reset_running_stats()
    norm.momentum = None  # a cumulative average, not one that starts at variance 1 and decays
    with torch.no_grad():
        for rows, _ in _image_rows(codec, train_recs(), T, cfg.batch, classes):
            logits(rows)
    head.eval()
    right = n = 0
    with torch.no_grad():
        for rows, ys in _image_rows(codec, test_recs(), T, cfg.batch, classes):
            right += int((logits(rows).argmax(1).cpu() == torch.tensor(ys)).sum())
            n += len(ys)
    return round(right / max(1, n), 4)


def format_probe(res: dict[str, Any]) -> str:
    """The probe's result as text: the headline per model, then each mask's per-layer table."""
    lines = [f"{res['run']} (step {res['step']}, order {res['order']}, parallel {res['parallel']}): "
             f"{res['train_images']} training and {res['test_images']} test images, {res['classes']} classes; "
             f"features read in order " + ", ".join(f"{m}: {o}" for m, o in res["feature_order"].items())]
    for name in ("trained", "random_init"):
        r = res[name]
        lines.append(f"{name:12s} linear {r['linear_top1']:.4f}  k-NN {r['knn_top1']:.4f}  (mask {r['mask']}, layer {r['layer']})")
    p = res["pixels"]
    lines.append(f"{'pixels':12s} linear {p['linear_top1']:.4f}  k-NN {p['knn_top1']:.4f}")
    if "finetune" in res:
        lines.append(f"{'fine-tuned':12s} top-1 {res['finetune']['top1']:.4f} ({res['finetune']['epochs']} epochs)")
    for mask in res["feature_order"]:
        rows = res["trained"][mask].get("per_layer")
        if rows:
            lines.append(f"mask {mask}: layer  val (trained)  test (trained)  test (random init)")
            for r, z in zip(rows, res["random_init"].get(mask, {}).get("per_layer") or [{}] * len(rows)):
                twin = f"{z['test_top1']:18.4f}" if z else f"{'(not probed)':>18s}"
                lines.append(f"  {r['layer']:>11d}  {r['val_top1']:13.4f}  {r['test_top1']:14.4f}  {twin}")
    return "\n".join(lines)
