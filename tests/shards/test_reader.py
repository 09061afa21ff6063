import numpy as np
import webdataset as wds

from vistok.shards.writer import ShardWriter


def test_plain_webdataset_reads_shards_without_vistok(tmp_path, photo_records):
    recs = photo_records()
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
