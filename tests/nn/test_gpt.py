import numpy as np
import pytest
import torch

from vistok.nn.gpt import GPT, PRESETS, GPTConfig, KVCache


def _model(next_axes=(0, 1)):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, axis_sizes=[5, 9, 7], next_axes=list(next_axes), block_size=32, n_layer=2,
                         n_head=2, n_embd=32)).eval()


def test_kv_cache_logits_match_the_uncached_forward():
    m = _model()
    B, T = 3, 20
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 50, (B, T), generator=g)
    crd = torch.stack([torch.randint(0, n, (B, T), generator=g) for n in (5, 9, 7)], -1)
    nxt = torch.stack([torch.randint(0, n, (B, T), generator=g) for n in (5, 9, 7)], -1)
    full, _ = m(idx, crd, nxt)
    from vistok.nn.gpt import KVCache

    cache = KVCache(m.cfg, B, T, "cpu", torch.float32)
    parts = [m(idx[:, :7], crd[:, :7], nxt[:, :7], cache=cache)[0]]  # prefill
    for t in range(7, T):  # then one position at a time
        parts.append(m(idx[:, t : t + 1], crd[:, t : t + 1], nxt[:, t : t + 1], cache=cache)[0])
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_doc_mask_isolates_packed_samples():
    m = _model(next_axes=())
    g = torch.Generator().manual_seed(2)
    a = torch.randint(0, 50, (1, 10), generator=g)
    b = torch.randint(0, 50, (1, 12), generator=g)
    ca = torch.ones(1, 10, 3, dtype=torch.long)
    cb = torch.ones(1, 12, 3, dtype=torch.long)
    packed = torch.cat([a, b], 1)
    doc = torch.tensor([[0] * 10 + [1] * 12])
    lp, _ = m(packed, torch.cat([ca, cb], 1), doc_ids=doc)
    lb, _ = m(b, cb)
    torch.testing.assert_close(lp[:, 10:], lb, atol=1e-5, rtol=1e-5)


def test_presets_have_the_advertised_sizes():
    sizes = {}
    for name, p in PRESETS.items():
        cfg = GPTConfig(vocab_size=2726, axis_sizes=[3, 7, 19, 19, 131], next_axes=[0, 1, 2, 3], **p)
        with torch.device("meta"):
            sizes[name] = GPT(cfg).num_params()
    assert 0.5e6 < sizes["tiny"] < 2e6
    assert 5e6 < sizes["small"] < 20e6
    assert 60e6 < sizes["base"] < 150e6
    assert sizes["small-8k"] == sizes["small"] and sizes["base-8k"] == sizes["base"]  # places, not indices
    assert PRESETS["small-8k"]["block_size"] == PRESETS["base-8k"]["block_size"] == 8192


def test_checkpointed_activations_give_the_same_loss_and_gradients():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=60, axis_sizes=[5, 9, 7], next_axes=[1, 2], rope_axes=[1, 2], block_size=64,
                    n_layer=3, n_head=2, n_embd=32)
    idx, crd = torch.randint(0, 60, (2, 64)), torch.randint(0, 5, (2, 64, 3))
    doc = (torch.arange(64) >= 40).long().expand(2, -1)
    out = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        model = GPT(cfg).train()
        model.checkpoint = ckpt
        _, loss = model(idx, crd, crd, targets=idx.roll(-1, 1), doc_ids=doc)
        loss.backward()
        out.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(out[0][0], out[1][0])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out[0][1], out[1][1]))


def test_the_kv_cache_holds_an_8k_context_on_the_cpu():
    """An 8,192-position stream fed through the cache in chunks gives the logits of one uncached pass."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=40, axis_sizes=[5, 9], next_axes=[1], block_size=8192, n_layer=2, n_head=2, n_embd=16)
    model = GPT(cfg).eval()
    idx, crd = torch.randint(0, 40, (1, 8192)), torch.randint(0, 5, (1, 8192, 2))
    with torch.no_grad():
        full, _ = model(idx, crd, crd)
        cache = KVCache(cfg, 1, 8192, "cpu", torch.float32)
        parts = [model(idx[:, a : a + 2048], crd[:, a : a + 2048], crd[:, a : a + 2048], cache=cache)[0]
                 for a in range(0, 8192, 2048)]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-4)


def _parallel_doc(groups, vocab=50, seed=0):
    """A `[BOS] tokens | queries` row for tokens in `groups` (non-decreasing), random tokens and places."""
    g = torch.Generator().manual_seed(seed)
    k = len(groups)
    toks = torch.randint(4, vocab, (k,), generator=g)
    places = torch.stack([torch.randint(1, n, (k,), generator=g) for n in (5, 9, 7)], -1)
    idx = torch.cat([torch.tensor([1]), toks, torch.zeros(k, dtype=torch.long)])[None]
    crd = torch.cat([torch.zeros(1, 3, dtype=torch.long), places, places])[None]
    grp = torch.tensor([-1] + groups + groups)[None]
    query = torch.tensor([0] * (k + 1) + [1] * k)[None]
    return idx, crd, grp, query


def _parallel_model(co_attend=False):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, axis_sizes=[5, 9, 7], block_size=64, n_layer=2, n_head=2, n_embd=32,
                         query_slots=True, co_attend=co_attend)).eval()


@pytest.mark.parametrize("co_attend", [False, True])
def test_group_mask_a_query_never_sees_a_token_of_its_own_group_or_later(co_attend):
    from vistok.nn.gpt import group_mask

    groups = [0, 0, 1, 1, 1, 2]
    idx, crd, grp, query = _parallel_doc(groups)
    m = group_mask(torch.zeros_like(grp), grp, query, co_attend)[0]
    k = len(groups)
    for i in range(k):  # query slot of token i
        qi = 1 + k + i
        for j in range(k):
            assert bool(m[qi, 1 + j]) == (groups[j] < groups[i])  # tokens of earlier groups only
            # queries: itself, and with co-attention the other places of its group (never an earlier or later one)
            assert bool(m[qi, 1 + k + j]) == (i == j or (co_attend and groups[i] == groups[j]))
            assert not m[1 + j, 1 + k + i]  # a token never sees a query
        assert m[qi, 0]  # BOS
    # and through every layer: changing a token of group g changes no query logit of groups <= g
    model = _parallel_model(co_attend)
    base, _ = model(idx, crd, torch.zeros_like(crd), groups=grp, query=query, doc_ids=torch.zeros_like(grp))
    for j, gj in enumerate(groups):
        changed = idx.clone()
        changed[0, 1 + j] = 4 + (int(idx[0, 1 + j]) - 3) % 46
        out, _ = model(changed, crd, torch.zeros_like(crd), groups=grp, query=query, doc_ids=torch.zeros_like(grp))
        for i, gi in enumerate(groups):
            same = torch.allclose(out[0, 1 + k + i], base[0, 1 + k + i])
            assert same == (gi <= gj), (j, i)  # later groups do see it (the check could fail)


class _Groups:
    """A grammar stand-in: fixed groups of places over a 3-axis grid, any token allowed."""

    bos = 1

    def __init__(self, sizes, vocab=50):
        self.sizes, self.vocab, self.g, self.taken = sizes, vocab, 0, []
        self.plan = type("P", (), {"cells": np.arange(sum(sizes)), "groups": np.repeat(np.arange(len(sizes)), sizes)})

    @property
    def i(self):
        return len(self.taken)

    def group_places(self):
        return np.full((self.sizes[self.g], 2), -1)

    @property
    def phase(self):
        return "end" if self.g >= len(self.sizes) else "cells"

    def group(self):
        k = self.sizes[self.g]
        places = np.stack([np.arange(k) % 4, (np.arange(k) + self.g) % 8, np.full(k, self.g % 6)], 1)
        return places, np.ones((k, self.vocab), bool)

    def step(self, tok):
        self.taken.append(tok)
        if len(self.taken) == sum(self.sizes[: self.g + 1]):
            self.g += 1
        return np.array([1, 2, 3])


@pytest.mark.parametrize("co_attend", [False, True])
def test_co_attending_queries_see_the_places_of_their_group(co_attend):
    """Moving one query's place changes the other queries of its group only with co-attention, and never a
    query of an earlier group."""
    groups = [0, 0, 1, 1, 1, 2]
    idx, crd, grp, query = _parallel_doc(groups)
    model = _parallel_model(co_attend)
    kw = dict(groups=grp, query=query, doc_ids=torch.zeros_like(grp))
    base, _ = model(idx, crd, torch.zeros_like(crd), **kw)
    k, moved = len(groups), 3  # the query of token 3, in group 1
    crd2 = crd.clone()
    crd2[0, 1 + k + moved, 2] = 1 + (int(crd[0, 1 + k + moved, 2]) % 6)
    out, _ = model(idx, crd2, torch.zeros_like(crd2), **kw)
    for i, gi in enumerate(groups):
        if i == moved:
            continue
        same = torch.allclose(out[0, 1 + k + i], base[0, 1 + k + i])
        assert same == (not co_attend or gi != groups[moved]), i


@pytest.mark.parametrize("co_attend", [False, True])
def test_group_generation_takes_one_step_per_group_and_the_cache_changes_nothing(co_attend):
    from vistok.nn.gpt import generate_groups

    model = _parallel_model(co_attend)
    runs = []
    for cache in (True, False):
        gen = torch.Generator().manual_seed(3)
        toks, steps = generate_groups(model, _Groups([1, 4, 16, 9]), temperature=1.0, generator=gen, use_cache=cache)
        assert steps == 4 and len(toks) == 30
        runs.append(toks)
    assert runs[0] == runs[1]


def test_rotated_places_keep_the_autocast_dtype():
    """Under bf16 autocast the rotation keeps queries and keys in bf16 (no silent float32 copies)."""
    from vistok.nn.gpt import place_rotation, rotate

    cfg = GPTConfig(vocab_size=100, axis_sizes=[8] * 5, next_axes=[0, 1, 2, 3], rope_axes=[1, 2, 3], n_layer=1,
                    n_head=2, n_embd=32, block_size=16)
    c = torch.randint(0, 8, (2, 16, 5))
    (qc, qs), _ = place_rotation(cfg, c, c)
    x = torch.randn(2, 2, 16, 16, dtype=torch.bfloat16)
    assert rotate(x, qc, qs).dtype == torch.bfloat16
    same = place_rotation(cfg, c, c)  # a query and a key at one place: rotated alike, so their product is kept
    q = k = torch.randn(2, 2, 16, 16)
    a = (rotate(q, *same[0]) * rotate(k, *same[0])).sum(-1)
    assert torch.allclose(a, (q * k).sum(-1), atol=1e-5)
    model = GPT(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(torch.randint(0, 100, (2, 16)), c, c, targets=torch.randint(0, 100, (2, 16)))
    assert torch.isfinite(loss)


def test_a_checkpoint_from_before_the_rename_loads_its_query_slots():
    """`query_slots` was `parallel` (a bool here, a mode's name in DataConfig): old runs' configs still load."""
    old = {**GPTConfig().to_json(), "parallel": True}
    del old["query_slots"]
    cfg = GPTConfig.from_json(old)
    assert cfg.query_slots and GPT(cfg).query_emb is not None
    assert GPTConfig.from_json(cfg.to_json()) == cfg
