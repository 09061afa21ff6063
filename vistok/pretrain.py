"""`make pretrain`: the main job on the embedded default data.

Shards the photos bundled with scikit-image (JPEG, quality 20, 64x64 crops) into `shards/pretrain/`
and prints what it built.
"""

from __future__ import annotations

import sys

from vistok.pipelines.job import run_job
from vistok.pipelines.preprocess import Preprocess
from vistok.shards.inspect import format_summary, summarize
from vistok.tokenize import JpegCodec


def shard_default(out: str = "shards/pretrain", crops: int = 120, executor: str = "ray", quiet: bool = False):
    return run_job(["sample"], out, JpegCodec(quality=20), Preprocess(size=64, crops=crops, seed=0),
                   shard_size=500, compress=True, executor=executor, quiet=quiet)


def main() -> None:
    res = shard_default()
    state = "up to date" if res.up_to_date else f"built in {res.seconds:.1f}s"
    print(f"{res.folder}: {state}")
    print(format_summary(summarize(res.folder)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
