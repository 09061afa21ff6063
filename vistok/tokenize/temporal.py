"""Temporal deltas (`--temporal delta`): a clip's frame t > 1 coded as the integer difference of its
quantized coefficients from frame t-1's, for codecs whose frames are integer coefficient arrays (JPEG's
DCT blocks, a wavelet pyramid).

Frame 1 is coded as itself, and so is every keyframe with `keyframe=K` (frames 1, K+1, 2K+1...; a clip's
metadata types each frame "I" or "P" in `frame_types`). A P-frame's tokens are the codec's own tokens of
the difference array, so its layout, cells and grammar are the plain codec's (JPEG rle adds a SKIP token
for an all-zero block; see `jpeg.py`), and every stream the grammar allows decodes. Exact: decoding adds
each P-frame's differences to the previous frame's coefficients (`frame_coefficients`).

A codec mixes `TemporalDelta` in before `Codec` and provides four hooks: `frame_coefficients_of(media)`
(pixels -> (geometry, integer coefficients)), `coefficients(record)` (a one-frame record -> the same, as
coded), `tokenize(geometry, coefficients)` and `frame_pixels(record, geometry, coefficients)`, plus
`geometry_meta(geometry)` (the metadata keys that fix a frame's geometry).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vistok.errors import CodecError
from vistok.record import TokenRecord
from vistok.tokenize.base import FRAME, CliOption, frames_of

TEMPORAL = ("none", "delta")
CLI_OPTIONS = (  # the `vistok shard` options of a codec with temporal deltas
    CliOption("temporal", str, "jpeg, wavelet: clips frame by frame (none), or frame 1 then each frame's coefficient "
              "differences to the one before (delta; jpeg: absolute DC, rle codes an unchanged block as one SKIP "
              "token; wavelet rle: an unchanged band is its EOB).", TEMPORAL),
    CliOption("keyframe", int, "jpeg, wavelet --temporal delta: restart the deltas every K frames (frames 1, K+1, ... "
              "coded whole; 0: only frame 1)."),
)


class TemporalDelta:
    temporal: str = "none"
    keyframe: int = 0

    def _temporal_init(self, temporal: str, keyframe: int) -> None:
        if temporal not in TEMPORAL:
            raise CodecError(f"{self.codec_id} temporal must be none or delta, got {temporal!r}")
        if int(keyframe) < 0 or (int(keyframe) and temporal != "delta"):
            raise CodecError(f"--keyframe K (K >= 1) restarts temporal deltas: use it with --temporal delta (got {keyframe})")
        self.temporal, self.keyframe = temporal, int(keyframe)

    def _temporal_config(self) -> dict[str, Any]:
        """The config keys of the temporal mode, left out at their defaults (configs written before them)."""
        out: dict[str, Any] = {"keyframe": self.keyframe} if self.keyframe else {}
        return {**out, "temporal": self.temporal} if self.temporal != "none" else out

    def whole_frame(self, t: int) -> bool:
        """Is frame t (from 0) coded as itself: always without deltas; frame 0 and every keyframe with them."""
        return self.temporal != "delta" or t == 0 or bool(self.keyframe and t % self.keyframe == 0)

    def encode_clip(self, frames: list[np.ndarray], key: str = "sample", meta: dict | None = None) -> TokenRecord:
        """Frames -> one record; with temporal deltas, each P-frame as its coefficients' differences to the
        frame before."""
        if self.temporal != "delta" or len(frames) == 1:
            return super().encode_clip(frames, key, meta)
        first = self.encode(frames[0], key, meta)  # the codec's own checks and metadata
        geom, coefs = self.coefficients(first)
        return self.clip_from_coefficients(geom, [coefs] + [self.frame_coefficients_of(f)[1] for f in frames[1:]],
                                           key, first.meta)

    def clip_from_coefficients(self, geom, coefs: list[np.ndarray], key: str, meta: dict | None = None) -> TokenRecord:
        """Each frame's integer coefficients -> one clip record: I-frames as themselves, P-frames as their
        differences to the frame before, the frames' streams joined by FRAME tokens."""
        diffs = [c if self.whole_frame(t) else np.asarray(c, np.int64) - coefs[t - 1] for t, c in enumerate(coefs)]
        streams = [self.tokenize(geom, d) for d in diffs]
        sep = np.array([FRAME], dtype=streams[0].dtype)
        tokens = np.concatenate([t for i, s in enumerate(streams) for t in ((sep, s) if i else (s,))])
        m = {**(meta or {}), **self.geometry_meta(geom)}
        if len(coefs) > 1:
            m["frames"] = len(coefs)
            if self.temporal == "delta":
                m["temporal"] = "delta"
                m["frame_types"] = ["I" if self.whole_frame(t) else "P" for t in range(len(coefs))]
        return TokenRecord(key, tokens, m)

    def frame_coefficients(self, record: TokenRecord) -> list[tuple[TokenRecord, Any, np.ndarray]]:
        """Each frame's record, geometry and own coefficients (a delta clip's differences added up)."""
        out, acc = [], None
        for t, f in enumerate(frames_of(record)):
            geom, coefs = self.coefficients(f)
            acc = coefs if self.whole_frame(t) else acc + coefs
            out.append((f, geom, acc))
        return out

    def frame_records(self, record: TokenRecord) -> list[TokenRecord]:
        """A record's frames as records of their own coefficients (a delta clip's differences added up)."""
        if self.temporal != "delta" or int(record.meta.get("frames", 1)) == 1:
            return frames_of(record)
        return [TokenRecord(f.key, self.tokenize(g, c), f.meta) for f, g, c in self.frame_coefficients(record)]

    def decode(self, record: TokenRecord) -> np.ndarray:
        frames = [self.frame_pixels(f, g, c) for f, g, c in self.frame_coefficients(record)]
        return frames[0] if len(frames) == 1 else np.stack(frames)
