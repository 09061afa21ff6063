import numpy as np
import pytest

from vistok.errors import DatasetError, UsageError
from vistok.record import parse_key
from vistok.shards.reader import Dataset
from vistok.tokenize.base import BOS, EOS, PAD
from vistok.tokenize.orders import inverse, parse_order
from vistok.tokenize.stream import StreamSpec
from vistok.train.data import DataConfig, Loader, RowFiller, is_heldout, record_docs


def _doc(tokens, A=2):
    t = np.array(tokens)
    n = t.size - 1
    return {"idx": t[:-1], "targets": t[1:], "coords": np.ones((n, A), int), "next_coords": np.zeros((n, A), int),
            "loss_mask": np.ones(n, np.float32)}


def test_filling_rows_keeps_documents_apart_and_masks_padding():
    p = RowFiller(block_size=10, n_axes=2)
    docs = [_doc([BOS, 10, 11, EOS]), _doc([BOS, 20, 21, 22, EOS]), _doc([BOS, 30, 31, 32, 33, EOS])]
    rows = [r for d in docs for r in p.add(d)] + [p.flush()]
    first = rows[0]
    # row 1 = doc0 + doc1 (7 positions) + padding; doc2 (5 positions) does not fit and starts row 2
    assert list(first["idx"][:7]) == [BOS, 10, 11, BOS, 20, 21, 22]
    assert list(first["targets"][:7]) == [10, 11, EOS, 20, 21, 22, EOS]
    assert list(first["loss_mask"]) == [1] * 7 + [0] * 3  # nothing on padding
    assert (first["idx"][7:] == PAD).all() and list(first["doc_ids"]) == [0, 0, 0, 1, 1, 1, 1, -1, -1, -1]
    assert list(rows[1]["idx"][:5]) == [BOS, 30, 31, 32, 33]
    list(p.add(docs[0]))  # a partly filled row resumes exactly
    q = RowFiller(block_size=10, n_axes=2)
    q.load_state_dict(p.state_dict())
    for k in rows[0]:
        np.testing.assert_array_equal(q.row[k], p.row[k])


def test_long_records_are_cut_where_the_tokens_cannot_have_chosen(small_dataset):
    ds = Dataset(small_dataset)
    rec = max(ds, key=len)
    bs = len(rec) // 3
    docs = record_docs(ds.codec, rec, StreamSpec.parse("canonical", block_size=bs), np.random.default_rng(0)).docs
    # pieces of exactly the context's length (the last one shorter): a cut never depends on the content
    assert [d["idx"].size for d in docs[:-1]] == [bs] * (len(docs) - 1) and 0 < docs[-1]["idx"].size <= bs
    inputs = np.concatenate([d["idx"] for d in docs])
    targets = np.concatenate([d["targets"] for d in docs])
    np.testing.assert_array_equal(inputs, np.concatenate([[BOS], rec.tokens]))  # every prediction is kept
    np.testing.assert_array_equal(targets, np.concatenate([rec.tokens, [EOS]]))
    crop = record_docs(ds.codec, rec, StreamSpec.parse("canonical", block_size=bs), np.random.default_rng(0), long="crop").docs
    assert len(crop) == 1


def test_random_order_permutes_units_and_shows_only_known_places(small_dataset):
    ds = Dataset(small_dataset)
    rec = next(iter(ds))
    inp = ds.codec.layout(rec.meta).positions(rec)
    units = inp.units
    perm = parse_order("random")(inp, np.random.default_rng(5)).perm
    assert sorted(perm) == list(range(len(rec)))
    u = units[perm]
    assert (np.diff(u) != 0).sum() == len(np.unique(units)) - 1  # each unit's tokens stay contiguous
    np.testing.assert_array_equal(rec.tokens[perm][inverse(perm)], rec.tokens)
    (d,) = record_docs(ds.codec, rec, StreamSpec.parse("random", block_size=2048), np.random.default_rng(5)).docs
    # the place of the token to predict: its block, never its frequency (rle: content), none for EOS
    np.testing.assert_array_equal(d["next_coords"][:-1, :4], d["coords"][1:, :4])
    assert (d["next_coords"][:, 4] == 0).all() and (d["next_coords"][-1] == 0).all()


def test_heldout_split_by_input_key():
    keys = [f"photo{i}-{i:010x}" for i in range(2000)]
    held = [k for k in keys if is_heldout(k, 0.1)]
    assert 150 < len(held) < 250
    assert all(is_heldout(k + "_c003", 0.1) == is_heldout(k, 0.1) for k in keys[:50])
    assert parse_key("astronaut-0123456789_c007").input == "astronaut-0123456789"


def test_loader_is_deterministic_and_resumes(small_dataset):
    cfg = DataConfig(datasets=[str(small_dataset)], block_size=128, batch_size=4, num_workers=0, heldout=0.2,
                     order="random", shuffle_block=16)
    a = Loader(cfg)
    batches = [a.next() for _ in range(3)]
    state = a.state_dict()
    batches += [a.next() for _ in range(3)]
    b = Loader(cfg)
    b.load_state_dict(state)
    for want in batches[3:]:
        got = b.next()
        for k in want:
            assert (got[k] == want[k]).all(), k


def _batch_documents(batch) -> list[bytes]:
    """The token streams (between BOS and EOS) of the documents in a batch of filled rows."""
    out = []
    for idx, tgt, doc in zip(batch["idx"].numpy(), batch["targets"].numpy(), batch["doc_ids"].numpy()):
        for j in np.unique(doc[doc >= 0]):
            at = np.flatnonzero(doc == j)
            toks = np.append(idx[at], tgt[at[-1]])
            assert toks[0] == BOS and toks[-1] == EOS  # whole documents: the records fit in a row here
            out.append(toks[1:-1].astype(np.uint16).tobytes())
    return out


def test_heldout_records_never_reach_training_batches(small_dataset):
    recs = list(Dataset(small_dataset))
    train_set = {r.tokens.tobytes() for r in recs if not is_heldout(r.key, 0.3)}
    held = {r.tokens.tobytes() for r in recs if is_heldout(r.key, 0.3)} - train_set  # (flat crops can coincide)
    assert len(held) > 5 and train_set
    cfg = DataConfig(datasets=[str(small_dataset)], block_size=512, batch_size=4, num_workers=0, heldout=0.3,
                     order="canonical", shuffle_block=16)
    loader, seen = Loader(cfg), set()
    for _ in range(3 * len(recs) // 4):  # about three epochs of rows holding a few records each
        seen.update(_batch_documents(loader.next()))
    assert not seen & held
    assert seen == train_set  # every training record was seen: the check above could have failed


ALL_ORDERS = ["canonical", "raster", "column", "snake", "zorder", "hilbert", "spiral", "zigzag", "random",
              "randsac:11", "randsac:4,2"]


@pytest.mark.parametrize("order", ALL_ORDERS)
def test_every_order_builds_training_documents(small_dataset, order):
    ds = Dataset(small_dataset)
    for rec in list(ds)[:5]:
        (d,) = record_docs(ds.codec, rec, StreamSpec.parse(order, block_size=4096), np.random.default_rng(0)).docs
        assert d["idx"][0] == BOS and d["targets"][-1] == EOS
        assert sorted(d["idx"][1:].tolist()) == sorted(rec.tokens.tolist())
        assert (d["coords"][1:] > 0).all() and (d["coords"][0] == 0).all()


def test_an_order_the_layout_cannot_decode_is_refused_before_training(small_dataset):
    cfg = DataConfig(datasets=[str(small_dataset)], order="freq-major", num_workers=0)
    with pytest.raises(UsageError, match="--layout dense"):
        Loader(cfg)
    with pytest.raises(UsageError, match="variable-length"):
        Loader(DataConfig(datasets=[str(small_dataset)], order="randsac:4", parallel="segments", num_workers=0))


def test_store_epochs_are_uniform_permutations(small_dataset, tmp_path):
    from vistok.pipelines.pack import pack
    from vistok.shards.store import PackedStore
    from vistok.train.sampling import StoreOrder

    st = PackedStore(pack(small_dataset, tmp_path / "d.zarr"))
    order = StoreOrder(st, 0.2, seed=3)
    train = {i for i, k in enumerate(st.keys()) if not is_heldout(k, 0.2)}
    first = [order.at(i)[1] for i in range(order.n)]
    second = [order.at(order.n + i)[1] for i in range(order.n)]
    assert sorted(first) == sorted(second) == sorted(train)  # each epoch is every training record once
    assert first != second and order.at(order.n)[0] == 1  # a new order every epoch


def test_weighted_mixing_of_two_datasets(small_dataset, tmp_path):
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.tokenize import JpegCodec
    from vistok.train.data import open_datasets
    from vistok.train.sampling import open_order

    other = run_job(["sample"], tmp_path / "b", JpegCodec(quality=20), Preprocess(size=16, crops=4), shard_size=16,
                    executor="local", quiet=True).folder
    cfg = DataConfig(datasets=[str(small_dataset), str(other)], weights=[3.0, 1.0], block_size=64, batch_size=2,
                     num_workers=0, heldout=0.0)
    order = open_order(open_datasets(cfg.datasets)[0], 0.0, 0, 64, cfg.weights)
    picks = [order.locate(p)[0] for p in range(4000)]
    assert picks.count(0) / len(picks) == pytest.approx(0.75, abs=0.002)  # 3:1, by a seeded pattern
    assert picks[:1024] != sorted(picks[:1024])  # interleaved, not one dataset after the other
    bad = DataConfig(datasets=[str(small_dataset)], block_size=64)
    bad.datasets.append(str(tmp_path / "missing"))
    with pytest.raises(DatasetError):
        Loader(bad)
