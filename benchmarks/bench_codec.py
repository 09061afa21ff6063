"""JPEG codec speed against libjpeg-turbo (simplejpeg), on the embedded photos at 256x256, same run."""

from __future__ import annotations

import numpy as np
import simplejpeg

from benchmarks.common import per_item_seconds, photos_256
from vistok.record import TokenRecord
from vistok.tokenize import JpegCodec


def run(quality: int = 20) -> dict:
    from vistok.pipelines.job import single_threaded_blas

    single_threaded_blas()  # as in shard workers
    imgs = photos_256()
    codec = JpegCodec(quality=quality)
    recs = [codec.encode(im) for im in imgs]
    jpgs = [simplejpeg.encode_jpeg(im, quality=quality, colorsubsampling="420") for im in imgs]
    enc = per_item_seconds(codec.encode, imgs)
    enc_ref = per_item_seconds(lambda im: simplejpeg.encode_jpeg(im, quality=quality, colorsubsampling="420"), imgs)
    dec = per_item_seconds(codec.decode, recs)
    dec_ref = per_item_seconds(simplejpeg.decode_jpeg, jpgs)
    coords = per_item_seconds(lambda r: codec.layout(r.meta).positions(r), recs)  # units and coordinates, derived
    tokens = np.mean([len(r) for r in recs])
    # coordinates stored vs derived: bytes a stored (T, 5) int16 array would add per sample
    stored_coord_bytes = float(np.mean([codec.layout(r.meta).positions(r).coords.astype(np.int16).nbytes for r in recs]))
    token_bytes = float(np.mean([r.tokens.nbytes for r in recs]))
    return {
        "jpeg_encode_img_s": round(1 / enc, 1),
        "simplejpeg_encode_img_s": round(1 / enc_ref, 1),
        "encode_time_ratio_vs_simplejpeg": round(enc / enc_ref, 2),
        "jpeg_decode_img_s": round(1 / dec, 1),
        "simplejpeg_decode_img_s": round(1 / dec_ref, 1),
        "decode_time_ratio_vs_simplejpeg": round(dec / dec_ref, 2),
        "encode_tokens_s": round(tokens / enc),
        "tokens_per_256px_image": round(float(tokens), 1),
        "derive_coords_ms": round(coords * 1e3, 3),
        "stored_coords_bytes_per_sample": round(stored_coord_bytes),
        "token_bytes_per_sample": round(token_bytes),
    }


def shard_overhead() -> dict:
    """Bytes per sample on disk for a ~500-token record, plain tar vs tar.gz."""
    import tempfile
    from pathlib import Path

    from vistok.shards.writer import ShardWriter

    imgs = photos_256(8)
    codec = JpegCodec()
    recs = []
    for i, im in enumerate(imgs):
        for y in range(0, 256, 64):
            for x in range(0, 256, 64):
                r = codec.encode(np.ascontiguousarray(im[y : y + 64, x : x + 64]), key=f"k{i}-{y}-{x}",
                                 meta={"source": f"/data/photos/img{i}.png"})
                recs.append(r)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name in ("s.tar", "s.tar.gz"):
            with ShardWriter(Path(d) / name) as w:
                for r in recs:
                    w.write(TokenRecord(r.key, r.tokens, r.meta))
            out[name] = (Path(d) / name).stat().st_size / len(recs)
    tokens = np.mean([len(r) for r in recs])
    return {"tokens_per_64px_sample": round(float(tokens), 1), "token_bytes_per_64px_sample": round(float(tokens) * 2),
            "tar_bytes_per_sample": round(out["s.tar"]), "targz_bytes_per_sample": round(out["s.tar.gz"])}


if __name__ == "__main__":
    import json

    print(json.dumps({**run(), **shard_overhead()}))
