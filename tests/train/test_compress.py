"""`vistok compress` / `vistok decompress`: files that decode to the identical record, as small as eval says."""

import pytest

from vistok.errors import CodecError, UsageError
from vistok.media.preprocess import Preprocess
from vistok.media.sources import sample_files
from vistok.pipelines.job import run_job
from vistok.shards.reader import Dataset
from vistok.tokenize import BSQCodec, JpegCodec, WaveletCodec
from vistok.train.compress import LANES, Coder, input_records
from vistok.train.container import container_bytes, payload_bits
from vistok.train.data import DataConfig, heldout_records
from vistok.train.evaluate import record_bits
from vistok.train.trainer import TrainConfig, train


def _dataset(out, codec, size=32):
    run_job(["sample"], out, codec, Preprocess(size=size, crops=3, seed=0), shard_size=16, executor="local", quiet=True)
    return out


def _run(ds, out, order="canonical", parallel="", steps=8):
    data = DataConfig(datasets=[str(ds)], block_size=1600 if parallel else 256, batch_size=4, num_workers=0,
                      heldout=0.25, shuffle_block=8, order=order, parallel=parallel)
    train(data, TrainConfig(out=str(out), max_steps=steps, warmup=2, eval_every=0, ckpt_every=steps, log_every=4),
          quiet=True)
    return out


def _round_trip(run, decodes_to, n=10):
    """Held-out records -> files -> records; each file's payload against eval's bits for its record."""
    coder = Coder.load(run)
    sets = [Dataset(p) for p in coder.data.datasets]
    recs = list(heldout_records(sets, coder.data.heldout, n))
    assert recs
    blobs = [b for _, b in coder.compress(recs)]
    decodes_to(list(coder.decompress(blobs)), recs)
    kept = [b for _, b in coder.compress(recs[:2], keep_meta=True)]
    assert list(coder.decompress(kept)) == recs[:2]  # tokens, dtype, key, metadata, side arrays: the identical record
    bits = record_bits(coder.model, coder.codec, recs, coder.data, "cpu")
    for blob, rb in zip(blobs, bits):  # within 1% of eval's bits, plus the range coder's last words
        assert abs(payload_bits(blob) - rb.bits) <= 0.01 * rb.bits + 64, (payload_bits(blob), rb.bits)
    return coder, recs, blobs


@pytest.fixture(scope="module")
def jpeg_run(small_dataset, tmp_path_factory):
    return _run(small_dataset, tmp_path_factory.mktemp("c") / "jpeg")


@pytest.mark.parametrize("order", ["canonical", "random"])
def test_jpeg_rle_round_trip_and_bits(small_dataset, jpeg_run, tmp_path, order, decodes_to):
    run = jpeg_run if order == "canonical" else _run(small_dataset, tmp_path / order, order)
    coder, recs, blobs = _round_trip(run, decodes_to)
    assert coder.data.order == order
    # the run's 32x32 records: 16 bytes of container (magic, version, flags, run, order seed, CRC)
    assert {container_bytes(b) for b in blobs} == {16}
    # a file decodes alone, and among others, to the same record (lanes do not leak into each other)
    decodes_to(list(coder.decompress(blobs[3:4])), recs[3:4])
    alone = [b for _, b in coder.compress(recs[5:6])]
    assert alone == blobs[5:6] and len(recs) > LANES - 1


def test_real_photos_and_passthrough_jpeg_files(jpeg_run, tmp_path, decodes_to):
    coder = Coder.load(jpeg_run)
    photos = [str(p) for p in sample_files()[:2]]
    recs = list(input_records(coder, photos))
    assert len(recs) == 2 and all(r.meta["height"] == 32 for r in recs)  # the run's preprocessing: one centre crop
    decodes_to(list(coder.decompress(b for _, b in coder.compress(recs))), recs)
    # a JPEG file through passthrough: its own coefficients, at its own size, back exactly
    from PIL import Image

    jpg = tmp_path / "small.jpg"
    Image.open(photos[0]).convert("RGB").resize((40, 24)).save(jpg, quality=60)
    (rec,) = input_records(coder, [str(jpg)], passthrough=True)
    ((_, blob),) = coder.compress([rec])
    (back,) = coder.decompress([blob])
    decodes_to([back], [rec])
    assert rec.meta["width"] == 40 and container_bytes(blob) > 16  # its own size and tables are in the file
    assert coder.codec.to_jpeg(back) == coder.codec.to_jpeg(rec)


@pytest.mark.slow
def test_dense_segment_parallel_round_trip(tmp_path, decodes_to):
    ds = _dataset(tmp_path / "dense", JpegCodec(quality=30, layout="dense", subsampling="444"), size=16)
    coder, _, blobs = _round_trip(_run(ds, tmp_path / "seg", "randsac:4", "segments"), decodes_to, n=4)
    assert coder.data.parallel == "segments"  # (a random order's round trip: test_jpeg_rle_round_trip_and_bits)
    # segments of the DC image (a plan completed midway): groups cut where training cut them
    run = _run(ds, tmp_path / "dc-slic", "dc-first:slic:2", "segments")
    _round_trip(run, decodes_to, n=3)
    from vistok.train.sample import sample_run

    assert sample_run(run, 2, tmp_path / "s.png").exists()


def test_orders_from_the_dc_image_round_trip_and_score_their_parts(small_dataset, tmp_path, decodes_to):
    """dc-first:slic: the decoder computes the order from the DC image it decoded first, so no side information
    is sent; eval --parts splits the bits between the DC image and the rest."""
    from vistok.train.evaluate import evaluate
    from vistok.train.sample import sample_run

    run = _run(small_dataset, tmp_path / "slic", "dc-first:slic:3")
    _round_trip(run, decodes_to, n=4)
    assert sample_run(run, 2, tmp_path / "s.png").exists()  # each sample's order from its own sampled DC image
    _round_trip(_run(small_dataset, tmp_path / "rings", "dc-first:frontier", steps=4), decodes_to, n=3)
    res = evaluate(run, limit=4, parts=True)
    assert res["order_bits"] == 0 and res["dc_bits_per_image"] > 0 and res["rest_bits_per_image"] > 0
    assert res["dc_bits_per_image"] + res["rest_bits_per_image"] == pytest.approx(res["bits_per_image"])


def test_wavelet_and_bsq_round_trip(bsq_tok, tmp_path, decodes_to):
    ds = _dataset(tmp_path / "wav", WaveletCodec(levels=2), size=32)
    _round_trip(_run(ds, tmp_path / "w"), decodes_to, n=6)
    ds = _dataset(tmp_path / "bsq", BSQCodec(str(bsq_tok)), size=32)
    _round_trip(_run(ds, tmp_path / "b", "random"), decodes_to, n=6)


def test_bad_files_fail_clearly_and_foreign_runs_are_refused(small_dataset, jpeg_run, tmp_path, decodes_to):
    coder = Coder.load(jpeg_run)
    rec = next(iter(heldout_records([Dataset(small_dataset)], coder.data.heldout, 1)))
    ((_, blob),) = coder.compress([rec])
    p0 = container_bytes(blob)  # where the payload starts

    def flip(i: int) -> bytes:
        return blob[:i] + bytes([blob[i] ^ 0x10]) + blob[i + 1 :]

    bad = {"truncated": blob[: len(blob) - 4], "half": blob[: p0 + (len(blob) - p0) // 8 * 4], "odd length": blob[:-1],
           "payload bit": flip(p0), "crc": flip(13), "flags": flip(3), "magic": b"XX" + blob[2:],
           "no payload": blob[:p0]}
    for name, b in bad.items():
        with pytest.raises(CodecError):
            list(coder.decompress([b]))
            pytest.fail(f"{name}: decoded without an error")
    # a well-formed header whose geometry is a bomb: refused before anything is sized from it
    from vistok.train.container import Header, pack

    head = Header(0, 0, meta={**rec.meta, "height": 10**6, "width": 10**6})
    with pytest.raises(CodecError, match="geometry"):
        list(coder.decompress([pack(coder.checksum, head, coder.reference, False) + blob[p0:]]))
    with pytest.raises(CodecError, match="format 1, written by an older vistok"):
        list(coder.decompress([b"VTKZ\x01" + bytes(40)]))
    # any flipped bit: an error, or (a bit the coder's last word does not need) the identical record, never another
    for i in range(p0, len(blob), max(1, (len(blob) - p0) // 6)):
        try:
            decodes_to(list(coder.decompress([flip(i)])), [rec])
        except CodecError:
            pass
    other = Coder.load(_run(small_dataset, tmp_path / "other", steps=2))
    with pytest.raises(CodecError, match="another run"):
        list(other.decompress([blob]))


def test_orders_a_decoder_cannot_follow_are_refused(gradwalk_dataset, tmp_path):
    data = DataConfig(datasets=[str(gradwalk_dataset)], block_size=256, batch_size=2, num_workers=0,
                      order="gradwalk:max", shuffle_block=4)
    train(data, TrainConfig(out=str(tmp_path / "g"), max_steps=1, warmup=1, eval_every=0, log_every=1), quiet=True)
    with pytest.raises(UsageError, match="gradwalk"):
        Coder.load(tmp_path / "g")


def test_cli_compress_then_decompress(jpeg_run, tmp_path):
    import subprocess
    import sys

    def vistok(*args):
        return subprocess.run([sys.executable, "-m", "vistok.cli", *map(str, args)], capture_output=True, text=True)

    r = vistok("compress", jpeg_run, "sample", "--out", tmp_path / "z", "-q")
    assert r.returncode == 0, r.stderr
    assert "payload" in r.stdout
    files = sorted((tmp_path / "z").glob("*.vtkz"))
    assert len(files) == len(sample_files()) and all(f.stat().st_size > 16 for f in files)
    r = vistok("decompress", jpeg_run, *files[:2], "--out", tmp_path / "o", "--format", "jpg", "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(p.stem for p in (tmp_path / "o").glob("*.jpg")) == [f.stem for f in files[:2]]  # named as the files
    ds = Coder.load(jpeg_run).data.datasets[0]
    key = next(iter(Dataset(ds))).key
    r = vistok("compress", jpeg_run, ds, "--key", key, "--key", "nope", "--out", tmp_path / "k", "-q")
    assert r.returncode == 2 and "nope" in r.stderr and (tmp_path / "k" / f"{key}.vtkz").exists()
    r = vistok("decompress", jpeg_run, files[0], "--out", tmp_path / "o", "--format", "gif")
    assert r.returncode == 2 and "--format" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.vtkz").write_bytes(b"VTKZ" + bytes(40))
    r = vistok("decompress", jpeg_run, tmp_path / "bad.vtkz", "--out", tmp_path / "o")
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr
