"""One input -> its token records, as small generator stages behind one error stage (webdataset style).

    read -> [label] -> decode -> [preprocess] -> encode -> [stored orders]

`encode_input` picks the path for the input (a video's clips, a file the codec reads directly, or an
image's crops), chains the stages, and wraps them in `_recorded`: whatever goes wrong becomes an
`InputError` carrying the stage it happened in, so the shard task records one error row and goes on.
A video that fails partway has already yielded the clips before the failure.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from vistok.errors import InputError, one_line
from vistok.media.preprocess import Preprocess
from vistok.media.sources import input_label, load_image, read_input
from vistok.media.video import decode_clips, is_video_name
from vistok.record import InputId, TokenRecord, clip_key, parse_input_id
from vistok.tokenize.base import BATCH, FILE_BYTES, VIDEO_BYTES, Codec
from vistok.tokenize.orders import compute_stored


class Encoded(NamedTuple):
    record: TokenRecord
    pixels: np.ndarray | None  # what a content-aware stored order looks at (None: decode the record)


class _Stage:
    """The stage an input is in, for its error row."""

    def __init__(self) -> None:
        self.name = "read"


def encode_input(input_id: str, codec: Codec, pre: Preprocess, store_orders: tuple[str, ...] = (),
                 label_from: str = "", options: dict[str, Any] | None = None) -> Iterator[TokenRecord]:
    """One input (read with the storage `options` when remote) -> its records. Raises `InputError` (with
    `.stage`) for bad input."""
    ref, at = parse_input_id(input_id), _Stage()
    return _recorded(_records(ref, codec, pre, store_orders, label_from, at, options), at)


def _records(ref: InputId, codec: Codec, pre: Preprocess, store_orders: tuple[str, ...], label_from: str,
             at: _Stage, options: dict[str, Any] | None) -> Iterator[TokenRecord]:
    data, meta = read_input(str(ref), options=options)
    at.name = "label"
    label = input_label(ref, meta, label_from)
    meta.pop("cls", None)
    if label is not None:
        meta["label"] = label
    at.name = "decode"
    if is_video_name(ref.name) and (not ref.name.lower().endswith(".gif") or _animated_gif(data)):
        if VIDEO_BYTES in codec.capabilities:
            yield from codec.encode_video_bytes(data, ref.key, meta, pre.clip_len, pre.max_clips)
            return
        encoded = _clips(data, ref.key, meta, codec, pre, at)
    else:
        direct = FILE_BYTES in codec.capabilities and pre.identity() and not pre.gray
        rec = codec.encode_bytes(data, ref.key, meta) if direct else None
        encoded = iter([Encoded(rec, None)]) if rec is not None else _image(data, ref.key, meta, codec, pre, at)
    for enc in encoded:
        if store_orders:
            at.name = "order"
            enc.record.orders.update(compute_stored(codec, enc.record, enc.pixels, store_orders))
        yield enc.record


def _clips(data: bytes, key: str, meta: dict, codec: Codec, pre: Preprocess, at: _Stage) -> Iterator[Encoded]:
    for i, clip in enumerate(decode_clips(data, pre.video())):
        at.name = "encode"
        frames = [pre.frame(f, key) for f in clip]
        yield Encoded(codec.encode_clip(frames, clip_key(key, i), dict(meta)), frames[0] if len(frames) == 1 else np.stack(frames))
        at.name = "decode"


def _image(data: bytes, key: str, meta: dict, codec: Codec, pre: Preprocess, at: _Stage) -> Iterator[Encoded]:
    img = load_image(data, pre.max_pixels, pre.draft)
    at.name = "preprocess"
    items = pre.apply(img, key)
    at.name = "encode"
    pixels, keys, metas = [pix for _, pix in items], [k for k, _ in items], [dict(meta) for _ in items]
    recs = codec.encode_many(pixels, keys, metas) if BATCH in codec.capabilities else list(map(codec.encode, pixels, keys, metas))
    yield from (Encoded(rec, pix) for (_, pix), rec in zip(items, recs))


def _recorded(records: Iterator[TokenRecord], at: _Stage) -> Iterator[TokenRecord]:
    """The error stage: every failure of an input becomes one `InputError` naming its stage."""
    try:
        yield from records
    except InputError as exc:
        exc.stage = at.name
        raise
    except MemoryError:
        err = InputError(f"out of memory while at stage {at.name}")
        err.stage = at.name
        raise err from None
    except Exception as exc:  # a bug or an unexpected library failure on this input: record it, go on
        err = InputError(f"{type(exc).__name__}: {one_line(exc)}")
        err.stage = at.name
        raise err from None


def _animated_gif(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return bool(getattr(im, "is_animated", False))
    except Exception:  # not decodable as an image: let the video path report it
        return True


def error_row(input_id: str, stage: str, exc: BaseException) -> dict[str, Any]:
    """One line of `errors.jsonl`: the input's source and key, the stage, the error type and its message."""
    ref = parse_input_id(input_id)
    return {"source": ref.source, "key": ref.key, "stage": stage, "error": type(exc).__name__,
            "reason": one_line(exc)}
