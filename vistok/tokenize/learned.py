"""`--codec bsq` / `--codec vq`: code indices of a trained tokenizer (`vistok train-tokenizer`).

An image is padded by edge replication to a multiple of the patch size, encoded to a (h, w) grid of
code indices, and stored in raster order as tokens (code + 4, after the specials). The codec config
names the tokenizer folder and the sha256 of its weights, so a dataset always names the tokenizer that
made it and decoding refuses a different one. The model is loaded once per process (a Ray worker loads
it on its first shard and keeps it). With `device="auto"` (default) the encoder runs on CUDA when the
process sees a GPU: `vistok shard` gives each shard task one GPU when the Ray cluster has GPUs.

Axes: frame, y, x (the code grid). Unit: one code (a patch).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from vistok.errors import CodecError, InputError
from vistok.shards.record import TokenRecord
from vistok.tokenize.base import EOS, Codec, Vocabulary, register_codec


@lru_cache(maxsize=4)
def _model(path: str, sha256: str, device: str):
    from vistok.train.tokenizer import load_tokenizer

    return load_tokenizer(path, device, sha256 or None)


def resolve_device(device: str) -> str:
    """auto -> cuda when this process sees a GPU, else cpu; an explicit cuda without one is refused."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CodecError(f"device {device!r}: this process sees no CUDA GPU; use --device auto or cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise CodecError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return device


class LearnedCodec(Codec):
    axes = ("frame", "y", "x")
    known_axes = ("frame", "y", "x")  # raster over a fixed grid: every position is known in advance
    kind = ""

    def __init__(self, tokenizer: str, sha256: str = "", device: str = "auto", max_pixels: int = 89_478_485):
        self.tokenizer, self.device, self.max_pixels = str(tokenizer), device, int(max_pixels)
        self.torch_device = resolve_device(device)
        self.gpus_per_task = 0.0 if device == "cpu" else 1.0
        model, cfg = _model(self.tokenizer, sha256, self.torch_device)
        if cfg["autoencoder"]["kind"] != self.kind:
            raise CodecError(f"{tokenizer} is a {cfg['autoencoder']['kind']} tokenizer, not {self.kind}")
        self.sha256 = cfg["sha256"]
        self.model = model
        self.patch = int(cfg["autoencoder"]["patch"])
        self._vocab = Vocabulary.build((), [("code", model.cfg.vocab, f"{self.kind} code index")])
        self._code0 = self._vocab.range("code").start

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "tokenizer": self.tokenizer, "sha256": self.sha256, "device": self.device,
                "max_pixels": self.max_pixels}

    @property
    def vocab(self) -> Vocabulary:
        return self._vocab

    def _grid(self, meta: dict) -> tuple[int, int]:
        return -(-int(meta["height"]) // self.patch), -(-int(meta["width"]) // self.patch)

    def encode(self, media: np.ndarray, key: str = "sample", meta: dict | None = None) -> TokenRecord:
        return self.encode_many([media], [key], [meta])[0]

    def encode_many(self, images: list[np.ndarray], keys: list[str], metas: list[dict | None]) -> list[TokenRecord]:
        """Batched encoding of same-sized images (one forward pass)."""
        import torch

        h, w = images[0].shape[:2]
        if any(im.shape[:2] != (h, w) for im in images):
            return [r for im, k, m in zip(images, keys, metas) for r in self.encode_many([im], [k], [m])]
        if h * w > self.max_pixels:
            raise InputError(f"image of {w}x{h} pixels exceeds the limit of {self.max_pixels}")
        gh, gw = -(-h // self.patch), -(-w // self.patch)
        batch = []
        for im in images:
            im = np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im
            batch.append(np.pad(im, ((0, gh * self.patch - h), (0, gw * self.patch - w), (0, 0)), mode="edge"))
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().to(self.torch_device) / 127.5 - 1.0
        idx = self.model.encode(x).cpu().numpy().reshape(len(images), -1)
        out = []
        for k, m, row in zip(keys, metas, idx):
            meta = dict(m or {})
            meta.update(height=h, width=w)
            out.append(TokenRecord(k, (row + self._code0).astype(self._vocab.dtype), meta))
        return out

    def decode_frame(self, record: TokenRecord) -> np.ndarray:
        import torch

        gh, gw = self._grid(record.meta)
        t = np.asarray(record.tokens).astype(np.int64) - self._code0
        if t.size != gh * gw or t.min() < 0 or t.max() >= self.model.cfg.vocab:
            raise CodecError(f"record {record.key}: expected {gh * gw} code tokens")
        img = self.model.decode(torch.from_numpy(t.reshape(1, gh, gw)).to(self.torch_device))
        img = ((img[0].permute(1, 2, 0).cpu().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        return img[: int(record.meta["height"]), : int(record.meta["width"])]

    def frame_layout_arrays(self, record: TokenRecord) -> tuple[np.ndarray, np.ndarray]:
        gh, gw = self._grid(record.meta)
        y, x = np.divmod(np.arange(gh * gw), gw)
        return np.arange(gh * gw), np.stack([np.zeros_like(y), y, x], axis=1).astype(np.int32)

    def unit_grid(self, record: TokenRecord) -> tuple[int, int]:
        return self._grid(record.meta)

    def unit_pixels(self, record: TokenRecord) -> tuple[int, int]:
        return self.patch, self.patch

    def frame_max_tokens(self, meta: dict) -> int:
        gh, gw = self._grid(meta)
        return gh * gw

    def frame_grammar(self, meta: dict):
        return GridGrammar(self, *self._grid(meta))


class GridGrammar:
    """Exactly h x w code tokens in raster order, then EOS."""

    def __init__(self, codec: LearnedCodec, gh: int, gw: int):
        self.n, self.gw, self.i, self.done = gh * gw, gw, 0, False
        self._codes = np.zeros(codec.vocab.size, bool)
        self._codes[codec._code0 :] = True
        self._eos = np.zeros(codec.vocab.size, bool)
        self._eos[EOS] = True

    @property
    def phase(self) -> str:
        return "done" if self.done else ("end" if self.i >= self.n else "codes")

    def allowed(self) -> np.ndarray:
        return self._codes if self.i < self.n else self._eos

    def next_known(self) -> np.ndarray | None:
        if self.i >= self.n:
            return None
        return np.array([0, *divmod(self.i, self.gw)], dtype=np.int64)

    def step(self, tok: int) -> np.ndarray | None:
        if self.i >= self.n:
            self.done = True
            return None
        out = np.array([0, *divmod(self.i, self.gw)], dtype=np.int64)
        self.i += 1
        return out


@register_codec
class BSQCodec(LearnedCodec):
    codec_id = "bsq"
    kind = "bsq"


@register_codec
class VQCodec(LearnedCodec):
    codec_id = "vq"
    kind = "vq"
