import json

import numpy as np
import pytest
import torch

from tests.conftest import Quiet
from vistok.errors import CodecError, DatasetError
from vistok.pipelines.job import run_job
from vistok.pipelines.preprocess import Preprocess
from vistok.shards.reader import Dataset
from vistok.tokenize import BSQCodec, VQCodec, get_codec
from vistok.train.autoencoder import AEConfig, Autoencoder
from vistok.train.tokenizer import TokenizerTrainConfig, load_tokenizer, train_tokenizer


def _train(tmp_path, name, kind="bsq", steps=25, **ae):
    cfg = TokenizerTrainConfig(sources=["sample"], out=str(tmp_path / name), crop=32, batch=16, max_steps=steps,
                               eval_crops=32, seed=1)
    return train_tokenizer(AEConfig(kind=kind, width=32, blocks=1, latent=16, **ae), cfg, progress=Quiet())


@pytest.fixture(scope="module")
def bsq_tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    _train(d, "bsq", bits=10)
    return d / "bsq"


def test_same_seed_same_weights_and_codes(tmp_path):
    a = _train(tmp_path, "a", bits=8, steps=6)
    b = _train(tmp_path, "b", bits=8, steps=6)
    assert a["sha256"] == b["sha256"]
    ma, _ = load_tokenizer(tmp_path / "a")
    mb, _ = load_tokenizer(tmp_path / "b")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(ma.encode(x), mb.encode(x))


def test_bsq_codes_round_trip_through_the_decoder(bsq_tok):
    codec = BSQCodec(str(bsq_tok))
    assert codec.vocab.size == 4 + 2**10
    img = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    rec = codec.encode(img, "k")
    assert len(rec) == 5 * 7 and rec.tokens.min() >= 4
    out = codec.decode(rec)
    assert out.shape == img.shape and out.dtype == np.uint8
    model, _ = load_tokenizer(bsq_tok)
    idx = model.quant.indices_of(torch.where(torch.rand(1, 10, 2, 2) > 0.5, 1.0, -1.0))
    emb = model.quant.embed(idx)  # code index -> latent -> the same code index
    assert emb.shape == (1, model.cfg.latent, 2, 2)
    rep = json.loads((bsq_tok / "report.json").read_text())
    assert rep["psnr"] > 10 and rep["codes_used"] > 10  # learning, no collapse onto a handful of codes


def test_vq_keeps_its_codebook_alive(tmp_path):
    rep = _train(tmp_path, "vq", kind="vq", codebook=64, steps=30)
    assert rep["codes_used"] >= 16  # data initialization + dead-code restarts
    codec = VQCodec(str(tmp_path / "vq"))
    assert codec.decode(codec.encode(np.zeros((16, 16, 3), np.uint8))).shape == (16, 16, 3)


def test_dataset_names_its_tokenizer_and_refuses_another(bsq_tok, tmp_path):
    res = run_job(["sample"], tmp_path / "d", BSQCodec(str(bsq_tok)), Preprocess(size=32), shard_size=12,
                  executor="local", quiet=True)
    ds = Dataset(res.folder)
    assert ds.manifest["codec"]["sha256"] == BSQCodec(str(bsq_tok)).sha256
    assert ds.codec.decode(next(iter(ds))).shape == (32, 32, 3)
    _train(tmp_path, "other", bits=10, steps=3)
    cfg = dict(ds.manifest["codec"], tokenizer=str(tmp_path / "other"))
    with pytest.raises(DatasetError, match="use the tokenizer that made it"):
        get_codec(cfg)
    with pytest.raises(CodecError, match="not vq"):
        VQCodec(str(bsq_tok))


def test_codes_train_and_sample(bsq_tok, tmp_path):
    from vistok.train.data import DataConfig
    from vistok.train.sample import sample_images
    from vistok.train.trainer import TrainConfig, load_model, train

    res = run_job(["sample"], tmp_path / "d", BSQCodec(str(bsq_tok)), Preprocess(size=32, crops=2), shard_size=12,
                  executor="local", quiet=True)
    data = DataConfig(datasets=[str(res.folder)], block_size=64, batch_size=2, num_workers=0, heldout=0.2)
    train(data, TrainConfig(out=str(tmp_path / "r"), max_steps=2, warmup=1, eval_every=0), progress=Quiet())
    model, state = load_model(tmp_path / "r")
    codec = Dataset(res.folder).codec
    images, streams = sample_images(model, codec, {"height": 32, "width": 32, "components": 3}, n=2)
    assert all(im.shape == (32, 32, 3) for im in images) and all(len(s) == 16 for s in streams)


def test_safetensors_only(bsq_tok):
    assert not list(bsq_tok.glob("*.pt")) and (bsq_tok / "model.safetensors").exists()
    Autoencoder(AEConfig(**json.loads((bsq_tok / "config.json").read_text())["autoencoder"]))


def _gpu_ids(task):
    import ray

    return {"task": task, "gpus": ray.get_gpu_ids()}


def test_learned_codec_tasks_get_a_gpu_when_the_cluster_has_one(bsq_tok):
    import ray

    from vistok.pipelines.job import run_ray, task_gpus

    codec = BSQCodec(str(bsq_tok))  # device auto: asks for a GPU per task, runs where torch finds one
    assert codec.gpus_per_task == 1.0 and codec.torch_device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert BSQCodec(str(bsq_tok), device="cpu").gpus_per_task == 0.0
    assert task_gpus(1.0, {"CPU": 8.0}) == 0.0  # a CPU-only cluster runs the tasks on CPU
    # A real local Ray that declares one GPU: each task is given it (Ray sets CUDA_VISIBLE_DEVICES).
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        got = []
        run_ray(iter(range(3)), got.append, None, None, fn=_gpu_ids, gpus=codec.gpus_per_task)
        assert sorted(s["task"] for s in got) == [0, 1, 2] and all(len(s["gpus"]) == 1 for s in got)
        got.clear()
        run_ray(iter(range(2)), got.append, None, None, fn=_gpu_ids, gpus=0.0)
        assert all(s["gpus"] == [] for s in got)
    finally:
        ray.shutdown()


def test_cuda_without_a_gpu_is_refused(bsq_tok):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(CodecError, match="sees no CUDA GPU"):
        BSQCodec(str(bsq_tok), device="cuda")


@pytest.fixture(scope="module")
def multiscale_tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("mstok")
    _train(d, "ms", bits=8, scales=3)
    return d / "ms"


def test_multiscale_codes_decode_exactly_what_the_model_reconstructs(multiscale_tok):
    model, _ = load_tokenizer(multiscale_tok)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        rec, idx, _ = model(x)
    assert [tuple(i.shape[1:]) for i in idx] == [(1, 2), (2, 3), (4, 6)]  # grid / 4, / 2, / 1 (ceil)
    assert torch.allclose(model.decode(idx), rec.clamp(-1, 1), atol=1e-5)  # tokens carry everything


def test_multiscale_codec_layout_orders_and_grammar(multiscale_tok):
    from vistok.tokenize.orders import get_order

    codec = BSQCodec(str(multiscale_tok))
    assert codec.axes == ("frame", "scale", "y", "x")
    img = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)  # grid 5x7 -> 2x2, 3x4, 5x7
    rec = codec.encode(img, "k")
    assert len(rec) == 4 + 12 + 35 and codec.decode(rec).shape == img.shape
    units, coords = codec.layout_arrays(rec)
    assert codec.unit_grid(rec) == (2, 2) and units.max() == 3
    assert coords[:4, 1].tolist() == [0] * 4 and coords[-35:, 1].tolist() == [2] * 35
    # each code's unit is the coarsest cell containing it: (y, x) at scale 2 of 5x7 -> (y*2//5, x*2//7)
    fine = coords[-35:]
    assert (units[-35:] == (fine[:, 2] * 2 // 5) * 2 + fine[:, 3] * 2 // 7).all()
    inp = codec.order_input(rec)
    rng = np.random.default_rng(0)
    assert (get_order("next-scale")(inp, rng).perm == np.arange(len(rec))).all()
    perm = get_order("hilbert")(inp, rng).perm  # whole pyramids move: units stay contiguous
    assert sorted(perm.tolist()) == list(range(len(rec)))
    assert (np.diff(units[perm]) != 0).sum() == 3
    g = codec.grammar(rec.meta)
    seen = []
    for t in rec.tokens:
        assert g.allowed()[t]
        seen.append(g.next_known().copy())
        g.step(int(t))
    assert np.array_equal(np.array(seen), coords)  # the grammar knows every next position


def test_next_scale_needs_a_multiscale_codec(bsq_tok):
    from vistok.errors import UsageError
    from vistok.tokenize.orders import get_order

    codec = BSQCodec(str(bsq_tok))
    rec = codec.encode(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(UsageError, match="'scale' coordinate axis"):
        get_order("next-scale")(codec.order_input(rec), np.random.default_rng(0))


def test_multiscale_codes_train_with_next_scale_order_and_sample(multiscale_tok, tmp_path):
    from vistok.train.data import DataConfig
    from vistok.train.sample import sample_images
    from vistok.train.trainer import TrainConfig, load_model, train

    res = run_job(["sample"], tmp_path / "d", BSQCodec(str(multiscale_tok)), Preprocess(size=32, crops=2),
                  shard_size=12, executor="local", quiet=True)
    data = DataConfig(datasets=[str(res.folder)], block_size=64, batch_size=2, num_workers=0, heldout=0.2,
                      order="next-scale")
    train(data, TrainConfig(out=str(tmp_path / "r"), max_steps=2, warmup=1, eval_every=0), progress=Quiet())
    model, _ = load_model(tmp_path / "r")
    images, streams = sample_images(model, Dataset(res.folder).codec, {"height": 32, "width": 32}, n=2)
    assert all(im.shape == (32, 32, 3) for im in images) and all(len(s) == 1 + 4 + 16 for s in streams)
