"""A GPT-style decoder over token streams with coordinates.

Reads top to bottom: config -> attention -> MLP -> block -> model (`forward`, `generate`).

Positions come from the record's coordinates, not the sequence index: each axis (e.g. component,
block_y, block_x, freq) has a learned embedding table, and a token's position embedding is the sum over
axes. Coordinates are shifted by one so that 0 means "none" (BOS, EOS, padding). With `next_coords`,
the embedding of the *next* token's coordinates (only the axes known before that token is generated) is
added too, as in sigma-GPT, so that shuffled orders are learnable: the model is told where it will write.
With `rope_axes`, places also rotate queries and keys (a rotary embedding over coordinates instead of
sequence indices): attention then sees the offset between the place being predicted and each earlier
token's place, and "the same place in an earlier frame" is offset zero on every axis but time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from vistok.errors import CodecError
from vistok.nn.attention import RowMask, attend, local_mask


@dataclass
class GPTConfig:
    vocab_size: int = 2726
    axis_sizes: list[int] = field(default_factory=lambda: [8, 8, 64, 64, 66])  # per axis, incl. the 0 = none slot
    next_axes: list[int] = field(default_factory=list)  # indices of axes embedded for the next token
    block_size: int = 512
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    query_slots: bool = False  # group-parallel prediction: a learned query embedding for query slots
    # axes whose coordinates also rotate queries and keys (rotary embedding of places, `place_rotation`): a
    # query by the place it predicts, a key by its token's place, so attention sees their offset on these
    # axes ("the same place in an earlier frame" is offset 0); [] = off (runs made before it)
    rope_axes: list[int] = field(default_factory=list)
    # group-parallel: a query slot also sees the other query slots of its group (places, never tokens:
    # `group_mask`); False = each query alone (runs made before it)
    co_attend: bool = False
    # neighbourhood attention by place (`vistok.nn.attention`, `--attention local:R,F`): [R, F] = a query sees
    # the keys in the R unit rows above its own and in its own row, and within R rows in the F frames
    # before; [] = the whole context (runs made before it)
    neighbourhood: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> GPTConfig:
        """A checkpoint's model config; runs made before the renames call `query_slots` `parallel` and
        `neighbourhood` `local`."""
        d = dict(d)
        for old, new in (("parallel", "query_slots"), ("local", "neighbourhood")):
            if old in d:
                d[new] = d.pop(old)
        return cls(**d)


PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=512),  # ~1M parameters: CPU
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=1024),  # ~10M
    "base": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),  # ~100M: GPU
    # video: contexts that hold at least two frames of 64x64 JPEG q20 (~430 tokens each), six of 32x32
    "tiny-video": dict(n_layer=4, n_head=4, n_embd=128, block_size=1024),
    "small-video": dict(n_layer=6, n_head=6, n_embd=384, block_size=2048),
    # whole 256x256 images (JPEG q20 is ~7,600 tokens): 8k contexts, as JPEG-LM trains on 12k-token chunks
    "small-8k": dict(n_layer=6, n_head=6, n_embd=384, block_size=8192),
    "base-8k": dict(n_layer=12, n_head=12, n_embd=768, block_size=8192),
}


class KVCache:
    """Preallocated keys and values for every layer: (n_layer, B, nh, T_max, hs)."""

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int, device, dtype):
        hs = cfg.n_embd // cfg.n_head
        self.k = torch.zeros(cfg.n_layer, batch, cfg.n_head, max_len, hs, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        # with local attention, each cached key's place (frame, unit row), -1 = everywhere
        self.places = torch.full((batch, max_len, 2), -1, dtype=torch.long, device=device) if cfg.neighbourhood else None
        self.pos = 0  # number of positions filled


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        # with rotated places, a learned offset lets every query and key share a direction: "the same place"
        # then scores alike for all tokens (without it the model must first build one into its embeddings)
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias or bool(cfg.rope_axes))
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head, self.n_embd, self.dropout = cfg.n_head, cfg.n_embd, cfg.dropout

    def forward(self, x, attn_mask=None, cache: KVCache | None = None, layer: int = 0, rot=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if rot is not None:  # keys rotated before they are cached
            q, k = rotate(q, *rot[0]), rotate(k, *rot[1])
        if cache is not None:
            p = cache.pos
            cache.k[layer, :, :, p : p + T] = k
            cache.v[layer, :, :, p : p + T] = v
            k, v = cache.k[layer, :, :, : p + T], cache.v[layer, :, :, : p + T]
            if attn_mask is None and T > 1:  # prefill: causal within the new chunk, full view of the past
                attn_mask = torch.ones(T, p + T, dtype=torch.bool, device=x.device).tril(diagonal=p)
        dropout = self.dropout if self.training else 0.0
        y = attend(q, k, v, attn_mask, dropout, causal=cache is None)  # a mask (dense or tiles), or causal
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, attn_mask=None, cache=None, layer=0, rot=None):
        x = x + self.attn(self.ln_1(x), attn_mask, cache, layer, rot)
        return x + self.mlp(self.ln_2(x))


def rotate(x, cos, sin):
    """Rotary embedding: x (B, nh, T, hs); cos, sin (B, 1, T, D): dims [0, D) and [D, 2D) rotated as pairs."""
    D = cos.size(-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # bf16 under autocast: q and k stay in their dtype
    x1, x2, rest = x[..., :D], x[..., D : 2 * D], x[..., 2 * D :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, rest], dim=-1)


def place_rotation(cfg: GPTConfig, coords, next_coords=None, query=None):
    """((cos, sin) of the queries, (cos, sin) of the keys), each (B, 1, T, D), or None when `rope_axes` is empty.

    A key is rotated by its token's place (`coords`); a query by the place of the token it predicts: the
    next token's (`next_coords`), or a query slot's own (`coords`, group-parallel). The pairs of dims of a
    head are shared out between the axes, each axis's with frequencies 100^(-f/pairs), so a score depends
    on the offset between the two places, and attending to the same place elsewhere (an earlier frame) is
    one pattern to learn for every place.
    """
    if not cfg.rope_axes:
        return None
    hs = cfg.n_embd // cfg.n_head
    R = len(cfg.rope_axes)
    pairs = max(1, hs // (2 * R))
    freqs = 100.0 ** (-torch.arange(pairs, device=coords.device, dtype=torch.float32) / pairs)  # (pairs,)
    key = coords[..., cfg.rope_axes].float()
    place = next_coords[..., cfg.rope_axes].float() if next_coords is not None else torch.zeros_like(key)
    if query is not None:
        place = torch.where(query[..., None].bool(), key, place)
    out = []
    for p in (place, key):
        ang = (p[..., None] * freqs).flatten(-2)[:, None]  # (B, 1, T, R * pairs)
        out.append((ang.cos(), ang.sin()))
    return out[0], out[1]


def group_mask(doc_ids, groups, query, co_attend: bool = False, lane=None):
    """(B, T, T) boolean attention mask of group-parallel prediction, True = may attend.

    Token slots (query 0) see the tokens of their own and earlier groups (block-causal, as in VAR); a query
    slot (query 1, the place of a token of group g) sees the tokens of groups < g and itself, never a token
    of its own group; with `co_attend` also the other query slots of group g, which carry places only, so
    the queries of a group agree on who predicts what (RandSAC's masked-transformer decoder). BOS is group
    -1 (seen by all); padding has doc id -1 and sees only itself.

    Lanes (`lane` (B, T), a wavefront row: `groups` are waves): a position sees the earlier waves and its own
    lane's positions up to itself, never another lane of its wave. A lane's start slot is a query slot only in
    what it holds (`query_emb` and its place); what it sees is its lane's rule.
    """
    gi, gj = groups[:, :, None], groups[:, None, :]
    if lane is not None:
        T = groups.size(1)
        upto = torch.ones(T, T, dtype=torch.bool, device=groups.device).tril()
        sees = (gj < gi) | ((gj == gi) & (lane[:, :, None] == lane[:, None, :]) & upto)
    else:
        q = query.bool()
        token_j = ~q[:, None, :]
        sees = token_j & torch.where(q[:, :, None], gj < gi, gj <= gi)
        if co_attend:
            sees = sees | (q[:, :, None] & q[:, None, :] & (gj == gi))
    same_doc = (doc_ids[:, :, None] == doc_ids[:, None, :]) & (doc_ids[:, :, None] >= 0)
    eye = torch.eye(groups.size(1), dtype=torch.bool, device=groups.device)
    return (sees & same_doc) | eye


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.axis_emb = nn.ModuleList(nn.Embedding(n, cfg.n_embd) for n in cfg.axis_sizes)
        self.next_emb = nn.ModuleList(nn.Embedding(cfg.axis_sizes[a], cfg.n_embd) for a in cfg.next_axes)
        if cfg.rope_axes and cfg.n_embd // cfg.n_head < 2 * len(cfg.rope_axes):
            raise ValueError(f"a head of {cfg.n_embd // cfg.n_head} dims cannot rotate {len(cfg.rope_axes)} axes")
        # a query slot's input: this vector in place of a token, plus the position it asks about
        self.query_emb = nn.Parameter(torch.randn(cfg.n_embd) * 0.02) if cfg.query_slots else None
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying
        self.checkpoint = False  # recompute each block's activations in the backward pass (`--checkpoint-activations`)
        self.fast = True  # long rows attend by tiles (`vistok.nn.attention`); False: the dense reference path
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, idx, coords, next_coords=None, query=None):
        # idx (B, T); coords (B, T, n_axes), 0 = none; next_coords (B, T, n_axes) or None; query (B, T) or None
        # Coordinates must fit the tables (callers check: `vistok.train.data.check_coords`).
        x = self.wte(idx)
        if query is not None:
            x = torch.where(query[..., None].bool(), self.query_emb.to(x.dtype), x)
        for a, emb in enumerate(self.axis_emb):
            x = x + emb(coords[..., a])
        if next_coords is not None:
            for a, emb in zip(self.cfg.next_axes, self.next_emb):
                x = x + emb(next_coords[..., a])
        return self.drop(x)

    def forward(self, idx, coords, next_coords=None, targets=None, loss_mask=None, doc_ids=None,
                groups=None, query=None, cache: KVCache | None = None, attn_mask=None, store: int | None = None,
                last: int | None = None, places=None, lane=None):
        """Logits (B, T, V); with targets, also the mean loss in nats over positions where loss_mask is 1.

        Token by token: causal attention, inside each document of a filled row (doc_ids (B, T)). Group-parallel
        (groups and query (B, T); with `lane`, wavefront lanes): the group mask (`group_mask`). `attn_mask` replaces either (with a KV cache:
        (T, cached + T), in place of the causal prefill mask), and only the first `store` positions stay in
        the cache. `last`: logits of the last `last` positions only (a group's query slots). With local
        attention (`cfg.neighbourhood`), `places` (B, T, 4): each position's query and key place (`vistok.nn.attention`).
        """
        if self.cfg.neighbourhood and places is None:
            raise ValueError("a model with local attention needs the places of its positions")
        x = self.embed(idx, coords, next_coords, query)
        if cache is None and attn_mask is None:
            attn_mask = self.attn_mask(idx, doc_ids, groups, query, places, lane)
        elif self.cfg.neighbourhood:
            attn_mask = self._local(attn_mask, places, cache)
        rot = place_rotation(self.cfg, coords, next_coords, query)
        for i, block in enumerate(self.h):
            if self.checkpoint and self.training and cache is None:  # memory of one block, not of all of them
                x = torch.utils.checkpoint.checkpoint(block, x, attn_mask, None, i, rot, use_reentrant=False)
            else:
                x = block(x, attn_mask, cache, i, rot)
        if cache is not None:
            cache.pos += idx.size(1) if store is None else store
        logits = self.lm_head(self.ln_f(x if last is None else x[:, -last:]))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), reduction="none")
        if loss_mask is None:
            return logits, loss.mean()
        m = loss_mask.view(-1).float()
        return logits, (loss * m).sum() / m.sum().clamp(min=1)

    def attn_mask(self, idx, doc_ids=None, groups=None, query=None, places=None, lane=None):
        """The attention mask of a row, built once and shared by every layer: the group mask in parallel mode,
        causal inside each document of a filled row, and the neighbourhood of each place with local
        attention; None (plain causal attention) with none of them. Dense (B, 1, T, T), or as tiles for long
        rows (`vistok.nn.attention.RowMask`) unless `self.fast` is off (the reference path)."""
        if groups is None and doc_ids is None and not self.cfg.neighbourhood:
            return None
        if doc_ids is None:
            doc_ids = torch.zeros_like(idx)  # one document
        rm = RowMask(doc_ids, groups, query, self.cfg.co_attend, places,
                     tuple(self.cfg.neighbourhood) if self.cfg.neighbourhood else None, lane)
        return rm.build() if self.fast else rm.dense()

    def _local(self, attn_mask, places, cache: KVCache | None):
        """A given mask (or, with a KV cache, the causal prefill mask) narrowed to each query's neighbourhood."""
        T = places.size(1)
        p = cache.pos if cache is not None else 0
        keys = places[..., 2:]
        if cache is not None:
            cache.places[:, p : p + T] = keys
            keys = cache.places[:, : p + T]
        if attn_mask is None:
            attn_mask = torch.ones(T, p + T, dtype=torch.bool, device=places.device).tril(diagonal=p)
        own = torch.arange(p + T, device=places.device)[None] == (p + torch.arange(T, device=places.device))[:, None]
        return attn_mask & (local_mask(places[..., :2], keys, *self.cfg.neighbourhood) | own)[:, None]

    def hidden(self, idx, coords, next_coords=None, doc_ids=None, groups=None, query=None,
               bidirectional: bool = False, places=None, lane=None) -> list[torch.Tensor]:
        """The residual stream after the embeddings (index 0) and after each block (1..n_layer): (B, T, C) each
        (features for probes: `vistok.train.probe`). `bidirectional`: every position sees its whole document
        (no causal, group or local mask; rows of tokens only), as RandSAC reads features for its probes. Gradients
        flow (fine-tuning trains through it); frozen features are read under `torch.no_grad()`."""
        x = self.embed(idx, coords, next_coords, query)
        if bidirectional:
            if groups is not None or doc_ids is None:
                raise ValueError("bidirectional features need rows of tokens with document ids")
            mask = (doc_ids[:, :, None] == doc_ids[:, None, :]).unsqueeze(1)
        else:
            mask = self.attn_mask(idx, doc_ids, groups, query, places, lane)
        rot = place_rotation(self.cfg, coords, next_coords, query)
        out = [x]
        for block in self.h:
            x = block(x, mask, rot=rot)
            out.append(x)
        return out

    def configure_optimizer(self, weight_decay: float, lr: float, betas=(0.9, 0.95), device_type: str = "cpu"):
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type == "cuda")

    def flops_per_token(self) -> float:
        """Training FLOPs per token (PaLM appendix B: 6N + 12 L H Q T)."""
        c = self.cfg
        return 6 * self.num_params() + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size

    @torch.no_grad()
    def generate(self, grammar, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator=None, use_cache: bool = True, stride: int = 0):
        """Sample token streams from BOS under a codec grammar; returns (B, 1 + n) tokens.

        `grammar` (`vistok.train.sample.BatchGrammar`: a stream grammar per sequence, in the run's order)
        masks tokens that would not decode (and forces a prompt's tokens), and gives each sampled token's
        coordinates and the next token's known coordinates, so the model sees exactly what it saw in
        training. A stream longer than the context is generated in the windows training and eval read it in
        (`stride` positions apart, 0 = block_size): target i attends to the inputs from `window_start(i)`.
        With `use_cache`, each step feeds one position through the KV cache (a new window refills it). With
        local attention, the grammar also gives each position's places (`start_places`, `places`).
        """
        dev = self.lm_head.weight.device
        B, T = grammar.batch, self.cfg.block_size
        toks = torch.full((B, 1), grammar.bos, dtype=torch.long, device=dev)
        crd = torch.zeros(B, 1, len(self.cfg.axis_sizes), dtype=torch.long, device=dev)
        nxt = grammar.start().to(dev)[:, None]
        plc = grammar.start_places().to(dev)[:, None] if self.cfg.neighbourhood else None
        cache, start, fed, base = None, -1, 0, 0  # base: the stream position of toks[:, 0]
        out = [toks]
        for _ in range(max_new_tokens):
            i = base + toks.size(1) - 1  # the target being generated: input i predicts it
            a = window_start(i, T, stride)
            if a > base:  # the window moved on: inputs before it are never read again (memory stays bounded)
                toks, crd, nxt = toks[:, a - base :], crd[:, a - base :], nxt[:, a - base :]
                plc = plc[:, a - base :] if plc is not None else None
                base = a
            if not use_cache:
                s = a
            elif cache is None or a != start:  # a new window: a fresh cache, refilled from its start
                cache = KVCache(self.cfg, B, min(T, 1 + max_new_tokens), dev, self.lm_head.weight.dtype)
                start = s = a
            else:
                s = fed
            w = s - base
            logits, _ = self(toks[:, w:], crd[:, w:], nxt[:, w:] if self.cfg.next_axes else None, cache=cache,
                             places=plc[:, w:] if plc is not None else None)
            fed = base + toks.size(1)
            tok = sample_token(grammar.mask(logits[:, -1, :].float()), temperature, top_k, top_p, generator)
            c, n = grammar.advance(tok.cpu())
            toks = torch.cat([toks, tok[:, None]], dim=1)
            crd = torch.cat([crd, c.to(dev)[:, None]], dim=1)
            nxt = torch.cat([nxt, n.to(dev)[:, None]], dim=1)
            if plc is not None:
                plc = torch.cat([plc, torch.from_numpy(grammar.places).to(dev)[:, None]], dim=1)
            out.append(tok[:, None])
            if grammar.finished():
                break
        return torch.cat(out, dim=1)


def window_start(i: int, block_size: int, stride: int = 0) -> int:
    """Where the window that scores target i starts, when a stream is read in windows of block_size
    positions every `stride` positions (0 = block_size; `vistok.train.data.windows`): the earliest window
    that holds input i, so 0 for i < block_size, else the smallest multiple of stride above i - block_size.
    A function of the position only, never of the tokens."""
    S = stride or block_size
    return 0 if i < block_size else ((i - block_size) // S + 1) * S


class GroupFeed:
    """The inputs of group-parallel decoding (`generate_groups`, `vistok compress`), step by step, in the windows
    training read the stream in (`vistok.tokenize.stream.group_windows`), for `lanes` streams whose plans
    cut alike.

    It keeps every token taken (`add`; per lane: token, coordinates + 1, place) and the group of each. `logits(window,
    i, g, places, units)` feeds the tokens not yet fed (at a window's start BOS and the window's context, the
    tokens [start, i); then the group before) and one query slot per place of group g, which starts at stream
    position i, and returns the query slots' logits (lanes, k, V). With `use_cache` the tokens stay in a KV
    cache for the rest of the window (query slots are read once, never cached); without it every step feeds
    the window's tokens again (the reference path)."""

    def __init__(self, model: GPT, bos: int, lanes: int = 1, use_cache: bool = True, cache_len: int = 0):
        self.model, self.bos_id, self.lanes, self.use_cache = model, bos, lanes, use_cache
        self.cache_len = cache_len or model.cfg.block_size  # positions a window's tokens take at most
        A = len(model.cfg.axis_sizes)
        self.toks: list[list[int]] = [[] for _ in range(lanes)]
        self.crds: list[list[np.ndarray]] = [[] for _ in range(lanes)]
        self.plcs: list[list[np.ndarray]] = [[] for _ in range(lanes)]
        self.grps: list[int] = []
        self.bos_crd, self.bos_plc = np.zeros(A, np.int64), np.full(2, -1, np.int64)  # BOS: no place
        self.window, self.cache, self.fed = None, None, 0

    def logits(self, window: tuple[int, int, int], i: int, g: int, places: list[np.ndarray],
               units: list[np.ndarray]) -> torch.Tensor:
        m = self.model
        dev = m.lm_head.weight.device
        if window != self.window or not self.use_cache:  # a new window: BOS and its context, from scratch
            self.window, self.fed = window, window[0]
            self.cache = KVCache(m.cfg, self.lanes, self.cache_len, dev, m.lm_head.weight.dtype) if self.use_cache else None
            bos = True
        else:
            bos = False
        a, k = self.fed, len(places[0])
        grps = ([-1] if bos else []) + self.grps[a:i]
        n = len(grps)
        toks = [([self.bos_id] if bos else []) + t[a:i] for t in self.toks]
        crds = [np.stack(([self.bos_crd] if bos else []) + c[a:i] + [p + 1 for p in q]) for c, q in zip(self.crds, places)]
        plcs = [np.stack(([self.bos_plc] if bos else []) + p[a:i] + list(u)) for p, u in zip(self.plcs, units)]
        idx = torch.tensor([t + [0] * k for t in toks], device=dev)
        crd = torch.from_numpy(np.stack(crds)).to(dev)
        grp = torch.tensor([grps + [g] * k], device=dev)
        query = torch.tensor([[0] * n + [1] * k], device=dev)
        mask = group_mask(torch.zeros_like(grp), grp, query, m.cfg.co_attend)[0]  # (n + k, n + k)
        if self.cache is not None:  # the cached tokens are all of earlier groups: every slot may see them
            mask = torch.cat([torch.ones(n + k, self.cache.pos, dtype=torch.bool, device=dev), mask], dim=1)
        plc = torch.from_numpy(np.stack(plcs)).to(dev).repeat(1, 1, 2) if m.cfg.neighbourhood else None
        logits, _ = m(idx, crd, torch.zeros_like(crd), query=query.expand(self.lanes, -1), cache=self.cache,
                      attn_mask=mask[None, None], store=n, last=k, places=plc)
        self.fed = i
        return logits

    def add(self, g: int, toks: list[list[int]], crds: list[list[np.ndarray]], places: list[np.ndarray]) -> None:
        """Group g's tokens as taken, per lane: tokens, their coordinates + 1, their places."""
        for lane in range(self.lanes):
            self.toks[lane] += [int(t) for t in toks[lane]]
            self.crds[lane] += list(crds[lane])
            self.plcs[lane] += [np.asarray(p, np.int64) for p in places[lane]]
        self.grps += [g] * len(toks[0])


@torch.no_grad()
def choose_group(feed: GroupFeed, grammar, window: tuple[int, int, int], i: int, g: int) -> None:
    """The next group of an order the model chooses (`grammar.plan.adaptive`, e.g. `--order confident`): the
    model's distribution at every place not yet known (one query slot each, after the same tokens as the group
    will see), over the tokens the grammar allows there, handed to the order's rule (`Order.choose`), which
    picks the group's places. A decoder computes the same from the tokens it has, so the order costs no bits."""
    coords, masks, units = grammar.candidates()
    dev = feed.model.lm_head.weight.device
    logits = feed.logits(window, i, g, [coords], [units])[0].float()
    logp = F.log_softmax(logits.masked_fill(~torch.from_numpy(masks).to(dev), float("-inf")), dim=-1)
    grammar.choose(grammar.plan.adaptive.choose(logp.double().cpu().numpy(), grammar.group_size()))


def generate_groups(model: GPT, grammar, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None, generator=None, use_cache: bool = True,
                    windows: Callable[[], list[tuple[int, int, int]]] | None = None,
                    forced: np.ndarray | None = None) -> tuple[list[int], int]:
    """Sample one token stream a group at a time (group-parallel models); returns (tokens, model steps).

    Each step feeds what the model has not seen yet and one query slot per place of the next group, and
    samples every token of the group at once from the query slots' logits (`GroupFeed`). `grammar` (a
    `vistok.tokenize.stream.StreamGrammar` with groups) gives each group's places and allowed tokens, and
    takes the sampled tokens back. `windows` (`group_windows` of the grammar's plan, asked again whenever the
    plan changes: a plan computed from the decoded DC image is completed midway): a stream longer than a
    row is generated in the windows training read it in. `forced`: a prompt's tokens in stream order; a
    group inside it is taken as it is (no model step), and a group it reaches into keeps its tokens there.
    """
    forced = np.zeros(0, np.int64) if forced is None else np.asarray(forced, np.int64)
    n = grammar.plan.cells.size
    feed = GroupFeed(model, grammar.bos, 1, use_cache, n + 1 if windows is None else 0)
    out, steps, seen, wins = [], 0, None, []
    dev = model.lm_head.weight.device
    while grammar.phase not in ("end", "done"):
        if grammar.plan is not seen:
            seen = grammar.plan
            wins = windows() if windows is not None else [(0, 0, n)]
        i = grammar.i
        g = int(seen.groups[i])
        if getattr(grammar.plan, "adaptive", None) is not None:  # the model chooses the places first (2 passes)
            choose_group(feed, grammar, next(w for w in wins if w[1] <= i < w[2]), i, g)
        places, masks = grammar.group()
        units = grammar.group_places()
        k = len(places)
        given = forced[i : i + k]
        if given.size == k:
            picked = given.tolist()
        else:
            window = next(w for w in wins if w[1] <= i < w[2])
            masks = masks.copy()
            for j, t in enumerate(given):  # the prompt's tokens where it reaches into the group
                if not masks[j, t]:
                    raise CodecError(f"the prompt's token {t} at position {i + j} is not allowed by the run's grammar")
                masks[j] = np.arange(masks.shape[1]) == t
            logits = feed.logits(window, i, g, [places], [units])[0].float()
            q = logits.masked_fill(~torch.from_numpy(masks).to(dev), float("-inf"))
            picked = sample_token(q, temperature, top_k, top_p, generator).tolist()
            steps += 1
        feed.add(g, [picked], [[grammar.step(int(t)) + 1 for t in picked]], [units])
        out += [int(t) for t in picked]
    return out, steps


def sample_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """(B, V) logits (invalid tokens already -inf) -> (B,) sampled ids."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        sp, si = probs.sort(dim=-1, descending=True)
        keep = sp.cumsum(-1) - sp < top_p  # smallest set whose mass reaches top_p (the first always kept)
        sp = sp * keep
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
        probs = probs / probs.sum(-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
