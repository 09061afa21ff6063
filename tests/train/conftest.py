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
