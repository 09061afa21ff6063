"""`vistok study` / `make study`: one controlled comparison, one folder.

A grid of runs (codecs x orders x parallel modes) on one labelled dataset, each trained with the same preset
for the same number of optimizer steps, then evaluated (held-out bits/image, order bits, steps/image),
probed (linear and k-NN top-1 of every layer under both masks, for the trained model, its random-init twin
and the decoded pixels) and fine-tuned. Written to OUT:

    tokenizer/           the study's own patch tokenizer (codecs naming TOKENIZER), trained first, resumably
    data/<codec>/        the dataset per codec (reused when up to date)
    runs/<row>/          each run, its `result.json` written last: a finished row is skipped on a rerun,
                         an interrupted one resumes from its last checkpoint
    study.json           every row; study.md, the table; study.png, the probes as bars

Pairs that do not go together are left out of the grid (`--parallel segments` needs an order with segments:
randsac, squares, or dc-first with slic, frontier or randsac inside; `scales` next-scale or coarse-to-fine;
`any` random or dc-first; an `any` row is scored at two step counts, `any_steps`, one token per step and 16
steps by default); pairs a codec refuses (an rle layout with --parallel) are rows that say why.

The default (`make study`) is RandSAC's geometry: Fashion-MNIST (12,000 training images of the Debian
package) placed on 32x32 without resampling (`--resize border`), as codes of a 4x4-patch BSQ tokenizer (an
8x8 grid, 64 tokens an image) that the study trains on the same training images first; orders raster,
random, hilbert, randsac:7, randsac:11,5 and squares:2 token by token, the three segment orders also
segment-parallel, and random with `--parallel any`; `tiny`, 32 images a step, `steps` optimizer steps per
row; probes on 5,000 training and 1,000 held-out images.

`--photos`: the same study on real photos instead, labelled by folder (`photo_folders`: the embedded
scikit-image photographs cut into 32x32 tiles, a class per photo) in OUT/photos, OUT runs/study-photos.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vistok.errors import UsageError
from vistok.executors import ExecutorConfig, run_tasks
from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.shards.manifest import write_json
from vistok.study.grids import GRIDS, TOKENIZER
from vistok.study.stats import cell, spread, summarize, verdict
from vistok.tokenize.base import get_codec
from vistok.tokenize.orders import order_names, parse_order
from vistok.tokenize.parallel import parse_mode
from vistok.tokenize.schedule import ALL
from vistok.train.data import DataConfig
from vistok.train.evaluate import evaluate
from vistok.train.probe import ProbeConfig, probe
from vistok.train.trainer import TrainConfig, pick_device, train


@dataclass
class StudyTokenizer:
    """The patch tokenizer a study trains for codecs whose `tokenizer` is TOKENIZER (`vistok train-tokenizer`
    options). It sees the study's training images only: every image of the study's held-out split (the
    probes' test images) is among those it holds out."""

    kind: str = "bsq"
    patch: int = 4
    bits: int = 10
    width: int = 64
    blocks: int = 1
    latent: int = 16
    crop: int = 28  # whole Fashion-MNIST images
    batch: int = 64
    steps: int = 1500


@dataclass
class StudyConfig:
    out: str = "runs/study"
    sources: list[str] = field(default_factory=lambda: ["fashion-mnist:train:12000"])
    # the probes' test images, sharded with each codec ([]: the held-out split of `sources`)
    test_sources: list[str] = field(default_factory=lambda: ["fashion-mnist:test"])
    label_from: str = ""  # labels of folder sources (`vistok shard --label-from`); fashion-mnist needs none
    codecs: list[dict[str, Any]] = field(default_factory=lambda: [{"id": "bsq", "tokenizer": TOKENIZER}])
    tokenizer: StudyTokenizer = field(default_factory=StudyTokenizer)
    psnr: float = 0.0  # each codec's knob set so that its held-out PSNR is within 1 dB of this (0: as given)
    psnr_images: int = 256  # held-out images the PSNR is measured on
    gray: bool = True
    size: int = 32  # inputs to this side (0: keep)
    resize: str = "border"
    orders: list[str] = field(default_factory=lambda: ["raster", "random", "hilbert", "randsac:7", "randsac:11,5",
                                                       "squares:2"])
    parallel: list[str] = field(default_factory=lambda: ["", "segments", "any"])
    any_steps: list[int] = field(default_factory=lambda: [ALL, 16])  # `any` rows: scored at these step counts
    preset: str = "tiny"
    steps: int = 200  # optimizer steps per row: rows compare across machines and runs
    minutes: float = 0.0  # and a time budget per row (0: none)
    batch_size: int = 32
    lr: float = 2e-3
    heldout: float = 0.2
    eval_images: int = 1000
    probe_train: int = 5000
    probe_test: int = 0  # 0: every test image
    probe_masks: list[str] = field(default_factory=lambda: ["train", "none"])  # the masks each probe reads under
    finetune: int = 3  # epochs of fine-tuning per row (0: none)
    finetune_images: int = 0  # of the probe's training images, fine-tuned on (0: all: the linear probe's)
    seeds: int = 1  # runs per row, seeds seed .. seed + seeds - 1: model init, data order, order randomness
    executor: str = "local"  # rows and sharding: local (this process, a row at a time) or ray
    address: str = ""  # a Ray cluster (executor ray; empty: a local Ray)
    row_cpus: int = 0  # CPUs (torch threads) of a row, in-process or asked of Ray; 0: the driver machine's
    device: str = "auto"
    seed: int = 0


def named_grid(name: str, **given: Any) -> StudyConfig:
    """The StudyConfig of a named grid (`GRIDS`), with the fields in `given` overriding it."""
    if name not in GRIDS:
        raise UsageError(f"--grid takes {', '.join(GRIDS)}, got {name!r}")
    return replace(StudyConfig(**GRIDS[name]), **given)


# The embedded scikit-image photographs (`sample`) that are photos of one scene or texture each: not their
# drawings, text, binary silhouettes, synthetic images or the second of two near-identical shots.
PHOTO_CLASSES = ("astronaut", "brick", "camera", "cell", "chelsea", "coffee", "coins", "grass", "gravel",
                 "hubble_deep_field", "ihc", "moon", "motorcycle_left", "retina", "rocket")


def photo_folders(out: str | Path, side: int = 32, area: int = 512 * 512) -> Path:
    """OUT/<photo>/<row>-<col>.png, a labelled set of real photos for `--label-from parent`: every photo of
    PHOTO_CLASSES (gray) scaled down to at most `area` pixels and cut into disjoint side x side tiles; a tile's
    class is the photo it comes from (15 classes, 108 to 256 tiles each). Deterministic; written once."""
    from PIL import Image

    from vistok.media.sources import sample_files

    out = Path(out)
    done = out / ".complete"
    if done.exists():
        return out
    photos = {p.stem: p for p in sample_files()}
    for name in PHOTO_CLASSES:
        img = Image.open(photos[name]).convert("L")
        scale = min(1.0, math.sqrt(area / (img.width * img.height)))
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS) if scale < 1 else img
        (out / name).mkdir(parents=True, exist_ok=True)
        for r in range(img.height // side):
            for c in range(img.width // side):
                img.crop((c * side, r * side, (c + 1) * side, (r + 1) * side)).save(out / name / f"{r:02d}-{c:02d}.png")
    done.write_text("")
    return out


def split_orders(text: str) -> list[str]:
    """Comma-separated orders, where an order's own commas (randsac:11,5, dc-first:randsac:11,5) stay inside it:
    a part that does not start with a registered order's name continues the one before."""
    out: list[str] = []
    for part in text.split(","):
        if out and part and part.partition(":")[0] not in order_names():
            out[-1] += "," + part
        elif part:
            out.append(part)
    return out


def _fits(order: str, parallel: str) -> bool:
    """Does the mode cut this order's streams (`ParallelMode.refusal`)? Token by token always does."""
    mode = parse_mode(parallel)
    return mode is None or mode.refusal(parse_order(order)) is None


def _codec_name(cfg: dict[str, Any]) -> str:
    """jpeg-dense-50, pixels-u4-b8, wavelet-dense-s8, bsq: what tells a study's codecs (and datasets) apart."""
    parts = [str(cfg[k]) for k in ("id", "layout", "quality") if k in cfg]
    parts += [f"{tag}{cfg[k]}" for k, tag in (("unit", "u"), ("bits", "b"), ("palette", "k"), ("step", "s")) if cfg.get(k)]
    return "-".join(parts)


ROWS_OF = ("orders", "parallel")  # keys of a codec's entry that narrow its rows (not codec options)


def codec_options(spec: dict[str, Any]) -> dict[str, Any]:
    """A study codec entry less its row keys: what `get_codec` takes."""
    return {k: v for k, v in spec.items() if k not in ROWS_OF}


def grid(cfg: StudyConfig) -> list[tuple[dict[str, Any], str, str]]:
    """(codec, order, parallel) of every row: the study's orders x modes that fit, for each codec; a codec entry
    with `orders` or `parallel` has its own (e.g. one masked row, or pixels a pixel at a time in raster order
    only)."""
    for p in cfg.parallel + [m for c in cfg.codecs for m in c.get("parallel", [])]:
        parse_mode(p)
    return [(codec_options(c), o, p) for c in cfg.codecs for o in c.get("orders", cfg.orders)
            for p in c.get("parallel", cfg.parallel) if _fits(o, p)]


def describe(cfg: StudyConfig) -> str:
    """The settings and rows of a study, before any work (`vistok study --list`)."""
    rows = grid(cfg)
    keys = ("sources", "test_sources", "psnr", "size", "resize", "preset", "steps", "batch_size", "seeds",
            "probe_train", "probe_test", "probe_masks", "finetune", "executor", "row_cpus")
    out = [f"{k}: {getattr(cfg, k)}" for k in keys]
    out.append(f"{len(rows)} rows x {cfg.seeds} seed(s) = {len(rows) * cfg.seeds} runs:")
    return "\n".join(out + [f"  {_codec_name(c)}  {o}  {p or 'none'}" for c, o, p in rows])


def _row_name(codec: dict[str, Any], order: str, parallel: str) -> str:
    return f"{_codec_name(codec)}_{order.replace(':', '').replace(',', '-')}_{parallel or 'tokens'}"


@dataclass(frozen=True)
class Row:
    """One run of the grid: a row (codec, order, parallel mode) at one seed, on its codec's datasets."""

    codec: dict[str, Any]
    order: str
    parallel: str
    seed: int
    data: str  # the dataset folder
    test: str = ""  # the probes' test dataset ("": the held-out split of `data`)

    @property
    def name(self) -> str:
        return f"{_row_name(self.codec, self.order, self.parallel)}_s{self.seed}"

    def head(self) -> dict[str, Any]:
        return {"codec": _codec_name(self.codec), "order": self.order, "parallel": self.parallel or "none",
                "seed": self.seed, "run": self.name}


def run_row(cfg: StudyConfig, row: Row, device: str) -> dict:
    """Train (or resume), evaluate, probe and fine-tune one run with `cfg.row_cpus` torch threads; its
    `result.json` is written last (`run_rows` reads a finished run's back instead of running it)."""
    import torch

    done = Path(cfg.out) / "runs" / row.name / "result.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.row_cpus or threads)
    try:
        out = _run_row(cfg, row, device)
    finally:
        torch.set_num_threads(threads)
    write_json(done, out)
    return out


def _run_row(cfg: StudyConfig, row: Row, device: str) -> dict:
    run = Path(cfg.out) / "runs" / row.name
    out = row.head()
    from vistok.shards.manifest import load_manifest

    longest = int(load_manifest(row.data).tokens.get("max", 0))
    block = 16 * math.ceil(((2 * longest + 1) if row.parallel else longest + 1) / 16)  # one whole image per row
    data = DataConfig(datasets=[row.data], block_size=block, batch_size=cfg.batch_size, num_workers=1,
                      heldout=cfg.heldout, order=row.order, parallel=row.parallel, seed=row.seed).resolved()
    tcfg = TrainConfig(out=str(run), preset=cfg.preset, max_steps=cfg.steps, max_minutes=cfg.minutes, lr=cfg.lr,
                       warmup=min(30, cfg.steps), eval_every=0, ckpt_every=200, log_every=20, device=device, seed=row.seed)
    clock = [time.monotonic()]

    def lap() -> float:  # seconds since the last lap (this process's: a resumed row counts its last part only)
        clock.append(time.monotonic())
        return round(clock[-1] - clock[-2], 1)

    try:
        res = train(data, tcfg, resume=True, quiet=True)
    except UsageError as exc:  # a pair this codec refuses: the row says why
        return {**out, "refused": str(exc)}
    seconds = {"train": lap()}
    ev = evaluate(run, limit=cfg.eval_images, device=device, steps=cfg.any_steps if (m := parse_mode(row.parallel)) and m.steps else None)
    seconds["eval"] = lap()
    pr = _probes(cfg, row, run, block, device)
    seconds["probe"] = lap()
    out.update(steps=res["step"], block_size=block, **_figures(ev), trained=pr["trained"],
               random_init=pr["random_init"], pixels=pr["pixels"], finetune=pr.get("finetune"),
               probe_images={"train": pr["train_images"], "test": pr["test_images"]}, seconds=seconds)
    return out


def _probes(cfg: StudyConfig, row: Row, run: Path, block: int, device: str) -> dict[str, Any]:
    """The run's probes. The pixels of a dataset, and the random-init twin of an architecture, are the same for
    every run of a seed that shares them: probed once, by the first such run. The twin of the token-by-token
    architecture is read under both masks (its training mask is causal in the canonical order whatever the
    row's order); that of the group-parallel one under mask none only, where no order or group enters (its
    training mask would be one twin per order)."""
    probes = (f"{Path(row.data).name}-{cfg.probe_train}-{cfg.probe_test}-{Path(row.test).name if row.test else ''}-"
              f"{row.seed}-{'-'.join(cfg.probe_masks)}")
    shared = {"pixels": Path(cfg.out) / "shared" / f"pixels-{probes}.json",
              "random_init": Path(cfg.out) / "shared" / (f"random-init-{probes}-{cfg.preset}-{block}-"
                                                         f"{'parallel-none' if row.parallel else 'tokens'}.json")}
    pcfg = ProbeConfig(masks=tuple(cfg.probe_masks), train_limit=cfg.probe_train, test_limit=cfg.probe_test,
                       seed=row.seed, finetune=cfg.finetune,
                       finetune_images=cfg.finetune_images, twin_masks=("none",) if row.parallel else (),
                       **{k: not f.exists() for k, f in shared.items()})
    pr = probe(run, test=[row.test] if row.test else None, cfg=pcfg, device=device)
    for key, f in shared.items():
        if key in pr:
            f.parent.mkdir(parents=True, exist_ok=True)
            write_json(f, pr[key])
        pr[key] = json.loads(f.read_text())
    return pr


def _figures(ev: dict[str, Any]) -> dict[str, Any]:
    """A row's eval figures; a masked row's bits are of its masked part only (none of an image's are claimed)."""
    if "masked_bits_per_image" in ev:
        return {"bits_per_image": None, "order_bits": None, "steps_per_image": None,
                "masked_bits_per_image": round(ev["masked_bits_per_image"], 1)}
    out = {k: round(ev[k], 1) for k in ("bits_per_image", "order_bits", "steps_per_image")}
    if "steps_curve" in ev:  # one any model at several step counts: the headline is the first
        out["at_steps"] = [{"steps": p["steps"], "bits_per_image": round(p["bits_per_image"], 1),
                            "steps_per_image": round(p["steps_per_image"], 1)} for p in ev["steps_curve"]]
    return out


def _cell(value: Any) -> str:
    return "—" if value is None else str(value)


def _bits(row: dict[str, Any]) -> str:
    """A row's bits per image for the table; a masked row's are of its masked part, said so."""
    if row.get("masked_bits_per_image") is not None:
        return f"— (masked part: {row['masked_bits_per_image']})"
    return str(row["bits_per_image"])


def study_tokenizer(cfg: StudyConfig, progress=sys.stderr, kind: str = "") -> Path:
    """OUT/tokenizer (OUT/tokenizer-vq for a kind other than the configured one): trained once on the study's
    training images (resumed when interrupted), then reused. A VQ tokenizer's codebook has the BSQ one's
    vocabulary (2**bits)."""
    from vistok.nn.autoencoder import AEConfig
    from vistok.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    t = cfg.tokenizer
    kind = kind or t.kind
    out = Path(cfg.out) / ("tokenizer" if kind == t.kind else f"tokenizer-{kind}")
    if (out / "config.json").exists():
        return out
    print(f"tokenizer: {kind}, {t.patch}x{t.patch} patches, {t.steps} steps", file=progress, flush=True)
    ae = AEConfig(kind=kind, patch=t.patch, bits=t.bits, codebook=2**t.bits, width=t.width, blocks=t.blocks,
                  latent=t.latent)
    tcfg = TokenizerTrainConfig(sources=list(cfg.sources), out=str(out), crop=t.crop, batch=t.batch,
                                max_steps=t.steps, heldout=cfg.heldout, heldout_below=cfg.heldout, seed=cfg.seed,
                                device=cfg.device)
    rep = train_tokenizer(ae, tcfg, progress=progress, quiet=True, resume=True)
    print(f"tokenizer: held-out PSNR {rep['psnr']:.2f} dB, {rep['codes_used']} codes used", file=progress, flush=True)
    return out


def _resolved(cfg: StudyConfig, codec: dict[str, Any], progress) -> dict[str, Any]:
    if codec.get("tokenizer") != TOKENIZER:
        return codec
    return {**codec, "tokenizer": str(study_tokenizer(cfg, progress, codec["id"]).resolve())}


def codecs_at_quality(cfg: StudyConfig, pre: Preprocess, progress=sys.stderr) -> list[dict[str, Any]]:
    """Each codec of the study as it will run: its tokenizer trained, its knob set to `cfg.psnr` when one is
    asked for, and its held-out PSNR, tokens per image and vocabulary measured (OUT/codecs.json, reused while
    the study's codecs and images are the same)."""
    from vistok.study.quality import heldout_images, match, measure

    key = {"codecs": cfg.codecs, "psnr": cfg.psnr, "images": cfg.psnr_images, "sources": cfg.sources,
           "preprocess": pre.to_json(), "heldout": cfg.heldout}
    cache = Path(cfg.out) / "codecs.json"
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    if cached.get("key") == key:
        return cached["codecs"]
    images = heldout_images(cfg.sources, pre, cfg.heldout, cfg.psnr_images)
    if not images:
        raise UsageError(f"no held-out image to measure PSNR on (--heldout {cfg.heldout} of the sources)")
    out = []
    for spec in cfg.codecs:
        codec = _resolved(cfg, codec_options(spec), progress)
        got = match(codec, images, cfg.psnr) if cfg.psnr else {"config": codec, **measure(codec, images)}
        got["name"] = _codec_name(got["config"])
        got["rows"] = {k: spec[k] for k in ROWS_OF if k in spec}
        print(f"codec {got['name']}: held-out PSNR {got['psnr']} dB, {got['tokens_per_image']} tokens/image, "
              f"vocabulary {got['vocabulary']}" + (f"; {got['note']}" if got.get("note") else ""), file=progress, flush=True)
        out.append(got)
    write_json(cache, {"key": key, "codecs": out})
    return out


def study(cfg: StudyConfig, progress=sys.stderr) -> list[dict]:
    """Run (or finish) the grid and write study.json, study.md and study.png; returns the runs (a row per
    seed), in grid order."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.steps < 1:
        raise UsageError("a study trains every row for the same number of optimizer steps: --steps must be >= 1")
    if cfg.seeds < 1:
        raise UsageError("--seeds must be >= 1")
    ExecutorConfig(cfg.executor)  # checked before any work
    pre = Preprocess(size=cfg.size, resize=cfg.resize, gray=cfg.gray)
    codecs = codecs_at_quality(cfg, pre, progress)
    rows = []
    for c in codecs:
        shard = {"shard_size": 2000, "compress": True, "executor": cfg.executor, "address": cfg.address or None,
                 "quiet": True, "label_from": cfg.label_from}
        ds = run_job(cfg.sources, out / "data" / c["name"], get_codec(c["config"]), pre, **shard).folder
        test = run_job(cfg.test_sources, out / "data" / f"{c['name']}-test", get_codec(c["config"]), pre,
                       **shard).folder if cfg.test_sources else ""
        rows += [Row(c["config"], o, p, cfg.seed + k, str(ds), str(test or ""))
                 for _, o, p in grid(replace(cfg, codecs=[{**c["config"], **c.get("rows", {})}]))
                 for k in range(cfg.seeds)]
    runs = run_rows(cfg, rows, progress)
    summary = summarize(runs)
    write_json(out / "study.json", {"config": asdict(cfg), "codecs": codecs, "rows": summary,
                                    "spread": spread(summary), "runs": runs})
    (out / "study.md").write_text(table(runs, cfg, codecs))
    bar_chart(summary, out / "study.png")
    return runs


def _row_task(task: tuple[StudyConfig, Row]) -> dict:
    """One run, where an executor runs it (a Ray worker picks its own device)."""
    cfg, row = task
    return run_row(cfg, row, pick_device(cfg.device))


def run_rows(cfg: StudyConfig, rows: list[Row], progress=sys.stderr) -> list[dict]:
    """Every run of the grid with the study's executor: in this process one after another, or as Ray tasks
    that each ask for `row_cpus` CPUs (and a GPU where the cluster has GPUs). Finished runs are read back, not
    run; a run that fails is recorded as failed and the others go on. Returns the runs in `rows`' order."""
    cfg = replace(cfg, row_cpus=cfg.row_cpus or os.cpu_count() or 1)  # fixed here: the same threads anywhere
    results: dict[str, dict] = {}
    todo = []
    for row in rows:
        done = Path(cfg.out) / "runs" / row.name / "result.json"
        if done.exists():
            results[row.name] = json.loads(done.read_text())
        else:
            todo.append(row)
    board = Board(len(rows), len(results), progress)

    def on_result(status: dict) -> None:
        results[status["run"]] = status
        board.finished(status)

    def on_failure(task: tuple[StudyConfig, Row], exc: BaseException) -> dict:
        return {**task[1].head(), "failed": f"{type(exc).__name__}: {exc}"}

    run_tasks(_row_task, [(cfg, row) for row in todo], on_result, on_failure,
              ExecutorConfig(cfg.executor, address=cfg.address or None, retries=1), gpus=1.0, cpus=cfg.row_cpus,
              on_submit=lambda task: board.started(task[1]))
    return [results[row.name] for row in rows]


class Board:
    """Rows done, running (handed to the executor) and the ETA, a line per event: the ETA is this session's
    pace (finished runs per second, which counts the rows Ray runs side by side) over the runs left."""

    def __init__(self, total: int, done: int, stream) -> None:
        self.total, self.done, self.running, self.stream = total, done, 0, stream
        self.t0, self.finished_here = time.monotonic(), 0
        if done:
            print(f"{done}/{total} runs already finished", file=stream, flush=True)

    def started(self, row: Row) -> None:
        self.running += 1
        self._say(f"start {row.name}")

    def finished(self, status: dict) -> None:
        self.running, self.done, self.finished_here = self.running - 1, self.done + 1, self.finished_here + 1
        what = "failed: " + status["failed"] if "failed" in status else ("refused" if "refused" in status else "done")
        self._say(f"{what} {status['run']}")

    def _say(self, event: str) -> None:
        left = self.total - self.done
        eta = ""
        if self.finished_here and left:
            eta = f", ETA {(time.monotonic() - self.t0) / self.finished_here * left / 60:.1f} min"
        print(f"[{self.done}/{self.total} done, {self.running} running{eta}] {event}", file=self.stream, flush=True)


def _top1(r: dict[str, Any], mask: str) -> str:
    m = r["trained"].get(mask)
    return f"{m['linear_top1']:.3f} (L{m['layer']})" if m else ""


def _head(cfg: StudyConfig) -> str:
    budget = f"{cfg.steps} steps of {cfg.batch_size} images per run" + (f" (at most {cfg.minutes:g} minutes)" if cfg.minutes else "")
    test = f"{', '.join(cfg.test_sources)}" if cfg.test_sources else "the held-out split"
    return (f"Study: {', '.join(cfg.sources)}; preset {cfg.preset}, {budget}; {cfg.seeds} seed(s) a row; probes "
            f"tested on {test} (linear: logistic regression; k-NN: cosine, k = 20; every layer under both masks, the "
            "layer and mask chosen on a validation fifth of the training images; fine-tuned: a linear head, the whole "
            f"model trained {cfg.finetune} epoch(s) on {cfg.finetune_images or cfg.probe_train} of the training "
            "images; random init: the same architecture untrained, under both masks for token-by-token rows, mask "
            "none for group-parallel ones).\n\n")


def summary_table(rows: list[dict[str, Any]]) -> str:
    """A line per row: each figure as mean ± 95% CI over its seeds, and the row against the best row by
    linear top-1 (Welch's t-test, 5%)."""
    out = ("| codec | order | parallel | seeds | bits/image | linear top-1 | vs best (linear) | k-NN top-1 | fine-tuned "
           "| random-init linear | pixels linear |\n" + "| --- " * 11 + "|\n")
    for r in rows:
        lead = f"| {r['codec']} | {r['order']} | {r['parallel']} | {len(r['seeds'])} |"
        if "refused" in r or "failed" in r:
            out += lead + f" {'refused' if 'refused' in r else 'failed'}: {r.get('refused') or r.get('failed')} |" + " |" * 6 + "\n"
            continue
        bits = cell(r, "bits_per_image", 1) if "bits_per_image" in r["figures"] else (
            f"— (masked part: {cell(r, 'masked_bits_per_image', 1)})")
        out += (f"{lead} {bits} | {cell(r, 'linear_top1')} | {verdict(r, 'linear_top1')} | {cell(r, 'knn_top1')} | "
                f"{cell(r, 'finetune_top1')} | {cell(r, 'random_init_linear_top1')} | {cell(r, 'pixels_linear_top1')} |\n")
    return out


def runs_table(runs: list[dict[str, Any]]) -> str:
    out = ("| codec | order | parallel | seed | steps | bits/image | order bits | steps/image | linear top-1 (layer, mask) "
           "| linear, mask none | linear, mask train | k-NN top-1 | fine-tuned | random-init linear / k-NN "
           "| pixels linear / k-NN |\n" + "| --- " * 15 + "|\n")
    lines = []
    for r in runs:
        lead = f"| {r['codec']} | {r['order']} | {r['parallel']} | {r.get('seed', 0)} |"
        if "refused" in r or "failed" in r:
            lines.append(f"{lead} {'refused' if 'refused' in r else 'failed'}: {r.get('refused') or r.get('failed')} |" + " |" * 10)
            continue
        t, z, p = r["trained"], r["random_init"], r["pixels"]
        ft = f"{r['finetune']['top1']:.3f}" if r.get("finetune") else ""
        lines.append(f"{lead} {r['steps']} | {_bits(r)} | "
                     f"{_cell(r['order_bits'])} | {_cell(r['steps_per_image'])} | {t['linear_top1']:.3f} ({t.get('layer', '')}, "
                     f"{t.get('mask', 'train')}) | {_top1(r, 'none')} | {_top1(r, 'train')} | {t['knn_top1']:.3f} | {ft} | "
                     f"{z['linear_top1']:.3f} / {z['knn_top1']:.3f} | {p['linear_top1']:.3f} / {p['knn_top1']:.3f} |")
        for a in r.get("at_steps", [])[1:]:  # the same any model, scored in fewer steps
            lines.append(f"{lead} {r['steps']} | {a['bits_per_image']} | {r['order_bits']} | {a['steps_per_image']} "
                         "| (same model) |" + " |" * 6)
    return out + "\n".join(lines) + "\n"


def codecs_table(codecs: list[dict[str, Any]]) -> str:
    out = "| codec | held-out PSNR (dB) | tokens/image | vocabulary | note |\n| --- | --- | --- | --- | --- |\n"
    return out + "".join(f"| {c['name']} | {c['psnr']} | {c['tokens_per_image']} | {c['vocabulary']} | {c.get('note', '')} |\n"
                         for c in codecs)


def spread_table(rows: list[dict[str, Any]]) -> str:
    s = spread(rows)
    if not s:
        return "Run-to-run spread: not measured (one seed a row).\n"
    out = "| figure | std over seeds (pooled) | seeds a row for a 1-point difference |\n| --- | --- | --- |\n"
    return out + "".join(f"| {v['label']} | {v['pooled_std']:.4f} | {v.get('seeds_for_one_point', '')} |\n"
                         for v in s.values())


def table(runs: list[dict], cfg: StudyConfig, codecs: list[dict[str, Any]] | None = None) -> str:
    """study.md: the rows with their intervals, the codecs at their quality, the spread over seeds, every run."""
    rows = summarize(runs)
    out = _head(cfg) + "Rows (mean ± 95% CI over seeds):\n\n" + summary_table(rows)
    if codecs:
        out += "\nCodecs:\n\n" + codecs_table(codecs)
    return out + "\nSpread:\n\n" + spread_table(rows) + "\nRuns:\n\n" + runs_table(runs)


def bar_chart(rows: list[dict], path: Path) -> None:
    """Linear and k-NN top-1 of each row, trained and random-init, with 95% CIs over seeds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in rows if "figures" in r and "linear_top1" in r["figures"]]
    if not ok:
        return
    names = [f"{r['codec']}\n{r['order']}\n{r['parallel']}" for r in ok]
    x = np.arange(len(ok))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(ok)), 4.6), dpi=100)
    for j, (key, label) in enumerate((("", "trained"), ("random_init_", "random init"))):
        for k, (m, hatch) in enumerate((("linear_top1", ""), ("knn_top1", "//"))):
            fig_key = key + m
            have = [r["figures"].get(fig_key) for r in ok]
            ax.bar(x + (2 * j + k - 1.5) * 0.2, [f["mean"] if f else 0 for f in have], 0.2, hatch=hatch,
                   yerr=[(f["ci"] or 0) if f else 0 for f in have], capsize=2,
                   color=("tab:blue", "tab:gray")[j], alpha=1.0 - 0.35 * k, label=f"{label}, {m.split('_')[0]}")
    pixels = ok[0]["figures"].get("pixels_linear_top1")
    if pixels:
        ax.axhline(pixels["mean"], color="tab:red", linestyle="--", label="pixels, linear")
    ax.set_xticks(x, names, fontsize=7)
    ax.set_ylabel("top-1 on held-out images (95% CI)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
