"""`vistok sample`: generate token streams under the codec's grammar and decode them to images."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vistok.errors import CodecError, UsageError
from vistok.nn.gpt import generate_groups
from vistok.progress import Progress
from vistok.record import TokenRecord
from vistok.tokenize.base import BOS, FRAME, H264_FILE, Codec, first_frames, get_codec
from vistok.tokenize.orders import stored_key, units_to_tokens
from vistok.tokenize.parallel import run_steps
from vistok.tokenize.region import Region, parse_region
from vistok.tokenize.stream import (
    Plan,
    StreamGrammar,
    StreamSpec,
    as_spec,
    group_windows,
    known_columns,
    plan,
    refuse_partial,
)
from vistok.train.checkpoint import load_model
from vistok.train.data import DataConfig, check_coords, open_datasets
from vistok.train.lanes import run_lanes, sampler


class BatchGrammar:
    """One stream grammar per sequence (`vistok.tokenize.stream`), seen by `GPT.generate` as tensors.

    `mask` sets disallowed logits to -inf; `advance` returns each new token's coordinates and the next
    token's known coordinates, shifted by one (0 = none) like the training data.
    """

    bos = BOS

    def __init__(self, codec: Codec, meta: dict, plans: list[Plan], forced: list[np.ndarray] | None = None,
                 limits: list[int] | None = None, on_step=None):
        self.codec, self.on_step = codec, on_step  # on_step(): once per generated position (a progress bar)
        self.gs = [StreamGrammar(codec, meta, p) for p in plans]
        self.batch = len(plans)
        self.A = len(codec.axes)
        self.forced = forced or [np.zeros(0, np.int64)] * self.batch  # each stream's prompt, in stream order
        self.pos = 0  # tokens taken so far by every stream
        # the model's coordinate tables: a stream whose next token would sit beyond them (an H.264 frame longer
        # than any the model saw: its byte axis) stops there, cut short, instead of indexing past a table
        self.limits = None if limits is None else np.asarray(limits)
        self.cut = [False] * self.batch

    def start(self) -> torch.Tensor:
        return torch.from_numpy(np.stack([g.next_input() for g in self.gs]))

    def start_places(self) -> torch.Tensor:
        """(B, 4) BOS's places for local attention: the first token's (query), none (key)."""
        return torch.from_numpy(np.stack([np.concatenate([g.next_place(), [-1, -1]]) for g in self.gs]))

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """Disallowed tokens to -inf; inside a prompt, every token but the prompt's."""
        rows = []
        for g, f in zip(self.gs, self.forced):
            m = g.allowed()
            if self.pos < f.size:
                tok = int(f[self.pos])
                if not m[tok]:
                    raise CodecError(f"the prompt's token {tok} at position {self.pos} is not allowed by the run's grammar")
                m = np.zeros_like(m)
                m[tok] = True
            rows.append(m)
        return logits.masked_fill(~torch.from_numpy(np.stack(rows)).to(logits.device), float("-inf"))

    def advance(self, toks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.on_step is not None:
            self.on_step()
        crd = np.zeros((self.batch, self.A), dtype=np.int64)
        nxt = np.zeros((self.batch, self.A), dtype=np.int64)
        self.places = np.full((self.batch, 4), -1, dtype=np.int64)  # each new input's (query, key) places
        for i, (g, t) in enumerate(zip(self.gs, toks.tolist())):
            if g.done or self.cut[i]:
                continue
            c = g.step(int(t))
            if c is not None:
                crd[i] = c + 1
            nxt[i] = g.next_input()
            self.places[i] = np.concatenate([g.next_place(), g.last_place])
            if self.limits is not None and ((crd[i] >= self.limits).any() or (nxt[i] >= self.limits).any()):
                self.cut[i] = True
                crd[i] = nxt[i] = 0
        self.pos += 1
        return torch.from_numpy(crd), torch.from_numpy(nxt)

    def finished(self) -> bool:
        return all(g.done or cut for g, cut in zip(self.gs, self.cut))


def sample_meta(codec: Codec, preprocess: dict, size: int | None, geometry: dict | None = None) -> dict:
    """The geometry to sample: SIZE x SIZE when asked, else the one every training record shared, else the
    training preprocessing's size."""
    if not size and geometry:
        return {k: v for k, v in geometry.items() if k != "frames"}
    side = size or preprocess.get("size") or 0
    if not side:
        raise UsageError("the training records have no one image size; pass --size")
    meta = {"height": side, "width": side, "components": 3}
    if "subsampling" in codec.get_config():
        meta["subsampling"] = codec.get_config()["subsampling"]
    return meta


def sample_plans(codec: Codec, meta: dict, n: int, spec: StreamSpec | str, seed: int,
                 stored: list[dict] | None = None) -> list[Plan]:
    """One plan per sample as `spec` names the stream: random orders drawn per sample from `seed`; stored orders
    taken from `stored`; groups cut to what the spec's context holds, as training cut them; `--parallel any` in
    the spec's steps."""
    return [plan(codec, meta, spec, np.random.default_rng([seed, i]), stored[i % len(stored)] if stored else None)
            for i in range(n)]


@torch.no_grad()
def sample_images(model, codec: Codec, meta: dict, n: int, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, seed: int = 0, max_new: int | None = None, device: str = "cpu",
                  use_cache: bool = True, spec: StreamSpec | str = "canonical", stored: list[dict] | None = None,
                  progress=None) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """-> (decoded images, None for one that did not decode; canonical token streams; model steps per image),
    generated as `spec` names the stream, in the model's context: in its order, group by group with a parallel
    mode (`--parallel any` in the spec's steps, one token per step when None), under the grammar. `progress`: a
    `vistok.progress.Progress`, advanced per generated position (per image when parallel)."""
    spec = as_spec(spec)
    refuse_partial(spec.parallel, "sample")
    spec = replace(spec, block_size=model.cfg.block_size, steps=run_steps(spec.parallel, spec.steps))
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    T, stride, parallel = spec.block_size, spec.stride, spec.parallel is not None
    plans = sample_plans(codec, meta, n, spec, seed, stored)
    check_fits(model, codec, meta)
    limit = max_new or codec.layout(meta).max_tokens
    streams, steps = [], 0
    if parallel and spec.parallel.unit_lanes:
        for p in plans:
            toks, k = run_lanes(model, codec, meta, p, sampler(temperature, top_k, top_p, gen), stride)
            streams.append(toks)
            steps += k
            if progress is not None:
                progress.advance(1)
    elif parallel:
        for p in plans:
            g = StreamGrammar(codec, meta, p)
            _, k = generate_groups(model, g, temperature, top_k, top_p, gen, use_cache,
                                   lambda g=g: group_windows(g.plan.groups, T, stride))
            streams.append(g.canonical())
            steps += k
            if progress is not None:
                progress.advance(1)
    else:
        grammar = BatchGrammar(codec, meta, plans, limits=model.cfg.axis_sizes,
                               on_step=progress.advance if progress is not None else None)
        model.generate(grammar, limit, temperature, top_k, top_p, gen, use_cache, stride)
        for i, g in enumerate(grammar.gs):
            if not (g.done or g.phase == "end" or grammar.cut[i]):
                raise CodecError(f"sample {i} did not finish within {limit} tokens")
            streams.append(g.canonical())
            steps += len(g.taken) + 1  # and EOS
    cut = grammar.cut if not parallel else [False] * n
    images = []
    for i, toks in enumerate(streams):
        frames, ok = decode_frames(codec, TokenRecord(f"sample-{i}", toks.astype(codec.vocab.dtype), dict(meta)))
        images.append(frames[0] if ok and not cut[i] else None)
    return images, [s.astype(codec.vocab.dtype) for s in streams], steps // max(1, n)


def decode_frames(codec: Codec, rec: TokenRecord) -> tuple[list[np.ndarray], int]:
    """A sampled record's frames and how many of them decoded: all of them for codecs whose grammar is
    complete; for H.264 bytes (the grammar cannot check a slice's syntax) the longest run of first frames the
    decoder accepts."""
    n = int(rec.meta.get("frames", 1))
    for k in range(n, 0, -1):
        try:
            pix = np.asarray(codec.decode(first_frames(rec, k)))
        except CodecError:
            continue
        return (list(pix) if k > 1 else [pix]), k
    return [], 0


def check_fits(model, codec: Codec, meta: dict) -> None:
    """Refuse a geometry (size, frames) whose places lie beyond the model's coordinate tables."""
    known = known_columns(codec)
    check_coords(codec.layout(meta).cells.positions.coords.max(axis=0) + 1, [model.cfg.axis_sizes[i] for i in known],
                 codec.known_axes)


def stored_orders(datasets: list[str], order: str, meta: dict, n: int, options: dict | None = None) -> list[dict]:
    """Stored orders (gradwalk walks: side information a decoder is sent) of up to n records of the run's
    datasets with the sample's geometry: a sample of a gradwalk run is drawn along a real image's walk."""
    key = stored_key(order)
    out = []
    sets, _ = open_datasets(datasets, options)
    for ds in sets:
        for rec in ds:
            if key in rec.orders and all(rec.meta.get(k) == meta[k] for k in ("height", "width")):
                out.append({key: rec.orders[key]})
                if len(out) >= n:
                    return out
    if not out:
        raise UsageError(f"order {order!r} is stored per image; no record of {', '.join(datasets)} has one at "
                         f"{meta['width']}x{meta['height']}")
    return out


def grid(images: list[np.ndarray], cols: int | None = None, pad: int = 2) -> np.ndarray:
    n = len(images)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    h, w = images[0].shape[:2]
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        im3 = im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=2)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = im3
    return out


def sample_run(run: str | Path, n: int, out: str | Path, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int = 0, size: int | None = None, device: str = "cpu",
               scale: int = 2, storage_options: dict | None = None, steps: int | None = None,
               quiet: bool = False, order: str | None = None, keep: str | Path | None = None) -> Path:
    """n samples of a run as a PNG grid at `out`; `order`: an order the model chooses (`confident`) in place of
    an any run's own; `keep`: a folder for each sampled stream as the codec's own file (avc: sample-I.264)."""
    from PIL import Image

    model, state = load_model(run, device)
    codec = get_codec(state["codec"])
    if keep is not None and H264_FILE not in codec.capabilities:
        raise UsageError(f"--keep writes each sample's H.264 stream (codec avc); codec {codec.codec_id} has none")
    meta = sample_meta(codec, state.get("preprocess", {}), size, state.get("geometry"))
    data = DataConfig.from_json(state["data"]).followed_in(order, run)
    run_steps(data.parallel, steps, run)  # refused before any work unless an any run
    spec = data.spec_for(model.cfg.block_size, data.stride, steps)
    stored = stored_orders(data.datasets, data.order, meta, n, storage_options) if spec.order.stored else None
    total = n if spec.parallel else codec.layout(meta).max_tokens
    with Progress("sample", total, "images" if spec.parallel else "positions", quiet=quiet) as bar:
        images, streams, _ = sample_images(model, codec, meta, n, temperature, top_k, top_p, seed, device=device,
                                           spec=spec, stored=stored, progress=bar)
    if keep is not None:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for i, toks in enumerate(streams):
            (Path(keep) / f"sample-{i}.264").write_bytes(codec.to_h264(TokenRecord(f"sample-{i}", toks, dict(meta))))
    failed = sum(im is None for im in images)
    if failed:
        print(f"warning: {failed} of {n} samples did not decode (H.264 bytes the decoder rejected): drawn black",
              file=sys.stderr)
    blank = np.zeros((meta["height"], meta["width"], 3), np.uint8)
    g = grid([blank if im is None else im for im in images])
    img = Image.fromarray(g)
    if scale > 1:
        img = img.resize((g.shape[1] * scale, g.shape[0] * scale), Image.NEAREST)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out


# --- clips: prompted continuation -------------------------------------------------------------------------
def prompt_record(prompt: str, k: int, codec: Codec, preprocess: dict, datasets: list[str],
                  options: dict | None = None) -> tuple[TokenRecord, Codec]:
    """The first k frames of a prompt: a video file tokenized with the run's codec and preprocessing, or the
    record with key `prompt` in `datasets`; and the codec that decodes it (a dataset's carries its side
    information, e.g. H.264 stream headers)."""
    from vistok.errors import DatasetError

    if Path(prompt).is_file():
        rec = file_record(prompt, codec, preprocess, clip_len=k, clip_stride=0, max_clips=1)
        if rec is None:
            raise UsageError(f"{prompt}: no clip of {k} frames")
    else:
        sets, _ = open_datasets(datasets, options)
        rec = None
        for ds in sets:
            try:
                rec = ds.get(prompt)
            except DatasetError:
                continue
            if ds.codec.get_config() != codec.get_config():
                raise UsageError(f"{ds.folder} holds {ds.codec.codec_id} tokens with another configuration than the "
                                 "run's: its records cannot prompt this run")
            codec = ds.codec
            break
        if rec is None:
            raise UsageError(f"--prompt {prompt!r} is neither a file nor a record key of {', '.join(datasets)}")
        if rec.meta.get("frames", 1) < k:
            raise UsageError(f"record {prompt} has {rec.meta.get('frames', 1)} frames; --prompt-frames is {k}")
    return first_frames(rec, k), codec


@torch.no_grad()
def sample_clip(model, codec: Codec, meta: dict, frames: int, prompt: TokenRecord | None = None,
                spec: StreamSpec | str = "canonical", seed: int = 0, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, device: str = "cpu") -> tuple[TokenRecord, int]:
    """A clip of the prompt's frames followed by `frames` generated ones, as `spec` names the run's stream (in
    the model's context), under the grammar; and the model steps the generated frames took (tokens, or groups
    with a parallel mode: one per frame and scale).

    The whole clip is planned at once (frame after frame, each frame's cells in the run's order); the
    prompt's tokens are fed in that order (the grammar forces them), then the model continues. A clip
    longer than the context is generated in the windows the run was trained and scored in (`stride`)."""
    spec = replace(as_spec(spec), block_size=model.cfg.block_size)
    if spec.order.stored:
        raise UsageError(f"order {spec.order} is stored per image at shard time; a generated clip has none")
    k = int(prompt.meta.get("frames", 1)) if prompt is not None else 0
    geometry = {key: v for key, v in meta.items() if key != "frames"}
    m = {**geometry, "frames": k + frames} if k + frames > 1 else geometry
    T, stride = spec.block_size, spec.stride
    p = sample_plans(codec, m, 1, spec, seed)[0]
    forced = np.zeros(0, np.int64)
    if prompt is not None:
        n_cells = len(codec.layout(prompt.meta).cells)  # the prompt's frames are the plan's first cells
        forced = prompt.tokens.astype(np.int64)[units_to_tokens(codec.layout(prompt.meta).token_cells(prompt), p.cells[:n_cells])]
        if frames:  # the prompt's last frame ends where the next one opens (H.264 bytes: only FRAME ends it)
            forced = np.append(forced, FRAME)
    check_fits(model, codec, m)
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    name = prompt.key if prompt is not None else "sample"
    if spec.parallel is not None:
        g = StreamGrammar(codec, m, p)
        _, steps = generate_groups(model, g, temperature, top_k, top_p, gen,
                                   windows=lambda: group_windows(p.groups, T, stride), forced=forced)
        return TokenRecord(name, g.canonical().astype(codec.vocab.dtype), m), steps
    grammar = BatchGrammar(codec, m, [p], [forced], limits=model.cfg.axis_sizes)
    model.generate(grammar, codec.layout(m).max_tokens, temperature, top_k, top_p, gen, stride=stride)
    g = grammar.gs[0]
    toks = g.canonical().astype(codec.vocab.dtype)
    steps = len(g.taken) + 1 - forced.size  # the generated tokens and EOS
    if g.done or g.phase == "end":
        return TokenRecord(name, toks, m), steps
    # cut short (a frame beyond the model's tables, or the token budget): the frames completed before it
    ends = np.flatnonzero(toks == FRAME)
    done = {**geometry, "frames": int(ends.size)} if ends.size > 1 else geometry
    return TokenRecord(name, toks[: ends[-1]] if ends.size else toks[:0], done), steps


def strip(prompt: list[np.ndarray], generated: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """One row of frames: the prompt's, a gap, the generated ones (gray frames are made RGB)."""
    rgb = [f if f.ndim == 3 else np.repeat(f[..., None], 3, axis=2) for f in prompt + generated]
    h = max(f.shape[0] for f in rgb)
    cols = [np.pad(f, ((0, h - f.shape[0]), (0, 1), (0, 0)), constant_values=255) for f in rgb]  # 1 px apart
    if prompt:
        cols.insert(len(prompt), np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(cols, axis=1)


def clip_run(run: str | Path, out: str | Path, frames: int, prompt: str = "", prompt_frames: int = 1,
             datasets: list[str] | None = None, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed: int = 0, size: int | None = None, device: str = "cpu",
             fps: float = 10.0, scale: int = 4, storage_options: dict | None = None) -> dict:
    """`vistok sample --frames N [--prompt P --prompt-frames K]`: write OUT (.mp4, the frames that decoded) and
    OUT with .png (a strip: prompt | generated); returns what was written and how many frames decoded."""
    from PIL import Image

    from vistok.shards.render import write_mp4

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise UsageError(f"a clip is written as .mp4: --out {out}")
    if frames < 1 or (prompt and prompt_frames < 1):
        raise UsageError("--frames and --prompt-frames must be at least 1")
    model, state = load_model(run, device)
    codec = get_codec(state["codec"])
    data = state["data"]
    pre = state.get("preprocess", {})
    rec_prompt = None
    if prompt:
        rec_prompt, codec = prompt_record(prompt, prompt_frames, codec, pre, datasets or data["datasets"], storage_options)
    meta = dict(rec_prompt.meta) if rec_prompt is not None else sample_meta(codec, pre, size, state.get("geometry"))
    if codec.codec_id == "h264" and "h264_header" not in meta:
        raise UsageError("h264 runs continue a prompt (its stream header comes with it): pass --prompt")
    spec = DataConfig.from_json(data).spec
    clip, steps = sample_clip(model, codec, meta, frames, rec_prompt, spec, seed, temperature, top_k, top_p, device)
    k = prompt_frames if rec_prompt is not None else 0
    pix, ok = decode_frames(codec, clip)
    out.parent.mkdir(parents=True, exist_ok=True)
    if ok:
        write_mp4(np.stack(pix), out, fps)
    img = strip(pix[:k], pix[k:]) if ok else np.full((8, 8, 3), 255, np.uint8)
    png = out.with_suffix(".png")
    Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST).save(png)
    return {"mp4": str(out) if ok else None, "strip": str(png), "prompt_frames": k, "generated_frames": frames,
            "decoded_generated_frames": max(0, ok - k), "steps": steps, "record": clip}


def file_record(path: str, codec: Codec, preprocess: dict, **options) -> TokenRecord | None:
    """The first record of a media file tokenized with a run's codec and preprocessing, whole (no crops), with
    `options` over the preprocessing (a clip's length); None when the file gives none."""
    from vistok.media.preprocess import Preprocess
    from vistok.media.sources import expand_sources
    from vistok.pipelines.encode import encode_input

    pre = Preprocess(**{**preprocess, "crops": 0, **options})
    return next(iter(encode_input(expand_sources([path])[0], codec, pre)), None)


def image_record(path: str, codec: Codec, preprocess: dict) -> TokenRecord:
    """An image file tokenized with a run's codec and preprocessing (the whole image, not a crop)."""
    if not Path(path).is_file():
        raise UsageError(f"--complete {path}: no such image file")
    rec = file_record(path, codec, preprocess)
    if rec is None or int(rec.meta.get("frames", 1)) > 1:
        raise UsageError(f"--complete {path}: not one image")
    return rec


def known_pixels(codec: Codec, meta: dict, region: Region) -> np.ndarray:
    """(H, W) bool: the pixels of the units `region` makes known."""
    pos = codec.layout(meta).cells.positions
    h, w = int(meta["height"]), int(meta["width"])
    units = region.units(pos.grid, pos.unit_pixels, h, w).reshape(pos.grid)
    return np.repeat(np.repeat(units, pos.unit_pixels[0], 0), pos.unit_pixels[1], 1)[:h, :w]


def given_tokens(codec: Codec, rec: TokenRecord, p: Plan) -> np.ndarray:
    """The known region's tokens of `rec`, in the stream order of the completion plan `p`."""
    tc = codec.layout(rec.meta).token_cells(rec)
    return rec.tokens.astype(np.int64)[units_to_tokens(tc, p.cells)][: int((p.rank()[tc] < p.given).sum())]


@torch.no_grad()
def complete_images(model, codec: Codec, rec: TokenRecord, region: Region, data: DataConfig, n: int,
                    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                    steps: int | None = None, device: str = "cpu") -> list[np.ndarray]:
    """n completions of `rec` from the units `region` makes known: each stream starts with the known units'
    tokens as given, in the run's order family (`stream.known_first`), and the model generates the rest under
    the grammar (token by token, or with `--parallel any` in `steps` model steps). Every plan is made, and a
    region the run's order cannot start from refused, before the model runs."""
    model.eval()
    meta, T, parallel = rec.meta, model.cfg.block_size, data.parallel
    check_fits(model, codec, meta)
    spec = data.spec_for(T, data.stride, run_steps(parallel, steps))
    plans = [plan(codec, meta, spec, np.random.default_rng([seed, i]), known=region) for i in range(n)]
    forced = [given_tokens(codec, rec, p) for p in plans]
    gen = torch.Generator(device=device).manual_seed(seed)
    streams = []
    if parallel:
        for p, f in zip(plans, forced):
            g = StreamGrammar(codec, meta, p)
            generate_groups(model, g, temperature, top_k, top_p, gen, True,
                            lambda g=g: group_windows(g.plan.groups, T, data.stride), forced=f)
            streams.append(g.canonical())
    else:
        grammar = BatchGrammar(codec, meta, plans, forced, limits=model.cfg.axis_sizes)
        model.generate(grammar, codec.layout(meta).max_tokens, temperature, top_k, top_p, gen, True, data.stride)
        streams = [g.canonical() for g in grammar.gs]
    return [decode_frames(codec, TokenRecord(f"completion-{i}", s.astype(codec.vocab.dtype), dict(meta)))[0][0]
            for i, s in enumerate(streams)]


def complete_run(run: str | Path, image: str, known: str, n: int, out: str | Path, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0, device: str = "cpu",
                 steps: int | None = None, scale: int = 2) -> list[Path]:
    """`vistok sample RUN --complete IMAGE --known REGION`: OUT (a PNG grid: the image as the run's codec
    gives it, the unknown units dimmed, then n completions) and each completion as OUT-1.png, OUT-2.png ...
    A run whose order cannot start from the region is refused before the model runs."""
    from PIL import Image

    region = parse_region(known)
    model, state = load_model(run, device)
    codec = get_codec(state["codec"])
    data = DataConfig.from_json(state["data"])
    refuse_partial(data.parallel, "complete")
    run_steps(data.parallel, steps, run)
    rec = image_record(image, codec, state.get("preprocess", {}))
    done = complete_images(model, codec, rec, region, data, n, temperature, top_k, top_p, seed, steps, device)
    shown = decode_frames(codec, rec)[0][0].astype(np.float32)
    mask = known_pixels(codec, rec.meta, region)
    shown[~mask] = shown[~mask] * 0.3 + 0.7 * 128  # the unknown units, faded to gray
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    g = grid([shown.astype(np.uint8)] + done, cols=n + 1)
    Image.fromarray(g).resize((g.shape[1] * scale, g.shape[0] * scale), Image.NEAREST).save(out)
    files = [out]
    for i, im in enumerate(done, 1):
        files.append(out.with_name(f"{out.stem}-{i}.png"))
        Image.fromarray(im).save(files[-1])
    return files
