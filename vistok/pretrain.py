"""`make pretrain`: the main job, end to end, on the embedded default data.

1. shard the photos bundled with scikit-image (JPEG quality 20, 64x64 crops) into `shards/pretrain/`
   (reused on later runs: an identical configuration answers "up to date");
2. train the `tiny` preset on CPU for a bounded time (`small` for longer when a GPU is present);
3. evaluate on the held-out photos, sample 16 images, and write `runs/pretrain/`: checkpoints,
   metrics.jsonl, loss.png, samples.png and report.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.shards.summary import format_summary, summarize
from vistok.tokenize import JpegCodec
from vistok.train.data import DataConfig
from vistok.train.evaluate import evaluate
from vistok.train.report import loss_curve_png, write_report
from vistok.train.sample import sample_run
from vistok.train.trainer import TrainConfig, pick_device, train


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default="shards/pretrain")
    ap.add_argument("--run", default="runs/pretrain")
    ap.add_argument("--crops", type=int, default=120, help="64x64 crops per photo")
    ap.add_argument("--minutes", type=float, default=0.0, help="training time (default: 8 on CPU, 20 on GPU)")
    ap.add_argument("--executor", default="ray")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    device = pick_device("auto")
    gpu = device.startswith("cuda")

    print("== 1/3 shard the embedded photos", flush=True)
    res = run_job(["sample"], args.shards, JpegCodec(quality=20), Preprocess(size=64, crops=args.crops, seed=0),
                  shard_size=500, compress=True, executor=args.executor)
    print(f"{res.folder}: " + ("up to date" if res.up_to_date else f"built in {res.seconds:.1f}s"))
    summary = summarize(res.folder)
    print(format_summary(summary), flush=True)

    print(f"== 2/3 train on {device}", flush=True)
    minutes = args.minutes or (20.0 if gpu else 8.0)
    data = DataConfig(datasets=[str(res.folder)], block_size=512 if not gpu else 1024, batch_size=8 if not gpu else 64,
                      heldout=0.1, num_workers=1 if not gpu else 4, seed=0).resolved()
    cfg = TrainConfig(out=args.run, preset="small" if gpu else "tiny", max_steps=100_000, max_minutes=minutes,
                      lr=2e-3 if not gpu else 1e-3, warmup=30, eval_every=100, ckpt_every=500, log_every=5,
                      compile=gpu)
    t_train = time.monotonic()
    out = train(data, cfg, resume=True)  # a rerun continues the run (or, finished, just reports again)
    train_minutes = (time.monotonic() - t_train) / 60

    print("== 3/3 evaluate, sample, report", flush=True)
    ev = evaluate(args.run, device=device)
    print(json.dumps(ev, indent=1))
    from pathlib import Path

    run = Path(args.run)
    loss_curve_png(run, run / "loss.png")
    sample_run(run, 16, run / "samples.png", temperature=1.0, seed=0, device=device)
    write_report(run / "report.md", ev, summary,
                 {"preset": cfg.preset, "params": out["params"], "steps": out["step"], "minutes": train_minutes,
                  "device": torch.cuda.get_device_name() if gpu else "CPU"},
                 [str(run / "loss.png"), str(run / "samples.png")])
    print(f"wrote {run}/report.md, loss.png, samples.png in {(time.monotonic() - t0) / 60:.1f} minutes in all")
    if ev["bits_per_token"] >= ev["unigram_bits_per_token"]:
        print("warning: held-out bits/token did not drop below the unigram entropy", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
