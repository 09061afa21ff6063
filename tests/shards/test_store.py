import pytest
import zarr

from vistok.errors import DatasetError
from vistok.pipelines.pack import pack
from vistok.shards.reader import Dataset
from vistok.shards.store import PackedStore


def test_store_records_equal_shard_records(gradwalk_dataset, tmp_path, small_chunks):
    path = pack(gradwalk_dataset, tmp_path / "a.zarr", samples_per_task=24)  # many tasks, chunks spanning shards
    st = PackedStore(path)
    recs = list(Dataset(gradwalk_dataset))
    assert len(st) == len(recs) == 72
    for i, rec in enumerate(recs):
        assert st[i] == rec
    assert st.by_key(recs[17].key) == recs[17] and st[-1] == recs[-1]
    assert set(st[0].orders) == {"gradwalk-max"}
    with pytest.raises(DatasetError):
        st.by_key("missing-key")


def test_truncated_or_foreign_stores_are_refused(gradwalk_dataset, tmp_path, small_chunks):
    path = pack(gradwalk_dataset, tmp_path / "t.zarr")
    victim = sorted((path / "tokens" / "c").iterdir())[1]
    victim.unlink()
    with pytest.raises(DatasetError, match="truncated"):
        PackedStore(path)
    g = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3)
    g.create_array("x", shape=(3,), dtype="int8")
    with pytest.raises(DatasetError, match="not a vistok store"):
        PackedStore(tmp_path / "foreign.zarr")
    path2 = pack(gradwalk_dataset, tmp_path / "i.zarr")
    g2 = zarr.open_group(str(path2), mode="r+", zarr_format=3)
    g2.attrs["complete"] = False
    with pytest.raises(DatasetError, match="incomplete"):
        PackedStore(path2)
    with pytest.raises(DatasetError, match="not a zarr store"):
        PackedStore(gradwalk_dataset)
