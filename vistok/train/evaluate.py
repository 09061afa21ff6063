"""Held-out evaluation in bits: per token, per image, against JPEG's own entropy coder and a unigram model.

Bits per image sum -log2 p over every predicted position of a record: its tokens and the EOS that ends
it (BOS is given). A record longer than the context is scored chunk by chunk, as it was trained.
For JPEG datasets the same held-out records are written as JPEG files with optimized Huffman tables and
the entropy-coded scan bytes (headers excluded) are counted: model/JPEG < 1 means the model codes the
coefficients in fewer bits than JPEG does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vistok.errors import DatasetError, UsageError
from vistok.nn.gpt import GPT, GroupFeed, choose_group
from vistok.progress import Progress
from vistok.record import TokenRecord
from vistok.shards.integrity import OnDamage
from vistok.shards.summary import token_counts
from vistok.tokenize.base import BOS, EOS, JPEG_FILE, Codec, frames_of
from vistok.tokenize.orders import parse_order
from vistok.tokenize.parallel import parse_mode, run_steps
from vistok.tokenize.region import Region, parse_region
from vistok.tokenize.schedule import steps_name
from vistok.tokenize.stream import (
    Ordered,
    StreamGrammar,
    cell_scales,
    group_windows,
    mask_rows,
    plan,
)
from vistok.train.checkpoint import load_model
from vistok.train.data import (
    DataConfig,
    check_coords,
    doc_row,
    heldout_records,
    open_datasets,
    record_docs,
    record_rng,
)

LN2 = math.log(2)


@dataclass
class RecordBits:
    bits: float  # -log2 p summed over the record's predicted positions
    positions: int  # predicted positions: tokens and EOS, or tokens (parallel)
    order_bits: float  # side information of the order (stored gradwalk walks)
    steps: int  # model steps to generate the record
    frame_bits: np.ndarray | None = None  # (frames,) bits of each frame's positions (`target_frames`)
    scale_bits: np.ndarray | None = None  # (frames, scales) bits of each scale of each frame (`target_scales`)
    part_bits: np.ndarray | None = None  # (2,) bits of the DC image's positions and of the rest (`target_parts`)
    given_bits: np.ndarray | None = None  # (3,) a completion's: the known units', the rest's, EOS (`target_given`)


def target_frames(codec: Codec, rec: TokenRecord, o: Ordered, parallel: str = "") -> np.ndarray:
    """(targets,) the frame each predicted position belongs to: a frame's tokens and the token that ends it
    (the FRAME opening the next frame, or EOS after the last when token by token; a decoder knows both, so
    they cost nothing)."""
    cells = codec.layout(rec.meta).cells
    f = cells.frame[o.cells] - (cells.in_frame[o.cells] < 0)
    return f if parallel else np.append(f, int(rec.meta.get("frames", 1)) - 1)


def target_scales(codec: Codec, rec: TokenRecord, o: Ordered, order: str, parallel: str) -> np.ndarray | None:
    """(targets,) the scale of each predicted position within its frame (0 = coarsest: `cell_scales`) in a
    scale order (next-scale, coarse-to-fine); None in other orders. The FRAME and EOS that end a frame count
    with its finest scale."""
    by = parse_order(order)
    if not by.scales:
        return None
    layout = codec.layout(rec.meta)
    scale = cell_scales(layout, by)
    n = int(scale.max()) + 1
    s = np.where(layout.cells.in_frame[o.cells] < 0, n - 1, scale[o.cells])
    return s if parallel else np.append(s, n - 1)


PARTS = ("dc", "rest")


def part_names(codec: Codec, meta: dict) -> tuple[str, ...]:
    """What `--parts` splits a record's bits into: the DC image and the rest (JPEG), or each level (a codec with a
    known `level` axis: jpeg-refine's qualities, coarsest first; a dense wavelet's levels, finest first)."""
    layout = codec.layout(meta)
    pos = layout.cells.positions
    if layout.dc_cells is not None:
        return PARTS
    if "level" in pos.axes:
        return tuple(f"level{k}" for k in range(int(pos.coords[:, pos.axes.index("level")].max()) + 1))
    if "element" in codec.axes:
        return tuple(codec.elements)
    raise UsageError(f"--parts splits the DC image from the rest, a codec's levels, or its syntax elements; codec "
                     f"{codec.codec_id} has none of them")


def target_parts(codec: Codec, rec: TokenRecord, o: Ordered, parallel: str) -> np.ndarray:
    """(targets,) the part (`part_names`) of each predicted position: 0 for a DC coefficient (a DC cell's token)
    and 1 for the rest (AC tokens, EOBs and the EOS that ends a token-by-token stream); or the level of its cell
    (FRAME and EOS with the last); or its syntax element (avc)."""
    layout = codec.layout(rec.meta)
    cells = layout.cells
    if "element" in codec.axes:  # each token's syntax element (FRAME and EOS with the first, mb_type)
        element = layout.positions(rec).coords[o.perm, codec.axes.index("element")].astype(np.int64)
        return element if parallel else np.append(element, 0)
    if layout.dc_cells is None:
        names, pos = part_names(codec, rec.meta), cells.positions
        level = np.where(cells.in_frame[o.cells] < 0, len(names) - 1, pos.coords[o.cells, pos.axes.index("level")])
        return level.astype(np.int64) if parallel else np.append(level, len(names) - 1).astype(np.int64)
    part = np.where(cells.in_frame[o.cells] < 0, 1, ~layout.dc_cells[np.maximum(cells.in_frame[o.cells], 0)])
    return part.astype(np.int64) if parallel else np.append(part, 1).astype(np.int64)


def target_given(o: Ordered, parallel: str) -> np.ndarray:
    """(targets,) a completion's stream (`known_first`): 0 for a token of the known units (sent first), 1 for
    the rest's, 2 for the EOS that ends a token-by-token stream."""
    part = (o.plan.rank()[o.cells] >= o.plan.given).astype(np.int64)
    return part if parallel else np.append(part, 2)


def _target_tags(codec: Codec, rec: TokenRecord, o: Ordered, order: str, parallel: str, per_frame: bool,
                 parts: bool) -> dict[str, tuple[np.ndarray, tuple[int, ...]]]:
    """RecordBits field -> (the flat index into it of each predicted position, the field's shape):
    `target_frames`, `target_scales`, `target_parts`, `target_given` (a completion's stream)."""
    tags = {}
    if o.plan.given:
        tags["given_bits"] = target_given(o, parallel), (3,)
    if per_frame:
        frames = int(rec.meta.get("frames", 1))
        f = target_frames(codec, rec, o, parallel)
        tags["frame_bits"] = f, (frames,)
        scales = target_scales(codec, rec, o, order, parallel)
        if scales is not None:
            n = int(scales.max()) + 1
            tags["scale_bits"] = f * n + scales, (frames, n)
    if parts:
        tags["part_bits"] = target_parts(codec, rec, o, parallel), (len(part_names(codec, rec.meta)),)
    return tags


@torch.no_grad()
def record_bits(model: GPT, codec: Codec, records: Iterable[TokenRecord], data: DataConfig, device: str,
                batch: int = 16, stride: int | None = None, per_frame: bool = False,
                steps: int | None = None, parts: bool = False, known: Region | None = None) -> list[RecordBits]:
    """Bits of each record under the run's order and parallel mode (`--parallel any`: in `steps` model steps,
    None = `schedule.ALL`). A record longer than the context is read in windows every `stride` positions
    (default: the run's; `vistok.train.data.windows`), each target scored once with what precedes it in its
    window. Tokens the grammar rules out at a position get no probability (a decoder knows they cannot
    come): the softmax runs over the allowed tokens, as `vistok compress` codes them. Records, windows and
    grammar masks are streamed: memory is one batch of windows, whatever the length of a clip.
    `per_frame` also sums each frame's bits (`RecordBits.frame_bits`), `parts` the DC image's and the rest's
    (`RecordBits.part_bits`). `known`: each record's completion stream, the region's units first, and
    `RecordBits.given_bits`."""
    model.eval()
    T, S, limits = model.cfg.block_size, data.stride if stride is None else stride, model.cfg.axis_sizes
    steps = run_steps(data.parallel, steps)
    if parse_order(data.order).adaptive:  # no teacher forcing: each group's places come from the model
        return [adaptive_bits(model, codec, rec, data, steps, S) for rec in records]
    spec, out = data.spec_for(T, S, steps), []

    def windows_of_records() -> Iterator[tuple[int, dict, Iterator[np.ndarray], np.ndarray | None, int]]:
        for i, rec in enumerate(records):
            rd = record_docs(codec, rec, spec, record_rng(data.seed, rec.key), places=bool(model.cfg.neighbourhood),
                             known=known)
            o = rd.stream
            tags = _target_tags(codec, rec, o, data.order, data.parallel, per_frame, parts)
            out.append(RecordBits(0.0, 0, rd.order_bits, rd.steps,
                                  **{name: np.zeros(shape) for name, (_, shape) in tags.items()}))
            rows = mask_rows(codec, rec.meta, o.plan, rec.tokens[o.perm])
            first = 0  # the window's first new target, counted along the record's stream
            for d in rd.docs:
                yield i, d, rows, tags, first
                first += int(d["loss_mask"].sum())

    items = windows_of_records()
    while chunk := list(islice(items, batch)):
        rows = [doc_row(d, T) for _, d, _, _, _ in chunk]
        b = {k: torch.from_numpy(np.stack([r[k] for r in rows])).to(device) for k in rows[0]}
        for key in ("coords", "next_coords"):
            check_coords(b[key], limits, codec.axes)
        nxt = b["next_coords"] if model.cfg.next_axes else None
        logits, _ = model(b["idx"], b["coords"], nxt, **{k: b.get(k) for k in ("doc_ids", "groups", "query", "places", "lane")})
        allowed, ats = np.ones(logits.shape, dtype=bool), []
        for j, (_, d, masks, _, _) in enumerate(chunk):
            at = np.flatnonzero(d["loss_mask"])
            if at.size:
                allowed[j, at] = np.stack([next(masks) for _ in at])
            ats.append(at)
        logits = logits.float().masked_fill(~torch.from_numpy(allowed).to(device), float("-inf"))
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), b["targets"].reshape(-1), reduction="none")
        nll = (nll.view(len(chunk), T) * b["loss_mask"].float()).cpu().numpy() / LN2
        for j, (i, _, _, tags, first) in enumerate(chunk):
            x = nll[j, ats[j]]
            if not np.isfinite(x).all():
                raise DatasetError("a record holds a token its grammar does not allow")
            r = out[i]
            r.bits += float(x.sum())
            r.positions += int(x.size)
            for name, (index, _) in tags.items():
                np.add.at(getattr(r, name).reshape(-1), index[first : first + x.size], x)
    return out


@torch.no_grad()
def adaptive_bits(model: GPT, codec: Codec, rec: TokenRecord, data: DataConfig, steps: int, stride: int) -> RecordBits:
    """Bits of a record in an order the model chooses (`--order confident`), step by step as a decoder follows
    it: the step's places chosen from the model's distributions at every place not yet known (`choose_group`),
    then the group's tokens scored from its own query slots, as training predicts a group. Nothing of the order
    is sent, so `order_bits` is 0; `steps` counts groups (each takes two forward passes)."""
    T = model.cfg.block_size
    p = plan(codec, rec.meta, data.spec_for(T, stride, steps), record_rng(data.seed, rec.key), rec.orders)
    g, layout = StreamGrammar(codec, rec.meta, p), codec.layout(rec.meta)
    tc = layout.token_cells(rec)
    if tc.size != len(layout.cells):
        raise UsageError(f"record {rec.key} uses escapes ({tc.size} tokens for {len(layout.cells)} places): "
                         "--parallel needs one token per place")
    truth = np.empty(len(layout.cells), np.int64)
    truth[tc] = rec.tokens
    feed, wins, dev = GroupFeed(model, BOS, 1), group_windows(p.groups, T, stride), model.lm_head.weight.device
    bits, n_steps = 0.0, 0
    while g.phase not in ("end", "done"):
        i, grp = g.i, int(g.plan.groups[g.i])
        window = next(w for w in wins if w[1] <= i < w[2])
        choose_group(feed, g, window, i, grp)
        places, masks = g.group()
        units, toks = g.group_places(), truth[g.plan.cells[i : i + len(places)]]
        logits = feed.logits(window, i, grp, [places], [units])[0].float()
        logp = F.log_softmax(logits.masked_fill(~torch.from_numpy(masks).to(dev), float("-inf")), dim=-1)
        x = -logp[torch.arange(toks.size), torch.from_numpy(toks).to(dev)].cpu().numpy() / LN2
        if not np.isfinite(x).all():
            raise DatasetError(f"record {rec.key} holds a token its grammar does not allow")
        bits, n_steps = bits + float(x.sum()), n_steps + 1
        feed.add(grp, [toks.tolist()], [[g.step(int(t)) + 1 for t in toks]], [units])
    return RecordBits(bits, int(truth.size), 0.0, n_steps)


def heldout_bits(model: GPT, codec: Codec, sets: list, data: DataConfig, limit: int, device: str) -> dict:
    recs = list(heldout_records(sets, data.heldout, limit))
    if not recs:
        raise DatasetError("no held-out records: raise --heldout")
    res = record_bits(model, codec, recs, data, device)
    b = sum(r.bits for r in res)
    n = sum(r.positions for r in res)
    return {"bits_per_token": b / n, "bits_per_image": (b + sum(r.order_bits for r in res)) / len(res),
            "images": len(res)}


def jpeg_scan_bytes(data: bytes) -> int:
    """Entropy-coded bytes of a JPEG: from the end of the first SOS header to EOI (all scans)."""
    pos = data.find(b"\xff\xda")
    if pos < 0:
        return 0
    length = int.from_bytes(data[pos + 2 : pos + 4], "big")
    end = data.rfind(b"\xff\xd9")
    return max(0, end - (pos + 2 + length))


def unigram_bits(sets: list, records: list, codec: Codec) -> float:
    """Held-out cross-entropy (bits per predicted position) of a unigram model fitted on the datasets' token
    counts (held-out records included, so the baseline is, if anything, flattered)."""
    counts = np.zeros(codec.vocab.size, dtype=np.float64)
    for ds in sets:
        counts += token_counts(ds)
    samples = sum(len(ds) for ds in sets)
    counts[EOS] = samples  # one EOS per sample
    p = (counts + 0.5) / (counts + 0.5).sum()
    bits = n = 0.0
    for rec in records:
        t = rec.tokens.astype(np.int64)
        bits += -np.log2(p[t]).sum() - math.log2(p[EOS])
        n += t.size + 1
    return bits / n


def training_hashes(state: dict[str, Any], data: DataConfig, options: dict | None = None) -> frozenset[str]:
    """Config hashes of the datasets a run trained on: stored in its checkpoints, or, for checkpoints
    written before they were, read from the training datasets where they still are."""
    if "datasets" in state:
        return frozenset(state["datasets"])
    hashes = set()
    for path in data.datasets:
        try:
            hashes.add(open_datasets([path], options)[0][0].manifest.config_hash)
        except DatasetError:
            continue
    return frozenset(hashes)


SPLITS = ("auto", "all", "heldout")


def evaluate(run: str | Path, datasets: list[str] | None = None, limit: int | None = None, device: str = "cpu",
             split: str = "auto", stride: int = 0, per_frame: bool = False, storage_options: dict | None = None,
             steps: list[int] | None = None, parts: bool = False, skip_damaged: bool = False,
             quiet: bool = False, order: str | None = None, given: str = "") -> dict[str, Any]:
    """Figures of a run (see the module docstring) on its own datasets or on `datasets`.

    `split`: "heldout" scores the held-out split of every dataset, "all" every record, and "auto" (the
    default) the held-out split of a dataset the run trained on and all of any other (a separate test
    set). `split` in the result says what was scored: "heldout", "all", or "heldout+all". A record longer than the context is read in windows every `stride` positions (0: the run's own stride);
    the result names the stride and the context every target after the first window is guaranteed
    (`min_context`). `per_frame` adds `per_frame_bits` (see `frame_table`); `parts` adds `dc_bits_per_image`
    and `rest_bits_per_image` (the DC image's positions and the others': they sum to the model's bits). `steps` (`--parallel any` runs): model steps per record, each scored on the test schedule; the headline
    figures are the first's, and `steps_curve` has bits and steps per image for each (default: one token
    per step). `skip_damaged`: damaged shards are left out and listed in `skipped_shards` (default: named, stop). `order`: an order the model chooses (`confident`) in place of an any run's own. `given`: a region
    (`vistok.tokenize.region`): adds what it tells about the rest (`given_figures`)."""
    if split not in SPLITS:
        raise UsageError(f"--split takes {', '.join(SPLITS)}, got {split!r}")
    model, state = load_model(run, device)
    data = DataConfig.from_json(state["data"]).followed_in(order, run)
    steps = [run_steps(data.parallel, n, run) for n in steps or [None]]  # refused unless an any run
    sets, codec = open_datasets(datasets or data.datasets, storage_options, on_damage := OnDamage(skip=skip_damaged))
    if codec.vocab.size != model.cfg.vocab_size:
        raise DatasetError("the dataset's vocabulary does not match the model's")
    hashes = frozenset(ds.manifest.config_hash for ds in sets)
    trained = training_hashes(state, data, storage_options)
    whole = {"auto": hashes - trained, "all": hashes, "heldout": frozenset()}[split]
    recs = list(heldout_records(sets, data.heldout, limit, whole=whole))
    if not recs:
        raise DatasetError("no held-out records in the dataset (the split is by key hash; raise --heldout when "
                           "training, or pass --split all)")
    split, T = "all" if whole == hashes else ("heldout+all" if whole else "heldout"), model.cfg.block_size
    stride, region = stride or data.stride or T, check_given(given, codec, recs[0], data, steps[0])  # refused here
    with Progress("eval", len(recs), "images", quiet=quiet) as bar:
        res = record_bits(model, codec, bar.each(recs), data, device, stride=stride, per_frame=per_frame,
                          steps=steps[0], parts=parts)
    bits = np.array([r.bits for r in res])
    n = np.array([r.positions for r in res])
    order_bits = np.array([r.order_bits for r in res])
    out: dict[str, Any] = {
        "run": str(run), "step": state["step"], "images": len(recs), "split": split, "order": data.order,
        "parallel": data.parallel or "none", "context": T, "stride": stride, "min_context": min_context(data, T, stride),
        "bits_per_token": float(bits.sum() / n.sum()),
        "bits_per_image": float((bits + order_bits).mean()),  # everything a decoder needs, order included
        "order_bits": float(order_bits.mean()),
        "steps_per_image": float(np.mean([r.steps for r in res])),
        "tokens_per_image": float(np.mean([len(r.tokens) for r in recs])),
        "unigram_bits_per_token": float(unigram_bits(sets, recs, codec)),
    }
    if (mode := parse_mode(data.parallel)) is not None and not mode.whole:
        return masked_figures(out, bits, n)
    if mode is not None and mode.steps:
        out["steps"] = steps_name(steps[0])
        out["steps_curve"] = [curve_point(steps[0], res)] + [
            curve_point(n, record_bits(model, codec, recs, data, device, stride=stride, steps=n)) for n in steps[1:]]
    out.update(_jpeg_and_parts(codec, recs, res, parts))
    out.update(given_figures(model, codec, recs, data, device, stride, steps[0], region) if region else {})
    if per_frame:
        out.update(frame_table(model, codec, recs, res, data, device, stride))
    out.update({"skipped_shards": sorted(set(on_damage.skipped))} if on_damage.skipped else {})
    return out


def check_given(given: str, codec: Codec, rec: TokenRecord, data: DataConfig, steps: int | None) -> Region | None:
    """`--given REGION` parsed and planned on one record: a run that cannot start from it is refused, saying why."""
    if not given:
        return None
    region = parse_region(given)
    plan(codec, rec.meta, data.spec_for(0, 0, steps), np.random.default_rng(0), rec.orders, known=region)
    return region


def given_figures(model: GPT, codec: Codec, recs: list[TokenRecord], data: DataConfig, device: str, stride: int,
                  steps: int | None, region: Region) -> dict[str, Any]:
    """What a known region tells about the rest of an image, per image: the bits of the rest's tokens in the
    completion stream (the region's units first, as `vistok sample --complete` follows it, so a decoder could
    too), the same tokens' bits with nothing given (the stream that sends them first), and the difference."""
    cond = record_bits(model, codec, recs, data, device, stride=stride, steps=steps, known=region)
    alone = record_bits(model, codec, recs, data, device, stride=stride, steps=steps, known=region.inverse())
    rest = np.array([r.given_bits[1] for r in cond])
    told = np.array([r.given_bits[0] for r in alone]) - rest  # per image: the same tokens, two streams
    return {"given": str(region), "given_region_bits_per_image": float(np.mean([r.given_bits[0] for r in cond])),
            "rest_bits_given_region": float(rest.mean()), "rest_bits_alone": float(rest.mean() + told.mean()),
            "bits_the_region_tells": float(told.mean()),
            "bits_the_region_tells_ci95": float(1.96 * told.std(ddof=1) / np.sqrt(told.size)) if told.size > 1 else 0.0}


def masked_figures(out: dict[str, Any], bits: np.ndarray, n: np.ndarray) -> dict[str, Any]:
    """A `--parallel masked:R` run's figures: bits of the masked units given the visible ones, never an image's."""
    drop = ("bits_per_token", "bits_per_image", "order_bits", "steps_per_image")
    return {**{k: v for k, v in out.items() if k not in drop}, "masked_bits_per_token": float(bits.sum() / n.sum()),
            "masked_bits_per_image": float(bits.mean()), "masked_tokens_per_image": float(n.mean())}


def min_context(data: DataConfig, block_size: int, stride: int) -> int:
    """Positions every target after a record's first window is guaranteed to see before it: a token window's
    `block_size - stride`; a group window's context (`group_windows`: `block_size - 1 - min(stride, block_size - 1)`)."""
    if data.parallel:
        return block_size - 1 - min(stride, block_size - 1)
    return block_size - stride


def _jpeg_and_parts(codec: Codec, recs: list[TokenRecord], res: list[RecordBits], parts: bool) -> dict[str, float]:
    """JPEG's own bits and the model's ratio to them (JPEG datasets); the DC image's and the rest's bits."""
    out = {}
    if JPEG_FILE in codec.capabilities:
        jbits = jpeg_bits(codec, recs)
        out["jpeg_bits_per_image"] = float(jbits.mean())
        out["model_to_jpeg_ratio"] = float(sum(r.bits + r.order_bits for r in res) / jbits.sum())
    if parts:
        names = part_names(codec, recs[0].meta)
        out.update(zip([f"{p}_bits_per_image" for p in names], np.mean([r.part_bits for r in res], axis=0).tolist()))
    return out


def jpeg_bits(codec: Codec, recs: list[TokenRecord]) -> np.ndarray:
    """Scan bits of each record as JPEG files with optimized Huffman tables: a file per frame of a clip,
    of the frame's own coefficients (a delta clip's differences added up: `JpegCodec.frame_records`)."""
    own = getattr(codec, "frame_records", frames_of)
    return np.array([8 * sum(jpeg_scan_bytes(codec.to_jpeg(f, optimize=True)) for f in own(r)) for r in recs],
                    dtype=np.float64)


def curve_point(steps: int, res: list[RecordBits]) -> dict[str, Any]:
    """One point of a bits-versus-steps curve: the mean bits and model steps per record at `--steps`."""
    return {"steps": steps_name(steps), "bits_per_image": float(np.mean([r.bits + r.order_bits for r in res])),
            "steps_per_image": float(np.mean([r.steps for r in res]))}


def frame_table(model: GPT, codec: Codec, recs: list[TokenRecord], res: list[RecordBits], data: DataConfig,
                device: str, stride: int) -> dict[str, Any]:
    """Per frame index t, over the clips that have it: bits of frame t given the frames before it (its
    positions in the clip, each with its window's context) and bits of frame t alone (the frame as a
    record of its own: `[BOS] frame [EOS]`, or its groups alone when parallel), frames numbered from 1, and
    two ratios over frames 2 on: `conditional_to_independent_ratio` (< 1: earlier frames help) and
    `later_to_first_ratio` (frames 2 on given the earlier ones, per frame, against frame 1: what a frame
    costs once the clip has begun). In a scale order, `per_scale_bits` splits each frame by scale (0 = coarsest)."""
    if not any(int(r.meta.get("frames", 1)) > 1 for r in recs):
        raise UsageError("--per-frame needs clips: records of several frames (shard videos with --clip-len N)")
    alone = record_bits(model, codec, (f for r in recs for f in frames_of(r)), data, device, stride=stride,
                        per_frame=True)
    n = max(int(r.meta.get("frames", 1)) for r in recs)
    scales = res[0].scale_bits.shape[1] if res[0].scale_bits is not None else 0
    cond, ind, clips = np.zeros((n, 1 + scales)), np.zeros((n, 1 + scales)), np.zeros(n, dtype=np.int64)
    k = 0
    for r in res:
        m = r.frame_bits.size
        cond[:m, 0] += r.frame_bits
        ind[:m, 0] += [a.bits for a in alone[k : k + m]]
        if scales:
            cond[:m, 1:] += r.scale_bits
            ind[:m, 1:] += [a.scale_bits[0] for a in alone[k : k + m]]
        clips[:m] += 1
        k += m
    cond, ind = cond / clips[:, None], ind / clips[:, None]
    rows = [{"frame": t + 1, "clips": int(clips[t]), "conditional_bits": float(cond[t, 0]),
             "independent_bits": float(ind[t, 0]), "ratio": float(cond[t, 0] / ind[t, 0])} for t in range(n)]
    out = {"per_frame_bits": rows,
           "conditional_to_independent_ratio": float((cond[1:, 0] * clips[1:]).sum() / (ind[1:, 0] * clips[1:]).sum()),
           "later_to_first_ratio": float(cond[1:, 0].mean() / cond[0, 0])}
    if scales:
        out["per_scale_bits"] = [{"frame": t + 1, "scale": s, "conditional_bits": float(cond[t, 1 + s]),
                                  "independent_bits": float(ind[t, 1 + s])} for t in range(n) for s in range(scales)]
    return out


def format_frame_table(res: dict[str, Any]) -> str:
    """The per-frame rows of `evaluate(..., per_frame=True)` as a short text table (and, in a scale order,
    each frame's bits per scale: given the earlier frames / alone)."""
    lines = [f"{'frame':>5} {'clips':>5} {'given earlier':>14} {'alone':>10} {'ratio':>6}"]
    for r in res["per_frame_bits"]:
        lines.append(f"{r['frame']:>5} {r['clips']:>5} {r['conditional_bits']:>14.1f} {r['independent_bits']:>10.1f} "
                     f"{r['ratio']:>6.3f}")
    lines.append(f"frames >= 2: conditional / independent = {res['conditional_to_independent_ratio']:.3f}, "
                 f"per frame against frame 1 = {res['later_to_first_ratio']:.3f} "
                 f"(context {res['context']}, stride {res['stride']}: at least {res['min_context']} earlier positions)")
    if "per_scale_bits" in res:
        lines.append("bits per scale, coarsest first (given earlier / alone):")
        for t in sorted({r["frame"] for r in res["per_scale_bits"]}):
            cells = [f"{r['conditional_bits']:.1f}/{r['independent_bits']:.1f}" for r in res["per_scale_bits"]
                     if r["frame"] == t]
            lines.append(f"{t:>5}  " + "  ".join(cells))
    return "\n".join(lines)
