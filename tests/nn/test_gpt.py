import torch

from vistok.nn.gpt import GPT, PRESETS, GPTConfig


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
