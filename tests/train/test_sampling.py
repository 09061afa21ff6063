"""The global sample order: the same batches for any loader workers and ranks, resumed from a position."""

import json
import tarfile

import pytest
import torch

from vistok.errors import DamagedShard, UsageError
from vistok.shards.index import CRC, index_folder
from vistok.shards.reader import Dataset
from vistok.train import sampling
from vistok.train.data import DataConfig, Loader, Rows, merge_states


def _cfg(ds, **kw):
    return DataConfig(**{"datasets": [str(ds)], "block_size": 96, "batch_size": 4, "num_workers": 0, "heldout": 0.2,
                         "order": "random", "shuffle_block": 24, **kw})


def _batches(loader, n):
    return [loader.next() for _ in range(n)]


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def plain_dataset(tmp_path_factory):
    """Uncompressed shards (the default of `vistok shard`): records read by ranged reads."""
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.tokenize import JpegCodec

    out = tmp_path_factory.mktemp("sampling") / "ds"
    run_job(["sample"], out, JpegCodec(quality=20), Preprocess(size=32, crops=4, seed=0), shard_size=16,
            executor="local", quiet=True)
    return out


@pytest.mark.slow
def test_the_same_batches_for_any_workers_and_ranks(plain_dataset):
    want = _batches(Loader(_cfg(plain_dataset)), 8)
    for workers in (1, 2, 3):
        for got, w in zip(_batches(Loader(_cfg(plain_dataset, num_workers=workers)), 8), want):
            _same(got, w)
    ranks = [Loader(_cfg(plain_dataset, batch_size=2), rank=r, world=2) for r in range(2)]
    for w in want:  # two ranks of 2 rows: the halves of the one-rank batch of 4
        parts = [r.next() for r in ranks]
        _same({k: torch.cat([p[k] for p in parts]) for k in w}, w)


@pytest.mark.slow
@pytest.mark.parametrize("packed", [False, True])
def test_a_resume_changing_workers_and_ranks_sees_the_uninterrupted_rows(plain_dataset, tmp_path, packed):
    ds = plain_dataset
    if packed:
        from vistok.pipelines.pack import pack

        ds = pack(plain_dataset, tmp_path / "d.zarr")
    full = _batches(Loader(_cfg(ds)), 41)
    first = Loader(_cfg(ds, num_workers=2))
    _batches(first, 30)
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint keeps it
    resumed = Loader(_cfg(ds, num_workers=3))
    resumed.load_state_dict(state)
    for got, w in zip(_batches(resumed, 10), full[30:40]):
        _same(got, w)
    ranks = [Loader(_cfg(ds, batch_size=2, num_workers=1), rank=r, world=2) for r in range(2)]
    for r in ranks:  # a one-rank checkpoint resumed by two ranks
        r.load_state_dict(merge_states([state]))
    for w in full[30:40]:
        parts = [r.next() for r in ranks]
        _same({k: torch.cat([p[k] for p in parts]) for k in w}, w)
    back = Loader(_cfg(ds))  # ... and two ranks' states resumed by one
    back.load_state_dict(merge_states([r.state_dict() for r in ranks]))
    _same(back.next(), full[40])


def test_resuming_far_into_the_order_reads_one_prefetch_per_lane(plain_dataset, monkeypatch):
    """The first batch after a resume at row 20,000 reads what a fresh start reads: nothing is replayed."""
    fresh = Loader(_cfg(plain_dataset))
    reads = []
    real = sampling.GlobalOrder.fetch
    monkeypatch.setattr(sampling.GlobalOrder, "fetch", lambda self, ps: reads.append(len(ps)) or real(self, ps))
    fresh.next()
    at_start = sum(reads)
    far = Loader(_cfg(plain_dataset))
    state = {**fresh.state_dict(), "batches": 5000, "starts": {str(lane): [5000, 0] for lane in range(4)}}
    far.load_state_dict(state)  # lane l at its record 5,000: row ~20,000 of the global order
    reads.clear()
    batch = far.next()
    assert sum(reads) == at_start == 4 * sampling.PREFETCH
    assert batch["idx"].shape == (4, 96)


def test_rows_resume_mid_batch_like_the_loader(plain_dataset):
    cfg = _cfg(plain_dataset)
    want = [r for b in _batches(Loader(cfg), 4) for r in (dict(zip(b, v)) for v in zip(*b.values()))]
    rows = Rows(cfg)
    it = iter(rows)
    got = [next(it) for _ in range(7)]  # into the second batch
    again = Rows(cfg)
    again.load_state_dict(json.loads(json.dumps(rows.state_dict())))
    it2 = iter(again)
    got += [next(it2) for _ in range(9)]
    for g, w in zip(got, want, strict=True):
        _same(g, w)


def test_a_changed_dataset_or_batch_is_refused_on_resume(plain_dataset, small_dataset):
    state = Loader(_cfg(plain_dataset)).state_dict()
    other = Loader(_cfg(small_dataset))
    with pytest.raises(UsageError, match="changed since the checkpoint: config_hash"):
        other.load_state_dict(state)
    fewer = {**state, "datasets": [{**state["datasets"][0], "shards": 99}]}
    with pytest.raises(UsageError, match="changed since the checkpoint: shards 99 then"):
        Loader(_cfg(plain_dataset)).load_state_dict(fewer)
    with pytest.raises(UsageError, match="global batch is 4 rows .* resume with --batch-size 2"):
        Loader(_cfg(plain_dataset), rank=0, world=2).load_state_dict(state)
    with pytest.raises(UsageError, match="version 2"):
        Loader(_cfg(plain_dataset)).load_state_dict({"version": 2, "batches": 3})


def test_a_damaged_cached_index_is_rebuilt_and_a_wrong_one_refused(plain_dataset, capsys):
    cfg = _cfg(plain_dataset, order="canonical")
    want = _batches(Loader(cfg), 2)
    ds = Dataset(plain_dataset)
    cached = sorted(p for p in index_folder().glob(f"{ds.manifest.config_hash[:16]}-*.npy"))
    assert len(cached) == len(ds.shards)  # built once per shard, then read from the cache
    cached[0].write_bytes(b"not an npy file")
    for got, w in zip(_batches(Loader(cfg), 2), want):
        _same(got, w)
    assert "rebuilt" in capsys.readouterr().err
    cached[1].unlink()  # a missing one is built again, silently
    _batches(Loader(cfg), 1)
    assert cached[1].exists()
    from vistok.record import npy_bytes, npy_load

    ix = npy_load(cached[2].read_bytes())
    ix[:, CRC] += 1  # a plausible index that does not describe the shard's bytes
    cached[2].write_bytes(npy_bytes(ix))
    order = sampling.folder_order(Dataset(plain_dataset), 0.0, 0, 16)
    shard = next(i for i, loc in enumerate(order.reader.shards) if cached[2].name.split("-", 1)[1].startswith(loc.name))
    with pytest.raises(DamagedShard, match="do not match the shard's index"):
        order.fetch([(shard, 0)])
    cached[2].unlink()


def test_an_index_is_built_from_the_shard_the_manifest_lists(plain_dataset, tmp_path):
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(plain_dataset, copy)
    ds = Dataset(copy)
    shard = ds.shards[0]
    data = bytearray(shard.local_path.read_bytes())
    data[-2000] ^= 0xFF  # a flipped bit in the last record: the shard no longer matches its sha256
    shard.local_path.write_bytes(bytes(data))
    for p in index_folder().glob(f"{ds.manifest.config_hash[:16]}-{shard.name}-*"):
        p.unlink()
    with pytest.raises(DamagedShard, match="sha256"):
        sampling.folder_order(Dataset(copy), 0.2, 0, 16)
    assert tarfile.is_tarfile(shard.local_path)


@pytest.mark.slow
def test_train_with_1_2_and_3_loader_workers_logs_one_loss_curve(plain_dataset, tmp_path, logged_losses):
    from vistok.train.trainer import TrainConfig, train

    curves = []
    for workers in (1, 2, 3):
        cfg = TrainConfig(out=str(tmp_path / f"w{workers}"), max_steps=4, warmup=1, eval_every=0, ckpt_every=100,
                          log_every=1)
        train(_cfg(plain_dataset, num_workers=workers), cfg, quiet=True)
        curves.append(logged_losses(tmp_path / f"w{workers}"))
    assert sorted(curves[0]) == [1, 2, 3, 4] and curves[0] == curves[1] == curves[2]
