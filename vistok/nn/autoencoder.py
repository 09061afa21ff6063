"""A compact patch autoencoder with a discrete bottleneck: BSQ (binary spherical quantization) or VQ.

Reads top to bottom: config -> residual block -> encoder -> quantizers (BSQ, multi-scale residual BSQ,
VQ) -> decoder -> model.

Encoder: a patchifying convolution (kernel = stride = patch), residual 3x3 conv blocks with GELU, a 1x1
projection to the latent width. BSQ projects to L dimensions, L2-normalizes and takes signs (straight-
through gradients): an implicit codebook of 2**L codes; an entropy regularizer (factorized over groups
of bits, as the BSQ paper approximates it, regrouped at random every step) makes each code confident and
the codes used evenly. VQ keeps K
codebook vectors updated by exponential moving averages, initialized from data, with dead codes
restarted from random encoder outputs. With `scales > 1`, BSQ codes are residual over scales (as in
VAR): grids of 1/2**(S-1), ..., 1/2, 1 of the latent grid, coarsest first, each scale coding what the
coarser ones left. Decoder: 1x1 projection, residual blocks, a pixel-shuffle to
full resolution. Images are in [-1, 1].
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vistok.errors import DatasetError
from vistok.nn.grids import scale_grids


@dataclass
class AEConfig:
    kind: str = "bsq"  # bsq | vq
    patch: int = 8
    width: int = 96
    blocks: int = 2
    latent: int = 32
    bits: int = 16  # bsq: code length L (vocabulary 2**L)
    codebook: int = 1024  # vq: K
    entropy_weight: float = 0.05  # bsq
    entropy_gamma: float = 32.0  # bsq: weight of the codebook-entropy term against the per-sample one
    # (8-minute runs on the embedded photos: weight 0.1 and gamma 16 gave 24.09 dB and perplexity 2423,
    # gamma 8 24.20 dB and 1828, these defaults 24.10 dB and 2886; temperature 1 beat 0.5 and 2)
    entropy_group: int = 4  # bsq: bits per group whose joint code distribution enters the entropy terms
    entropy_temperature: float = 1.0  # bsq: sharpness of the soft code assignment
    entropy_regroup: bool = True  # bsq: new random bit groups every step, so no two bits stay correlated
    scales: int = 1  # bsq: > 1 for residual codes over S scales (grid / 2**(S-1) ... grid), coarsest first
    commitment: float = 0.25  # vq
    vq_dim: int = 8  # vq: dimension of the normalized lookup space
    ema_decay: float = 0.99  # vq

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def vocab(self) -> int:
        return 2**self.bits if self.kind == "bsq" else self.codebook


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(8, c), nn.Conv2d(c, c, 3, padding=1)
        self.n2, self.c2 = nn.GroupNorm(8, c), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.c2(F.gelu(self.n2(self.c1(F.gelu(self.n1(x))))))


class Encoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.patchify = nn.Conv2d(3, cfg.width, cfg.patch, stride=cfg.patch)
        self.blocks = nn.Sequential(*[ResBlock(cfg.width) for _ in range(cfg.blocks)])
        self.out = nn.Conv2d(cfg.width, cfg.latent, 1)

    def forward(self, x):  # (B, 3, H, W) -> (B, latent, H/p, W/p)
        return self.out(F.gelu(self.blocks(self.patchify(x))))


class BSQ(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.down, self.up = nn.Conv2d(cfg.latent, cfg.bits, 1), nn.Conv2d(cfg.bits, cfg.latent, 1)
        self.L = cfg.bits
        self.register_buffer("powers", 2 ** torch.arange(cfg.bits - 1, -1, -1))
        self.group = cfg.entropy_group if cfg.bits % cfg.entropy_group == 0 else 1
        self.tau = cfg.entropy_temperature
        self.gamma, self.weight = cfg.entropy_gamma, cfg.entropy_weight
        self.regroup = cfg.entropy_regroup
        codes = torch.arange(2**self.group).unsqueeze(1) // (2 ** torch.arange(self.group - 1, -1, -1)) % 2
        self.register_buffer("group_codes", codes.float() * 2 - 1, persistent=False)

    def forward(self, z):
        v = F.normalize(self.down(z), dim=1)  # on the unit sphere, (B, L, h, w)
        q = torch.where(v > 0, 1.0, -1.0) / math.sqrt(self.L)
        q_st = v + (q - v).detach()  # straight-through
        return self.up(q_st), self.indices_of(q), self.weight * self.entropy(v)

    def entropy(self, v):
        """BSQ's entropy regularizer over groups of g bits: within a group, the soft distribution over its 2**g
        codes is the product of per-bit probabilities; the per-sample entropy (made small: confident codes)
        minus the entropy of the batch-mean distribution (made large: every code used) is returned."""
        B, L, h, w = v.shape
        g = self.group
        logit = v * math.sqrt(L) * self.tau  # (B, L, h, w)
        x = logit.permute(0, 2, 3, 1).reshape(-1, L)  # (N, L)
        if self.regroup and self.training:
            x = x[:, torch.randperm(L, device=x.device)]
        x = x.reshape(-1, L // g, g)  # (N, groups, g)
        # log p(code) for every code of a group: sum over bits of log sigmoid(+-logit)
        signs = self.group_codes  # (2**g, g) of +-1
        logp = F.logsigmoid(x.unsqueeze(2) * signs)  # (N, groups, 2**g, g)
        logp = logp.sum(-1)  # (N, groups, 2**g)
        p = logp.exp()
        per_sample = -(p * logp).sum(-1).mean()
        mean_p = p.mean(0)  # (groups, 2**g)
        codebook = -(mean_p * torch.log(mean_p + 1e-8)).sum(-1).mean()
        return per_sample - self.gamma * codebook

    def signs_of(self, idx):  # (B, h, w) code indices -> (B, L, h, w) of +-1
        return ((idx.unsqueeze(1) // self.powers.view(1, -1, 1, 1)) % 2).float() * 2 - 1

    def indices_of(self, q):
        bits = (q > 0).long()  # (B, L, h, w)
        return (bits * self.powers.view(1, -1, 1, 1)).sum(dim=1)

    def embed(self, idx):  # (B, h, w) -> (B, latent, h, w)
        return self.up(self.signs_of(idx) / math.sqrt(self.L))


class ResidualBSQ(BSQ):
    """BSQ codes over scales, each quantizing the residual the coarser scales left (VAR's multi-scale
    residual quantization with BSQ's sign codes). At scale k the residual is area-averaged to the scale's
    grid, coded as signs times a learned per-bit magnitude (residuals shrink from scale to scale, unlike
    BSQ's unit sphere), upsampled back and subtracted. The decoder sees the sum of all scales with a
    straight-through gradient to the projected encoder output; a commitment term keeps that output
    representable, a fit term learns the magnitudes, and BSQ's entropy terms act on each scale's
    normalized residual."""

    def __init__(self, cfg: AEConfig):
        super().__init__(cfg)
        self.S, self.beta = cfg.scales, cfg.commitment
        self.log_mag = nn.Parameter(torch.full((cfg.scales, cfg.bits), -1.0))  # per scale, per bit

    def _scale_map(self, k: int, b: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Scale k's signs times its magnitudes, upsampled to the full grid: (B, L, h, w)."""
        q = b * self.log_mag[k].exp().view(1, -1, 1, 1)
        return q if tuple(q.shape[-2:]) == tuple(hw) else F.interpolate(q, size=hw, mode="bilinear", align_corners=False)

    def _sum(self, signs: list[torch.Tensor], hw: tuple[int, int]) -> torch.Tensor:
        return sum(self._scale_map(k, b, hw) for k, b in enumerate(signs))

    def forward(self, z):
        u = self.down(z)  # (B, L, h, w)
        hw = tuple(u.shape[-2:])
        signs, idxs, ent = [], [], 0.0
        done = torch.zeros_like(u)  # what the coarser scales already coded (no gradient)
        for k, (hk, wk) in enumerate(scale_grids(*hw, self.S)):
            r = u - done
            rk = r if (hk, wk) == hw else F.adaptive_avg_pool2d(r, (hk, wk))
            ent = ent + self.entropy(F.normalize(rk, dim=1))
            b = torch.where(rk > 0, 1.0, -1.0).detach()
            signs.append(b)
            idxs.append(self.indices_of(b))
            done = done + self._scale_map(k, b, hw).detach()
        f_hat = self._sum(signs, hw)  # carries the magnitudes' gradient
        aux = (self.weight * ent / self.S + F.mse_loss(f_hat, u.detach())  # fit the magnitudes
               + self.beta * F.mse_loss(u, f_hat.detach()))  # commit the encoder
        return self.up(u + (f_hat - u).detach()), idxs, aux

    def embed(self, idxs):  # [(B, h_k, w_k)] coarsest first -> (B, latent, h, w)
        return self.up(self._sum([self.signs_of(i) for i in idxs], tuple(idxs[-1].shape[-2:])))


class VQ(nn.Module):
    """Codebook lookup in a low-dimensional, L2-normalized space (as in ViT-VQGAN): codes stay spread out and
    used far better than in the full latent space. EMA updates, data initialization, dead-code restarts."""

    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.K, self.D, self.decay, self.beta = cfg.codebook, cfg.vq_dim, cfg.ema_decay, cfg.commitment
        self.down, self.up = nn.Conv2d(cfg.latent, cfg.vq_dim, 1), nn.Conv2d(cfg.vq_dim, cfg.latent, 1)
        self.register_buffer("codebook", F.normalize(torch.randn(cfg.codebook, cfg.vq_dim), dim=1))
        self.register_buffer("ema_count", torch.ones(cfg.codebook))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, z):
        e = F.normalize(self.down(z), dim=1)
        B, D, h, w = e.shape
        flat = e.permute(0, 2, 3, 1).reshape(-1, D)
        if self.training and not bool(self.initialized):  # data initialization
            src = flat[torch.randperm(flat.size(0))[: self.K]].detach()
            self.codebook[: src.size(0)] = src
            self.ema_count.fill_(flat.size(0) / self.K)  # the uniform share of a batch
            self.ema_sum.copy_(self.codebook * self.ema_count.unsqueeze(1))
            self.initialized.fill_(True)
        idx = (flat @ self.codebook.t()).argmax(1)  # nearest on the sphere
        q = self.codebook[idx]
        if self.training:
            with torch.no_grad():
                onehot = F.one_hot(idx, self.K).type_as(flat)
                self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                self.ema_sum.mul_(self.decay).add_(onehot.t() @ flat.detach(), alpha=1 - self.decay)
                self.codebook.copy_(F.normalize(self.ema_sum, dim=1))
                share = flat.size(0) / self.K  # restart codes used under 3% of a uniform share
                dead = self.ema_count < 0.03 * share
                if dead.any():
                    repl = flat[torch.randint(0, flat.size(0), (int(dead.sum()),), device=flat.device)].detach()
                    self.codebook[dead] = repl
                    self.ema_sum[dead] = repl * share
                    self.ema_count[dead] = share
        aux = self.beta * F.mse_loss(flat, q.detach())
        q_st = flat + (q - flat).detach()
        return self.up(q_st.view(B, h, w, D).permute(0, 3, 1, 2)), idx.view(B, h, w), aux

    def embed(self, idx):
        return self.up(self.codebook[idx].permute(0, 3, 1, 2))


class Decoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.inp = nn.Conv2d(cfg.latent, cfg.width, 1)
        self.blocks = nn.Sequential(*[ResBlock(cfg.width) for _ in range(cfg.blocks)])
        self.out = nn.Conv2d(cfg.width, 3 * cfg.patch**2, 1)
        self.patch = cfg.patch

    def forward(self, q):  # (B, latent, h, w) -> (B, 3, h*p, w*p)
        return F.pixel_shuffle(self.out(F.gelu(self.blocks(self.inp(q)))), self.patch)


class Autoencoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        if cfg.kind == "vq":
            self.quant = VQ(cfg)
        else:
            self.quant = ResidualBSQ(cfg) if cfg.scales > 1 else BSQ(cfg)

    def forward(self, x):
        """x in [-1, 1] -> (reconstruction, code indices (B, h, w) or one per scale, auxiliary loss)."""
        q, idx, aux = self.quant(self.encoder(x))
        return self.decoder(q), idx, aux

    @torch.no_grad()
    def encode(self, x):
        _, idx, _ = self.quant(self.encoder(x))
        return idx

    @torch.no_grad()
    def decode(self, idx):
        return self.decoder(self.quant.embed(idx)).clamp(-1, 1)


# --- codes and weights on disk ------------------------------------------------------------------------
def flat_codes(idx) -> torch.Tensor:
    """Code indices -> (B, tokens): one grid, or a multi-scale tokenizer's grids, coarsest first."""
    return torch.cat([i.flatten(1) for i in idx], 1) if isinstance(idx, list) else idx.flatten(1)


def weights_checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
