import numpy as np
import pytest
import torch

from vistok.errors import UsageError
from vistok.media.preprocess import Preprocess
from vistok.nn.autoencoder import AEConfig, load_tokenizer
from vistok.pipelines.job import run_job
from vistok.shards.reader import Dataset
from vistok.tokenize import BSQCodec, VQCodec
from vistok.train.tokenizer import CHECKPOINT, TokenizerTrainConfig, train_tokenizer

AE = AEConfig(kind="bsq", patch=4, width=16, blocks=1, latent=8, bits=8)


def _cfg(out, **kw):
    return TokenizerTrainConfig(sources=["sample"], out=str(out), crop=16, batch=8, max_steps=8, eval_crops=8,
                                ckpt_every=3, seed=2, **kw)


def test_same_seed_same_weights_and_codes(tmp_path, small_tokenizer):
    a = small_tokenizer(tmp_path, "a", bits=8, steps=6)
    b = small_tokenizer(tmp_path, "b", bits=8, steps=6)
    assert a["sha256"] == b["sha256"]
    ma, _ = load_tokenizer(tmp_path / "a")
    mb, _ = load_tokenizer(tmp_path / "b")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(ma.encode(x), mb.encode(x))


def test_vq_keeps_its_codebook_alive(tmp_path, small_tokenizer):
    rep = small_tokenizer(tmp_path, "vq", kind="vq", codebook=64, steps=30)
    assert rep["codes_used"] >= 16  # data initialization + dead-code restarts
    codec = VQCodec(str(tmp_path / "vq"))
    assert codec.decode(codec.encode(np.zeros((16, 16, 3), np.uint8))).shape == (16, 16, 3)


def test_codes_train_and_sample(bsq_tok, tmp_path):
    from vistok.train.checkpoint import load_model
    from vistok.train.data import DataConfig
    from vistok.train.sample import sample_images
    from vistok.train.trainer import TrainConfig, train

    res = run_job(["sample"], tmp_path / "d", BSQCodec(str(bsq_tok)), Preprocess(size=32, crops=2), shard_size=12,
                  executor="local", quiet=True)
    data = DataConfig(datasets=[str(res.folder)], block_size=64, batch_size=2, num_workers=0, heldout=0.2)
    train(data, TrainConfig(out=str(tmp_path / "r"), max_steps=2, warmup=1, eval_every=0), quiet=True)
    model, state = load_model(tmp_path / "r")
    codec = Dataset(res.folder).codec
    images, streams, _ = sample_images(model, codec, {"height": 32, "width": 32, "components": 3}, n=2)
    assert all(im.shape == (32, 32, 3) for im in images) and all(len(s) == 16 for s in streams)


def test_multiscale_codes_train_with_next_scale_order_and_sample(multiscale_tok, tmp_path):
    from vistok.train.checkpoint import load_model
    from vistok.train.data import DataConfig
    from vistok.train.sample import sample_images
    from vistok.train.trainer import TrainConfig, train

    res = run_job(["sample"], tmp_path / "d", BSQCodec(str(multiscale_tok)), Preprocess(size=32, crops=2),
                  shard_size=12, executor="local", quiet=True)
    data = DataConfig(datasets=[str(res.folder)], block_size=64, batch_size=2, num_workers=0, heldout=0.2,
                      order="next-scale")
    train(data, TrainConfig(out=str(tmp_path / "r"), max_steps=2, warmup=1, eval_every=0), quiet=True)
    model, _ = load_model(tmp_path / "r")
    images, streams, _ = sample_images(model, Dataset(res.folder).codec, {"height": 32, "width": 32}, n=2)
    assert all(im.shape == (32, 32, 3) for im in images) and all(len(s) == 1 + 4 + 16 for s in streams)


def test_an_interrupted_tokenizer_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    full = train_tokenizer(AE, _cfg(tmp_path / "full"), quiet=True)
    assert not (tmp_path / "full" / CHECKPOINT).exists()  # removed once the weights are saved
    halted = train_tokenizer(AE, _cfg(tmp_path / "r", halt_at=5), quiet=True)
    assert halted["halted_at"] == 5 and (tmp_path / "r" / CHECKPOINT).exists()
    assert not (tmp_path / "r" / "model.safetensors").exists()
    torch.manual_seed(123)  # the generators come back from the checkpoint, whatever the process did since
    resumed = train_tokenizer(AE, _cfg(tmp_path / "r"), quiet=True, resume=True)
    assert resumed["sha256"] == full["sha256"] and resumed["steps"] == 8
    train_tokenizer(AE, _cfg(tmp_path / "o", halt_at=3), quiet=True)
    with pytest.raises(UsageError, match="another configuration"):
        train_tokenizer(AE, _cfg(tmp_path / "o", lr=1e-3), quiet=True, resume=True)


def test_a_tokenizer_can_hold_out_every_test_image_of_a_trainers_split():
    """A study's tokenizer trains on none of the images its probes test on (`is_heldout` at the study's fraction)."""
    from vistok.media.sources import expand_sources
    from vistok.record import parse_input_id
    from vistok.train.data import heldout_hash
    from vistok.train.tokenizer import _images

    keys = sorted(heldout_hash(parse_input_id(i).key) for i in expand_sources(["sample"]))
    below = (keys[9] + keys[10]) / 2  # ten images hash below it
    train, held = _images(["sample"], 0.1, below)
    assert len(held) == 10 and len(train) == len(keys) - 10
    assert len(_images(["sample"], 0.1)[1]) == round(0.1 * len(keys))
