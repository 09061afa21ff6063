
import numpy as np
import torch

from vistok.media.preprocess import Preprocess
from vistok.nn.autoencoder import load_tokenizer
from vistok.pipelines.job import run_job
from vistok.shards.reader import Dataset
from vistok.tokenize import BSQCodec, VQCodec


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
