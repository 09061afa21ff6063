from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.tokenize import JpegCodec, WaveletCodec


def test_inspect_psnr_against_sources(tmp_path):
    from vistok.pipelines.verify import psnr_sample

    lossless = run_job(["sample"], tmp_path / "w", WaveletCodec(lossless=True), Preprocess(size=24, crops=2),
                       shard_size=8, executor="local", quiet=True)
    p = psnr_sample(lossless.folder, 6)
    assert p["records"] == 6 and p["exact"] == 6
    clips = run_job(["sample-video"], tmp_path / "j", JpegCodec(quality=50), Preprocess(size=16, clip_len=3),
                    shard_size=8, executor="local", quiet=True)
    q = psnr_sample(clips.folder, 3)
    assert q["records"] == 3 and 20 < q["mean_db"] < 60
