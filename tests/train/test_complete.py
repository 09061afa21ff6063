"""Completion from a known region (`vistok sample --complete --known`) and what the region tells (`eval --given`)."""

import numpy as np
import pytest
from PIL import Image
from skimage import data

from vistok.errors import UsageError
from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.tokenize import AvcCodec, JpegCodec, PixelCodec, WaveletCodec
from vistok.tokenize.region import Region, parse_region
from vistok.tokenize.stream import StreamGrammar, StreamSpec, plan

META = {"height": 32, "width": 32, "components": 1, "subsampling": "444"}  # 4 x 4 blocks


def test_a_region_names_the_units_whose_centres_it_holds(tmp_path):
    grid, unit = (4, 4), (8, 8)
    top = parse_region("top:0.5").units(grid, unit, 32, 32).reshape(grid)
    assert top[:2].all() and not top[2:].any()
    assert (parse_region("top:0.5").inverse().units(grid, unit, 32, 32).reshape(grid) == ~top).all()
    centre = parse_region("centre:0.6").units(grid, unit, 32, 32).reshape(grid)
    assert centre[1:3, 1:3].all() and centre.sum() == 4
    assert parse_region("right:0.25").units(grid, unit, 32, 32).reshape(grid)[:, 3].all()
    mask = np.zeros((100, 100), np.uint8)
    mask[:, :50] = 255  # any size: sampled at the units' centres
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert (parse_region(str(tmp_path / "m.png")).units(grid, unit, 32, 32).reshape(grid)[:, :2]).all()
    for bad in ("top:1.5", "top:x", "middle:0.5", str(tmp_path / "none.png")):
        with pytest.raises(UsageError, match="--known/--given"):
            parse_region(bad)


def _units(codec, p):
    return codec.layout(META).cells.positions.units[p.cells]


def test_completion_plans_send_the_known_units_first_in_the_runs_order_family():
    codec = JpegCodec(quality=50, layout="dense", subsampling="444")
    top = parse_region("top:0.5")
    known = set(range(8))
    for seed in (0, 1):
        p = plan(codec, META, "random", np.random.default_rng(seed), known=top)
        u = _units(codec, p)
        assert p.given == 8 * 64 and set(u[: p.given]) == known and not set(u[p.given :]) & known
        assert sorted(p.cells) == list(range(16 * 64))  # every cell once
    draws = [tuple(_units(codec, plan(codec, META, "random", np.random.default_rng(s), known=top))[::64]) for s in (0, 1)]
    assert draws[0] != draws[1]  # still a random order within each part
    # a fixed order follows a region only where its own stream starts: raster, the top; never the bottom
    raster = plan(codec, META, "raster", np.random.default_rng(0))
    assert (plan(codec, META, "raster", np.random.default_rng(0), known=top).cells == raster.cells).all()
    with pytest.raises(UsageError, match="cannot predict the top from the bottom"):
        plan(codec, META, "raster", np.random.default_rng(0), known=parse_region("bottom:0.5"))
    # --parallel any: the run's step schedule over the stream, split where the region ends
    for steps in (4, None):
        p = plan(codec, META, StreamSpec.parse("random", "any", steps=steps, block_size=201), np.random.default_rng(0), known=parse_region("centre:0.6"))
        assert p.groups[p.given - 1] < p.groups[p.given] and np.bincount(p.groups).max() <= 100
        assert (np.diff(p.groups) >= 0).all() and len(np.unique(p.groups)) >= 11
    for order, parallel in [("dc-first", ""), ("randsac:4", "segments"), ("random", "masked:0.5")]:
        with pytest.raises(UsageError, match="DC image|token by token or --parallel any"):
            plan(codec, META, StreamSpec.parse(order, parallel), np.random.default_rng(0), known=top)
    with pytest.raises(UsageError, match="covers no unit"):
        plan(codec, META, "random", np.random.default_rng(0), known=Region("centre", 0.1))
    with pytest.raises(UsageError, match="clips"):
        plan(codec, {**META, "frames": 2}, "random", np.random.default_rng(0), known=top)


@pytest.mark.parametrize("codec", [JpegCodec(quality=50), WaveletCodec(levels=2, layout="dense"),
                                   PixelCodec(bits=4, unit=4), AvcCodec(qp=30)], ids=["jpeg-rle", "wavelet", "pixels", "avc"])
def test_every_codec_with_unit_orders_streams_a_region_first(codec):
    """JPEG rle, dense wavelets, pixel patches, AVC macroblocks: the known units' cells first, every cell once;
    a record of the codec followed along that stream by its grammar gives its tokens back."""
    img = np.asarray(data.camera()[200:264, 200:264])
    rec = codec.encode(img)
    for region in ("top:0.5", "centre:0.6", "left:0.3"):
        p = plan(codec, rec.meta, "random", np.random.default_rng(0), known=parse_region(region))
        lay = codec.layout(rec.meta)
        units = lay.cells.positions.units[p.cells]
        known = set(np.flatnonzero(parse_region(region).units(lay.grid, lay.unit_pixels, 64, 64)).tolist())
        assert set(units[: p.given].tolist()) == known and not set(units[p.given :].tolist()) & known
        assert sorted(p.cells.tolist()) == list(range(len(lay.cells)))
        rank = np.empty(len(p.cells), np.int64)
        rank[p.cells] = np.arange(len(p.cells))
        g = StreamGrammar(codec, rec.meta, p)
        for t in rec.tokens.astype(np.int64)[np.argsort(rank[lay.token_cells(rec)], kind="stable")]:
            assert g.allowed()[t]
            g.step(int(t))
        assert np.array_equal(g.canonical(), rec.tokens)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A random-order run, a random --parallel any run and a raster run, a few steps each, on 16x16 Fashion-MNIST
    (2 x 2 blocks of dense JPEG), and a held-out-like image file."""
    from vistok.train.data import DataConfig
    from vistok.train.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("complete")
    ds = run_job(["fashion-mnist:train:200"], root / "fm", JpegCodec(quality=50, layout="dense"),
                 Preprocess(size=16, gray=True), executor="local", quiet=True).folder
    out = {}
    for name, order, parallel, block in [("rand", "random", "", 272), ("any", "random", "any", 600),
                                         ("raster", "canonical", "", 272)]:
        data = DataConfig(datasets=[str(ds)], block_size=block, batch_size=8, num_workers=0, heldout=0.2,
                          order=order, parallel=parallel)
        train(data, TrainConfig(out=str(root / name), max_steps=3, warmup=1, eval_every=0, ckpt_every=3), quiet=True)
        out[name] = root / name
    img = np.zeros((28, 28), np.uint8)
    img[4:24, 8:20] = 200
    Image.fromarray(img).save(root / "shirt.png")
    out["image"] = root / "shirt.png"
    return out


@pytest.mark.slow
def test_completions_keep_the_known_units_exactly_and_a_raster_run_is_refused(runs, tmp_path, capsys):
    from vistok.cli import main
    from vistok.tokenize.base import get_codec
    from vistok.train.checkpoint import load_model
    from vistok.train.data import DataConfig
    from vistok.train.sample import complete_images, decode_frames, image_record, known_pixels

    for name, steps in (("rand", None), ("any", 3)):
        model, state = load_model(runs[name], "cpu")
        codec = get_codec(state["codec"])
        rec = image_record(str(runs["image"]), codec, state["preprocess"])
        region = parse_region("left:0.5")
        done = complete_images(model, codec, rec, region, DataConfig.from_json(state["data"]), 2, seed=1, steps=steps)
        given = decode_frames(codec, rec)[0][0]
        mask = known_pixels(codec, rec.meta, region)
        assert mask.any() and not mask.all()
        for im in done:  # a JPEG block decodes from its own coefficients: the given blocks come back as they were
            assert im.shape == given.shape and (im[mask] == given[mask]).all()

    def cli(*args: str) -> int:
        with pytest.raises(SystemExit) as exit:
            main(["sample", *args])
        return exit.value.code

    assert cli(str(runs["rand"]), "--complete", str(runs["image"]), "--known", "bottom:0.5", "--n", "2", "--out",
               str(tmp_path / "c.png")) == 0
    assert Image.open(tmp_path / "c-2.png").size == (16, 16) and (tmp_path / "c.png").exists()
    assert cli(str(runs["raster"]), "--complete", str(runs["image"]), "--known", "bottom:0.5", "--out",
               str(tmp_path / "r.png")) == 2
    assert "cannot predict the top from the bottom" in capsys.readouterr().err and not (tmp_path / "r.png").exists()
    assert cli(str(runs["rand"]), "--complete", str(runs["image"])) == 2


@pytest.mark.slow
def test_eval_given_scores_the_rest_with_and_without_the_region(runs):
    from vistok.train.evaluate import evaluate

    for name, steps in (("rand", None), ("any", [3])):
        res = evaluate(runs[name], limit=6, given="top:0.5", steps=steps, quiet=True)
        assert res["given"] == "top:0.5" and res["rest_bits_given_region"] > 0 and res["rest_bits_alone"] > 0
        assert res["bits_the_region_tells"] == pytest.approx(res["rest_bits_alone"] - res["rest_bits_given_region"])
        assert res["bits_the_region_tells_ci95"] >= 0
    with pytest.raises(UsageError, match="cannot predict the top from the bottom"):
        evaluate(runs["raster"], limit=2, given="bottom:0.5", quiet=True)


def test_show_order_draws_a_completion_stream_and_refuses_what_cannot_follow():
    """`vistok show-order --known REGION`: the known units outlined, the path starting inside them; a raster
    order asked for the top from the bottom is refused as `sample --complete` refuses it."""
    from vistok.shards.render import draw_order

    codec = JpegCodec(quality=50, layout="dense", subsampling="444")
    rec = codec.encode(np.asarray(data.camera()[200:232, 200:232]))
    plain = np.asarray(draw_order(codec, rec, "random", known=None, min_unit_px=8))
    drawn = np.asarray(draw_order(codec, rec, "random", known=parse_region("top:0.5"), min_unit_px=8))
    assert drawn.shape == plain.shape and (drawn != plain).any()
    assert (drawn[:, :, :].min(axis=2) == 0).sum() > (plain.min(axis=2) == 0).sum()  # black outlines
    with pytest.raises(UsageError, match="top from the bottom"):
        draw_order(codec, rec, "raster", known=parse_region("bottom:0.5"))
