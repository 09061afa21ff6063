import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

import vistok.pipelines.pack as pack_mod
from vistok.errors import DatasetError
from vistok.executors import ExecutorConfig
from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.pipelines.pack import pack
from vistok.shards.reader import Dataset
from vistok.shards.store import PackedStore
from vistok.tokenize import JpegCodec


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "ds"
    run_job(["sample"], out, JpegCodec(), Preprocess(size=32, crops=3), shard_size=20, compress=True,
            executor="local", quiet=True, store_orders=("gradwalk:max",))
    return out


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(pack_mod, "TOKEN_CHUNK", 1024)
    monkeypatch.setattr(pack_mod, "SAMPLE_CHUNK", 8)


def _files(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_store_records_equal_shard_records(dataset, tmp_path, small_chunks):
    path = pack(dataset, tmp_path / "a.zarr", samples_per_task=24)  # many tasks, chunks spanning shards
    st = PackedStore(path)
    recs = list(Dataset(dataset))
    assert len(st) == len(recs) == 72
    for i, rec in enumerate(recs):
        assert st[i] == rec
    assert st.by_key(recs[17].key) == recs[17] and st[-1] == recs[-1]
    assert set(st[0].orders) == {"gradwalk-max"}
    with pytest.raises(DatasetError):
        st.by_key("missing-key")


def test_pack_is_deterministic_across_task_splits_and_executors(dataset, tmp_path, small_chunks):
    a = pack(dataset, tmp_path / "a.zarr", samples_per_task=8)
    b = pack(dataset, tmp_path / "b.zarr", samples_per_task=64)
    c = pack(dataset, tmp_path / "c.zarr", ExecutorConfig("ray", 2), samples_per_task=16)
    assert _files(a) == _files(b) == _files(c)


def test_truncated_or_foreign_stores_are_refused(dataset, tmp_path, small_chunks):
    path = pack(dataset, tmp_path / "t.zarr")
    victim = sorted((path / "tokens" / "c").iterdir())[1]
    victim.unlink()
    with pytest.raises(DatasetError, match="truncated"):
        PackedStore(path)
    g = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3)
    g.create_array("x", shape=(3,), dtype="int8")
    with pytest.raises(DatasetError, match="not a vistok store"):
        PackedStore(tmp_path / "foreign.zarr")
    path2 = pack(dataset, tmp_path / "i.zarr")
    g2 = zarr.open_group(str(path2), mode="r+", zarr_format=3)
    g2.attrs["complete"] = False
    with pytest.raises(DatasetError, match="incomplete"):
        PackedStore(path2)
    with pytest.raises(DatasetError, match="not a zarr store"):
        PackedStore(dataset)


def test_cli_pack_inspect_decode(dataset, tmp_path):
    def run(*args):
        p = subprocess.run([sys.executable, "-m", "vistok.cli", *map(str, args)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return p.stdout

    run("pack", dataset, "--out", tmp_path / "s.zarr")
    s = json.loads(run("inspect", tmp_path / "s.zarr", "--json"))
    assert s["kind"] == "store" and s["samples"] == 72
    key = PackedStore(tmp_path / "s.zarr")[5].key
    run("decode", tmp_path / "s.zarr", "--key", key, "--out", tmp_path / "x.png")
    ref = Dataset(dataset).get(key)
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), Dataset(dataset).codec.decode(ref))
