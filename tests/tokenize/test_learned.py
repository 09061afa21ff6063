import json

import numpy as np
import pytest
import torch

from vistok.errors import CodecError, DatasetError
from vistok.media.preprocess import Preprocess
from vistok.nn.autoencoder import load_tokenizer
from vistok.pipelines.job import run_job
from vistok.shards.reader import Dataset
from vistok.tokenize import BSQCodec, VQCodec, get_codec
from vistok.tokenize.stream import grammar


def test_bsq_codes_round_trip_through_the_decoder(bsq_tok):
    codec = BSQCodec(str(bsq_tok))
    assert codec.vocab.size == 4 + 2**10
    img = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    rec = codec.encode(img, "k")
    assert len(rec) == 5 * 7 and rec.tokens.min() >= 4
    out = codec.decode(rec)
    assert out.shape == img.shape and out.dtype == np.uint8
    model, _ = load_tokenizer(bsq_tok)
    idx = torch.randint(0, 2**10, (3, 4, 5))
    signs = model.quant.signs_of(idx)  # code index -> L signs -> the same code index, for every code
    assert set(signs.unique().tolist()) == {-1.0, 1.0} and signs.shape == (3, 10, 4, 5)
    assert torch.equal(model.quant.indices_of(signs), idx)
    every = torch.arange(2**10).view(1, 32, 32)
    assert torch.equal(model.quant.indices_of(model.quant.signs_of(every)), every)
    # the codec decodes a record to the decoder's output for the embedded codes
    with torch.no_grad():
        codes = torch.from_numpy(rec.tokens.astype(np.int64) - codec.vocab.range("code").start).view(1, 5, 7)
        ref = model.decode(codes)[0, :, :40, :56].clamp(-1, 1)
    np.testing.assert_allclose(out.astype(np.float64), ((ref.permute(1, 2, 0).numpy() + 1) * 127.5), atol=1.0)
    rep = json.loads((bsq_tok / "report.json").read_text())
    assert rep["psnr"] > 10 and rep["codes_used"] > 10  # learning, no collapse onto a handful of codes


def test_dataset_names_its_tokenizer_and_refuses_another(bsq_tok, tmp_path, small_tokenizer):
    res = run_job(["sample"], tmp_path / "d", BSQCodec(str(bsq_tok)), Preprocess(size=32), shard_size=12,
                  executor="local", quiet=True)
    ds = Dataset(res.folder)
    assert ds.manifest.codec["sha256"] == BSQCodec(str(bsq_tok)).sha256
    assert ds.codec.decode(next(iter(ds))).shape == (32, 32, 3)
    small_tokenizer(tmp_path, "other", bits=10, steps=3)
    cfg = dict(ds.manifest.codec, tokenizer=str(tmp_path / "other"))
    with pytest.raises(DatasetError, match="use the tokenizer that made it"):
        get_codec(cfg)
    with pytest.raises(CodecError, match="not vq"):
        VQCodec(str(bsq_tok))


def test_cuda_without_a_gpu_is_refused(bsq_tok):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(CodecError, match="sees no CUDA GPU"):
        BSQCodec(str(bsq_tok), device="cuda")


def test_multiscale_codes_decode_exactly_what_the_model_reconstructs(multiscale_tok):
    model, _ = load_tokenizer(multiscale_tok)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        rec, idx, _ = model(x)
    assert [tuple(i.shape[1:]) for i in idx] == [(1, 2), (2, 3), (4, 6)]  # grid / 4, / 2, / 1 (ceil)
    assert torch.allclose(model.decode(idx), rec.clamp(-1, 1), atol=1e-5)  # tokens carry everything


def test_multiscale_codec_layout_orders_and_grammar(multiscale_tok):
    from vistok.tokenize.orders import parse_order

    codec = BSQCodec(str(multiscale_tok))
    assert codec.axes == ("frame", "scale", "y", "x")
    img = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)  # grid 5x7 -> 2x2, 3x4, 5x7
    rec = codec.encode(img, "k")
    assert len(rec) == 4 + 12 + 35 and codec.decode(rec).shape == img.shape
    pos = codec.layout(rec.meta).positions(rec)
    units, coords = pos.units, pos.coords
    assert codec.layout(rec.meta).grid == (2, 2) and units.max() == 3
    assert coords[:4, 1].tolist() == [0] * 4 and coords[-35:, 1].tolist() == [2] * 35
    # each code's unit is the coarsest cell containing it: (y, x) at scale 2 of 5x7 -> (y*2//5, x*2//7)
    fine = coords[-35:]
    assert (units[-35:] == (fine[:, 2] * 2 // 5) * 2 + fine[:, 3] * 2 // 7).all()
    inp = codec.layout(rec.meta).positions(rec)
    rng = np.random.default_rng(0)
    assert (parse_order("next-scale")(inp, rng).perm == np.arange(len(rec))).all()
    perm = parse_order("hilbert")(inp, rng).perm  # whole pyramids move: units stay contiguous
    assert sorted(perm.tolist()) == list(range(len(rec)))
    assert (np.diff(units[perm]) != 0).sum() == 3
    g = grammar(codec, rec.meta)
    seen = []
    for t in rec.tokens:
        assert g.allowed()[t]
        seen.append(g.next_known().copy())
        g.step(int(t))
    assert np.array_equal(np.array(seen), coords)  # the grammar knows every next position


def test_next_scale_needs_a_multiscale_codec(bsq_tok):
    from vistok.errors import UsageError
    from vistok.tokenize.orders import parse_order

    codec = BSQCodec(str(bsq_tok))
    rec = codec.encode(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(UsageError, match="'scale' coordinate axis"):
        parse_order("next-scale")(codec.layout(rec.meta).positions(rec), np.random.default_rng(0))
