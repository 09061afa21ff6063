"""`--codec pixels`: channel values as tokens, exact at 8 bits, through every command."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vistok.errors import CodecError
from vistok.tokenize import PixelCodec, get_codec


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 23), w=st.integers(1, 23), unit=st.integers(1, 5), bits=st.integers(1, 8), gray=st.booleans(),
       seed=st.integers(0, 2**16))
def test_pixels_round_trip(h, w, unit, bits, gray, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)
    img.flat[0] = 255  # the top value: a token past the specials (uint8 arithmetic would wrap it to a special)
    codec = get_codec(PixelCodec(bits, unit).get_config())
    rec = codec.encode(img, "k")
    back = codec.decode(rec)
    assert back.shape == img.shape and back.dtype == np.uint8
    err = np.abs(back.astype(int) - img)
    assert err.max() <= (0 if bits == 8 else 1 << (7 - bits))  # exact at 8 bits; else the middle of the bin
    gh, gw = -(-h // unit), -(-w // unit)
    assert rec.tokens.size == gh * gw * unit * unit * (1 if gray else 3)
    pos = codec.layout(rec.meta).positions(rec)
    assert (np.diff(pos.units) != 0).sum() == gh * gw - 1  # a unit's tokens are consecutive
    if bits == 8:  # a token's coordinates say which pixel and channel it is
        y, x, c = pos.coords[:, 1], pos.coords[:, 2], pos.coords[:, 3]
        inside = (y < h) & (x < w)
        pix = img[..., None] if gray else img
        np.testing.assert_array_equal(rec.tokens[inside] - codec.vocab.range("value").start,
                                      pix[y[inside], x[inside], c[inside]])


def test_bad_options_are_refused():
    with pytest.raises(CodecError, match="--bits must be 1..8"):
        PixelCodec(bits=9)
    with pytest.raises(CodecError, match="--unit must be"):
        PixelCodec(unit=0)


def _vistok(*args):
    proc = subprocess.run([sys.executable, "-m", "vistok.cli", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, f"vistok {args}: {proc.stderr[-2000:]}"
    return proc


@pytest.mark.slow
def test_pixels_through_every_command(tmp_path):
    """shard -> train (RandSAC segments of 4x4-pixel units) -> eval -> sample -> compress -> decompress: the
    decompressed image is the dataset's record's pixels exactly (inspect, decode and show-order: by hand)."""
    ds, run = tmp_path / "ds", tmp_path / "run"
    _vistok("shard", "sample", "--codec", "pixels", "--unit", "4", "--size", "16", "--crops", "2", "--out", ds,
            "--executor", "local", "-q")
    from vistok.shards.reader import Dataset

    dataset = Dataset(ds)
    first = next(iter(dataset))
    assert dataset.manifest.codec["id"] == "pixels" and first.tokens.size == 16 * 16 * 3
    _vistok("train", ds, "--out", run, "--order", "randsac:4", "--parallel", "segments", "--block-size", "1600",
            "--batch-size", "2", "--max-steps", "3", "--eval-every", "0", "--workers", "0", "-q")
    ev = json.loads(_vistok("eval", run, "--json", "--limit", "2").stdout)
    assert ev["tokens_per_image"] == 768 and ev["steps_per_image"] <= 5  # 4 segments (+ the end)
    _vistok("sample", run, "--n", "2", "--out", tmp_path / "s.png")
    assert Image.open(tmp_path / "s.png").size[0] >= 32
    _vistok("compress", run, ds, "--key", first.key, "--out", tmp_path / "z", "-q")
    _vistok("decompress", run, *sorted((tmp_path / "z").iterdir()), "--out", tmp_path / "back", "-q")
    (back,) = sorted((tmp_path / "back").iterdir())
    np.testing.assert_array_equal(np.asarray(Image.open(back)), dataset.codec.decode(first))


def test_a_palette_codes_each_pixel_as_its_nearest_colour(photo):
    palette = [[0, 0, 0], [255, 255, 255], [200, 30, 30], [30, 30, 200]]
    codec = get_codec(PixelCodec(palette=palette, unit=2).get_config())
    img = photo[:9, :11]
    rec = codec.encode(img, "k")
    assert rec.tokens.size == 10 * 12 and codec.vocab.range("value").stop - codec.vocab.range("value").start == 4
    back = codec.decode(rec)
    dist = ((img[..., None, :].astype(int) - np.array(palette)) ** 2).sum(-1)
    np.testing.assert_array_equal(back, np.array(palette, np.uint8)[dist.argmin(-1)])  # the nearest colour each
    gray = codec.decode(codec.encode(img[..., 0], "g"))  # a gray image takes its colours from the same palette
    assert gray.shape == (9, 11, 3)
    with pytest.raises(CodecError, match="palette"):
        PixelCodec(palette=[[0, 0, 0]])


@pytest.mark.slow
def test_palette_fitted_on_training_images_and_reused_by_name(tmp_path):
    from vistok.record import parse_input_id
    from vistok.train.data import is_heldout
    from vistok.train.tokenizer import fit_palette

    a, b = tmp_path / "a", tmp_path / "b"
    _vistok("shard", "sample", "--codec", "pixels", "--palette", "16", "--size", "16", "--out", a, "--executor",
            "local", "-q")
    _vistok("shard", "sample", "--codec", "pixels", "--palette", a, "--size", "16", "--out", b, "--executor", "local",
            "-q")
    ca, cb = (json.loads((d / "manifest.json").read_text())["codec"] for d in (a, b))
    assert len(ca["palette"]) == 16 and ca == cb  # a test set sharded with the training set's palette
    assert fit_palette(["sample"], 16) == ca["palette"]  # seeded: the same sources, the same colours
    from vistok.media.sources import expand_sources

    keys = [parse_input_id(i).key for i in expand_sources(["sample"])]
    assert any(is_heldout(k, 0.1) for k in keys)  # some photos are held out at the trainer's --heldout 0.1 ...
    assert fit_palette(["sample"], 16, heldout=0.0) != ca["palette"]  # ... and the fit did not see them
    bad = subprocess.run([sys.executable, "-m", "vistok.cli", "shard", "sample", "--codec", "pixels", "--palette", "1",
                          "--out", tmp_path / "c"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--palette 1: must be 2..65536" in bad.stderr
