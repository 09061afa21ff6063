import pytest

from vistok.shards.reader import iter_shards
from vistok.shards.writer import ShardWriter


@pytest.mark.parametrize("name", ["a.tar", "a.tar.gz"])
def test_same_records_give_byte_identical_shards(tmp_path, name, photo_records):
    recs = photo_records()
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        with ShardWriter(tmp_path / d / name) as w:
            for r in recs:
                w.write(r)
    assert (tmp_path / "x" / name).read_bytes() == (tmp_path / "y" / name).read_bytes()
    assert list(iter_shards([tmp_path / "x" / name])) == recs




def test_failed_or_empty_writes_leave_no_file(tmp_path, photo_records):
    with ShardWriter(tmp_path / "empty.tar"):
        pass
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "boom.tar") as w:
            w.write(photo_records(1)[0])
            raise RuntimeError("killed mid-shard")
    assert list(tmp_path.iterdir()) == []


def test_tar_headers_are_normalized(tmp_path, photo_records):
    import tarfile

    with ShardWriter(tmp_path / "s.tar") as w:
        w.write(photo_records(1)[0])
    with tarfile.open(tmp_path / "s.tar") as t:
        members = t.getmembers()
    assert [m.name for m in members] == ["img-000.tokens.npy", "img-000.json"]
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" and m.mode == 0o644 for m in members)




