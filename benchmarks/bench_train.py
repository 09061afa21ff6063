"""Trainer speed: tokens/s with the real shard loader against the same model fed synthetic tensors (same
run, same shapes), for `tiny` and `small`; KV-cache sampling against uncached sampling; and attention by
tiles against the dense masked path on rows of packed documents (`attention_speed`).

On a GPU (`python benchmarks/bench_train.py --device cuda`): tokens/s and MFU of `small` and `base` at 1k
and 8k contexts, eager and compiled, tiles against dense, and the real loader's data wait at 8k, one
JSON line per row (`gpu_table`)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from vistok.media.preprocess import Preprocess
from vistok.nn.gpt import GPT, PRESETS, GPTConfig
from vistok.pipelines.job import run_job
from vistok.tokenize import JpegCodec
from vistok.train.data import DataConfig, Loader, axis_sizes


def _step(model, opt, batch: dict, autocast=None) -> None:
    """One optimizer step on `batch` (under `autocast` when given)."""
    with autocast or nullcontext():
        _, loss = model(**batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _steps(model, opt, get_batch, n: int) -> float:
    tokens, t0 = 0, None
    for i in range(n + 2):  # two warm-up steps
        if i == 2:
            t0, tokens = time.perf_counter(), 0
        b = get_batch()
        _step(model, opt, b)
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


def _packed(B: int, T: int, vocab: int, n_axes: int, device: str, seed: int = 0) -> dict:
    """A synthetic batch of rows packed with documents of 300 to 7,900 positions (the lengths of 64x64 to
    256x256 JPEG q20 images), doc ids per position, the tail of each row padding."""
    g = torch.Generator().manual_seed(seed)
    docs = torch.full((B, T), -1, dtype=torch.long)
    for b in range(B):
        t, d = 0, 0
        while t < T - 64:
            n = int(torch.randint(300, 7900, (1,), generator=g))
            docs[b, t : t + n] = d
            t, d = t + n, d + 1
    idx = torch.randint(4, vocab, (B, T), generator=g)
    crd = torch.ones(B, T, n_axes, dtype=torch.long)
    batch = {"idx": idx, "targets": idx, "coords": crd, "next_coords": crd, "doc_ids": docs,
             "loss_mask": (docs >= 0).float()}
    return {k: v.to(device) for k, v in batch.items()}


def attention_speed(device: str = "cpu", preset: str = "tiny", T: int = 8192, B: int = 1, steps: int = 3,
                    compile: bool = False) -> dict:
    """Training tokens/s on packed rows with attention by tiles and by the dense masked path (same model,
    same batch), and MFU where the device's peak is known."""
    from vistok.train.trainer import PEAK_FLOPS

    cfg = GPTConfig(vocab_size=2726, axis_sizes=[3, 7, 40, 40, 66], next_axes=[0, 1, 2, 3],
                    **{**PRESETS[preset], "block_size": T})
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    step_model = torch.compile(model) if compile else model
    opt = model.configure_optimizer(0.1, 1e-3, device_type=device.split(":")[0])
    batch = _packed(B, T, cfg.vocab_size, len(cfg.axis_sizes), device)
    cuda = device.startswith("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else None
    peak = next((v for k, v in PEAK_FLOPS.items() if cuda and k in torch.cuda.get_device_name()), None)
    out = {"preset": preset, "context": T, "batch": B, "compiled": compile, "device": device}
    for path in ("tiles", "dense"):
        model.fast = path == "tiles"
        t0 = None
        for i in range(steps + 2):  # two warm-up steps (compilation)
            if i == 2:
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            _step(step_model, opt, batch, autocast)
        if cuda:
            torch.cuda.synchronize()
        tps = B * T * steps / (time.perf_counter() - t0)
        out[f"{path}_tokens_s"] = round(tps)
        if peak:
            out[f"{path}_mfu"] = round(model.flops_per_token() * tps / peak, 4)
    out["tiles_vs_dense"] = round(out["tiles_tokens_s"] / out["dense_tokens_s"], 3)
    return out


def loader_wait(folder: Path, device: str, preset: str = "base-8k", batch: int = 4, steps: int = 20,
                workers: int = 4) -> dict:
    """The share of step time spent waiting for the real loader (256x256 JPEG q20 crops, 8k rows)."""
    data = DataConfig(datasets=[str(folder)], block_size=PRESETS[preset]["block_size"], batch_size=batch,
                      num_workers=workers, heldout=0.1)
    loader = Loader(data, device=device)
    codec, sets = loader.codec, loader.sets
    known = [i for i, a in enumerate(codec.axes) if a in codec.known_axes]
    cfg = GPTConfig(vocab_size=codec.vocab.size, axis_sizes=axis_sizes(sets, codec), next_axes=known, **PRESETS[preset])
    model = GPT(cfg).to(device)
    opt = model.configure_optimizer(0.1, 1e-3, device_type=device.split(":")[0])
    cuda = device.startswith("cuda")
    wait = total = 0.0
    for i in range(steps + 2):
        t0 = time.perf_counter()
        b = loader.next()
        tw = time.perf_counter() - t0
        _step(model, opt, b, torch.autocast("cuda", dtype=torch.bfloat16) if cuda else None)
        if cuda:
            torch.cuda.synchronize()
        if i >= 2:
            wait, total = wait + tw, total + time.perf_counter() - t0
    return {"preset": preset, "loader_workers": workers, "data_wait": round(wait / total, 4)}


def gpu_table(device: str = "cuda", presets=(("small", 1024), ("small-8k", 8192), ("base", 1024), ("base-8k", 8192)),
              positions: int = 65536, steps: int = 10, loader_preset: str = "base-8k") -> list[dict]:
    """The GPU table: small and base at 1k and 8k, eager and compiled, tiles and dense; the loader's wait."""
    rows = []
    for preset, T in presets:
        for compile in (False, True):
            rows.append(attention_speed(device, preset, T, B=max(1, positions // T), steps=steps, compile=compile))
            print(json.dumps(rows[-1]), flush=True)
    with tempfile.TemporaryDirectory() as d:
        folder = run_job(["sample"], Path(d) / "ds", JpegCodec(quality=20), Preprocess(size=256, crops=8),
                         shard_size=16, executor="local", quiet=True).folder  # 12 shards: enough for 4 workers
        rows.append(loader_wait(folder, device, loader_preset, steps=steps))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def smoke() -> bool:  # `benchmarks.common.smoke`, which this file, also run as a script, cannot import
    return os.environ.get("VISTOK_BENCH_SMOKE") == "1"


def run(steps: int = 20) -> dict:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "ds"
        run_job(["sample"], folder, JpegCodec(quality=20), Preprocess(size=64, crops=4 if smoke() else 40), shard_size=200,
                compress=True, executor="local", quiet=True)
        out = {}
        out.update(train_speed(folder, "tiny", steps))
        out.update(train_speed(folder, "small", max(2 if smoke() else 4, steps // 4)))
    out.update(kv_cache_speed(64 if smoke() else 512))
    T = 1024 if smoke() else 8192
    out.update({f"attention_8k_{k}": v for k, v in attention_speed("cpu", "tiny", T, 1, steps=2).items()
                if k.endswith(("tokens_s", "vs_dense"))})
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", help="cpu: the make-bench figures; cuda: the GPU table")
    a = ap.parse_args()
    if a.device.startswith("cuda"):
        gpu_table(a.device)
    else:
        print(json.dumps(run()))
