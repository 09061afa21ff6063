"""`--codec bsq` / `--codec vq`: code indices of a trained tokenizer (`vistok train-tokenizer`).

An image is padded by edge replication to a multiple of the patch size, encoded to a (h, w) grid of
code indices, and stored in raster order as tokens (code + the number of special tokens, `N_SPECIALS`: codes follow the specials). The codec config
names the tokenizer folder and the sha256 of its weights, so a dataset always names the tokenizer that
made it and decoding refuses a different one. The model is loaded once per process (a Ray worker loads
it on its first shard and keeps it). With `device="auto"` (default) the encoder runs on CUDA when the
process sees a GPU: `vistok shard` gives each shard task one GPU when the Ray cluster has GPUs.

Multi-scale tokenizers (`--scales S`) give each frame S grids, coarsest first, each in raster order;
their codes carry a `scale` axis, and a code's unit is the coarsest-scale cell containing it, so a
spatial order moves a cell's whole coarse-to-fine pyramid together.

Axes: frame, y, x (the code grid), or frame, scale, y, x. Unit: one code (a patch), or a coarsest cell.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from vistok.errors import CodecError, InputError
from vistok.media.sources import DEFAULT_MAX_PIXELS
from vistok.nn.grids import scale_grids
from vistok.record import TokenRecord
from vistok.tokenize.base import (
    BATCH,
    CellGrammar,
    CliOption,
    Codec,
    FrameLayout,
    Vocabulary,
    as_pixels,
    register_codec,
)


@lru_cache(maxsize=4)
def _model(path: str, sha256: str, device: str):
    from vistok.nn.autoencoder import load_tokenizer  # torch loads only when a learned codec is built

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
    geometry_keys = ("height", "width")
    single_token_cells = True
    kind = ""

    cli_options = (
        CliOption("tokenizer", str, "bsq, vq: the tokenizer folder written by `vistok train-tokenizer` (required).",
                  parse=lambda v: str(Path(v).resolve())),
        CliOption("device", str, "bsq, vq: where the encoder runs: auto (a GPU per Ray task when the cluster has GPUs, else CPU).", ("auto", "cpu", "cuda")),
    )

    def __init__(self, tokenizer: str, sha256: str = "", device: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS):
        self.tokenizer, self.device, self.max_pixels = str(tokenizer), device, int(max_pixels)
        self.torch_device = resolve_device(device)
        self.gpus_per_task = 0.0 if device == "cpu" else 1.0
        model, cfg = _model(self.tokenizer, sha256, self.torch_device)
        if cfg["autoencoder"]["kind"] != self.kind:
            raise CodecError(f"{tokenizer} is a {cfg['autoencoder']['kind']} tokenizer, not {self.kind}")
        self.sha256 = cfg["sha256"]
        self.model = model
        self.patch = int(cfg["autoencoder"]["patch"])
        self.scales = int(cfg["autoencoder"].get("scales", 1))
        if self.scales > 1:  # codes of every scale: a scale axis, coarse to fine (the `next-scale` order)
            self.axes = self.known_axes = ("frame", "scale", "y", "x")
        self._vocab = Vocabulary.build((), [("code", model.cfg.vocab, f"{self.kind} code index")])
        self._code0 = self._vocab.range("code").start

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({BATCH})

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "tokenizer": self.tokenizer, "sha256": self.sha256, "device": self.device,
                "max_pixels": self.max_pixels}

    @property
    def vocab(self) -> Vocabulary:
        return self._vocab

    def _grid(self, meta: dict) -> tuple[int, int]:
        return -(-int(meta["height"]) // self.patch), -(-int(meta["width"]) // self.patch)

    def _grids(self, meta: dict) -> list[tuple[int, int]]:
        """The code grids of one frame, coarsest first (one grid unless the tokenizer is multi-scale)."""
        return scale_grids(*self._grid(meta), self.scales)

    def _positions(self, meta: dict) -> np.ndarray:
        """(N, 3) (scale, y, x) of every code of a frame in canonical (coarse-to-fine, raster) order."""
        parts = []
        for k, (gh, gw) in enumerate(self._grids(meta)):
            y, x = np.divmod(np.arange(gh * gw), gw)
            parts.append(np.stack([np.full_like(y, k), y, x], axis=1))
        return np.concatenate(parts)

    def encode(self, media: np.ndarray, key: str = "sample", meta: dict | None = None) -> TokenRecord:
        return self.encode_many([as_pixels(media)], [key], [meta])[0]

    def encode_many(self, images: list[np.ndarray], keys: list[str], metas: list[dict | None]) -> list[TokenRecord]:
        """BATCH: same-sized images in one forward pass."""
        import torch

        from vistok.nn.autoencoder import flat_codes  # torch-only helper: see `_model`

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
        idx = flat_codes(self.model.encode(x)).cpu().numpy()
        out = []
        for k, m, row in zip(keys, metas, idx):
            meta = dict(m or {})
            meta.update(height=h, width=w)
            out.append(TokenRecord(k, (row + self._code0).astype(self._vocab.dtype), meta))
        return out

    def decode_frame(self, record: TokenRecord) -> np.ndarray:
        import torch

        grids = self._grids(record.meta)
        t = np.asarray(record.tokens).astype(np.int64) - self._code0
        n = sum(gh * gw for gh, gw in grids)
        if t.size != n or t.min() < 0 or t.max() >= self.model.cfg.vocab:
            raise CodecError(f"record {record.key}: expected {n} code tokens")
        idx, at = [], 0
        for gh, gw in grids:
            idx.append(torch.from_numpy(t[at : at + gh * gw].reshape(1, gh, gw)).to(self.torch_device))
            at += gh * gw
        img = self.model.decode(idx if self.scales > 1 else idx[0])
        img = ((img[0].permute(1, 2, 0).cpu().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        return img[: int(record.meta["height"]), : int(record.meta["width"])]

    def _units_coords(self, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        """Unit of a code: the coarsest-scale cell that contains it (all of one grid when single-scale)."""
        pos = self._positions(meta)
        grids = self._grids(meta)
        (h0, w0), sizes = grids[0], np.array(grids)[pos[:, 0]]
        units = (pos[:, 1] * h0 // sizes[:, 0]) * w0 + pos[:, 2] * w0 // sizes[:, 1]
        coords = np.concatenate([np.zeros((len(pos), 1), pos.dtype), pos if self.scales > 1 else pos[:, 1:]], axis=1)
        return units, coords.astype(np.int32)

    def frame_tokens(self, record: TokenRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        units, coords = self._units_coords(record.meta)
        return units, coords, np.arange(record.tokens.size, dtype=np.int64)

    def frame_layout(self, meta: dict) -> FrameLayout:
        """One cell per code, its place known in advance (every axis is known)."""
        units, coords = self._units_coords(meta)
        return FrameLayout(self._grids(meta)[0], (self.patch << (self.scales - 1),) * 2, units, coords,
                           sum(gh * gw for gh, gw in self._grids(meta)), lambda: CodeCells(self.vocab.size, self._code0, coords))


class CodeCells(CellGrammar):
    """One token per cell, any token from `first` on (a codebook's codes; pixel values, `vistok.tokenize.pixels`)."""

    def __init__(self, vocab_size: int, first: int, coords: np.ndarray):
        self.coords = coords.astype(np.int64)
        self._codes = np.zeros(vocab_size, bool)
        self._codes[first:] = True
        self.cell = 0

    def begin(self, cell: int) -> None:
        self.cell, self.open = cell, True

    def allowed(self) -> np.ndarray:
        return self._codes

    def step(self, tok: int) -> np.ndarray:
        self.open = False
        return self.coords[self.cell]


@register_codec
class BSQCodec(LearnedCodec):
    codec_id = "bsq"
    summary = "codes of a trained BSQ tokenizer"
    kind = "bsq"


@register_codec
class VQCodec(LearnedCodec):
    codec_id = "vq"
    summary = "codes of a trained VQ tokenizer"
    kind = "vq"
