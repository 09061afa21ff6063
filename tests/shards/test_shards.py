import json

import numpy as np
import pytest
import webdataset as wds

from vistok.errors import DatasetError
from vistok.shards.reader import iter_shards
from vistok.shards.record import TokenRecord
from vistok.shards.writer import ShardWriter
from vistok.tokenize import JpegCodec


def _records(photo, n=5):
    codec = JpegCodec()
    return [codec.encode(photo[i * 40 : i * 40 + 64, :64], key=f"img-{i:03d}", meta={"source": f"s{i}"}) for i in range(n)]


@pytest.mark.parametrize("name", ["a.tar", "a.tar.gz"])
def test_same_records_give_byte_identical_shards(tmp_path, photo, name):
    recs = _records(photo)
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        with ShardWriter(tmp_path / d / name) as w:
            for r in recs:
                w.write(r)
    assert (tmp_path / "x" / name).read_bytes() == (tmp_path / "y" / name).read_bytes()
    assert list(iter_shards([tmp_path / "x" / name])) == recs


def test_plain_webdataset_reads_shards_without_vistok(tmp_path, photo):
    recs = _records(photo)
    recs[0].orders["gradwalk"] = np.arange(len(recs[0]))[::-1]
    with ShardWriter(tmp_path / "s.tar.gz") as w:
        for r in recs:
            w.write(r)
    samples = list(wds.WebDataset(str(tmp_path / "s.tar.gz"), shardshuffle=False, empty_check=False).decode())
    assert [s["__key__"] for s in samples] == [r.key for r in recs]
    for s, r in zip(samples, recs):
        np.testing.assert_array_equal(s["tokens.npy"], r.tokens)
        assert s["json"] == r.meta
    np.testing.assert_array_equal(samples[0]["order.gradwalk.npy"], recs[0].orders["gradwalk"])


def test_failed_or_empty_writes_leave_no_file(tmp_path, photo):
    with ShardWriter(tmp_path / "empty.tar"):
        pass
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "boom.tar") as w:
            w.write(_records(photo, 1)[0])
            raise RuntimeError("killed mid-shard")
    assert list(tmp_path.iterdir()) == []


def test_tar_headers_are_normalized(tmp_path, photo):
    import tarfile

    with ShardWriter(tmp_path / "s.tar") as w:
        w.write(_records(photo, 1)[0])
    with tarfile.open(tmp_path / "s.tar") as t:
        members = t.getmembers()
    assert [m.name for m in members] == ["img-000.tokens.npy", "img-000.json"]
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" and m.mode == 0o644 for m in members)


def test_keys_must_be_dot_free():
    with pytest.raises(DatasetError, match="no dots"):
        TokenRecord("a.b", np.zeros(3, np.uint16))


def test_record_json_is_canonical(photo):
    rec = _records(photo, 1)[0]
    assert rec.to_sample()["json"] == json.dumps(rec.meta, sort_keys=True, separators=(",", ":")).encode()
