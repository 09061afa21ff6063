import numpy as np
import pytest

from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.tokenize import JpegCodec


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """~96 real 32x32 crops of the embedded photos in 6 shards."""
    out = tmp_path_factory.mktemp("train") / "ds"
    run_job(["sample"], out, JpegCodec(quality=20), Preprocess(size=32, crops=4, seed=0), shard_size=16,
            compress=True, executor="local", quiet=True)
    return out


def _decodes_to(back, recs) -> None:
    """Records decompressed from compact files (no --keep-meta) against the originals: the same tokens (and
    dtype), side arrays and the metadata decoding needs; key and descriptive metadata are not kept."""
    from vistok.train.container import DESCRIPTIVE
    from vistok.train.data import order_seed

    assert len(back) == len(recs)
    for b, r in zip(back, recs):
        assert b.key == f"k{order_seed(r.key):08x}" and b.tokens.dtype == r.tokens.dtype and np.array_equal(b.tokens, r.tokens)
        assert b.meta == {k: v for k, v in r.meta.items() if k not in DESCRIPTIVE}
        assert b.side.keys() == r.side.keys() and all(np.array_equal(b.side[k], r.side[k]) for k in b.side)


@pytest.fixture
def decodes_to():
    return _decodes_to
