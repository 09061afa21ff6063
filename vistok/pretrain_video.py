"""`make pretrain-video`: video prediction end to end on the embedded data, on CPU in about ten minutes.

1. make the videos: the animated GIF bundled with scikit-image, and short panning videos cut from its
   photographs with PyAV (a 32x32 window moving a few pixels per frame, H.264 mp4); the pans of three
   photographs are kept apart as a test set no training step sees (plus any videos given by path);
2. shard them into clips of 16 frames (JPEG quality 20), train `tiny-video` (a 1024-token context: six
   32x32 frames) in windows every 512 positions, so every frame is predicted from the frames before it;
3. evaluate per frame (bits of frame t given the earlier frames vs alone) on the test pans and on the GIF,
   continue a test clip from 4 real frames, and write `runs/pretrain-video/`: report.md, frames.json,
   loss.png, continuation.mp4 and continuation.png (prompt | generated).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vistok.media.preprocess import Preprocess
from vistok.media.sources import sample_files
from vistok.pipelines.job import run_job
from vistok.shards.render import write_mp4
from vistok.shards.summary import format_summary, summarize
from vistok.tokenize import JpegCodec
from vistok.train.data import DataConfig
from vistok.train.evaluate import evaluate, format_frame_table
from vistok.train.report import loss_curve_png
from vistok.train.sample import clip_run
from vistok.train.trainer import TrainConfig, pick_device, train

TEST_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg")  # their pans are the test set
SIDE, FRAMES, STEP = 32, 24, 2  # frame side, frames per video, pixels moved per frame
DIRECTIONS = ((1, 0), (0, 1), (1, 1), (-1, 1))  # (dx, dy) of the pans cut from each photograph


def pan_frames(photo: Path, direction: tuple[int, int], side: int = SIDE, frames: int = FRAMES,
               step: int = STEP) -> np.ndarray:
    """(frames, side, side, 3) uint8: a side x side window moving `step` pixels per frame across the photo
    (shrunk so that its short side is 3 windows), starting where the whole path fits."""
    from PIL import Image

    with Image.open(photo) as im:
        im = im.convert("RGB")
        scale = 3 * side / min(im.size)
        im = im.resize((max(3 * side, round(im.width * scale)), max(3 * side, round(im.height * scale))),
                       Image.BICUBIC)
        pix = np.asarray(im)
    dx, dy = direction
    travel = step * (frames - 1)
    h, w = pix.shape[:2]
    x0 = (w - side - travel) // 2 if dx >= 0 else (w + travel - side) // 2
    y0 = (h - side - travel) // 2 if dy >= 0 else (h + travel - side) // 2
    out = [pix[y0 + dy * step * t : y0 + dy * step * t + side, x0 + dx * step * t : x0 + dx * step * t + side]
           for t in range(frames)]
    return np.stack(out)


def still_frames(photo: Path, thing: Path, seed: int, side: int = 64, frames: int = 8) -> np.ndarray:
    """(frames, side, side, 3) uint8: a still camera on a photo (a side x side window of it, shrunk so that its
    short side is 3 windows, at a seeded place) while a small object, a round 12-pixel cut of another photo,
    crosses the view at 1 to 2 pixels a frame in a seeded direction. Everything but the object stays put."""
    from PIL import Image

    rng = np.random.default_rng(seed)

    def load(path: Path, short: int) -> np.ndarray:
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = short / min(im.size)
            return np.asarray(im.resize((max(short, round(im.width * scale)), max(short, round(im.height * scale))),
                                        Image.BICUBIC))

    pix, src = load(photo, 3 * side), load(thing, 48)
    y0, x0 = (int(rng.integers(0, n - side + 1)) for n in pix.shape[:2])
    view = pix[y0 : y0 + side, x0 : x0 + side]
    r = 6
    yy, xx = np.mgrid[-r : r, -r : r] + 0.5
    disc = (yy**2 + xx**2 <= r * r)[..., None]
    cy, cx = (int(rng.integers(0, n - 2 * r + 1)) for n in src.shape[:2])
    obj = src[cy : cy + 2 * r, cx : cx + 2 * r]
    angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 2.0)
    vy, vx = speed * np.sin(angle), speed * np.cos(angle)
    py, px = side / 2 - vy * (frames - 1) / 2 - r, side / 2 - vx * (frames - 1) / 2 - r  # the path centred
    out = []
    for t in range(frames):
        f = view.copy()
        y, x = int(round(py + vy * t)), int(round(px + vx * t))
        a, b = max(0, -y), max(0, -x)
        ys, xs = slice(max(0, y), min(side, y + 2 * r)), slice(max(0, x), min(side, x + 2 * r))
        o, d = obj[a : a + ys.stop - ys.start, b : b + xs.stop - xs.start], disc[a : a + ys.stop - ys.start, b : b + xs.stop - xs.start]
        f[ys, xs] = np.where(d, o, f[ys, xs])
        out.append(f)
    return np.stack(out)


def make_stills(folder: Path, test: bool, per_photo: int = 6, frames: int = 8) -> list[Path]:
    """Static-camera videos (`still_frames`) of the training photographs (or of the test ones), written once;
    the moving objects are cut from the other photographs of the same side of the split."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = [p for p in sample_files() if (p.name in TEST_PHOTOS) == test]
    out = []
    for i, photo in enumerate(photos):
        for k in range(per_photo):
            path = folder / f"still-{photo.stem}-{k}.mp4"
            if not path.exists():
                thing = photos[(i + 1 + k) % len(photos)]
                tmp = path.with_suffix(".tmp.mp4")
                write_mp4(still_frames(photo, thing, seed=1000 * i + k, frames=frames), tmp, fps=8.0)
                tmp.replace(path)
            out.append(path)
    return out


def make_pans(folder: Path, test: bool) -> list[Path]:
    """The panning videos of the training photographs (or of the test ones), written once."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for photo in sample_files():
        if (photo.name in TEST_PHOTOS) != test:
            continue
        for d, direction in enumerate(DIRECTIONS):
            path = folder / f"pan-{photo.stem}-{d}.mp4"
            if not path.exists():
                tmp = path.with_suffix(".tmp.mp4")
                write_mp4(pan_frames(photo, direction), tmp, fps=12.0)
                tmp.replace(path)
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="*", help="more training videos (files, folders, globs)")
    ap.add_argument("--shards", default="shards/pretrain-video")
    ap.add_argument("--run", default="runs/pretrain-video")
    ap.add_argument("--minutes", type=float, default=9.0, help="training time")
    ap.add_argument("--executor", default="ray")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    device = pick_device("auto")
    shards, run = Path(args.shards), Path(args.run)

    print("== 1/4 make the videos and shard them into 16-frame clips", flush=True)
    train_videos = [str(p) for p in make_pans(shards / "videos" / "train", test=False)]
    test_videos = [str(p) for p in make_pans(shards / "videos" / "test", test=True)]
    codec = JpegCodec(quality=20)
    pre = Preprocess(clip_len=16, clip_stride=8)
    sets = {}
    for name, sources in (("train", ["sample-video", *train_videos, *args.videos]), ("test", test_videos),
                          ("gif", ["sample-video"])):
        res = run_job(sources, shards / name, codec, pre, shard_size=200, compress=True, executor=args.executor)
        sets[name] = str(res.folder)
        print(f"{name}: {res.folder} " + ("up to date" if res.up_to_date else f"built in {res.seconds:.1f}s"))
    summary = summarize(sets["train"])
    print(format_summary(summary), flush=True)

    print(f"== 2/4 train tiny-video on {device} for {args.minutes:g} minutes", flush=True)
    data = DataConfig(datasets=[sets["train"]], block_size=1024, stride=512, batch_size=8, heldout=0.0,
                      num_workers=1, seed=0).resolved()
    cfg = TrainConfig(out=str(run), preset="tiny-video", max_steps=100_000, max_minutes=args.minutes, lr=2e-3,
                      warmup=30, eval_every=0, ckpt_every=500, log_every=5)
    out = train(data, cfg, resume=True)  # a rerun continues the run (or, finished, just reports again)

    print("== 3/4 per-frame bits: test pans (photographs no step saw) and the GIF (trained on)", flush=True)
    frames = {}
    for name in ("test", "gif"):
        ev = evaluate(run, [sets[name]], split="all", device=device, per_frame=True)
        frames[name] = ev
        print(f"-- {name}\n{format_frame_table(ev)}", flush=True)
    (run / "frames.json").write_text(json.dumps(frames, indent=1))

    print("== 4/4 continue a test clip from 4 real frames", flush=True)
    loss_curve_png(run, run / "loss.png")
    cont = clip_run(run, run / "continuation.mp4", frames=8, prompt=test_videos[0], prompt_frames=4, seed=0,
                    device=device)
    write_video_report(run / "report.md", frames, summary, out, args.minutes, cont)
    print(f"wrote {run}/report.md, frames.json, loss.png, continuation.mp4/.png in "
          f"{(time.monotonic() - t0) / 60:.1f} minutes in all")


def write_video_report(path: Path, frames: dict, summary: dict, out: dict, minutes: float, cont: dict) -> None:
    lines = ["# pretrain-video", "",
             f"`tiny-video` ({out['params'] / 1e6:.2f}M parameters), {out['step']} steps in {minutes:g} minutes on "
             f"{summary['samples']} training clips of 16 frames (JPEG q20; context 1024, windows every 512).", ""]
    for name, title in (("test", "test pans (photographs no training step saw)"),
                        ("gif", "the embedded GIF (in the training set)")):
        ev = frames[name]
        lines += [f"## {title}", "", "```", format_frame_table(ev), "```", ""]
    lines += ["## continuation", "",
              f"4 real frames of a test pan, then 8 generated ({cont['decoded_generated_frames']} decoded): "
              "`continuation.png` (prompt | generated), `continuation.mp4`.", "",
              "![continuation](continuation.png)", "", "![loss](loss.png)", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
