"""Orders and parallel modes keep their streams: a fingerprint of every plan over codecs x orders x modes.

Each codec's digest covers, for every order, parallel mode, group cut and step count, either the ordered stream
(permutation, groups, segments, order bits) of two seeds or that it is refused. It was taken before orders
and modes became registered objects (2026-12-07) and is frozen in `golden/order_fingerprint.json`: a change
that moves a single token of a single plan, or accepts or refuses another request, fails here.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from vistok.errors import UsageError
from vistok.tokenize import JpegCodec, PixelCodec, WaveletCodec, get_codec
from vistok.tokenize.orders import compute_stored
from vistok.tokenize.stream import StreamSpec, order_record

GOLDEN = Path(__file__).parent / "golden" / "order_fingerprint.json"
ORDERS = ["canonical", "zigzag", "time-major", "raster", "column", "snake", "zorder", "hilbert", "spiral", "freq-major",
          "coarse-to-fine", "next-scale", "random", "randsac:11", "randsac:11,5", "randsac:4", "squares:2",
          "squares:3", "gradwalk:max", "gradwalk:min", "dc-first", "dc-first:hilbert", "dc-first:random",
          "dc-first:randsac:5", "dc-first:squares:2", "dc-first:slic:3", "dc-first:gradwalk:max",
          "dc-first:gradwalk:min", "dc-first:frontier", "dc-first:slic:x", "randsac:3,5", "squares:0", "raster:1",
          "nonsense", "dc-first:nonsense"]
MODES = [("", 0, None), ("segments", 0, None), ("segments", 7, None), ("scales", 0, None), ("scales", 5, None),
         ("any", 0, None), ("any", 0, 4), ("any", 9, 3), ("masked:0.5", 0, None), ("masked:0.25", 0, None),
         ("masked:1.5", 0, None), ("bogus", 0, None)]


def _codecs(bsq=None, multiscale=None):
    learned = {} if bsq is None else {  # plans read a layout, which a learned codec's config fixes, not its weights
        "bsq": get_codec({"id": "bsq", "tokenizer": str(bsq)}),
        "bsq-scales": get_codec({"id": "bsq", "tokenizer": str(multiscale)})}
    return {**learned,
        "jpeg-rle": JpegCodec(quality=50), "jpeg-dense": JpegCodec(quality=50, layout="dense"),
        "jpeg-gray-dense": JpegCodec(quality=90, layout="dense", subsampling="444"),
        "jpeg-delta-rle": JpegCodec(quality=50, temporal="delta"),
        "wavelet-rle": WaveletCodec(levels=2), "wavelet-dense": WaveletCodec(levels=2, layout="dense"),
        "pixels": PixelCodec(bits=4), "pixels-unit4": PixelCodec(bits=5, unit=4),
    }


def _records(codec, photo, gray):
    img = photo[100:132, 150:182]
    if gray:
        img = img.mean(axis=2).astype(np.uint8)
    out = [codec.encode(img, "image")]
    if not gray:  # a clip of three frames, the camera moving two pixels a frame
        out.append(codec.encode_clip([photo[100:132, 150 + 2 * f : 182 + 2 * f] for f in range(3)], "clip"))
    for rec in out:
        rec.orders.update(compute_stored(codec, rec, None, ("gradwalk:max", "gradwalk:min")))
    return out


def _feed(h, name, arr):
    h.update(name.encode())
    if arr is None:
        h.update(b"-")
    else:
        a = np.ascontiguousarray(np.asarray(arr, dtype=np.int64))
        h.update(str(a.shape).encode() + a.tobytes())


def digest(codec, records) -> str:
    h = hashlib.sha256()
    for rec in records:
        for order in ORDERS:
            for parallel, max_group, steps in MODES:
                for seed in (0, 1):
                    h.update(f"|{rec.key} {order} {parallel} {max_group} {steps} {seed}|".encode())
                    try:
                        o = order_record(codec, rec, StreamSpec.parse(order, parallel, steps=steps, block_size=2 * max_group + 1), np.random.default_rng(seed))
                    except UsageError:  # refused (what its message says is tested where it is made)
                        h.update(b"refused")
                        break  # the second seed is refused alike
                    _feed(h, "perm", o.perm)
                    _feed(h, "groups", o.groups)
                    _feed(h, "segments", o.segments)
                    h.update(repr(round(float(o.plan.order_bits), 6)).encode())
    return h.hexdigest()


def test_every_plan_and_refusal_is_as_before(photo, bsq_tok, multiscale_tok):
    got = {name: digest(codec, _records(codec, photo, "gray" in name))
           for name, codec in sorted(_codecs(bsq_tok, multiscale_tok).items())}
    if os.environ.get("VISTOK_WRITE_FINGERPRINT"):  # an intended change of streams: say why in the commit
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    assert got == json.loads(GOLDEN.read_text())
