"""`vistok sample`: generate token streams under the codec's grammar and decode them to images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vistok.errors import CodecError, UsageError
from vistok.nn.gpt import generate_groups
from vistok.record import TokenRecord
from vistok.tokenize.base import BOS, Codec, get_codec
from vistok.tokenize.orders import stored_key
from vistok.tokenize.stream import Plan, StreamGrammar, known_columns, plan
from vistok.train.checkpoint import load_model
from vistok.train.data import check_coords, open_datasets


class BatchGrammar:
    """One stream grammar per sequence (`vistok.tokenize.stream`), seen by `GPT.generate` as tensors.

    `mask` sets disallowed logits to -inf; `advance` returns each new token's coordinates and the next
    token's known coordinates, shifted by one (0 = none) like the training data.
    """

    bos = BOS

    def __init__(self, codec: Codec, meta: dict, plans: list[Plan]):
        self.codec = codec
        self.gs = [StreamGrammar(codec, meta, p) for p in plans]
        self.batch = len(plans)
        self.A = len(codec.axes)

    def start(self) -> torch.Tensor:
        return torch.from_numpy(np.stack([g.next_place() for g in self.gs]))

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        allowed = torch.from_numpy(np.stack([g.allowed() for g in self.gs])).to(logits.device)
        return logits.masked_fill(~allowed, float("-inf"))

    def advance(self, toks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        crd = np.zeros((self.batch, self.A), dtype=np.int64)
        nxt = np.zeros((self.batch, self.A), dtype=np.int64)
        for i, (g, t) in enumerate(zip(self.gs, toks.tolist())):
            c = g.step(int(t))
            if c is not None:
                crd[i] = c + 1
            nxt[i] = g.next_place()
        return torch.from_numpy(crd), torch.from_numpy(nxt)

    def finished(self) -> bool:
        return all(g.done for g in self.gs)


def sample_meta(codec: Codec, preprocess: dict, size: int | None) -> dict:
    side = size or preprocess.get("size") or 0
    if not side:
        raise UsageError("the dataset has no fixed image size; pass --size")
    meta = {"height": side, "width": side, "components": 3}
    if "subsampling" in codec.get_config():
        meta["subsampling"] = codec.get_config()["subsampling"]
    return meta


def sample_plans(codec: Codec, meta: dict, n: int, order: str, parallel: str, seed: int,
                 stored: list[dict] | None = None) -> list[Plan]:
    """One plan per sample: random orders drawn per sample from `seed`; stored orders taken from `stored`."""
    return [plan(codec, meta, order, np.random.default_rng([seed, i]), stored[i % len(stored)] if stored else None,
                 parallel) for i in range(n)]


@torch.no_grad()
def sample_images(model, codec: Codec, meta: dict, n: int, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, seed: int = 0, max_new: int | None = None, device: str = "cpu",
                  use_cache: bool = True, order: str = "canonical", parallel: str = "",
                  stored: list[dict] | None = None) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """-> (decoded images, canonical token streams, model steps per image), generated in `order` (and group
    by group with `parallel`) under the grammar."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    plans = sample_plans(codec, meta, n, order, parallel, seed, stored)
    known = known_columns(codec)
    check_coords(codec.cells(meta).positions.coords.max(axis=0) + 1, [model.cfg.axis_sizes[i] for i in known],
                 codec.known_axes)
    limit = max_new or codec.max_tokens(meta)
    streams, steps = [], 0
    if parallel:
        for p in plans:
            g = StreamGrammar(codec, meta, p)
            _, k = generate_groups(model, g, temperature, top_k, top_p, gen, use_cache)
            streams.append(g.canonical())
            steps += k
    else:
        grammar = BatchGrammar(codec, meta, plans)
        model.generate(grammar, limit, temperature, top_k, top_p, gen, use_cache)
        for i, g in enumerate(grammar.gs):
            if not (g.done or g.phase == "end"):
                raise CodecError(f"sample {i} did not finish within {limit} tokens")
            streams.append(g.canonical())
            steps += len(g.taken) + 1  # and EOS
    images = []
    for i, toks in enumerate(streams):
        toks = toks.astype(codec.vocab.dtype)
        try:
            images.append(codec.decode(TokenRecord(f"sample-{i}", toks, dict(meta))))
        except CodecError:  # only codecs without a complete grammar (h264 bytes) can get here
            images.append(np.zeros((meta["height"], meta["width"], 3), np.uint8))
    return images, [s.astype(codec.vocab.dtype) for s in streams], steps // max(1, n)


def stored_orders(datasets: list[str], order: str, meta: dict, n: int) -> list[dict]:
    """Stored orders (gradwalk walks: side information a decoder is sent) of up to n records of the run's
    datasets with the sample's geometry: a sample of a gradwalk run is drawn along a real image's walk."""
    key = stored_key(order)
    out = []
    sets, _ = open_datasets(datasets)
    for ds in sets:
        for rec in ds:
            if key in rec.orders and all(rec.meta.get(k) == meta[k] for k in ("height", "width")):
                out.append({key: rec.orders[key]})
                if len(out) >= n:
                    return out
    if not out:
        raise UsageError(f"order {order!r} is stored per image; no record of {', '.join(datasets)} has one at "
                         f"{meta['width']}x{meta['height']}")
    return out


def grid(images: list[np.ndarray], cols: int | None = None, pad: int = 2) -> np.ndarray:
    n = len(images)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    h, w = images[0].shape[:2]
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        im3 = im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=2)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = im3
    return out


def sample_run(run: str | Path, n: int, out: str | Path, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int = 0, size: int | None = None, device: str = "cpu",
               scale: int = 2) -> Path:
    from PIL import Image

    model, state = load_model(run, device)
    codec = get_codec(state["codec"])
    meta = sample_meta(codec, state.get("preprocess", {}), size)
    data = state["data"]
    order, parallel = data.get("order", "canonical"), data.get("parallel", "")
    stored = stored_orders(data["datasets"], order, meta, n) if order.startswith("gradwalk") else None
    images, _, _ = sample_images(model, codec, meta, n, temperature, top_k, top_p, seed, device=device,
                                 order=order, parallel=parallel, stored=stored)
    g = grid(images)
    img = Image.fromarray(g)
    if scale > 1:
        img = img.resize((g.shape[1] * scale, g.shape[0] * scale), Image.NEAREST)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
