"""Attention by tiles and by place (`vistok.nn.attention`): the tiles hold every visible key and give the
dense path's logits and gradients; local attention hides exactly what lies outside a place's neighbourhood."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention.bias import CausalBias

from vistok.nn import attention
from vistok.nn.attention import RowMask, SparseMask, local_mask, parse_attention
from vistok.nn.gpt import GPT, GPTConfig, group_mask


def _doc_ids(rng, B, T):
    out = np.full((B, T), -1)
    for b in range(B):
        t, d = 0, 0
        while t < T - 3:
            n = int(rng.integers(1, T // 2))
            out[b, t : t + n] = d
            t, d = t + n, d + 1
        out[b, T - int(rng.integers(0, 4)) :] = -1  # padding at the end of some rows
    return torch.from_numpy(out)


def _parallel(rng, B, n):
    """Rows of one parallel document each: BOS, n tokens in groups, n queries, padding."""
    T = 2 * n + 4
    groups = np.full((B, T), -1)
    query = np.zeros((B, T), dtype=np.int64)
    docs = np.full((B, T), -1)
    for b in range(B):
        g = np.sort(rng.integers(0, max(1, n // 3), n))
        groups[b, 1 : n + 1], groups[b, n + 1 : 2 * n + 1] = g, g
        query[b, n + 1 : 2 * n + 1] = 1
        docs[b, : 2 * n + 1] = 0
    return torch.from_numpy(docs), torch.from_numpy(groups), torch.from_numpy(query)


def _places(rng, B, T, raster: bool, rows_of: int = 6, frames: int = 1):
    """(B, T, 4) places: raster (rows of `rows_of` positions, frame after frame) or shuffled, some -1."""
    per = T // frames
    unit = np.arange(T) % per
    fr, row = np.arange(T) // per, unit // rows_of
    pl = np.stack([fr, row], 1)
    out = []
    for _ in range(B):
        k = pl if raster else pl[rng.permutation(T)]
        q = np.roll(k, -1, axis=0)  # a query's place: the next token's
        both = np.concatenate([q, k], 1)
        both[rng.random(T) < 0.05] = -1  # specials
        out.append(both)
    return torch.from_numpy(np.stack(out))


def _assemble(sm: SparseMask, B: int, T: int) -> torch.Tensor:
    """The mask the tiles apply, as one (B, T, T) matrix (False outside every tile)."""
    out = torch.zeros(B, T, T, dtype=torch.bool)
    for b, q0, q1, k0, k1, tile in sm.ranges:
        if tile is None:
            out[b, q0:q1, k0:k1] = True
        elif isinstance(tile, CausalBias):  # lower-right causal (a tensor subclass: test it first)
            out[b, q0:q1, k0:k1] = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool).tril(k1 - k0 - (q1 - q0))
        else:
            out[b, q0:q1, k0:k1] = tile[0, 0]
    return out


def test_the_row_mask_is_the_document_mask_and_the_group_mask_element_for_element():
    rng = np.random.default_rng(0)
    docs = _doc_ids(rng, 3, 50)
    dense = RowMask(docs).dense()[:, 0]
    causal = torch.ones(50, 50, dtype=torch.bool).tril()
    assert torch.equal(dense, causal & (docs[:, :, None] == docs[:, None, :]))
    docs, groups, query = _parallel(rng, 3, 20)
    for co in (False, True):
        assert torch.equal(RowMask(docs, groups, query, co).dense()[:, 0], group_mask(docs, groups, query, co))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), raster=st.booleans(), mode=st.sampled_from(["tokens", "parallel"]),
       rows=st.integers(0, 3), frames=st.integers(1, 3), block=st.sampled_from([7, 16, 40]))
def test_tiles_hold_every_visible_key_and_nothing_else(seed, raster, mode, rows, frames, block):
    """Reassembled, the tiles are the dense mask: no visible key is left out of its tile's range (the
    summaries that pick ranges are conservative), none hidden is let in; with and without local attention."""
    rng = np.random.default_rng(seed)
    if mode == "tokens":
        docs, groups, query = _doc_ids(rng, 2, 90), None, None
    else:
        docs, groups, query = _parallel(rng, 2, 43)
    T = docs.size(1)
    for local in (None, (rows, 1)):
        rm = RowMask(docs, groups, query, mode == "parallel", _places(rng, 2, T, raster, frames=frames), local)
        dense = rm.dense()[:, 0]
        assert torch.equal(_assemble(rm.sparse(block), 2, T), dense)
        assert dense.any(-1).all()  # every position sees something (itself): no empty softmax


def _tiny(local=(), n_layer=2, query_slots=False, co_attend=False):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50, axis_sizes=[8, 8], block_size=256, n_layer=n_layer, n_head=2, n_embd=32,
                    query_slots=query_slots, co_attend=co_attend, neighbourhood=list(local))
    return GPT(cfg)


@pytest.mark.parametrize("mode", ["tokens", "parallel", "local"])
def test_the_tile_path_gives_the_dense_paths_logits_and_gradients(mode, monkeypatch):
    monkeypatch.setattr(attention, "SPARSE_FROM", 32)  # rows this short take tiles too (the test stays small)
    monkeypatch.setattr(attention, "BLOCK", 16)
    rng = np.random.default_rng(1)
    if mode == "parallel":
        docs, groups, query = _parallel(rng, 2, 40)
        model = _tiny(query_slots=True, co_attend=True)
    else:
        docs, groups, query = _doc_ids(rng, 2, 84), None, None
        model = _tiny(local=(1, 1) if mode == "local" else ())
    B, T = docs.shape
    idx = torch.from_numpy(rng.integers(0, 50, (B, T)))
    coords = torch.from_numpy(rng.integers(0, 8, (B, T, 2)))
    places = _places(rng, B, T, raster=True, rows_of=10) if mode == "local" else None
    kw = dict(doc_ids=docs, groups=groups, query=query, places=places, targets=idx)
    sparse = model.attn_mask(idx, docs, groups, query, places)
    assert isinstance(sparse, SparseMask)  # the fast path runs
    assert mode == "parallel" or sparse.kept < 0.8  # and skips work (a parallel row's queries need most of it)
    out = {}
    for fast in (True, False):
        model.fast = fast
        model.zero_grad()
        logits, loss = model(idx, coords, **kw)
        loss.backward()
        out[fast] = logits, [p.grad.clone() for p in model.parameters()]
    torch.testing.assert_close(out[True][0], out[False][0], atol=1e-5, rtol=1e-4)
    for a, b in zip(out[True][1], out[False][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_local_attention_sees_its_neighbourhood_only():
    """One layer: a logit changes when a token in its neighbourhood changes, never for a token outside it
    or a later one. Deeper, the neighbourhoods compose: a token reaches a logit only through L hops."""
    rng = np.random.default_rng(2)
    T, R = 60, 1
    places = _places(rng, 1, T, raster=True, rows_of=6)
    places[0, 0] = -1  # BOS
    docs = torch.zeros(1, T, dtype=torch.long)
    idx = torch.from_numpy(rng.integers(0, 50, (1, T)))
    coords = torch.from_numpy(rng.integers(0, 8, (1, T, 2)))
    sees = (RowMask(docs, places=places, neighbourhood=(R, 1)).dense()[0, 0]).float()
    for L in (1, 2):
        model = _tiny(local=(R, 1), n_layer=L).eval()
        reach = torch.linalg.matrix_power(sees, L) > 0  # what can reach each logit through L layers
        assert not reach.all()  # the neighbourhood leaves something out
        base, _ = model(idx, coords, places=places)
        for j in (3, 20, 41):
            other = idx.clone()
            other[0, j] = (other[0, j] + 1) % 50
            moved, _ = model(other, coords, places=places)
            changed = (moved - base).abs().amax(-1)[0] > 1e-6
            assert torch.equal(changed, reach[:, j]), (L, j)  # exactly the positions it can reach


def test_local_mask_rule():
    q = torch.tensor([[[1, 5]]])  # frame 1, row 5
    keys = torch.tensor([[[1, 2], [1, 3], [1, 5], [1, 6], [0, 3], [0, 7], [0, 8], [-1, -1], [2, 5]]])
    m = local_mask(q, keys, 2, 1)[0, 0].tolist()
    # rows 3..5 of its own frame; rows 3..7 of the frame before; never a later frame, nor a key without a place
    assert m == [False, True, True, False, True, True, False, False, False]
    assert local_mask(torch.tensor([[[-1, -1]]]), keys, 2, 1).all()  # a query without a place sees every key
    assert parse_attention("full") == [] and parse_attention("local:3") == [3, 1] and parse_attention("local:2,4") == [2, 4]
    for bad in ("local", "local:x", "near:2", "local:1,2,3", "local:-1"):
        with pytest.raises(ValueError, match="--attention"):
            parse_attention(bad)
