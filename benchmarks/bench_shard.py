"""`vistok shard` throughput, disk use and driver memory, against baselines measured in the same run.

- images/s per core of the local executor against an img2dataset-style loop (decode -> resize ->
  JPEG encode -> tar write) on the same files, one core each;
- the Ray executor with one worker against the local executor (same core budget);
- bytes on disk per sample against the quality-q JPEG files of the same 256x256 images;
- peak driver RSS for 1k and 50k inputs (hard links to the embedded photos; the plan is all it holds).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import simplejpeg

from vistok.media.sources import sample_files


def _corpus(folder: Path, n: int) -> Path:
    """n distinct input paths (hard links round-robin over the embedded photos)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = sample_files()
    for i in range(n):
        src = files[i % len(files)]
        dst = folder / f"{i:06d}{src.suffix}"
        if not dst.exists():
            os.link(src, dst)
    return folder


def _baseline(folder: Path, out: Path, size: int, quality: int) -> float:
    """img2dataset-style: PIL decode -> resize (short side, centre crop) -> simplejpeg encode -> tar."""
    from PIL import Image

    files = sorted(folder.iterdir())
    t0 = time.perf_counter()
    with tarfile.open(out, "w") as tar:
        for i, f in enumerate(files):
            with Image.open(f) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = size / min(w, h)
                im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC, reducing_gap=3.0)
                w, h = im.size
                im = im.crop(((w - size) // 2, (h - size) // 2, (w - size) // 2 + size, (h - size) // 2 + size))
                data = simplejpeg.encode_jpeg(np.asarray(im), quality=quality, colorsubsampling="420")
            ti = tarfile.TarInfo(f"{i:06d}.jpg")
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return len(files) / (time.perf_counter() - t0)


def _vistok(folder: Path, out: Path, executor: str, size: int, quality: int, workers: int = 1) -> tuple[float, float]:
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.tokenize import JpegCodec

    t0 = time.perf_counter()
    res = run_job([str(folder)], out, JpegCodec(quality=quality), Preprocess(size=size), shard_size=64, compress=True,
                  executor=executor, workers=workers, quiet=True)
    dt = time.perf_counter() - t0
    return res.samples / dt, sum(s["bytes"] for s in res.manifest.shards) / res.samples


def _driver_rss(folder: Path, out: Path) -> float:
    """Peak RSS (MB) of a `vistok shard` driver process over `folder` with the Ray executor."""
    code = (
        "import resource, sys; from vistok.cli import main; sys.argv=['vistok','shard',sys.argv[1],'--out',sys.argv[2],"
        "'--size','32','--shard-size','1000','-q','--workers','2'];\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(folder), str(out)], capture_output=True, text=True, check=True)
    return int(proc.stdout.strip().splitlines()[-1]) / 1024


def run(n_images: int = 96, size: int = 256, quality: int = 20, rss: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        corpus = _corpus(d / "in", n_images)
        base = _baseline(corpus, d / "baseline.tar", size, quality)
        local, bps = _vistok(corpus, d / "local", "local", size, quality)
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray_start = time.perf_counter() - t0
        try:  # throughput on a warm cluster (start-up and worker imports are reported on their own)
            _vistok(_corpus(d / "warm", 2), d / "warm-out", "ray", size, quality, workers=1)
            ray1, _ = _vistok(corpus, d / "ray", "ray", size, quality, workers=1)
        finally:
            ray.shutdown()
        # JPEG files of the same preprocessed images
        from vistok.media.preprocess import Preprocess
        from vistok.media.sources import decode_image

        pre = Preprocess(size=size)
        jpeg_bytes = [len(simplejpeg.encode_jpeg(pre.apply(decode_image(f.read_bytes()), "k")[0][1], quality=quality,
                                                 colorsubsampling="420")) for f in sample_files()]
        jpeg_mean = sum(jpeg_bytes) / len(jpeg_bytes)
        out = {
            "shard_img_s_per_core": round(local, 1),
            "baseline_img_s_per_core": round(base, 1),
            "shard_vs_baseline": round(local / base, 3),
            "ray_1worker_img_s": round(ray1, 1),
            "ray_start_s": round(ray_start, 1),
            "ray_vs_local": round(ray1 / local, 3),
            "bytes_per_sample": round(bps),
            "jpeg_file_bytes": round(jpeg_mean),
            "bytes_vs_jpeg": round(bps / jpeg_mean, 3),
        }
        if rss:
            small = _corpus(d / "rss1k", 1000)
            big = _corpus(d / "rss50k", 50_000)
            r1 = _driver_rss(small, d / "o1")
            r50 = _driver_rss(big, d / "o50")
            out.update(driver_rss_mb_1k=round(r1, 1), driver_rss_mb_50k=round(r50, 1), rss_50k_vs_1k=round(r50 / r1, 3))
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(rss="--no-rss" not in sys.argv)))
