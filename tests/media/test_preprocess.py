import numpy as np
import pytest

from vistok.media.preprocess import Preprocess


@pytest.mark.parametrize("resize", ["center-crop", "pad", "short-side", "border", "none"])
def test_resize_modes(resize):
    img = np.zeros((30, 60, 3), np.uint8)
    ((_, out),) = Preprocess(size=16, resize=resize).apply(img, "k")
    want = {"center-crop": (16, 16, 3), "pad": (16, 16, 3), "short-side": (16, 32, 3), "border": (16, 16, 3),
            "none": (30, 60, 3)}
    assert out.shape == want[resize]


def test_border_keeps_the_pixels_and_repeats_the_edges():
    img = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    ((_, out),) = Preprocess(size=32, resize="border").apply(img, "k")
    np.testing.assert_array_equal(out[2:30, 2:30], img)  # not resampled
    np.testing.assert_array_equal(out[0, 2:30], img[0])
    np.testing.assert_array_equal(out[:, 31], out[:, 29])
    ((_, big),) = Preprocess(size=16, resize="border").apply(img, "k")
    np.testing.assert_array_equal(big, img[6:22, 6:22])  # a larger image: its centre


def test_crops_are_seeded():
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    a = Preprocess(size=16, crops=5, seed=1).apply(img, "k")
    b = Preprocess(size=16, crops=5, seed=1).apply(img, "k")
    c = Preprocess(size=16, crops=5, seed=2).apply(img, "k")
    assert [k for k, _ in a] == [f"k_c{i:03d}" for i in range(5)]
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert not all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, c))
    small = Preprocess(size=16, crops=2).apply(img[:8, :8], "k")
    assert all(p.shape == (16, 16, 3) for _, p in small)


@pytest.mark.parametrize("pre", [Preprocess(gray=True), Preprocess(size=8, gray=True), Preprocess(size=8, crops=2, gray=True)])
def test_video_frames_are_gray_when_asked(pre):
    """--gray applies to video frames too (it used to be dropped when no resize was asked for)."""
    frame = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = pre.frame(frame, "k")
    assert out.ndim == 2 and out.shape == ((16, 16) if not pre.size else (8, 8))
