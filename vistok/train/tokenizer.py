"""`vistok train-tokenizer`: train a BSQ or VQ patch autoencoder on random crops, write `TOK/`.

    TOK/
      model.safetensors   weights (loaded without unpickling)
      config.json         the autoencoder config, the training config, the weights' sha256
      report.json         held-out PSNR, code usage and perplexity, bits per image
      checkpoint.pt       while a `--steps` run is under way: weights, optimizer, step and both generators
                          (`resume` carries on from it, to the same weights; removed once the run is saved)

Images come from the same sources as `vistok shard`; whole images are held out (that fraction of the images,
the ones whose input keys hash lowest), and PSNR and code statistics are measured on a fixed, seeded set
of held-out crops.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vistok.errors import DatasetError, InputError, UsageError
from vistok.media.sources import expand_sources, load_image, read_input
from vistok.nn.autoencoder import AEConfig, Autoencoder, flat_codes, weights_checksum
from vistok.progress import Progress
from vistok.record import parse_input_id
from vistok.train.data import heldout_hash

EVAL_EVERY = 250  # steps between held-out measurements shown in the progress line


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
    heldout_below: float = 0.0  # also hold out every image whose key hashes below this (another split's test images)
    eval_crops: int = 128
    seed: int = 0
    device: str = "auto"
    ckpt_every: int = 200  # steps between checkpoints of a max_steps run (0: none)
    halt_at: int = 0  # stop right after this step as if killed (tests of resume)

    def to_json(self) -> dict:
        out = asdict(self)
        for k in ("ckpt_every", "halt_at"):  # how a run was carried out, not what it trains
            del out[k]
        return out


def _images(sources: list[str], heldout: float, below: float = 0.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Training and held-out images. Exactly round(heldout * n) images (at least one) are held out: those
    whose input keys hash lowest, and with `below` at least every image whose key hashes below it (the test
    images of a trainer's split at that fraction, `vistok.train.data.is_heldout`). A per-key coin flip, as the trainer's streaming split uses, held out 2 of
    the 24 embedded photos (8%, both grayscale) at --heldout 0.15; a rank keeps the fraction asked for."""
    images = []
    for iid in expand_sources(sources):
        ref = parse_input_id(iid)
        try:
            img = np.asarray(load_image(read_input(iid)[0]))
        except InputError as exc:
            print(f"skipping {ref.name}: {exc}", file=sys.stderr)
            continue
        images.append((heldout_hash(ref.key), img))
    images.sort(key=lambda t: t[0])
    k = max(1, round(heldout * len(images))) if heldout > 0 else 0
    k = max(k, sum(h < below for h, _ in images))
    held, train = [im for _, im in images[:k]], [im for _, im in images[k:]]
    if not train or not held:
        raise DatasetError(f"need training and held-out images (got {len(train)} and {len(held)}); "
                           "add sources or change --heldout")
    return train, held


def fit_palette(sources: list[str], k: int, heldout: float = 0.1, seed: int = 0, pixels: int = 200_000,
                options: dict | None = None) -> list[list[int]]:
    """K colours for `--codec pixels --palette K` (iGPT's colour clusters): k-means (scikit-learn) on up to
    `pixels` pixels drawn from the sources' training images: every image the trainer's split at `heldout`
    keeps for training (`is_heldout` by input key), whole images as they are read. Seeded: the same sources give
    the same palette, sorted by luma."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    pools = []
    for iid in expand_sources(sources, options=options):
        ref = parse_input_id(iid)
        if heldout_hash(ref.key) < heldout:
            continue
        try:
            img = np.asarray(load_image(read_input(iid, options=options)[0]).convert("RGB"))
        except InputError as exc:
            print(f"skipping {ref.name}: {exc}", file=sys.stderr)
            continue
        pools.append(img.reshape(-1, 3))
    if not pools:
        raise DatasetError(f"no training image to fit a palette on (--heldout {heldout} of the sources)")
    per = max(1, pixels // len(pools))
    sample = np.concatenate([p[rng.integers(len(p), size=min(per, len(p)))] for p in pools]).astype(np.float64)
    if len(np.unique(sample, axis=0)) < k:
        raise UsageError(f"--palette {k}: the training images have fewer distinct colours than that; use fewer")
    km = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=100).fit(sample)
    colours = np.clip(np.round(km.cluster_centers_), 0, 255).astype(np.int64)
    return colours[np.lexsort((colours[:, 2], colours[:, 1], colours[:, 0], colours @ [299, 587, 114]))].tolist()


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


def check_configs(ae: AEConfig, cfg: TokenizerTrainConfig) -> None:
    if ae.kind not in ("bsq", "vq"):
        raise UsageError(f"--kind must be bsq or vq, got {ae.kind!r}")
    if not 8 <= ae.bits <= 18 and ae.kind == "bsq":
        raise UsageError("--bits must be in 8..18")
    if ae.scales < 1 or (ae.scales > 1 and ae.kind != "bsq"):
        raise UsageError("--scales must be >= 1, and above 1 only with --kind bsq")
    if cfg.crop % ae.patch:
        raise UsageError(f"--crop {cfg.crop} must be a multiple of --patch {ae.patch}")


def save_tokenizer(model: Autoencoder, ae: AEConfig, cfg: TokenizerTrainConfig, report: dict[str, Any]) -> str:
    """Write `cfg.out/`: safetensors weights, then the config naming their sha256, and the report."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    checksum = weights_checksum(out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({"kind": "vistok-tokenizer", "autoencoder": ae.to_json(),
                                                 "train": cfg.to_json(), "sha256": checksum}, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return checksum


CHECKPOINT = "checkpoint.pt"


def _save_checkpoint(path: Path, model: Autoencoder, opt, step: int, rng: np.random.Generator, what: str) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "what": what,
                "rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state()}, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path, model: Autoencoder, opt, rng: np.random.Generator, what: str, device: str) -> int:
    """Restore a checkpoint of the same configuration (`what`); returns its step."""
    state = torch.load(path, map_location=device, weights_only=True)
    if state["what"] != what:
        raise UsageError(f"{path} is a checkpoint of another configuration: remove it, or train with the same options")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    rng.bit_generator.state = json.loads(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def train_tokenizer(ae: AEConfig, cfg: TokenizerTrainConfig, progress: IO[str] = sys.stderr,
                    quiet: bool = False, resume: bool = False) -> dict[str, Any]:
    """Train for `cfg.max_steps` steps, or for `cfg.minutes` when that is 0 (cosine decay over either). A
    `max_steps` run checkpoints every `cfg.ckpt_every` steps; with `resume` it carries on from its checkpoint
    and ends with the weights an uninterrupted run gives."""
    check_configs(ae, cfg)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_imgs, held_imgs = _images(cfg.sources, cfg.heldout, cfg.heldout_below)
    eval_set = random_crops(held_imgs, cfg.eval_crops, cfg.crop, np.random.default_rng([cfg.seed, 1])).to(device)
    model = Autoencoder(ae).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    t0, step = time.monotonic(), 0
    budget = cfg.minutes * 60
    ckpt, what = Path(cfg.out) / CHECKPOINT, json.dumps([ae.to_json(), cfg.to_json()], sort_keys=True)
    if resume and cfg.max_steps and ckpt.exists():
        step = _load_checkpoint(ckpt, model, opt, rng, what, device)
    with Progress("train-tokenizer", cfg.max_steps, "steps", progress, quiet) as bar:
        bar.advance(step)
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
            info = None
            if step % EVAL_EVERY == 0:
                ev = evaluate(model, eval_set)
                info = (f"held-out PSNR {ev['psnr']:.2f} dB  perplexity {ev['perplexity']:.0f}  "
                        f"codes used {ev['codes_used']}")
            bar.advance(1, info=info)
            if cfg.max_steps and cfg.ckpt_every and (step % cfg.ckpt_every == 0 or step == cfg.halt_at):
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                _save_checkpoint(ckpt, model, opt, step, rng, what)
            if cfg.halt_at and step == cfg.halt_at:
                return {"halted_at": step, "out": cfg.out}
    report = {**evaluate(model, eval_set), "steps": step, "seconds": round(time.monotonic() - t0, 1)}
    checksum = save_tokenizer(model, ae, cfg, report)
    ckpt.unlink(missing_ok=True)
    return {**report, "out": cfg.out, "sha256": checksum}
