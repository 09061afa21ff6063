"""`--parallel masked:R`: the fixed-ratio masked baseline (MAE/BEiT-like) isolates what it predicts."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vistok.errors import UsageError
from vistok.nn.gpt import GPT, GPTConfig, group_mask
from vistok.record import TokenRecord
from vistok.tokenize import PixelCodec
from vistok.tokenize.base import BOS, PAD
from vistok.tokenize.parallel import parse_mode
from vistok.tokenize.stream import StreamSpec
from vistok.train.data import record_docs


def _record(seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return PixelCodec(unit=4).encode(img, "k")


def _doc(rec, seed=0, ratio="0.75"):
    codec = PixelCodec(unit=4)
    (doc,) = record_docs(codec, rec, StreamSpec.parse("random", f"masked:{ratio}", block_size=800), np.random.default_rng(seed)).docs
    return doc


def test_a_masked_row_holds_the_visible_tokens_and_a_query_per_masked_token():
    rec = _record()
    doc = _doc(rec)
    q = doc["query"].astype(bool)
    assert q.sum() == 12 * 48 and (~q).sum() == 1 + 4 * 48  # 12 of 16 units masked (48 values a unit)
    assert doc["idx"][0] == BOS and (doc["idx"][q] == PAD).all() and (doc["targets"][~q] == PAD).all()
    assert (doc["loss_mask"] == q).all()  # scored on the masked units only
    # the row does not depend on the masked values at all: change them, and only the targets change
    masked_values = set(doc["targets"][q].tolist())
    other = TokenRecord(rec.key, rec.tokens.copy(), rec.meta)
    codec = PixelCodec(unit=4)
    assert masked_values
    positions = codec.layout(rec.meta).positions(rec)
    vis_places = {tuple(c) for c in (doc["coords"][1 : 1 + 4 * 48, 1:] - 1).tolist()}  # (coordinates shift by 1)
    for i, c in enumerate(positions.coords[:, 1:].tolist()):
        if tuple(c) not in vis_places:
            other.tokens[i] = 4 + (int(other.tokens[i]) - 4 + 101) % 256
    changed = _doc(other)
    for k in doc:
        if k != "targets":
            np.testing.assert_array_equal(changed[k], doc[k], err_msg=k)
    assert not np.array_equal(changed["targets"], doc["targets"])


@pytest.mark.parametrize("co_attend", [False, True])
def test_queries_see_only_the_visible_tokens_which_see_each_other_both_ways(co_attend):
    doc = _doc(_record(1), ratio="0.5")
    t = lambda k: torch.from_numpy(np.asarray(doc[k]))[None]  # noqa: E731
    groups, query = t("groups"), t("query")
    m = group_mask(torch.zeros_like(groups), groups, query, co_attend)[0]
    q = query[0].bool()
    vis = ~q & (groups[0] == 0)
    assert m[vis][:, vis].all()  # every visible token sees every other: both ways
    assert m[q][:, vis].all() and m[q][:, 0].all()  # a query sees BOS and every visible token ...
    assert m[q][:, q].equal(torch.ones_like(m[q][:, q]) if co_attend else torch.eye(int(q.sum()), dtype=torch.bool))
    assert not m[~q][:, q].any()  # ... and no token sees a query
    # through every layer: a visible token reaches every query and every other visible token
    cfg = GPTConfig(vocab_size=300, axis_sizes=[2, 17, 17, 4], block_size=800, n_layer=2, n_head=2, n_embd=32,
                    query_slots=True, co_attend=co_attend)
    model = GPT(cfg).eval()
    kw = dict(groups=groups, query=query, doc_ids=torch.zeros_like(groups))
    crd = t("coords")
    base, _ = model(t("idx"), crd, torch.zeros_like(crd), **kw)
    changed = t("idx").clone()
    changed[0, 1] = 4 + (int(changed[0, 1]) + 50) % 256
    out, _ = model(changed, crd, torch.zeros_like(crd), **kw)
    differs = ~torch.isclose(out[0], base[0]).all(dim=-1)
    assert differs[q].all() and differs[vis].all()


def _vistok(*args, ok=True):
    proc = subprocess.run([sys.executable, "-m", "vistok.cli", *map(str, args)], capture_output=True, text=True)
    assert (proc.returncode == 0) == ok, proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_a_masked_run_trains_is_scored_on_its_masked_part_and_refuses_to_generate(tmp_path):
    ds, run = tmp_path / "ds", tmp_path / "run"
    _vistok("shard", "sample", "--codec", "pixels", "--unit", "4", "--size", "16", "--crops", "1", "--out", ds,
            "--executor", "local", "-q")
    _vistok("train", ds, "--out", run, "--parallel", "masked:0.75", "--block-size", "800", "--batch-size", "2",
            "--max-steps", "3", "--eval-every", "0", "--workers", "0", "-q")
    ev = json.loads(_vistok("eval", run, "--json").stdout)
    assert ev["order"] == "random" and ev["masked_tokens_per_image"] == 12 * 48
    assert ev["masked_bits_per_token"] > 0 and "bits_per_image" not in ev  # no bits per image are claimed
    err = _vistok("sample", run, "--n", "1", "--out", tmp_path / "s.png", ok=False).stderr
    assert "predicts the masked units" in err and "Traceback" not in err
    from vistok.train.compress import Coder

    with pytest.raises(UsageError, match="cannot code a whole image"):
        Coder.load(run)
    for bad in ("masked:0", "masked:1", "masked:x"):
        with pytest.raises(UsageError, match="0 < R < 1"):
            parse_mode(bad)
    with pytest.raises(UsageError, match="use --order random"):
        record_docs(PixelCodec(unit=4), _record(), StreamSpec.parse("hilbert", "masked:0.5", block_size=800), np.random.default_rng(0))
