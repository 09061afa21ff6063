"""`vistok compress` / `vistok decompress`: a record's tokens range-coded under the run's model.

The model's next-token probabilities, in the run's order (and parallel mode), drive a range coder
(`constriction`); decoding runs the same model and the same grammar on the tokens decoded so far, so what
`vistok eval` reports as bits becomes a file that decodes to the identical record.

Probabilities, made the same on both sides:
- the model runs on the CPU, one thread, in fixed lanes (`LANES` streams per forward pass, padded):
  in this setting a stream's logits do not depend on the other streams of its batch, so a file decodes
  alone or among others (tested). `--parallel any` runs code LANES streams of one geometry and step count
  side by side the same way; segment- and scale-parallel runs, whose groups differ per record, one stream
  at a time: every forward pass has the same shape on both sides by construction;
- the grammar's allowed tokens at each position (`StreamGrammar.allowed`, or `group` for parallel runs)
  are the alphabet: a softmax over them in float64 (numpy), quantized by constriction's `Categorical`
  (`perfect=False`) to the range coder's 24-bit fixed point, where every allowed token keeps at least
  the smallest probability and a disallowed one has none; a position with one allowed token costs nothing;
- a long stream is read in the windows training and eval read it in (`vistok.train.data.windows`: the
  context's length every `stride` positions; `vistok.tokenize.stream.group_windows` when parallel), each
  window refilling an empty cache with its inputs.

What is and is not guaranteed: the same machine and software decode their own files bit for bit (tests);
another CPU, another torch or BLAS build may round a logit differently, and a GPU is not used. A
decoded stream is checked against the CRC-32 of the tokens kept in the file, so such a mismatch, a
truncated or a corrupted file is an error, never a wrong image.

The file format is `vistok.train.container`'s: 16 bytes of container around the payload when the record's
size is the run's, its key and descriptive metadata kept only with `keep_meta` (`--keep-meta`).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vistok.errors import CodecError, DatasetError, UsageError, VistokError
from vistok.media.sources import DEFAULT_MAX_PIXELS
from vistok.nn.gpt import GPT, GroupFeed, KVCache, choose_group, window_start
from vistok.record import TokenRecord
from vistok.tokenize.base import BOS, EOS, Codec, get_codec
from vistok.tokenize.orders import parse_order
from vistok.tokenize.parallel import parse_mode, run_steps
from vistok.tokenize.stream import (
    Plan,
    StreamGrammar,
    StreamSpec,
    check_parallel,
    group_windows,
    known_columns,
    order_record,
    plan,
    refuse_partial,
)
from vistok.train.checkpoint import load_model
from vistok.train.container import VERSION, Header, pack, unpack
from vistok.train.data import DataConfig, check_coords, order_rng, order_seed, record_rng
from vistok.train.lanes import cell_queues, run_lanes

LANES = 8  # streams per forward pass, always (padded): the shapes, and so the logits, do not depend on the batch
SUFFIX = ".vtkz"


@contextmanager
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _probs(logits: np.ndarray) -> np.ndarray:
    """float64 softmax (numpy: the same reduction every time)."""
    z = np.exp(logits - logits.max())
    return z / z.sum()


class _Stream:
    """One record being coded: its grammar, its range coder, and (encoding) the tokens to code."""

    def __init__(self, meta: dict, g: StreamGrammar, coder: Any, targets: np.ndarray | None, by_cell: bool = False,
                 queues: dict[int, list[int]] | None = None):
        self.meta, self.g, self.coder, self.targets = meta, g, coder, targets
        self.by_cell = by_cell  # targets by cell, not in stream order (an order the model chooses as it goes)
        self.queues = queues  # wavefront lanes: each cell's targets, in order (cells are coded lane by lane)
        self.n = 0  # tokens coded so far
        self.tokens: np.ndarray | None = None  # wavefront lanes: the tokens decoded, in canonical order

    def _target(self, cell: int | None) -> int:
        if self.queues is not None:
            return self.queues[cell][0]
        return int(self.targets[self.g.plan.cells[self.n]] if self.by_cell else self.targets[self.n])

    def code(self, logits: np.ndarray, allowed: np.ndarray, cell: int | None = None) -> int:
        """Encode the next target token (of `cell`, for wavefront lanes), or decode one, under the softmax over
        the allowed tokens."""
        import constriction

        ids = np.flatnonzero(allowed)
        encoding = self.targets is not None
        if encoding and self.n >= self.targets.size:
            raise CodecError("the grammar expects more tokens than the record holds")
        if ids.size == 1:  # certain: no bits
            tok = int(ids[0])
            if encoding and tok != self._target(cell):
                raise CodecError(f"token {self._target(cell)} is not allowed by the grammar here")
        else:
            model = constriction.stream.model.Categorical(_probs(logits[ids]), perfect=False)
            if encoding:
                tok = self._target(cell)
                sym = int(np.searchsorted(ids, tok))
                if sym >= ids.size or ids[sym] != tok:
                    raise CodecError(f"token {tok} is not allowed by the grammar here")
                self.coder.encode(sym, model)
            else:
                tok = int(ids[int(self.coder.decode(model))])
        if encoding and self.queues is not None:
            self.queues[cell].pop(0)
        self.n += 1
        return tok


@dataclass
class Coder:
    """A run's model, codec and order, ready to compress records and decompress files."""

    model: GPT
    codec: Codec
    data: DataConfig
    checksum: bytes
    preprocess: dict  # the run's dataset preprocessing (media inputs are tokenized with it)
    geometry: dict | None = None  # the geometry every training record shared, if one (files of it leave it out)
    steps: int | None = None  # `--parallel any` runs: model steps per record when compressing (ALL: one token each)

    @classmethod
    def load(cls, run: str | Path, steps: int | None = None, order: str | None = None) -> Coder:
        """The coder of a run; `steps`: the model steps a `--parallel any` run compresses a record in (default
        one token per step; a file records its own, which decompression takes); `order`: an order the model
        chooses (`confident`) in place of an any run's own (files coded so decode only with it: the run's
        checksum covers the order)."""
        model, state = load_model(run, "cpu")
        model.eval()
        data = DataConfig.from_json(state["data"]).followed_in(order, run)
        codec = get_codec(state["codec"])
        if parse_order(data.order).stored:
            raise UsageError(f"run {run} is trained in order {data.order!r}, computed from each image's pixels: "
                             "a decoder would need it sent; compress works with orders a decoder can follow")
        check_parallel(codec, data.order, data.parallel)
        refuse_partial(data.parallel, "code")
        return cls(model, codec, data, run_checksum(model, codec, data), state.get("preprocess", {}),
                   state.get("geometry"), run_steps(data.parallel, steps, run))

    @property
    def reference(self) -> dict:
        """The geometry a file leaves out when its record has it: the training records' one, or else the
        codec's usual one (three components, its subsampling) with no size."""
        if self.geometry:
            return {k: v for k, v in self.geometry.items() if k != "frames"}
        usual = {"components": 3, "subsampling": self.codec.get_config().get("subsampling")}
        return {k: v for k, v in usual.items() if k in self.codec.geometry_keys}

    # --- records <-> files ---------------------------------------------------------------------------
    def compress(self, records: Iterable[TokenRecord], progress=None,
                 keep_meta: bool = False) -> Iterator[tuple[TokenRecord, bytes]]:
        """(record, its file's bytes) for each record, in order; records are read as they are needed. A file
        keeps the record's key and descriptive metadata only with `keep_meta` (else it decodes keyless)."""
        for batch in self._batches(records, progress):
            yield from zip(batch, self._compress(batch, keep_meta))

    def decompress(self, blobs: Iterable[bytes], progress=None) -> Iterator[TokenRecord]:
        """The record of each file, in order; a bad or foreign file raises `CodecError` naming why."""
        for batch in self._batches(blobs, progress):
            yield from self._decompress(batch)

    def decompress_named(self, named: Iterable[tuple[str, bytes]], on_error, progress=None) -> Iterator[tuple[str, TokenRecord]]:
        """(name, record) of each good file, in order; a bad one goes to `on_error(name, exc)` and the rest go on
        (a batch that fails is decoded again a file at a time, to tell which file it was)."""
        for batch in self._batches(named, progress):
            try:
                yield from zip([n for n, _ in batch], self._decompress([b for _, b in batch]), strict=True)
            except VistokError:
                for name, blob in batch:
                    try:
                        rec = self._decompress([blob])[0]
                    except VistokError as exc:
                        on_error(name, exc)
                        continue
                    yield name, rec

    def _batches(self, items: Iterable, progress) -> Iterator[list]:
        """Lists of up to LANES items (one for segment- and scale-parallel runs, whose plans differ per record);
        `progress(n)` once each is coded."""
        size, it = (LANES if self._mode is None or self._lanes else 1), iter(items)
        while batch := list(islice(it, size)):
            yield batch
            if progress:
                progress(len(batch))

    def _compress(self, records: list[TokenRecord], keep_meta: bool) -> list[bytes]:
        import constriction

        streams, headers = [], []
        for rec in records:
            if rec.orders:
                raise UsageError(f"record {rec.key} carries stored orders; compress needs orders a decoder can follow")
            self._check_fits(rec.meta)
            p, targets, by_cell = self._encoding_plan(rec)
            queues = cell_queues(self.codec, rec) if p.lanes is not None else None
            streams.append(_Stream(rec.meta, StreamGrammar(self.codec, rec.meta, p), constriction.stream.queue.RangeEncoder(),
                                   targets, by_cell, queues))
            head = Header(order_seed(rec.key), zlib.crc32(rec.tokens.astype(self.codec.vocab.dtype).tobytes()),
                          rec.key, rec.meta, rec.side, self.steps)
            headers.append(pack(self.checksum, head, self.reference, keep_meta))
        self._run(streams)
        out = []
        for s, h in zip(streams, headers):
            if s.n != s.targets.size:
                raise CodecError("the grammar ended before the record's tokens did")
            out.append(h + s.coder.get_compressed().astype("<u4").tobytes())
        return out

    def _encoding_plan(self, rec: TokenRecord) -> tuple[Plan, np.ndarray, bool]:
        """A record's plan and its tokens to code: in stream order (then EOS, token by token), or by cell in an
        order the model chooses (each group's cells are known once chosen)."""
        rng = record_rng(self.data.seed, rec.key)
        if parse_order(self.data.order).adaptive:
            p = plan(self.codec, rec.meta, self._spec(self.steps), rng)
            layout = self.codec.layout(rec.meta)
            tc = layout.token_cells(rec)
            if tc.size != len(layout.cells):
                raise UsageError(f"record {rec.key} uses escapes: --parallel needs one token per place")
            by_cell = np.empty(len(layout.cells), np.int64)
            by_cell[tc] = rec.tokens
            return p, by_cell, True
        o = order_record(self.codec, rec, self._spec(self.steps), rng)
        targets = rec.tokens.astype(np.int64)[o.perm]
        return o.plan, (targets if self.data.parallel else np.append(targets, EOS)), False

    def _decompress(self, blobs: list[bytes]) -> list[TokenRecord]:
        import constriction

        streams, heads = [], []
        for blob in blobs:
            head, payload = unpack(blob, self.checksum, self.reference)
            meta = head.meta
            self._check_fits(meta)
            if (head.steps is None) == bool(self._mode and self._mode.steps):
                raise CodecError("the file's header is corrupt (model steps missing or unexpected for this run)")
            p = plan(self.codec, meta, self._spec(head.steps), order_rng(self.data.seed, head.order_seed))
            words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
            streams.append(_Stream(meta, StreamGrammar(self.codec, meta, p), constriction.stream.queue.RangeDecoder(words), None))
            heads.append(head)
        self._run(streams)
        out = []
        for s, head in zip(streams, heads):
            toks = (s.g.canonical() if s.tokens is None else s.tokens).astype(self.codec.vocab.dtype)
            if zlib.crc32(toks.tobytes()) != head.crc:
                raise CodecError("the decoded tokens do not match the file's checksum (a corrupted file, or a machine "
                                 "that computes the model's probabilities differently)")
            out.append(TokenRecord(head.key, toks, meta=head.meta, side=head.side))
        return out

    @property
    def _mode(self):
        """The run's parallel mode (`vistok.tokenize.parallel`), None token by token."""
        return parse_mode(self.data.parallel)

    @property
    def _lanes(self) -> bool:
        """Streams side by side (`ParallelMode.lanes`), but not in an order the model chooses: plans part ways."""
        return bool(self._mode and self._mode.lanes) and not parse_order(self.data.order).adaptive

    def _spec(self, steps: int | None) -> StreamSpec:
        """The run's stream in its model's context, in `steps` model steps (an any run's; None for others)."""
        return self.data.spec_for(self.model.cfg.block_size, self.data.stride, steps)

    # --- the coding loops ------------------------------------------------------------------------------
    def _check_fits(self, meta: dict) -> None:
        try:  # a header's geometry is untrusted: bounded before any array is sized from it
            pixels = int(meta["height"]) * int(meta["width"]) * int(meta.get("frames", 1))
            if not 0 < pixels <= DEFAULT_MAX_PIXELS:
                raise ValueError(f"{pixels} pixels")
            cells = self.codec.layout(meta).cells
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"record metadata does not describe a {self.codec.codec_id} geometry: {exc}") from None
        known = known_columns(self.codec)
        check_coords(cells.positions.coords.max(axis=0) + 1, [self.model.cfg.axis_sizes[i] for i in known],
                     self.codec.known_axes)

    def _run(self, streams: list[_Stream]) -> None:
        with _one_thread(), torch.no_grad():
            if self._mode is not None and self._mode.unit_lanes:
                self._run_lanes(streams)
            elif self.data.parallel:
                self._run_groups(streams)
            else:
                self._run_tokens(streams)

    def _run_tokens(self, streams: list[_Stream]) -> None:
        """Token by token, LANES streams side by side (padding lanes repeat nothing anyone reads)."""
        m, codec = self.model, self.codec
        A, T = len(codec.axes), m.cfg.block_size
        tok = np.full(LANES, BOS, np.int64)
        crd = np.zeros((LANES, A), np.int64)
        nxt = np.zeros((LANES, A), np.int64)
        plc = np.full((LANES, 4), -1, np.int64)  # local attention: (query place, key place) per lane
        for i, s in enumerate(streams):
            nxt[i] = s.g.next_input()
            plc[i, :2] = s.g.next_place()
        limit = max(codec.layout(s.meta).max_tokens + 1 for s in streams)  # tokens and EOS: the grammar's bound
        hist: deque[tuple[np.ndarray, ...]] = deque(maxlen=T)  # the inputs of the current window, at most
        cache, start, p = None, -1, 0
        while not all(s.g.done for s in streams):
            if p >= limit:
                raise CodecError("the stream does not end (a corrupted file)")
            hist.append((tok.copy(), crd.copy(), nxt.copy(), plc.copy()))
            a = window_start(p, T, self.data.stride)  # the window training and eval score this target in
            feed = [hist[-1]]
            if a != start:  # a new window: a fresh cache, refilled with the window's inputs so far
                cache, start = KVCache(m.cfg, LANES, T, "cpu", m.lm_head.weight.dtype), a
                feed = list(hist)[len(hist) - (p - a + 1) :]
            t_in, c_in, n_in, p_in = (torch.from_numpy(np.stack([f[j] for f in feed], axis=1)) for j in range(4))
            logits, _ = m(t_in, c_in, n_in if m.cfg.next_axes else None, cache=cache, last=1,
                          places=p_in if m.cfg.neighbourhood else None)
            lg = logits[:, -1].double().numpy()
            for i, s in enumerate(streams):
                if s.g.done:
                    continue
                t = s.code(lg[i], s.g.allowed())
                c = s.g.step(t)
                tok[i] = t
                crd[i] = 0 if c is None else c + 1
                nxt[i] = s.g.next_input()
                plc[i] = np.concatenate([s.g.next_place(), s.g.last_place])
            p += 1

    def _run_lanes(self, streams: list[_Stream]) -> None:
        """Wavefront lanes, a stream at a time, every lane of a wave a token per model step
        (`vistok.train.lanes.run_lanes`), each coded in the order the lanes take them."""
        for s in streams:
            def pick(lane, logits, allowed, s=s):
                return s.code(logits.double().numpy(), allowed, lane.cell)

            s.tokens, _ = run_lanes(self.model, self.codec, s.meta, s.g.plan, pick, self.data.stride)

    def _run_groups(self, streams: list[_Stream]) -> None:
        """Group by group, in the windows training read the stream in (`GroupFeed`). `--parallel any`: LANES
        streams side by side when their plans cut alike (records of one geometry and step count), every forward
        pass LANES lanes wide (padding lanes repeat lane 0), so a stream's logits are the same alone or among
        others; segments and scales: one stream, one lane."""
        width = LANES if self._lanes else 1
        T, S = self.model.cfg.block_size, self.data.stride
        for same in _alike(streams):
            lead, feed, seen, wins = same[0].g, GroupFeed(self.model, BOS, width), None, []
            lanes = list(range(len(same))) + [0] * (width - len(same))
            while lead.i < lead.plan.cells.size:
                if lead.plan is not seen:  # a plan completed from the DC image: the windows may cut elsewhere
                    seen, wins = lead.plan, group_windows(lead.plan.groups, T, S)
                i = lead.i
                g = int(seen.groups[i])
                window = next(w for w in wins if w[1] <= i < w[2])
                if lead.plan.adaptive is not None:  # one stream, one lane: the model chooses the group's places
                    choose_group(feed, lead, window, i, g)
                asked = [s.g.group() for s in same]
                units = [s.g.group_places() for s in same]
                lg = feed.logits(window, i, g, [asked[j][0] for j in lanes], [units[j] for j in lanes]).double().numpy()
                toks = [[s.code(lg[j, q], asked[j][1][q]) for q in range(len(units[j]))] for j, s in enumerate(same)]
                crds = [[s.g.step(t) + 1 for t in tk] for s, tk in zip(same, toks)]
                feed.add(g, [toks[j] for j in lanes], [crds[j] for j in lanes], [units[j] for j in lanes])


def _alike(streams: list[_Stream]) -> list[list[_Stream]]:
    """The streams in runs whose plans have the same groups (so every step has the same shape), in order."""
    runs: dict[tuple[bytes, int], list[_Stream]] = {}
    for s in streams:  # a plan still to be completed from its DC image may cut differently: a run of its own
        runs.setdefault((s.g.plan.groups.tobytes(), id(s) if s.g.plan.complete_from else 0), []).append(s)
    return list(runs.values())


def run_checksum(model: GPT, codec: Codec, data: DataConfig) -> bytes:
    """8 bytes over the weights and what decoding depends on besides them."""
    h = hashlib.blake2b(digest_size=8)
    conf = {"codec": codec.get_config(), "order": data.order, "parallel": data.parallel, "seed": data.seed,
            "block_size": model.cfg.block_size, "version": VERSION}
    if model.cfg.co_attend:  # queries of a group see each other (runs before it: they did not)
        conf["co_attend"] = True
    if model.cfg.neighbourhood:  # neighbourhood attention (runs before it: the whole context)
        conf["local"] = model.cfg.neighbourhood  # the key files were hashed with
    if data.stride and data.stride != model.cfg.block_size:  # windows that overlap (runs before them: none)
        conf["stride"] = data.stride
    h.update(json.dumps(conf, sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.digest()


def read_files(paths: Iterable[Path], on_error=None) -> Iterator[tuple[Path, bytes]]:
    """(path, bytes) of each file; one that cannot be read goes to `on_error(path, exc)` (or raises)."""
    for p in paths:
        try:
            yield Path(p), Path(p).read_bytes()
        except OSError as exc:
            err = DatasetError(f"cannot read it ({exc.strerror})")
            if on_error is None:
                raise DatasetError(f"cannot read {p}: {exc.strerror}") from None
            on_error(str(p), err)


def input_records(coder: Coder, inputs: list[str], keys: list[str] | None = None, passthrough: bool = False,
                  on_error=None, storage_options: dict | None = None) -> Iterator[TokenRecord]:
    """The records to compress: every record of a dataset folder or packed store (or those named by `keys`),
    and the records of media inputs (files, folders, globs, @lists) tokenized with the run's codec and its
    dataset's preprocessing (one centre crop where the dataset took random crops). With `passthrough`,
    JPEG files keep their own coefficients (the jpeg codec's `--transcode auto`) at their own size.
    A bad media input is passed to `on_error(input, exc)` (or raised) and the rest go on."""
    from vistok.errors import InputError
    from vistok.media.preprocess import Preprocess
    from vistok.media.sources import expand_sources
    from vistok.pipelines.encode import encode_input
    from vistok.shards.store import is_store, open_any
    from vistok.storage import Loc

    codec = coder.codec
    if passthrough:
        if "transcode" not in codec.get_config():
            raise UsageError(f"--passthrough keeps JPEG files' coefficients: the run's codec is {codec.codec_id}")
        codec = get_codec({**codec.get_config(), "transcode": "auto"})
        pre = Preprocess(gray=bool(coder.preprocess.get("gray", False)))
    else:
        pre = Preprocess(**{**coder.preprocess, "crops": 0})
    wanted = set(keys or [])
    for inp in inputs:
        path = Loc(inp, storage_options)
        if (path / "manifest.json").exists() or is_store(path):
            ds = open_any(path)
            if ds.codec.get_config() != coder.codec.get_config():
                raise UsageError(f"{inp} holds {ds.codec.codec_id} tokens with another configuration than the run's "
                                 f"({ds.codec.get_config()} vs {coder.codec.get_config()})")
            for rec in ds:
                if not wanted or rec.key in wanted:
                    yield rec
            continue
        for input_id in expand_sources([inp], options=storage_options):
            try:
                yield from encode_input(input_id, codec, pre, options=storage_options)
            except InputError as exc:
                if on_error is None:
                    raise
                on_error(input_id, exc)
