"""`vistok` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import enum
import inspect as pyinspect
import json
import os
import re
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from vistok.errors import Interrupted, UsageError, VistokError
from vistok.media.sources import DEFAULT_MAX_PIXELS, check_label_mode
from vistok.storage import Cache, Loc, parse_options
from vistok.tokenize.base import codec_classes, codec_ids
from vistok.tokenize.orders import adaptive_orders, order_usages
from vistok.tokenize.parallel import mode_usages, parse_mode
from vistok.tokenize.region import REGION_HELP
from vistok.tokenize.schedule import parse_steps
from vistok.train.config import COMPONENTS, DataConfig, TrainConfig, cli_flags

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Images and videos -> discrete token shards for autoregressive vision models.",
                  context_settings={"max_content_width": 100})

def _version(value: bool) -> None:
    if value:
        import vistok

        typer.echo(f"vistok {vistok.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print vistok's version and exit.")] = False) -> None:
    """Images and videos -> discrete token shards for autoregressive vision models."""


def _apply_storage(text: str | None) -> dict:
    """--storage-options, parsed: the command gets the dict and passes it on (it is never printed or written)."""
    return parse_options(text or "")


# Every command that takes a dataset takes it as a local path or an fsspec URL (s3://bucket/prefix, gs://...).
StorageOptions = Annotated[str | None, typer.Option(
    "--storage-options", envvar="VISTOK_STORAGE_OPTIONS", show_default=False, callback=_apply_storage,
    help="JSON object for the filesystem of s3:// or gs:// datasets and inputs, e.g. '{\"endpoint_url\": "
         "\"http://127.0.0.1:9000\"}'. Credentials come from the filesystem's usual environment and profiles.")]


def _skipped_note(skipped: dict[str, int]) -> str:
    """"; 12 files skipped by extension (.txt 9, none 3)": the most frequent eight."""
    if not skipped:
        return ""
    top = sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    return f"; {sum(skipped.values())} files skipped by extension (" + ", ".join(f"{e or 'none'} {n}" for e, n in top) + ")"


DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _check_names(order: str | None = None, parallel: str | None = None, attention: str | None = None,
                 preset: str | None = None, device: str | None = None, steps: str | None = None) -> None:
    """Refuse an unknown name before any work (a dataset opened, a model loaded), naming the option."""
    if order is not None:
        from vistok.tokenize.orders import parse_order

        parse_order(order)  # its message names the order and lists the available ones
    if parallel:
        parse_mode(parallel)
    if attention is not None:
        from vistok.nn.attention import parse_attention

        try:
            parse_attention(attention)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if preset is not None:
        from vistok.nn.gpt import PRESETS

        if preset not in PRESETS:
            raise UsageError(f"unknown --preset {preset!r}; available: {', '.join(PRESETS)}")
    if device is not None and not DEVICE.match(device):
        raise UsageError(f"--device takes auto, cpu, cuda or cuda:N, got {device!r}")
    if steps:
        parse_steps(steps)


def _floats(option: str, text: str) -> list[float]:
    """'3,1.5' -> [3.0, 1.5], or a usage error naming the option."""
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} {text}: give comma-separated numbers, e.g. 3,1") from None


def _choice(name: str, values) -> type[enum.Enum]:
    """An Enum of string choices: typer validates them and lists them in --help."""
    return enum.Enum(name, {v: v for v in values}, type=str)


CodecId = _choice("CodecId", codec_ids())
ImageFormat = _choice("ImageFormat", ("png", "jpg"))
MediaFormat = _choice("MediaFormat", ("png", "jpg", "mp4"))
Split = _choice("Split", ("auto", "heldout", "all"))
ProbeMask = _choice("ProbeMask", ("train", "none"))
Resize = _choice("Resize", ("center-crop", "pad", "short-side", "border", "none"))  # preprocess.RESIZE_MODES
Executor = _choice("Executor", ("auto", "ray", "local"))


def _shard_options(
    sources: Annotated[list[str], typer.Argument(help="Image or video files, folders, globs, @list.txt, WebDataset .tar shards (each planned as one input; its task lists the members), any of them also in object storage (s3://bucket/prefix, gs://...), 'sample' (the embedded photos), 'sample-video' (the embedded GIF), or fashion-mnist:train|test[:N] (Debian package dataset-fashion-mnist).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Dataset folder or object-storage URL such as s3://bucket/prefix (or an existing non-empty parent: the dataset goes to OUT/<codec>-<hash>/).")],
    codec: Annotated[CodecId, typer.Option(help="Codec: " + "; ".join(f"{c.codec_id} ({c.summary})" for c in codec_classes()) + ". Its options follow.")] = "jpeg",
    size: Annotated[int, typer.Option(min=0, help="Target side in pixels (0 = keep).")] = 0,
    resize: Annotated[Resize, typer.Option(help="How an image becomes SIZE x SIZE.")] = "center-crop",
    crops: Annotated[int, typer.Option(min=0, help="N seeded random SIZExSIZE crops per image instead of one resize.")] = 0,
    seed: Annotated[int, typer.Option(min=0, help="Seed for crops.")] = 0,
    max_pixels: Annotated[int, typer.Option(min=1, help="Refuse images with more pixels (decompression bombs).")] = DEFAULT_MAX_PIXELS,
    fps: Annotated[float, typer.Option(min=0, help="Videos: resample to this frame rate by timestamps (0 = every frame).")] = 0.0,
    clip_len: Annotated[int, typer.Option(min=1, help="Videos: frames per record.")] = 1,
    clip_stride: Annotated[int, typer.Option(min=0, help="Videos: frames between clip starts (0 = clip-len).")] = 0,
    max_clips: Annotated[int, typer.Option(min=0, help="Videos: at most this many clips per video (0 = all).")] = 0,
    video_timeout: Annotated[float, typer.Option(min=1, help="Videos: seconds of decoding per file before it is cut off and recorded.")] = 120.0,
    shard_size: Annotated[int, typer.Option(min=1, help="Samples per shard.")] = 1000,
    compress: Annotated[bool, typer.Option("--gzip/--no-gzip", help="Write .tar.gz shards (gzip folds the 512-byte tar headers away: ~8x smaller for small samples).")] = True,
    executor: Annotated[Executor, typer.Option(help="auto (Ray from 200 inputs on, or with --workers/--address; in-process below), ray (local Ray, or --address) or local (in-process).")] = "auto",
    workers: Annotated[int, typer.Option(min=0, help="Ray workers when starting Ray locally (default: all cores).")] = 0,
    address: Annotated[str, typer.Option(help="Address of an existing Ray cluster (or set RAY_ADDRESS).")] = "",
    store_order: Annotated[list[str], typer.Option(help="Compute a content-aware order from the pixels and store it in each record: gradwalk:max or gradwalk:min (repeatable).")] = None,
    label_from: Annotated[str, typer.Option(help="Store a class label in each record: parent (the input's folder, ImageFolder layout), json:FIELD (a field of a WebDataset sample's .json) or cls (its .cls member). fashion-mnist:SPLIT inputs are labelled without it.")] = "",
    gray: Annotated[bool, typer.Option("--gray", help="Encode one luma channel instead of RGB.")] = False,
    extensions: Annotated[str, typer.Option(help="What folders take: by default every extension the installed Pillow or PyAV opens; jpg,png takes only those, +raw,-gif widens or narrows the default.")] = "",
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="Reprocess only the inputs that failed before.")] = False,
    fail_on_error: Annotated[bool, typer.Option("--fail-on-error", help="Exit non-zero when any input failed.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    storage_options: StorageOptions = None,
) -> None:
    """The options of `shard` that are not a codec's (its signature only: `shard` adds the codecs' own)."""


def _shown(p: pyinspect.Parameter) -> str:
    """A codec parameter's default as --help shows it: none for an empty value."""
    d = p.default
    return "none" if d in ((), "", None) else ",".join(map(str, d)) if isinstance(d, tuple | list) else str(d)


def _codec_params(taken: set[str]) -> list[pyinspect.Parameter]:
    """`shard`'s codec options, from the registry: every codec's `cli_options`, one --option per name (a name
    several codecs take is one option); not given, an option is left out and the codec's own default applies."""
    uses: dict[str, list] = {}
    for cls in codec_classes():
        for o in cls.cli_options:
            if o.name not in taken:  # --fps is the videos' option too: the codec takes the same value
                uses.setdefault(o.name, []).append((cls, o))
    params = []
    for name, found in uses.items():
        first = found[0][1]
        choices = tuple(dict.fromkeys(c for _, o in found for c in o.choices))
        defaults = ", ".join(f"{cls.codec_id} {_shown(d)}" for cls, _ in found
                             if (d := pyinspect.signature(cls.__init__).parameters.get(name)) is not None
                             and d.default is not pyinspect.Parameter.empty)
        help = " ".join(dict.fromkeys(o.help for _, o in found)) + (f" (default: {defaults})" if defaults else "")
        flag = f"--{name.replace('_', '-')}"
        typ, default = (bool, False) if first.flag else (_choice(name, choices) if choices else first.type, None)
        lo, hi = first.bounds if first.type in (int, float) else (None, None)
        info = typer.Option(flag, help=help, show_default=False, rich_help_panel="Codec options", min=lo, max=hi)
        params.append(pyinspect.Parameter(name, pyinspect.Parameter.KEYWORD_ONLY, default=default,
                                          annotation=Annotated[typ if first.flag else typ | None, info]))
    return params


def _codec_config(codec_id: str, kw: dict) -> dict:
    """The codec's config from the options given: its `cli_options` that were set, parsed."""
    cls = next(c for c in codec_classes() if c.codec_id == codec_id)
    own = {o.name for o in cls.cli_options}
    for c in codec_classes():
        for o in c.cli_options:
            value = kw.get(o.name)
            if o.name not in own and o.name not in _SHARD_OWN and value is not None and value is not False:
                raise UsageError(f"--{o.name.replace('_', '-')} is an option of --codec {c.codec_id}, not {codec_id}")
    cfg = {"id": codec_id, "max_pixels": kw["max_pixels"]}
    for o in cls.cli_options:
        value = kw.get(o.name)
        value = value.value if isinstance(value, enum.Enum) else value
        if value is not None and not (o.flag and not value):
            cfg[o.name] = o.parse(value) if o.parse else value
    if codec_id in ("bsq", "vq") and "tokenizer" not in cfg:
        raise UsageError(f"--codec {codec_id} needs --tokenizer TOK/ (train one with `vistok train-tokenizer`)")
    return cfg


def shard(**kw) -> None:
    """Tokenize SOURCES into WebDataset shards with a manifest, in parallel with Ray. Sources and --out may be
    in object storage (s3://, gs://): shards are uploaded whole, each marked done only after its upload."""
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.tokenize import get_codec

    cfg = _codec_config(kw["codec"].value, kw)
    if isinstance(cfg.get("palette"), str):
        cfg["palette"] = _palette(cfg["palette"], kw)
    the_codec = get_codec(cfg)
    pre = Preprocess(**{k: kw[k] for k in ("size", "crops", "seed", "max_pixels", "fps", "clip_len", "clip_stride",
                                           "max_clips", "video_timeout", "gray")}, resize=kw["resize"].value)
    if the_codec.get_config().get("transcode") == "never" and not pre.identity():
        raise UsageError("--transcode never keeps each file's coefficients, so it cannot be combined with --size/--crops")
    res = run_job(kw["sources"], kw["out"], the_codec, pre, shard_size=kw["shard_size"], compress=kw["compress"],
                  executor=kw["executor"].value, workers=kw["workers"] or None,
                  address=kw["address"] or os.environ.get("RAY_ADDRESS") or None, retry_errors=kw["retry_errors"],
                  store_orders=tuple(kw["store_order"] or ()), quiet=kw["quiet"], label_from=kw["label_from"],
                  storage_options=kw["storage_options"], extensions=kw["extensions"])
    if res.up_to_date:
        typer.echo(f"{res.folder}: up to date ({res.samples} samples in {res.shards} shards, {res.errors} errors)")
    else:
        typer.echo(f"{res.folder}: {res.samples} samples in {res.shards} shards from {res.inputs} inputs, "
                   f"{res.errors} errors ({res.seconds:.1f}s)" + (f"; see {res.folder / 'errors.jsonl'}" if res.errors else "")
                   + _skipped_note(res.skipped))
    if res.errors and not res.samples:
        first = next(iter(_error_rows(res.folder)), {})
        raise UsageError(f"every input failed ({res.errors}; the first, {first.get('source', '?')}: "
                         f"{first.get('reason', '?')}): nothing to train on; see {res.folder}/errors.jsonl")
    if kw["fail_on_error"] and res.errors:
        raise typer.Exit(3)


def _palette(value: str, kw: dict) -> list[list[int]]:
    """--palette K (fitted here on the sources' training images) or --palette DATASET (that dataset's colours)."""
    if value.isdigit():
        k = int(value)
        if not 2 <= k <= 65536:
            raise UsageError(f"--palette {k}: must be 2..65536 colours")
        from vistok.train.tokenizer import fit_palette

        if not kw["quiet"]:
            print(f"fitting a palette of {k} colours (k-means) on the sources' training images", file=sys.stderr)
        return fit_palette(kw["sources"], k, seed=kw["seed"], options=kw["storage_options"] or None)
    from vistok.shards.store import open_any

    codec = open_any(Loc(value, kw["storage_options"] or None)).manifest.codec
    if codec.get("id") != "pixels" or "palette" not in codec:
        raise UsageError(f"--palette {value}: not a number of colours, nor a pixels dataset with a palette")
    return codec["palette"]


def _error_rows(folder) -> list[dict]:
    path = Loc(folder) / "errors.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()[:1] if line.strip()] if path.exists() else []


_fixed = pyinspect.signature(_shard_options, eval_str=True)
_SHARD_OWN = frozenset(_fixed.parameters)  # shard's own options (--fps too), never a codec's alone
shard.__signature__ = _fixed.replace(parameters=[*_fixed.parameters.values(), *_codec_params(set(_fixed.parameters))])
shard.__annotations__ = {p.name: p.annotation for p in shard.__signature__.parameters.values()}
app.command()(shard)


@app.command()
def inspect(
    dataset: Annotated[str, typer.Argument(help="Dataset folder or URL, or packed store.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    psnr: Annotated[int, typer.Option(min=0, help="Also decode N records and report PSNR against their source files.")] = 0,
    keys: Annotated[bool, typer.Option("--keys", help="List the records' keys instead, one a line, in dataset order.")] = False,
    labels: Annotated[bool, typer.Option("--labels", help="With --keys: each key's label, then the count of each class.")] = False,
    storage_options: StorageOptions = None,
) -> None:
    """Summarize a dataset: samples, tokens per sample, bytes per sample, vocabulary usage, entropy, errors;
    with --keys, its keys (and labels)."""
    from vistok.pipelines.verify import psnr_sample
    from vistok.shards.summary import format_summary, record_keys, summarize

    where = Loc(dataset, storage_options)
    if labels and not keys:
        raise UsageError("--labels goes with --keys")
    if keys:
        counts: dict[str, int] = {}
        rows = []
        for key, label in record_keys(where):
            counts[label] = counts.get(label, 0) + 1
            if as_json:
                rows.append({"key": key, "label": label} if labels else key)
            else:
                typer.echo(f"{key}\t{label}" if labels else key)
        classes = {k: counts[k] for k in sorted(counts, key=str) if k is not None}
        if as_json:
            typer.echo(json.dumps({"keys": rows, **({"classes": classes} if labels else {})}, indent=1))
        elif labels:
            typer.echo(f"{sum(counts.values())} records; classes: " + (", ".join(f"{k} {v}" for k, v in classes.items())
                                                                        or "none (no record has a label)"))
        return
    s = summarize(where)
    if psnr:
        s["psnr"] = psnr_sample(where, psnr)
    typer.echo(json.dumps(s, indent=1) if as_json else format_summary(s))


@app.command()
def verify(
    datasets: Annotated[list[str], typer.Argument(help="Dataset folders or URLs (s3://..., gs://...).")],
    write: Annotated[bool, typer.Option("--write", help="Add each shard's sha256 to the manifest of a sound dataset written before manifests listed them.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per dataset).")] = False,
    deep: Annotated[bool, typer.Option("--deep", help="Also have the codec parse every record's tokens (units, coordinates): about twice the time of a read.")] = False,
    executor: Annotated[str, typer.Option(help="local (in-process), ray, or auto (Ray from 64 shards on).")] = "auto",
    workers: Annotated[int, typer.Option(min=0, help="Ray workers when starting Ray locally (default: all cores).")] = 0,
    address: Annotated[str, typer.Option(help="Address of an existing Ray cluster (or set RAY_ADDRESS).")] = "",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    storage_options: StorageOptions = None,
) -> None:
    """Read every shard once and check it against the manifest: size, sha256, sample count, that it belongs
    to this dataset, that every member parses as the codec's tokens inside the vocabulary. One line per
    damaged shard and a summary; exit 1 when anything is damaged. Run it after copying a dataset."""
    from vistok.pipelines.integrity import verify as run_verify

    if executor not in ("auto", "local", "ray"):
        raise UsageError(f"--executor takes auto, local or ray, got {executor!r}")
    reports = run_verify([str(d) for d in datasets], executor, workers or None,
                         address or os.environ.get("RAY_ADDRESS") or None, write, storage_options, quiet or as_json, deep)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in reports], indent=1))
    else:
        for r in reports:
            for line in r.lines():
                typer.echo(f"error: {line}" if r.problem else line, err=bool(r.problem))
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


@app.command()
def decode(
    dataset: Annotated[str, typer.Argument(help="Dataset folder or URL, or packed store.")],
    key: Annotated[str, typer.Option(help="Key of the record to decode.")] = "",
    out: Annotated[Path, typer.Option(show_default=False, help="Output file: .png (a clip: NAME-000.png...), .jpg (jpeg codec: the coefficients written exactly), .mp4 (a clip), .264 (avc codec: the record's own H.264 stream, exactly) or .y4m (avc: its decoded YUV planes); its folder is made. With --key.")] = Path(""),
    all_: Annotated[bool, typer.Option("--all", help="Decode every record into --out-dir.")] = False,
    out_dir: Annotated[Path, typer.Option(show_default=False, help="Folder for --all (made if missing).")] = Path(""),
    fmt: Annotated[ImageFormat, typer.Option("--format", help="For --all.")] = "png",
    storage_options: StorageOptions = None,
) -> None:
    """Rebuild media from tokens."""
    from vistok.shards.render import save_record
    from vistok.shards.store import open_any

    if all_ and (not str(out_dir) or str(out_dir) == "."):
        raise UsageError("--all needs --out-dir")
    if not all_ and (not key or not str(out) or str(out) == "."):
        raise UsageError("give --key KEY --out FILE, or --all --out-dir DIR")
    if not all_ and out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".mp4", ".264", ".h264", ".y4m"):
        raise UsageError(f"--out {out}: write a .png, .jpg, .mp4, .264 or .y4m file")
    ds = open_any(dataset, storage_options)
    if all_:
        out_dir.mkdir(parents=True, exist_ok=True)
        n = records = 0
        for rec in ds:
            n += len(save_record(ds.codec, rec, out_dir / f"{rec.key}.{fmt.value}"))  # a clip: a file per frame
            records += 1
        typer.echo(f"wrote {n} files of {records} records to {out_dir}")
        return
    written = save_record(ds.codec, ds.get(key), out)
    typer.echo(f"wrote {written[0]}" + (f" ... {written[-1].name} ({len(written)} frames)" if len(written) > 1 else ""))


@app.command()
def pack(
    dataset: Annotated[str, typer.Argument(help="Dataset folder or URL written by `vistok shard`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The zarr v3 store to write (e.g. data.zarr).")],
    executor: Annotated[str, typer.Option(help="local (in-process) or ray.")] = "local",
    workers: Annotated[int, typer.Option(min=0, help="Ray workers when starting Ray locally.")] = 0,
    address: Annotated[str, typer.Option(help="Address of an existing Ray cluster.")] = "",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    storage_options: StorageOptions = None,
) -> None:
    """Pack a dataset into one zarr v3 store: random access by index or key, uniform shuffling per epoch."""
    from vistok.executors import ExecutorConfig
    from vistok.pipelines.pack import pack as run_pack
    from vistok.shards.store import PackedStore

    runner = ExecutorConfig(executor, workers or None, address or os.environ.get("RAY_ADDRESS") or None)
    path = run_pack(Loc(dataset, storage_options), out, runner, quiet=quiet)
    st = PackedStore(path)
    typer.echo(f"{path}: {len(st)} samples, {st.total} tokens")


@app.command("train-tokenizer")
def train_tokenizer_cmd(
    sources: Annotated[list[str], typer.Argument(help="Image sources, as for `vistok shard` (e.g. sample).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Tokenizer folder to write.")] = Path("tokenizers/bsq"),
    kind: Annotated[str, typer.Option(help="bsq (binary spherical quantization) or vq (EMA codebook).")] = "bsq",
    bits: Annotated[int, typer.Option(min=8, max=18, help="bsq: code bits L (vocabulary 2**L), 8..18.")] = 16,
    codebook: Annotated[int, typer.Option(min=2, help="vq: codebook size K.")] = 1024,
    patch: Annotated[int, typer.Option(min=4, max=16, help="Patch size (pixels per code side), 4..16.")] = 8,
    width: Annotated[int, typer.Option(min=1, help="Channels of the conv blocks.")] = 96,
    blocks: Annotated[int, typer.Option(min=1, help="Residual blocks in the encoder and the decoder.")] = 2,
    crop: Annotated[int, typer.Option(min=8, help="Training crop side.")] = 64,
    batch: Annotated[int, typer.Option(min=1, help="Crops per step.")] = 32,
    lr: Annotated[float, typer.Option(min=0, help="Peak learning rate (cosine decay).")] = 2e-3,
    minutes: Annotated[float, typer.Option(min=0, help="Training time budget.")] = 8.0,
    steps: Annotated[int, typer.Option("--max-steps", "--steps", min=0, help="Train exactly this many optimizer steps instead (0 = use --minutes; --steps: the old name, kept).")] = 0,
    entropy_weight: Annotated[float, typer.Option(min=0, help="bsq: weight of the entropy regularizer.")] = 0.05,
    entropy_gamma: Annotated[float, typer.Option(min=0, help="bsq: weight of its codebook-entropy term (code usage).")] = 32.0,
    scales: Annotated[int, typer.Option(min=1, help="bsq: residual codes over this many scales (grid/2**(S-1) ... grid, as in VAR; train with --order next-scale); 1 = one grid.")] = 1,
    heldout: Annotated[float, typer.Option(min=0, max=1, help="Fraction of the images held out for evaluation (lowest key hashes).")] = 0.15,
    seed: Annotated[int, typer.Option(min=0, help="Seed for initialization and crops.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Carry on a --steps run from OUT/checkpoint.pt (written every 200 steps), to the same weights.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a BSQ or VQ patch tokenizer; reports held-out PSNR, code usage and perplexity."""
    _check_names(device=device)
    from vistok.nn.autoencoder import AEConfig
    from vistok.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    ae = AEConfig(kind=kind, patch=patch, width=width, blocks=blocks, bits=bits, codebook=codebook,
                  entropy_weight=entropy_weight, entropy_gamma=entropy_gamma, scales=scales)
    cfg = TokenizerTrainConfig(sources=list(sources), out=str(out), crop=crop, batch=batch, lr=lr, minutes=minutes,
                               max_steps=steps, heldout=heldout, seed=seed, device=device)
    rep = train_tokenizer(ae, cfg, quiet=quiet, resume=resume)
    typer.echo(f"{rep['out']}: held-out PSNR {rep['psnr']:.2f} dB, {rep['codes_used']} codes used, perplexity "
               f"{rep['perplexity']:.0f} (floor {rep['perplexity_floor']:.0f}), {rep['bits_per_image']:.0f} bits/image, "
               f"{rep['steps']} steps")


@app.command("show-order")
def show_order(
    dataset: Annotated[str, typer.Argument(help="Dataset folder or URL, or packed store.")],
    key: Annotated[str, typer.Option(help="Record key (default: the first record).")] = "",
    order: Annotated[str, typer.Option(help=f"Order name: {', '.join(order_usages())} (e.g. randsac:11,5, dc-first:slic:8, dc-first:frontier).")] = "hilbert",
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("order.png"),
    seed: Annotated[int, typer.Option(min=0, help="Seed for random orders.")] = 0,
    known: Annotated[str, typer.Option(help=f"Draw the completion stream of this region (as `sample --complete --known`), its units outlined: {REGION_HELP}.")] = "",
    parallel: Annotated[str, typer.Option(help="Draw a parallel mode's groups over the order: wavefront numbers each unit with its wave (give --order canonical).")] = "",
    storage_options: StorageOptions = None,
) -> None:
    """Draw an order over a decoded record: a path through the units coloured by rank, segments (randsac,
    slic superpixels, frontier rings) outlined; for dc-first orders, the order after the DC image; with
    --known, the stream a completion follows (the region's units first); with --parallel wavefront, the
    wave of each unit."""
    _check_names(order=order, parallel=parallel)
    from vistok.shards.render import draw_order
    from vistok.shards.store import open_any
    from vistok.tokenize.region import parse_region

    region = parse_region(known) if known else None
    ds = open_any(dataset, storage_options)
    rec = ds.get(key) if key else next(iter(ds))
    draw_order(ds.codec, rec, order, seed, known=region, parallel=parallel).save(out)
    typer.echo(f"wrote {out} ({rec.key}, order {order})")


FOLLOW_HELP = (f"Follow an order the model chooses instead of the run's own ({', '.join(adaptive_orders())}: an "
               "--parallel any run picks each step's places itself, k lowest-entropy places at a time, with --steps N; "
               "a decoder runs the same model, so no order bits). Default: the run's order.")
STEPS_HELP = ("--parallel any runs: model steps per image, 1 up to its tokens, or all (one token per step, "
              "the default), each step a group of the cosine schedule.")


def one_steps(text: str) -> int | None:
    if not text:
        return None
    steps = parse_steps(text)
    if len(steps) != 1:
        raise UsageError(f"--steps takes one step count here, got {text!r}")
    return steps[0]


def _recorded(ctx: typer.Context, out: Path, run):
    """`run()`, then RUN/run.toml (also after an interrupted run: its checkpoint resumes with these options);
    not after a refusal, which may name another run's folder."""
    try:
        res = run()
    except Interrupted:
        _write_resolved(ctx, out)
        raise
    _write_resolved(ctx, out)
    return res


NOT_CONFIG = {"config", "resume", "quiet", "halt_at", "storage_options"}  # how to run this time, not the run


def _read_config(ctx: typer.Context, param, path: Path | None) -> Path | None:
    """--config FILE (read before the other options): its keys become their defaults, so flags override it."""
    if path is None or ctx.resilient_parsing:
        return path
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from None
    flat = {}
    for key, value in raw.items():  # a table per component ([data], [optim]) is read as one level
        for k, v in (value.items() if isinstance(value, dict) else [(key, value)]):
            flat[k.replace("-", "_")] = v
    names = {p.name for p in ctx.command.params} - NOT_CONFIG
    if unknown := sorted(set(flat) - names):
        raise typer.BadParameter(f"{path}: no option named {', '.join(unknown)} (the keys are the options' names: "
                                 f"{', '.join(sorted(names))})")
    ctx.default_map = {**(ctx.default_map or {}), **flat}
    return path


def _write_resolved(ctx: typer.Context, out: Path) -> None:
    """RUN/run.toml: every option of this run as it was resolved (file, then flags), a table per config component
    ([data], [model], [optim], [run]); `--config` takes it back."""
    table_of = {name: c.__name__.removesuffix("Config").lower() for c in COMPONENTS for _, name, _, _ in cli_flags(c)}
    top: list[str] = []
    tables: dict[str, list[str]] = {}
    for name, value in ctx.params.items():
        value = getattr(value, "value", value)  # an enum's
        if name in NOT_CONFIG or value is None:
            continue
        value = [str(v) for v in value] if isinstance(value, (list, tuple)) else value
        # JSON's strings, numbers, booleans and arrays of strings are TOML's
        line = f"{name} = {json.dumps(str(value) if isinstance(value, Path) else value)}"
        (tables.setdefault(table_of[name], []) if name in table_of else top).append(line)
    order = list(dict.fromkeys(table_of.values()))  # data, model, optim, run
    lines = top + [line for table in sorted(tables, key=order.index) for line in ("", f"[{table}]", *tables[table])]
    if Path(out).is_dir():  # written whole or not at all; each rank of a torchrun job through its own temporary
        from vistok.atomic import AtomicPath

        with AtomicPath(Path(out) / "run.toml") as tmp:
            tmp.write_text("# vistok train --config run.toml reruns this run\n" + "\n".join(lines) + "\n")


def _flag(f, name: str, help_text: str, default):
    """A typer option for a config field (`vistok.train.config.option`): bools as --x (off by default) or
    --x/--no-x; the field's limits; its help."""
    m, dashed = f.metadata, "--" + name.replace("_", "-")
    kind = {"bool | None": bool, "bool": bool, "int": int, "float": float, "str": str}[str(f.type)]
    decls = m["decls"] or ((f"{dashed}/--no-{dashed[2:]}",) if kind is bool and default is not False else (dashed,))
    option = typer.Option(*decls, help=help_text, hidden=m["hidden"], show_default=default is not None,
                          **m["limits"])
    return pyinspect.Parameter(name, pyinspect.Parameter.KEYWORD_ONLY, default=default,
                               annotation=Annotated[(kind | None) if default is None else kind, option])


def with_config_flags(*components):
    """The command also takes a flag per field of these config dataclasses, generated from the fields (their
    help, defaults and limits), after its own arguments and before its other options; they arrive in
    `**options` by flag name."""
    def decorate(fn):
        own = list(pyinspect.signature(fn, eval_str=True).parameters.values())
        head = [p for p in own if p.default is p.empty and p.kind is not p.VAR_KEYWORD]
        rest = [p.replace(kind=p.KEYWORD_ONLY) for p in own if p.default is not p.empty]
        flags = [_flag(*flag) for flag in cli_flags(*components)]
        fn.__signature__ = pyinspect.Signature(head + rest[:1] + flags + rest[1:])
        return fn

    return decorate


@app.command()
@with_config_flags(*COMPONENTS)
def train(
    ctx: typer.Context,
    datasets: Annotated[list[str], typer.Argument(help="Dataset folders or URLs (s3://...; streamed, not downloaded), or packed .zarr stores (mixed by --weights); or `datasets` in --config.")],
    config: Annotated[Path, typer.Option(is_eager=True, callback=_read_config, show_default=False, help="A TOML file of this command's options by their own names (order = \"random\", max_steps = 40, block_size = 1024, datasets = [\"shards/a\"]; tables such as [data] or [optim] are read as one level); flags given override it. Every run writes its resolved options to RUN/run.toml, which reruns it.")] = None,
    weights: Annotated[str, typer.Option(help="Comma-separated mixing weights, one per dataset.")] = "",
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's latest checkpoint, with any --workers and any number of ranks whose --batch-size keeps its global batch.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    shard_cache: Annotated[str, typer.Option(help="Download shards from object storage whole into this local folder and read them there (least recently used out first).")] = "",
    shard_cache_gb: Annotated[float, typer.Option(min=0, help="Size limit of --shard-cache in GB.")] = 10.0,
    skip_damaged: Annotated[bool, typer.Option("--skip-damaged", help="Leave damaged shards out (listed in RUN/damaged.jsonl) instead of stopping at the first, which is named.")] = False,
    storage_options: StorageOptions = None,
    **options,
) -> None:
    """Train a GPT-style next-token model on token shards (GPU when present; DDP under torchrun). The options
    are the fields of the run's config dataclasses (vistok.train.config: data, model, optimizer, run)."""
    _check_names(order=options["order"], parallel=options["parallel"], attention=options["attention"],
                 preset=options["preset"], device=options["device"])
    from vistok.nn.gpt import PRESETS
    from vistok.train.trainer import train as run_train

    def component(cls, **also):
        return cls(**{f.name: options[name] for f, name, _, _ in cli_flags(cls)}, **also)

    data = component(DataConfig, datasets=[str(d) for d in datasets], seed=options["seed"],
                     weights=_floats("--weights", weights) if weights else None)
    data = replace(data, block_size=data.block_size or PRESETS[options["preset"]]["block_size"]).resolved()
    cfg = component(TrainConfig)
    cache = Cache(str(shard_cache), int(shard_cache_gb * 1e9)) if shard_cache else None
    out = Path(cfg.out)
    res = _recorded(ctx, out, lambda: run_train(data, cfg, resume=resume, quiet=quiet, storage_options=storage_options,
                                                cache=cache, skip_damaged=skip_damaged))
    typer.echo(_train_summary(res))


def _train_summary(res: dict) -> str:
    """The last line of `vistok train`."""
    if "step" not in res["last"]:  # resumed at its end: no step taken
        return f"{res['run']}: at step {res['step']} of {res['planned']} already; nothing to train (--max-steps N extends it)"
    skipped = f"; skipped {res['skipped_shards']} damaged shards (listed in {res['run']}/damaged.jsonl)" if res["skipped_shards"] else ""
    return f"{res['run']}: step {res['step']}, last loss {res['last']['loss_bits']} bits/token{skipped}"


@app.command("eval")
def eval_(
    run: Annotated[Path, typer.Argument(help="Run folder (its latest checkpoint) or a step-N folder.")],
    datasets: Annotated[list[str], typer.Argument(help="Dataset folder(s) or URLs; default: the run's own.")] = None,
    split: Annotated[Split, typer.Option(help="Records to score: heldout, all, or auto (held-out split of a dataset the run trained on, all of any other).")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(min=0, help="At most this many records (0 = all).")] = 0,
    stride: Annotated[int, typer.Option(min=0, help="Records longer than the context are scored in windows of the context's length every STRIDE positions, each token once with what precedes it in its window (0 = the run's stride; the context length = independent pieces).")] = 0,
    per_frame: Annotated[bool, typer.Option("--per-frame", help="Clips: bits of frame t given the earlier frames and of frame t alone, per frame index, and their ratio over frames 2 on (conditional_to_independent_ratio).")] = False,
    steps: Annotated[str, typer.Option(help=STEPS_HELP + " Comma-separated: a bits-versus-steps curve (steps_curve), the first one the headline.")] = "",
    parts: Annotated[bool, typer.Option("--parts", help="JPEG: bits of the DC image (every DC token) and of the rest, per image (dc_bits_per_image, rest_bits_per_image); codecs with levels (jpeg-refine, dense wavelets): each level's bits (level0_bits_per_image, ...); avc: each syntax element's (mb_type_bits_per_image, i4_mode_..., luma_..., with FRAME and EOS in mb_type).")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda...")] = "auto",
    skip_damaged: Annotated[bool, typer.Option("--skip-damaged", help="Leave damaged shards out (listed in the result's skipped_shards) instead of stopping at the first, which is named.")] = False,
    order: Annotated[str, typer.Option(help=FOLLOW_HELP)] = "",
    given: Annotated[str, typer.Option(help=f"Also what a known region tells about the rest of each image: the rest's bits in the stream that sends the region first (as sample --complete follows it), the same tokens' bits sent first with nothing given, and the difference (bits_the_region_tells). The region: {REGION_HELP}. Takes runs that sample --complete takes.")] = "",
    storage_options: StorageOptions = None,
) -> None:
    """Bits per token and per image (order bits included) and model steps per image, in the run's order and
    parallel mode; for JPEG datasets also JPEG's own bits and the ratio; with --parts, the DC image's bits
    and the rest's; with --per-frame, conditional vs independent bits per frame of clips."""
    _check_names(order=order or None, device=device, steps=steps)
    from vistok.train.evaluate import evaluate, format_frame_table
    from vistok.train.trainer import pick_device

    res = evaluate(run, [str(d) for d in datasets] if datasets else None, limit=limit or None, device=pick_device(device),
                   split=split.value, stride=stride, per_frame=per_frame, storage_options=storage_options,
                   steps=parse_steps(steps) if steps else None, parts=parts, skip_damaged=skip_damaged,
                   order=order or None, given=given)
    if as_json:
        typer.echo(json.dumps(res, indent=1))
        return
    for k, v in res.items():
        if k not in ("per_frame_bits", "steps_curve", "skipped_shards"):
            typer.echo(f"{k:34s}{v:.4f}" if isinstance(v, float) else f"{k:34s}{v}")
    for p in res.get("steps_curve", [])[1:]:
        typer.echo(f"steps {p['steps']:>6}: {p['bits_per_image']:.1f} bits/image in {p['steps_per_image']:.1f} steps")
    if per_frame:
        typer.echo(format_frame_table(res))
    for name in res.get("skipped_shards", []):
        typer.echo(f"skipped damaged shard {name}")


@app.command()
def sample(
    run: Annotated[Path, typer.Argument(help="Run folder or step-N folder.")],
    n: Annotated[int, typer.Option(min=1, help="Number of samples.")] = 16,
    out: Annotated[Path, typer.Option(help="PNG grid to write.")] = Path("samples.png"),
    temperature: Annotated[float, typer.Option(min=0, help="Softmax temperature (0 = greedy).")] = 1.0,
    top_k: Annotated[int, typer.Option(min=0, help="Keep the k most likely tokens (0 = off).")] = 0,
    top_p: Annotated[float, typer.Option(min=0, max=1, help="Nucleus sampling mass (1 = off).")] = 1.0,
    size: Annotated[int, typer.Option(min=0, help="Image side (default: the training data's).")] = 0,
    seed: Annotated[int, typer.Option(min=0, help="Sampling seed.")] = 0,
    frames: Annotated[int, typer.Option(min=0, help="Generate a clip of this many frames (after the prompt's), written as --out .mp4 plus a .png strip.")] = 0,
    prompt: Annotated[str, typer.Option(help="Continue a clip: a video file (tokenized with the run's codec and preprocessing) or a record key of the run's datasets (or --data).")] = "",
    prompt_frames: Annotated[int, typer.Option(min=1, help="Frames of the prompt to continue from.")] = 1,
    data: Annotated[list[str], typer.Option(help="Dataset(s) to look a --prompt key up in (default: the run's).")] = None,
    complete: Annotated[str, typer.Option(help="Complete this image (tokenized with the run's codec and preprocessing) from its --known region: the known units' tokens come first, as given, and the model generates the rest; a grid of the image (unknown part faded) and --n completions, each also as OUT-i.png. Takes runs trained with --order random (token by token or --parallel any), or an order whose stream starts with the region (raster: the top).")] = "",
    known: Annotated[str, typer.Option(help=f"With --complete, the region given: {REGION_HELP}.")] = "",
    steps: Annotated[str, typer.Option(help=STEPS_HELP)] = "",
    order: Annotated[str, typer.Option(help=FOLLOW_HELP)] = "",
    keep: Annotated[Path, typer.Option(show_default=False, help="Also write each sampled stream as a file in this folder (made if missing): the avc codec's H.264 stream, sample-I.264, which any H.264 decoder plays.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda...")] = "auto",
    storage_options: StorageOptions = None,
) -> None:
    """Generate token streams in the run's order (a group per step for parallel runs) under the codec's
    grammar, so they always decode, and save a PNG grid; with --frames, a clip (continuing --prompt)."""
    _check_names(order=order or None, device=device, steps=steps)
    from vistok.train.sample import clip_run, sample_run
    from vistok.train.trainer import pick_device

    tk, tp = top_k or None, top_p if top_p < 1 else None
    if bool(complete) != bool(known):
        raise UsageError("--complete IMAGE and --known REGION go together")
    if complete:
        from vistok.train.sample import complete_run

        paths = complete_run(run, complete, known, n, out, temperature, tk, tp, seed, pick_device(device),
                             one_steps(steps))
        typer.echo(f"wrote {paths[0]} and {len(paths) - 1} completions ({paths[1].name} ...)")
        return
    if frames or prompt:
        clip_out = Path("clip.mp4") if out == Path("samples.png") else out
        res = clip_run(run, clip_out, frames, prompt, prompt_frames, [str(d) for d in data] if data else None,
                       temperature, tk, tp, seed, size or None, pick_device(device), storage_options=storage_options)
        typer.echo(f"wrote {res['mp4'] or '(no mp4: no frame decoded)'} and {res['strip']}: {res['prompt_frames']} "
                   f"prompt frames, {res['decoded_generated_frames']} of {res['generated_frames']} generated frames decoded "
                   f"({res['steps']} model steps)")
        if res["decoded_generated_frames"] < res["generated_frames"]:
            raise typer.Exit(1)
        return
    path = sample_run(run, n, out, temperature, tk, tp, seed, size or None, pick_device(device),
                      storage_options=storage_options, steps=one_steps(steps), order=order or None, keep=keep)
    typer.echo(f"wrote {path}")


@app.command()
def probe(
    run: Annotated[Path, typer.Argument(help="Run folder or step-N folder.")],
    datasets: Annotated[list[str], typer.Argument(help="Labelled dataset(s) (folders or URLs); default: the run's own. Train on images outside the run's held-out split, test on those inside it.")] = None,
    test: Annotated[list[str], typer.Option(help="Test dataset(s): then DATASETS are the training images, whole.")] = None,
    layer: Annotated[list[str], typer.Option(help="Residual-stream layer(s) to pool: all (default: every layer probed, the best chosen on a validation fifth of the training images) or N (0 = embeddings; repeatable: the layers' features concatenated).")] = None,
    mask: Annotated[list[ProbeMask], typer.Option(help="none: every token sees the whole image (RandSAC's probe); train: the mask the model was trained with (iGPT's). Repeatable; default both.")] = None,
    finetune: Annotated[int, typer.Option(min=0, help="Also fine-tune the whole model with a linear head for this many epochs and report its test top-1 (0 = off).")] = 0,
    finetune_images: Annotated[int, typer.Option(min=0, help="Fine-tune on the first this many training images (0 = all of them).")] = 0,
    train_limit: Annotated[int, typer.Option(min=0, help="At most this many training images (0 = all).")] = 5000,
    test_limit: Annotated[int, typer.Option(min=0, help="At most this many test images (0 = all).")] = 2000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda...")] = "auto",
    storage_options: StorageOptions = None,
) -> None:
    """Linear (logistic regression) and k-NN (cosine, k=20) top-1 on frozen features of every layer of the
    trained model, under both masks, of the same architecture at random initialisation, and of raw pixels;
    with --finetune, the fine-tuned model's top-1."""
    _check_names(device=device)
    from vistok.train.probe import ProbeConfig, format_probe
    from vistok.train.probe import probe as run_probe
    from vistok.train.trainer import pick_device

    picked = [x for x in (layer or []) if x != "all"]
    if not all(x.isdigit() for x in picked):
        raise UsageError(f"--layer takes all or a layer number, got {', '.join(picked)}")
    cfg = ProbeConfig(layers=[int(x) for x in picked], train_limit=train_limit, test_limit=test_limit,
                      masks=tuple(m.value for m in mask) if mask else ("train", "none"), finetune=finetune,
                      finetune_images=finetune_images)
    res = run_probe(run, [str(d) for d in datasets] if datasets else None, [str(t) for t in test] if test else None,
                    cfg, pick_device(device), storage_options, quiet=False)
    if as_json:
        typer.echo(json.dumps(res, indent=1))
        return
    typer.echo(format_probe(res))


STUDY_CODECS = {
    "bsq": "codes of a 4x4-patch BSQ tokenizer the study trains first (OUT/tokenizer), or of --tokenizer",
    "vq": "codes of a 4x4-patch VQ tokenizer the study trains first (OUT/tokenizer-vq), same vocabulary",
    "jpeg": "DCT coefficients (--layout, --quality)",
    "wavelet": "bior4.4 coefficients, 3 levels, dense (--wavelet-step)",
    "pixels": "gray values in 4x4-pixel units, RandSAC's 8x8 grid on 32x32 (--bits)",
    "avc": "H.264 syntax elements from vistok's own encoder, intra, QP 28 or set by --psnr (a macroblock is 16x16: orders move macroblocks)",
}


# the flags that set a StudyConfig field, where they are not the field itself
STUDY_FLAGS = {"sources": {"source"}, "test_sources": {"test_source"},
               "codecs": {"codec", "tokenizer", "layout", "quality", "wavelet_step", "bits"}}


def _check_study_names(orders: list[str], parallel: str, preset: str, executor: str, label_from: str) -> None:
    from vistok.executors import ExecutorConfig

    for name in orders:
        _check_names(order=name)
    for mode in parallel.split(","):
        _check_names(parallel="" if mode == "none" else mode)
    _check_names(preset=preset)
    ExecutorConfig(executor)
    check_label_mode(label_from)


def _given_fields(ctx: typer.Context, fields: dict) -> dict:
    """The StudyConfig fields whose flags were given on the command line (they override a grid's)."""
    given = {k for k in ctx.params if ctx.get_parameter_source(k).name != "DEFAULT"}  # typer vendors click: by name
    return {field: v for field, v in fields.items() if given & STUDY_FLAGS.get(field, {field})}


def _study_codecs(codec: str, own: str, tokenizer: Path | None, layout: str, quality: int, wavelet_step: float,
                  bits: int) -> list[dict]:
    """`--codec a,b` -> the codecs' configurations (`own`: the study's own tokenizer, trained first)."""
    names = codec.split(",")
    bad = [c for c in names if c not in STUDY_CODECS]
    if bad or len(set(names)) != len(names):
        raise UsageError(f"--codec takes {', '.join(STUDY_CODECS)} (comma-separated, each once), got {codec!r}")
    if layout not in ("rle", "dense"):
        raise UsageError(f"--layout takes rle or dense, got {layout!r}")
    specs = {"jpeg": {"id": "jpeg", "quality": quality, "layout": layout},
             "pixels": {"id": "pixels", "unit": 4, "bits": bits},
             "wavelet": {"id": "wavelet", "layout": "dense", "levels": 3, "step": wavelet_step},
             "bsq": {"id": "bsq", "tokenizer": str(tokenizer) if tokenizer else own},
             "vq": {"id": "vq", "tokenizer": own},
             "avc": {"id": "avc", "qp": 28}}
    return [specs[c] for c in names]


@app.command()
def study(
    ctx: typer.Context,
    grid: Annotated[str, typer.Option(help="A named grid that sets the options below (those given override it): tokenizations (`make study`: pixels, JPEG, wavelet, BSQ, VQ at 21 dB on 16x16, 3 orders, a masked row, 3 seeds; measured 42 minutes on 2 cores), full (the same at 32x32 with 6 orders, 3 modes, the small preset, 5000 steps, 5 seeds: a GPU's or cluster's), orders (the defaults).")] = "orders",
    out: Annotated[Path, typer.Option("--out", "-o", help="Study folder (rerun to finish an interrupted study).")] = Path("runs/study"),
    source: Annotated[list[str], typer.Option(help="Labelled sources to shard (repeatable; default fashion-mnist:train:12000).")] = None,
    test_source: Annotated[list[str], typer.Option(help="Labelled sources the probes test on (repeatable; default fashion-mnist:test, all 10,000; 'heldout': the held-out split of --source).")] = None,
    label_from: Annotated[str, typer.Option(help="Labels of folder sources: parent (ImageFolder), json:FIELD or cls (as vistok shard).")] = "",
    orders: Annotated[str, typer.Option(help="Comma-separated orders.")] = "raster,random,hilbert,randsac:7,randsac:11,5,squares:2",
    parallel: Annotated[str, typer.Option(help=f"Comma-separated modes: none, {', '.join(mode_usages())} (pairs that do not fit an order are left out; any and masked go with random; any is scored at two step counts).")] = "none,segments,any",
    codec: Annotated[str, typer.Option(help="Comma-separated codecs, each a set of rows on the same images: " + "; ".join(f"{k} ({v})" for k, v in STUDY_CODECS.items()) + ".")] = "bsq",
    psnr: Annotated[float, typer.Option(min=0, help="Set each codec's knob (JPEG quality, wavelet step, pixel bits, avc QP) so that its held-out PSNR is within 1 dB of this; codecs that cannot are said so (0: as given). Every codec's PSNR, tokens and vocabulary are reported either way.")] = 0.0,
    tokenizer: Annotated[Path, typer.Option(help="bsq: an existing tokenizer folder instead of the study's own.")] = None,
    layout: Annotated[str, typer.Option(help="jpeg: layout of the tokens (dense: every order and mode).")] = "dense",
    quality: Annotated[int, typer.Option(min=1, max=100, help="jpeg: quality.")] = 50,
    wavelet_step: Annotated[float, typer.Option(min=0.01, help="wavelet: quantizer step.")] = 8.0,
    bits: Annotated[int, typer.Option(min=1, max=8, help="pixels: bits per gray value.")] = 8,
    size: Annotated[int, typer.Option(min=0, help="Images to SIZE x SIZE (0 = keep; Fashion-MNIST is 28).")] = 32,
    resize: Annotated[Resize, typer.Option(help="How an image becomes SIZE x SIZE (border: no resampling, edge-padded).")] = "border",
    steps: Annotated[int, typer.Option("--max-steps", "--steps", min=0, help="Optimizer steps per run (the same for every row; --steps: the old name, kept; eval's --steps counts model steps).")] = 200,
    minutes: Annotated[float, typer.Option(min=0, help="And a training time limit per run (0: none).")] = 0.0,
    seeds: Annotated[int, typer.Option(min=1, help="Runs per row, each with its own seed (model init, data order, the order's randomness); figures are reported as mean ± 95% CI, each row tested against the best (Welch's t-test).")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per training step.")] = 32,
    preset: Annotated[str, typer.Option(help="Model preset for every run.")] = "tiny",
    probe_train: Annotated[int, typer.Option(min=1, help="Training images of each probe.")] = 5000,
    probe_test: Annotated[int, typer.Option(min=0, help="Test images of each probe (0: all).")] = 0,
    finetune: Annotated[int, typer.Option(min=0, help="Epochs of fine-tuning per run (0: none).")] = 3,
    finetune_images: Annotated[int, typer.Option(min=0, help="Fine-tune on this many of the probe's training images (0: all).")] = 0,
    executor: Annotated[str, typer.Option(help="Where runs (and sharding) run: local (this process, one at a time) or ray (Ray tasks; a local Ray, or --address).")] = "local",
    address: Annotated[str, typer.Option(help="Ray cluster address (--executor ray).")] = "",
    row_cpus: Annotated[int, typer.Option(min=0, help="CPUs (torch threads) per run, in-process or asked of Ray (0: this machine's); a run asks Ray for a GPU where there are GPUs.")] = 0,
    photos: Annotated[bool, typer.Option("--photos", help="The real-photo set instead of --source: the embedded photos cut into 32x32 tiles in OUT/photos, a class per photo, labelled by folder, tested on their held-out split (default OUT: runs/study-photos).")] = False,
    list_rows: Annotated[bool, typer.Option("--list", help="Print the grid's settings and rows, run nothing.")] = False,
) -> None:
    """A grid of runs (codecs x orders x parallel modes x seeds) on one labelled dataset, the same number of
    optimizer steps per run, each evaluated, probed and fine-tuned: OUT/study.md, study.json, study.png."""
    from vistok.study import TOKENIZER, StudyConfig, describe, named_grid, photo_folders, split_orders, table
    from vistok.study import study as run_study

    _check_study_names(split_orders(orders), parallel, preset, executor, label_from)
    specs = _study_codecs(codec, TOKENIZER, tokenizer, layout, quality, wavelet_step, bits)
    tests = StudyConfig().test_sources if not test_source else ([] if test_source == ["heldout"] else list(test_source))
    sources = list(source) if source else StudyConfig().sources
    flags = dict(out=str(out), sources=sources, test_sources=tests, codecs=specs, psnr=psnr, label_from=label_from,
                 steps=steps, minutes=minutes, preset=preset, orders=split_orders(orders),
                 parallel=["" if p == "none" else p for p in parallel.split(",")], probe_train=probe_train,
                 probe_test=probe_test, size=size, resize=resize.value, batch_size=batch_size, finetune=finetune,
                 finetune_images=finetune_images, seeds=seeds, executor=executor, address=address, row_cpus=row_cpus)
    cfg = named_grid(grid, **_given_fields(ctx, flags))
    if photos:
        out = Path("runs/study-photos") if out == Path("runs/study") else out
        cfg = replace(cfg, out=str(out), sources=[str(photo_folders(out / "photos"))], label_from="parent",
                      test_sources=[])
    if list_rows:
        typer.echo(describe(cfg))
        return
    rows = run_study(cfg)
    typer.echo(table(rows, cfg, json.loads((Path(cfg.out) / "study.json").read_text())["codecs"]))


@app.command()
def compress(
    run: Annotated[Path, typer.Argument(help="Run folder (its latest checkpoint) or a step-N checkpoint.")],
    inputs: Annotated[list[str], typer.Argument(help="Images, videos, folders, globs, @list.txt (tokenized with the run's codec and preprocessing), or dataset folders / packed stores (their records).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the compressed files (KEY.vtkz).")],
    key: Annotated[list[str], typer.Option(help="Only the records of a dataset input with this key (repeatable).")] = None,
    passthrough: Annotated[bool, typer.Option("--passthrough", help="jpeg runs: JPEG files keep their own coefficients and size (no re-encoding), so decompress + decode gives back their coefficients exactly.")] = False,
    keep_meta: Annotated[bool, typer.Option("--keep-meta", help="Keep each record's key and metadata (source path, label) in its file; without it a file holds what decoding needs (16 bytes of container at the run's size).")] = False,
    steps: Annotated[str, typer.Option(help=STEPS_HELP + " A file records its steps; decompress takes them from it.")] = "",
    order: Annotated[str, typer.Option(help=FOLLOW_HELP + " decompress needs the same --order.")] = "",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    storage_options: StorageOptions = None,
) -> None:
    """Entropy-code records with the run's model (range coding in the run's order): one small file each."""
    _check_names(order=order or None, steps=steps)
    from vistok.progress import Progress
    from vistok.train.compress import SUFFIX, Coder, input_records
    from vistok.train.container import payload_bits

    coder = Coder.load(run, one_steps(steps), order or None)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    size, mode = coder.preprocess.get("size", 0), coder.preprocess.get("resize", "center-crop")
    if size and not passthrough and not all((Loc(i, storage_options) / "manifest.json").exists() for i in inputs):
        typer.echo(f"note: images are made {size}x{size} ({mode}), as the run's data were: decompress gives that "
                   "image, not the original (--passthrough keeps a JPEG whole)", err=True)

    def bad(input_id: str, exc: Exception) -> None:
        failed.append(input_id)
        typer.echo(f"error: {input_id}: {exc}", err=True)

    n = bits = size = 0
    written = set()
    recs = input_records(coder, inputs, key, passthrough, bad, storage_options)  # streamed: memory stays bounded
    with Progress("compress", total=0, unit="images", quiet=quiet) as bar:
        for rec, blob in coder.compress(recs, progress=bar.advance, keep_meta=keep_meta):
            (out / f"{rec.key}{SUFFIX}").write_bytes(blob)
            n, bits, size = n + 1, bits + payload_bits(blob), size + len(blob)
            written.add(rec.key)
    missing = sorted(set(key or []) - written)
    if missing and not n:
        raise UsageError(f"no record with key {', '.join(missing)} in {', '.join(inputs)}")
    typer.echo(f"wrote {n} files to {out}: {size} bytes, payload {bits / max(n, 1):.1f} bits/image")
    if missing:
        raise UsageError(f"no record with key {', '.join(missing)} in {', '.join(inputs)}")
    if failed:
        raise typer.Exit(1)


@app.command()
def decompress(
    run: Annotated[Path, typer.Argument(help="The run that compressed the files.")],
    files: Annotated[list[Path], typer.Argument(help="Files written by `vistok compress` (KEY.vtkz).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the decoded images (KEY.FORMAT, named as the files).")],
    fmt: Annotated[MediaFormat, typer.Option("--format", help="png, jpg (jpeg runs: the coefficients written exactly, a passthrough file's own coefficients), or mp4 (clips).")] = "png",
    order: Annotated[str, typer.Option(help="The --order the files were compressed in (an order the model chooses: confident); default: the run's own.")] = "",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Rebuild the records of compressed files with the run's model and write them as images."""
    _check_names(order=order or None)
    from vistok.progress import Progress
    from vistok.shards.render import save_record
    from vistok.train.compress import SUFFIX, Coder, read_files

    coder = Coder.load(run, order=order or None)
    out.mkdir(parents=True, exist_ok=True)
    n, failed = 0, []

    def bad(name: str, exc: Exception) -> None:
        failed.append(name)
        typer.echo(f"error: {name}: {exc}", err=True)

    named = ((str(p), blob) for p, blob in read_files(files, bad))
    with Progress("decompress", total=len(files), unit="images", quiet=quiet) as bar:
        for name, rec in coder.decompress_named(named, bad, progress=bar.advance):
            save_record(coder.codec, rec, out / f"{Path(name).name.removesuffix(SUFFIX)}.{fmt.value}")
            n += 1
    typer.echo(f"wrote {n} images to {out}" + (f"; {len(failed)} files could not be decoded" if failed else ""))
    if failed:
        raise typer.Exit(1)


def command():
    """The click command `main` runs: typer's, with plain metavars for options in --help (N, X, PATH, TEXT)
    instead of typer's type markers (<int range>, <list[str]>)."""
    group = typer.main.get_command(app)
    names = {"int": "N", "float": "X", "Path": "PATH", "str": "TEXT"}
    for cmd in group.commands.values():
        for p in cmd.params:
            kind = p.bare_type().removeprefix("list[").removesuffix("]")
            if kind in names and getattr(p, "metavar", None) is None and p.opts[0].startswith("-"):
                p.metavar = names[kind]
    return group
INTERRUPTED = "interrupted: rerun the same command to finish"


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a command as Ctrl-C does: cleanly, saying so


def main(argv: list[str] | None = None) -> None:
    """Run one command: usage errors and vistok's errors are one line on stderr (exit 2 for usage, 1 for the
    rest), an interrupted command says how to finish it (exit 130); never a traceback for bad input."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = command().main(args=argv, prog_name="vistok", standalone_mode=False)
    except typer.Abort:
        code = 130
    except KeyboardInterrupt:
        code = 130
    except Interrupted as exc:
        typer.echo(str(exc), err=True)
        sys.exit(130)
    except VistokError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2 if isinstance(exc, UsageError) else 1)
    except typer.TyperException as exc:  # click's usage errors (typer vendors click): one line, the option named
        sys.exit(_usage_error(exc))
    if code == 130:  # typer turns Ctrl-C into exit 130, silently
        typer.echo(INTERRUPTED, err=True)
    sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: Exception) -> int:
    """Print a command-line usage error as one line naming the option (help itself, for `vistok` alone)."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        typer.echo(exc.format_message())
        return 0
    ctx = getattr(exc, "ctx", None)
    name = ctx.command_path if ctx is not None else "vistok"
    hint = f" (see '{name} --help')" if name != "vistok" else " (see 'vistok --help')"
    typer.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
    return int(getattr(exc, "exit_code", 2))


if __name__ == "__main__":
    main()
