"""`vistok.study.quality`: each codec's held-out PSNR measured as a decoder sees it, and the knob that brings
it within 1 dB of a target, or a note that says why it cannot."""

import numpy as np
import pytest

from vistok.media.preprocess import Preprocess
from vistok.media.sources import expand_sources, sample_files
from vistok.record import heldout_hash, parse_input_id
from vistok.study.quality import heldout_images, match, measure
from vistok.tokenize import get_codec


@pytest.fixture(scope="module")
def images():
    """32x32 gray crops of the embedded photos: the held-out half."""
    files = [str(p) for p in sample_files()]
    out = heldout_images(files, Preprocess(size=32, gray=True), heldout=0.5, limit=12)
    assert 4 <= len(out) <= 12 and all(a.shape == (32, 32) for a in out)
    return out


def test_heldout_images_are_the_trainers_test_images():
    files = [str(p) for p in sample_files()]
    held = heldout_images(files, Preprocess(size=16), heldout=0.3, limit=100)
    keys = [parse_input_id(i).key for i in expand_sources(files)]  # record keys: name and content hash
    assert len(held) == sum(heldout_hash(k) < 0.3 for k in keys) > 0


def test_measure_is_the_decoders_psnr_tokens_and_vocabulary(images):
    got = measure({"id": "pixels", "unit": 4, "bits": 8}, images)
    assert got["psnr"] >= 100 and got["tokens_per_image"] == 32 * 32  # 8-bit pixels decode exactly
    codec = get_codec({"id": "jpeg", "quality": 30, "layout": "dense"})
    err = [np.mean((codec.decode(codec.encode(a, "k")).astype(float) - a) ** 2) for a in images]
    assert measure(codec.get_config(), images)["psnr"] == pytest.approx(10 * np.log10(255**2 / np.mean(err)), abs=0.01)
    assert measure(codec.get_config(), images)["vocabulary"] == codec.vocab.size


@pytest.mark.parametrize("codec", [{"id": "jpeg", "quality": 50, "layout": "dense"},
                                   {"id": "wavelet", "layout": "dense", "levels": 3, "step": 8.0},
                                   {"id": "avc", "qp": 28}])
@pytest.mark.parametrize("target", [28.0, 34.0])
def test_a_codec_with_a_knob_is_matched_within_a_db(images, codec, target):
    got = match(codec, images, target)
    assert got["matched"] and abs(got["psnr"] - target) <= 1.0, got
    assert measure(got["config"], images)["psnr"] == got["psnr"]  # the setting it reports gives that PSNR
    assert "note" not in got


def test_a_codec_that_cannot_reach_the_target_says_so(images):
    got = match({"id": "pixels", "unit": 4}, images, 80.0)  # 7 bits is ~ 45 dB, 8 bits lossless
    assert not got["matched"] and "pixels cannot reach 80" in got["note"]
    low = match({"id": "jpeg", "quality": 50, "layout": "dense"}, images, 5.0)
    assert not low["matched"] and low["config"]["quality"] == 1 and "quality reaches" in low["note"]
