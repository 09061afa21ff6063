"""Trainer speed on CPU: tokens/s with the real shard loader against the same model fed synthetic tensors
(same run, same shapes), for `tiny` and `small`; and KV-cache sampling against uncached sampling."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from vistok.media.preprocess import Preprocess
from vistok.nn.gpt import GPT, PRESETS, GPTConfig
from vistok.pipelines.job import run_job
from vistok.tokenize import JpegCodec
from vistok.train.data import DataConfig, Loader, axis_sizes


def _steps(model, opt, get_batch, n: int) -> float:
    tokens, t0 = 0, None
    for i in range(n + 2):  # two warm-up steps
        if i == 2:
            t0, tokens = time.perf_counter(), 0
        b = get_batch()
        _, loss = model(**b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += b["idx"].numel()
    return tokens / (time.perf_counter() - t0)


def train_speed(folder: Path, preset: str, steps: int, batch: int = 8, block: int = 512) -> dict:
    data = DataConfig(datasets=[str(folder)], block_size=block, batch_size=batch, num_workers=1, heldout=0.1)
    loader = Loader(data)
    codec, sets = loader.codec, loader.sets
    known = [i for i, a in enumerate(codec.axes) if a in codec.known_axes]
    cfg = GPTConfig(vocab_size=codec.vocab.size, axis_sizes=axis_sizes(sets, codec), next_axes=known,
                    **{**PRESETS[preset], "block_size": block})
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = model.configure_optimizer(0.1, 1e-3)
    real = _steps(model, opt, loader.next, steps)
    fixed = loader.next()
    synth = {k: v.clone() for k, v in fixed.items()}
    synth["idx"] = torch.randint(4, cfg.vocab_size, synth["idx"].shape)
    syn = _steps(model, opt, lambda: synth, steps)
    return {f"{preset}_tokens_s_real_loader": round(real), f"{preset}_tokens_s_synthetic": round(syn),
            f"{preset}_loader_vs_synthetic": round(real / syn, 3)}


def kv_cache_speed(length: int = 512, batch: int = 4) -> dict:
    from vistok.nn.gpt import KVCache

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=2726, axis_sizes=[3, 7, 19, 19, 131], next_axes=[0, 1, 2, 3], **PRESETS["tiny"])
    model = GPT(cfg).eval()
    idx = torch.randint(4, 2726, (batch, length))
    crd = torch.ones(batch, length, 5, dtype=torch.long)

    @torch.no_grad()
    def cached():
        cache = KVCache(cfg, batch, length, "cpu", torch.float32)
        for t in range(length):
            model(idx[:, t : t + 1], crd[:, t : t + 1], crd[:, t : t + 1], cache=cache)

    @torch.no_grad()
    def uncached():
        for t in range(length):
            model(idx[:, : t + 1], crd[:, : t + 1], crd[:, : t + 1])

    t0 = time.perf_counter()
    cached()
    tc = time.perf_counter() - t0
    t0 = time.perf_counter()
    uncached()
    tu = time.perf_counter() - t0
    return {"sample_tokens_s_kv_cache": round(batch * length / tc), "sample_tokens_s_uncached": round(batch * length / tu),
            "kv_cache_speedup": round(tu / tc, 2)}


def run(steps: int = 20) -> dict:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "ds"
        run_job(["sample"], folder, JpegCodec(quality=20), Preprocess(size=64, crops=40), shard_size=200,
                compress=True, executor="local", quiet=True)
        out = {}
        out.update(train_speed(folder, "tiny", steps))
        out.update(train_speed(folder, "small", max(4, steps // 4)))
    out.update(kv_cache_speed())
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
