"""`vistok train-tokenizer`: train a BSQ or VQ patch autoencoder on random crops, write `TOK/`.

    TOK/
      model.safetensors   weights (loaded without unpickling)
      config.json         the autoencoder config, the training config, the weights' sha256
      report.json         held-out PSNR, code usage and perplexity, bits per image

Images come from the same sources as `vistok shard`; whole images are held out (that fraction of the images,
the ones whose input keys hash lowest), and PSNR and code statistics are measured on a fixed, seeded set
of held-out crops.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vistok.errors import DatasetError, InputError, UsageError
from vistok.train.autoencoder import AEConfig, Autoencoder


@dataclass
class TokenizerTrainConfig:
    sources: list[str] = field(default_factory=lambda: ["sample"])
    out: str = "tokenizers/bsq"
    crop: int = 64
    batch: int = 32
    lr: float = 2e-3
    minutes: float = 8.0
    max_steps: int = 0  # 0: bounded by minutes only
    heldout: float = 0.15
    eval_crops: int = 128
    seed: int = 0
    device: str = "auto"

    def to_json(self) -> dict:
        return asdict(self)


def _images(sources: list[str], heldout: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Training and held-out images. Exactly round(heldout * n) images (at least one) are held out: those
    whose input keys hash lowest. A per-key coin flip, as the trainer's streaming split uses, held out 2 of
    the 24 embedded photos (8%, both grayscale) at --heldout 0.15; a rank keeps the fraction asked for."""
    from vistok.pipelines.sources import expand_sources, input_key, load_image, read_input
    from vistok.train.data import heldout_hash

    images = []
    for iid in expand_sources(sources):
        try:
            img = np.asarray(load_image(read_input(iid)[0]))
        except InputError as exc:
            print(f"skipping {iid}: {exc}", file=sys.stderr)
            continue
        images.append((heldout_hash(input_key(iid)), img))
    images.sort(key=lambda t: t[0])
    k = max(1, round(heldout * len(images))) if heldout > 0 else 0
    held, train = [im for _, im in images[:k]], [im for _, im in images[k:]]
    if not train or not held:
        raise DatasetError(f"need training and held-out images (got {len(train)} and {len(held)}); "
                           "add sources or change --heldout")
    return train, held


def random_crops(pool: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]; images smaller than the crop are skipped."""
    usable = [im for im in pool if min(im.shape[:2]) >= size]
    if not usable:
        raise DatasetError(f"no image is at least {size}x{size}")
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        im = usable[int(rng.integers(len(usable)))]
        y, x = int(rng.integers(im.shape[0] - size + 1)), int(rng.integers(im.shape[1] - size + 1))
        out[i] = im[y : y + size, x : x + size]
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def flat_codes(idx) -> torch.Tensor:
    """Code indices -> (B, tokens): one grid, or a multi-scale tokenizer's grids, coarsest first."""
    return torch.cat([i.flatten(1) for i in idx], 1) if isinstance(idx, list) else idx.flatten(1)


def code_stats(idx: torch.Tensor, vocab: int) -> dict[str, float]:
    counts = torch.bincount(idx.flatten(), minlength=vocab).double()
    p = counts[counts > 0] / counts.sum()
    return {"codes_used": int((counts > 0).sum()), "usage_fraction": float((counts > 0).sum() / vocab),
            "perplexity": float(torch.exp(-(p * p.log()).sum())), "tokens": int(counts.sum())}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(-1, 1) - b) ** 2).mean()) * 127.5**2
    return 10 * math.log10(255**2 / max(mse, 1e-12))


def evaluate(model: Autoencoder, crops: torch.Tensor, batch: int = 64) -> dict[str, Any]:
    model.eval()
    recs, idxs = [], []
    with torch.no_grad():
        for i in range(0, crops.size(0), batch):
            r, idx, _ = model(crops[i : i + batch])
            recs.append(r)
            idxs.append(flat_codes(idx))
    model.train()
    idx = torch.cat(idxs)
    stats = code_stats(idx, model.cfg.vocab)
    n_tok = idx.shape[1]
    return {"psnr": psnr(torch.cat(recs), crops), **stats, "tokens_per_image": n_tok,
            "bits_per_image": n_tok * math.log2(model.cfg.vocab),
            "perplexity_floor": 0.25 * min(model.cfg.vocab, stats["tokens"])}


def weights_checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_tokenizer(ae: AEConfig, cfg: TokenizerTrainConfig, progress=sys.stderr) -> dict[str, Any]:
    from safetensors.torch import save_file

    if ae.kind not in ("bsq", "vq"):
        raise UsageError(f"--kind must be bsq or vq, got {ae.kind!r}")
    if not 8 <= ae.bits <= 18 and ae.kind == "bsq":
        raise UsageError("--bits must be in 8..18")
    if ae.scales < 1 or (ae.scales > 1 and ae.kind != "bsq"):
        raise UsageError("--scales must be >= 1, and above 1 only with --kind bsq")
    if cfg.crop % ae.patch:
        raise UsageError(f"--crop {cfg.crop} must be a multiple of --patch {ae.patch}")
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_imgs, held_imgs = _images(cfg.sources, cfg.heldout)
    eval_set = random_crops(held_imgs, cfg.eval_crops, cfg.crop, np.random.default_rng([cfg.seed, 1])).to(device)
    model = Autoencoder(ae).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    t0, step, last = time.monotonic(), 0, {}
    budget = cfg.minutes * 60
    while (not cfg.max_steps or step < cfg.max_steps) and (cfg.max_steps or time.monotonic() - t0 < budget):
        frac = min(1.0, (time.monotonic() - t0) / budget) if not cfg.max_steps else step / cfg.max_steps
        for g in opt.param_groups:  # cosine decay over the budget
            g["lr"] = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        x = random_crops(train_imgs, cfg.batch, cfg.crop, rng).to(device)
        rec, _, aux = model(x)
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 250 == 0:
            last = evaluate(model, eval_set)
            print(f"step {step}  {time.monotonic() - t0:.0f}s  held-out PSNR {last['psnr']:.2f} dB  "
                  f"perplexity {last['perplexity']:.0f}  codes used {last['codes_used']}", file=progress)
    report = {**evaluate(model, eval_set), "steps": step, "seconds": round(time.monotonic() - t0, 1)}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    checksum = weights_checksum(out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({"kind": "vistok-tokenizer", "autoencoder": ae.to_json(),
                                                 "train": cfg.to_json(), "sha256": checksum}, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return {**report, "out": str(out), "sha256": checksum}


def load_tokenizer(path: str | Path, device: str = "cpu", expect_sha256: str | None = None) -> tuple[Autoencoder, dict]:
    """Weights through safetensors (never unpickled); refuses weights whose checksum differs from `expect`."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path, w_path = path / "config.json", path / "model.safetensors"
    if not cfg_path.exists() or not w_path.exists():
        raise DatasetError(f"{path} is not a tokenizer folder (config.json and model.safetensors)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("kind") != "vistok-tokenizer":
        raise DatasetError(f"{cfg_path} is not a vistok tokenizer config")
    actual = weights_checksum(w_path)
    if expect_sha256 and actual != expect_sha256:
        raise DatasetError(f"tokenizer {path} has weights {actual[:12]}..., but the dataset was made with "
                           f"{expect_sha256[:12]}...: use the tokenizer that made it")
    model = Autoencoder(AEConfig(**cfg["autoencoder"]))
    model.load_state_dict(load_file(str(w_path), device=device))
    return model.to(device).eval(), {**cfg, "sha256": actual}
