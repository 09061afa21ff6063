"""Training data: dataset folders -> ordered `[BOS] tokens [EOS]` documents -> (B, T) batches of filled rows.

- Several datasets can be mixed with weights; their manifests must agree on the vocabulary and axes.
- A held-out split is chosen by a hash of the *input* key (all crops of one photo fall on the same side).
- Each record is put in `--order` (`vistok.tokenize.stream`: a permutation of its cells that a decoder
  can follow), gets coordinates shifted by one (0 = none, for specials) and the place of the next token
  on the known axes. A document longer than the context is read in windows (`windows`): a window of the
  context's length every `stride` positions, with loss only on the targets that are new to it, so every
  target after the first window sees at least `block_size - stride` earlier positions of its record (a
  clip's frame sees the frames before it); stride = block_size cuts independent pieces, and `long="crop"`
  keeps the first window only. Documents fill rows of positions (input, target) back to back, with a doc
  id per position, so attention stays inside a document. With `--parallel`, a document is the tokens
  followed by one query slot per token, and groups (randsac segments, scales — on clips a group per frame
  and scale —, or with `any` a random order cut into a drawn number of steps) are predicted at once; a
  long one is read in windows of whole groups after the tokens just before them (`group_windows`).
- Records come in one global order, and rows are packed in lanes (`vistok.train.sampling`): the batches
  depend on the datasets, the seed and the global batch, not on loader workers or ranks. The loader's state
  is where each lane's next row starts, so a resume replays nothing.
"""

from __future__ import annotations

import re
import signal
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vistok import errors
from vistok.errors import DatasetError, UsageError, VistokError
from vistok.record import TokenRecord, heldout_hash
from vistok.shards.integrity import OnDamage
from vistok.shards.store import PackedStore, open_any
from vistok.storage import Cache
from vistok.tokenize.base import BOS, EOS, PAD, Codec
from vistok.tokenize.region import Region
from vistok.tokenize.stream import (
    Ordered,
    StreamSpec,
    cell_places,
    check_local,
    check_parallel,
    group_windows,
    known_columns,
    lane_steps,
    order_record,
)
from vistok.train.config import DataConfig
from vistok.train.sampling import GlobalOrder, lane_rows, lanes_of, open_order, record_seed

LOADER_STATE_VERSION = 3  # 3: each lane's next start in the global order (2: a batch count, replayed)


def is_heldout(record_key: str, fraction: float) -> bool:
    return heldout_hash(record_key) < fraction


def record_rng(seed: int, record_key: str) -> np.random.Generator:
    """The generator of a record's random order when it is scored or coded (`vistok eval`, `vistok compress`):
    a function of the run's seed and the CRC-32 of the record's key, which a compressed file keeps."""
    return order_rng(seed, order_seed(record_key))


def order_seed(record_key: str) -> int:
    return zlib.crc32(record_key.encode())


def order_rng(seed: int, seed_of_order: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0, seed_of_order])


def open_datasets(paths: list, options: dict | None = None, on_damage: OnDamage | None = None) -> tuple[list, Codec]:
    """Dataset folders and/or packed stores (`vistok pack`), checked to share one vocabulary; URLs opened with
    the storage `options` (a `Loc` keeps its own); damaged shards stop the reader or are skipped (`on_damage`)."""
    if not paths:
        raise UsageError("no dataset given")
    sets = [open_any(p, options, on_damage) for p in paths]
    for ds in sets:
        if not len(ds):
            errors = ds.manifest.counts.get("errors", 0)
            raise DatasetError(f"{ds.folder} holds no samples" + (f" (all {errors} inputs failed: see its errors.jsonl)"
                                                                   if errors else ""))
    first = sets[0].manifest
    for ds in sets[1:]:
        m = ds.manifest
        if m.vocabulary != first.vocabulary or m.axes != first.axes:
            raise DatasetError(f"{ds.folder} has a different vocabulary or coordinate axes than {sets[0].folder}; "
                               "datasets mixed in one run must share them")
    return sets, sets[0].codec


PAD_VALUES = {"idx": PAD, "targets": PAD, "coords": 0, "next_coords": 0, "loss_mask": 0.0, "groups": -1, "query": 0,
              "places": -1, "lane": -1}
SHAPES = {"coords": None, "next_coords": None, "places": 4}  # per-position vectors: (T, n_axes) or (T, 4)


@dataclass
class Docs:
    """One record as training positions: a list of documents (one, or several pieces of a long record),
    each a dict of per-position arrays (`PAD_VALUES` names them), plus what eval reports per image."""

    docs: list[dict[str, np.ndarray]]
    order_bits: float  # side information the order costs (stored gradwalk orders)
    steps: int  # model steps to generate the record: tokens + EOS, or groups when parallel
    stream: Ordered | None = None  # the record in stream order (eval's grammar masks)


def windows(n: int, block_size: int, stride: int = 0) -> list[tuple[int, int, int]]:
    """(start, new, stop) of the windows over a document of n positions: window w holds positions
    [start, stop) = [w * stride, min(w * stride + block_size, n)) and is scored on [new, stop), the targets
    no earlier window scored. Every target is scored exactly once, by the window that gives it the most
    context; which window that is depends on its position only (`vistok.nn.gpt.window_start`)."""
    T, S = block_size, stride or block_size
    if not 0 < S <= T:
        raise UsageError(f"--stride must be between 1 and the context length {T}, got {S}")
    out, new = [], 0
    for a in range(0, max(n, 1), S):
        b = min(a + T, n)
        out.append((a, new, b))
        new = b
        if b >= n:
            break
    return out


def record_docs(codec: Codec, rec: TokenRecord, spec: StreamSpec, rng: np.random.Generator, long: str = "split",
                places: bool = False, known: Region | None = None) -> Docs:
    """One record, streamed as `spec` says (its order, parallel mode, steps, and the context and stride of its
    rows) -> its documents: `[BOS] tokens [EOS]` predicted token by token, or with a parallel mode
    `[BOS] tokens | queries`: a query slot per token carries where that token goes and predicts it from
    the tokens of earlier groups only (the model's group mask, `vistok.nn.gpt.group_mask`).

    The place of each next token (`next_coords`, known axes) comes from the plan's cells, so it is a
    function of the prefix by construction; the tokens' own coordinates are the codec's, which equal what
    the grammar derives from the prefix (`tests/tokenize/test_stream.py` checks both for every order).
    `spec.steps`: a `--parallel any` record in that many steps (None: drawn, as in training). `places`: each
    position also gets (query frame, query row, key frame, key row) for local attention: the place of the
    token it predicts and of the token it holds (`vistok.tokenize.stream.cell_places`), -1 for specials.
    `known`: a completion's stream, the region's units first (`vistok.tokenize.stream.known_first`).
    """
    o = order_record(codec, rec, spec, rng, known)
    block_size, stride = spec.block_size, spec.stride
    pos = codec.layout(rec.meta).positions(rec)
    toks = rec.tokens.astype(np.int64)[o.perm]
    coords = pos.coords.astype(np.int64)[o.perm] + 1
    known = known_columns(codec)
    place = np.zeros_like(coords)  # where each token goes, as known before it is read
    place[:, known] = codec.layout(rec.meta).cells.positions.coords[o.cells] + 1
    n, A = toks.size, coords.shape[1]
    tp = cell_places(codec.layout(rec.meta))[o.cells] if places else None  # (n, 2) each token's place
    mode = spec.parallel
    if mode is not None and mode.unit_lanes:
        return Docs(_lane_docs(toks, coords, place, o.groups, o.lanes, block_size, stride, tp), 0.0,
                    lane_steps(o.groups, o.lanes), o)
    if mode is not None and not mode.cut:  # masked: the visible units, then the masked, in one row
        return Docs([_masked_doc(toks, coords, place, o.groups, block_size, tp)], 0.0, 1, o)
    if mode is not None:
        return Docs(_parallel_docs(toks, coords, place, o.groups, block_size, stride, tp), o.plan.order_bits,
                    o.plan.n_groups, o)
    t = np.concatenate([[BOS], toks, [EOS]])
    c = np.concatenate([np.zeros((1, A), np.int64), coords])  # inputs: BOS, tokens (EOS is never an input)
    nxt = np.concatenate([place, np.zeros((1, A), np.int64)])
    doc = {"idx": t[:-1], "targets": t[1:], "coords": c, "next_coords": nxt, "loss_mask": np.ones(n + 1, np.float32)}
    if tp is not None:  # queries: the target's place (EOS: none); keys: the input's place (BOS: none)
        none = np.full((1, 2), -1, np.int64)
        doc["places"] = np.concatenate([np.concatenate([tp, none]), np.concatenate([none, tp])], axis=1)
    # windows at fixed positions: where a window starts must not depend on the tokens (a cut at a unit
    # boundary would tell the model something about the tokens after it). Views, not copies.
    wins = windows(n + 1, block_size, stride) if long == "split" else windows(n + 1, block_size)[:1]
    docs = []
    for a, new, b in wins:
        d = {k: v[a:b] for k, v in doc.items()}
        if new > a:
            d["loss_mask"] = np.concatenate([np.zeros(new - a, np.float32), np.ones(b - new, np.float32)])
        docs.append(d)
    return Docs(docs, o.plan.order_bits, n + 1, o)


def _masked_doc(toks, coords, place, groups, block_size: int, tp=None) -> dict[str, np.ndarray]:
    """`--parallel masked:R`: `[BOS] visible tokens | a query slot per masked token`, scored on the queries only.
    The visible tokens (group 0) see each other both ways, the queries (group 1) see them and never a masked
    token (`vistok.nn.gpt.group_mask`); the masked tokens themselves are not in the row."""
    vis, hid = groups == 0, groups == 1
    n, k = int(vis.sum()), int(hid.sum())
    if n + k + 1 > block_size:
        raise UsageError(f"--parallel masked:R predicts the masked units of a whole image at once: {n + k + 1} "
                         f"positions (BOS, {n} visible tokens, {k} queries) do not fit --block-size {block_size}")
    A = coords.shape[1]
    doc = {"idx": np.concatenate([[BOS], toks[vis], np.full(k, PAD)]),
           "targets": np.concatenate([np.full(n + 1, PAD), toks[hid]]),
           "coords": np.concatenate([np.zeros((1, A), np.int64), coords[vis], place[hid]]),
           "next_coords": np.zeros((n + k + 1, A), np.int64),
           "loss_mask": np.concatenate([np.zeros(n + 1, np.float32), np.ones(k, np.float32)]),
           "groups": np.concatenate([[-1], np.zeros(n, np.int64), np.ones(k, np.int64)]),
           "query": np.concatenate([np.zeros(n + 1, np.int64), np.ones(k, np.int64)])}
    if tp is not None:
        pl = np.concatenate([np.full((1, 2), -1, np.int64), tp[vis], tp[hid]])
        doc["places"] = np.concatenate([pl, pl], axis=1)
    return doc


def _parallel_docs(toks, coords, place, groups, block_size: int, stride: int = 0, tp=None) -> list[dict[str, np.ndarray]]:
    """`[BOS] tokens | queries` documents, one per window (`group_windows`): the window's tokens, earlier
    groups' as context, and a query slot for each token of its new groups, scored there. With `tp` (each
    token's place), places: a token slot and a query slot are both at their token's place."""
    docs = []
    for a, b, c in group_windows(groups, block_size, stride):
        held, new, A = slice(a, c), slice(b, c), coords.shape[1]
        n, k = c - a, c - b
        doc = {
            "idx": np.concatenate([[BOS], toks[held], np.full(k, PAD)]),
            "targets": np.concatenate([np.full(n + 1, PAD), toks[new]]),
            "coords": np.concatenate([np.zeros((1, A), np.int64), coords[held], place[new]]),
            "next_coords": np.zeros((n + k + 1, A), np.int64),
            "loss_mask": np.concatenate([np.zeros(n + 1, np.float32), np.ones(k, np.float32)]),
            "groups": np.concatenate([[-1], groups[held], groups[new]]),
            "query": np.concatenate([np.zeros(n + 1, np.int64), np.ones(k, np.int64)]),
        }
        if tp is not None:
            pl = np.concatenate([np.full((1, 2), -1, np.int64), tp[held], tp[new]])
            doc["places"] = np.concatenate([pl, pl], axis=1)
        docs.append(doc)
    return docs


def _lane_docs(toks, coords, place, waves, lanes, block_size: int, stride: int = 0,
               tp=None) -> list[dict[str, np.ndarray]]:
    """A wavefront stream's documents (`--parallel wavefront`). Laid out flat, the stream is its lanes one after
    another, wave by wave, each lane a start slot and its tokens: the start slot (a query slot at the lane's
    place) predicts the lane's first token, each token the next one of its lane, and a lane's last token
    nothing (a cell ends itself). In a row a position sees BOS, the earlier waves and its own lane's prefix,
    never another lane of its wave or a later wave (`vistok.nn.gpt.group_mask` with `lane`).

    Rows (`_lane_rows`): a wave starting at flat position s is predicted in a row that starts at max(0, s - C),
    C = block_size - 1 - min(stride, block_size - 1): a function of the waves before it alone, so what a lane
    sees never depends on how long the other lanes of its wave, or later waves, are. Waves whose rows start at
    0 (the first C positions: a small picture whole) share rows while they fit; each later wave has its own
    row, the C positions before it as context, its lanes cut over several rows if they do not fit one."""
    n, A = toks.size, coords.shape[1]
    first = np.flatnonzero(np.diff(lanes, prepend=-1) != 0)  # each lane's first token
    L = first.size
    at_tok = np.arange(n) + np.searchsorted(first, np.arange(n), side="right")  # each token's flat position
    at_start = first + np.arange(L)  # each lane's start slot
    has_next = np.ones(n, bool)
    has_next[np.append(first[1:], n) - 1] = False  # a lane's last token predicts nothing
    nxt = np.minimum(np.arange(n) + 1, n - 1)
    F = n + L
    f = {"idx": np.full(F, PAD, np.int64), "targets": np.full(F, PAD, np.int64),
         "coords": np.zeros((F, A), np.int64), "next_coords": np.zeros((F, A), np.int64),
         "loss_mask": np.zeros(F, np.float32), "groups": np.zeros(F, np.int64), "query": np.zeros(F, np.int64),
         "lane": np.zeros(F, np.int64)}
    f["idx"][at_tok], f["coords"][at_tok] = toks, coords
    f["targets"][at_tok[has_next]], f["next_coords"][at_tok[has_next]] = toks[nxt[has_next]], place[nxt[has_next]]
    f["loss_mask"][at_tok[has_next]] = 1.0
    f["coords"][at_start], f["targets"][at_start], f["loss_mask"][at_start] = place[first], toks[first], 1.0
    f["query"][at_start] = 1
    f["groups"][at_tok], f["groups"][at_start] = waves, waves[first]
    f["lane"][at_tok], f["lane"][at_start] = lanes, lanes[first]
    if tp is not None:  # (query place, key place): a token asks about its lane's next token, at its own place
        pl = np.zeros((F, 4), np.int64)
        pl[at_tok] = np.concatenate([tp[np.where(has_next, nxt, np.arange(n))], tp], axis=1)
        pl[at_start] = np.concatenate([tp[first], tp[first]], axis=1)
        f["places"] = pl
    bos = {"idx": BOS, "targets": PAD, "loss_mask": 0.0, "groups": -1, "query": 0, "lane": -1, "places": -1}
    docs = []
    for ctx, new in _lane_rows(f["groups"], at_start, block_size, stride):
        at = np.concatenate([ctx, new])
        d = {k: np.concatenate([np.full((1,) + v.shape[1:], bos.get(k, 0), v.dtype), v[at]]) for k, v in f.items()}
        d["loss_mask"][1 : 1 + ctx.size] = 0.0  # the context is not scored here
        docs.append(d)
    return docs


def lane_context(block_size: int, stride: int = 0) -> int:
    """C: how many flat positions before its wave a wavefront row gives (see `_lane_docs`)."""
    return block_size - 1 - min(stride or block_size, block_size - 1)


def _lane_rows(waves: np.ndarray, starts: np.ndarray, block_size: int,
               stride: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(context, new) flat positions of each row over a flat wavefront stream (`_lane_docs`)."""
    C, room = lane_context(block_size, stride), block_size - 1
    bounds = np.append(np.flatnonzero(np.diff(waves, prepend=-1) != 0), waves.size)  # each wave's first position
    out, shared = [], False  # shared: the last row starts at 0 and ends where the next wave starts
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        r = max(0, lo - C)
        if shared and r == 0 and hi <= room:
            out[-1] = (out[-1][0], np.append(out[-1][1], np.arange(lo, hi)))
            continue
        if hi - r <= room:
            out.append((np.arange(r, lo), np.arange(lo, hi)))
            shared = r == 0
            continue
        shared = False
        cuts = np.append(starts[(starts >= lo) & (starts < hi)], hi)  # the wave's lanes, in runs that fit
        if (np.diff(cuts) > room - (lo - r)).any():
            raise UsageError(f"a lane of {int(np.diff(cuts).max())} positions (a unit's tokens and its start slot) "
                             f"does not fit beside the {lo - r} positions of context a row gives it (--block-size "
                             f"{block_size}, --stride {stride or block_size}); raise the stride or the block size")
        a = 0
        while a < cuts.size - 1:
            b = a + 1
            while b < cuts.size - 1 and cuts[b + 1] - cuts[a] <= room - (lo - r):
                b += 1
            out.append((np.arange(r, lo), np.arange(cuts[a], cuts[b])))
            a = b
    return out


def check_order(sets: list, codec: Codec, cfg: DataConfig) -> None:
    """Refuse a bad order or parallel mode before training starts: plan the first record of each dataset."""
    spec = cfg.spec
    check_parallel(codec, spec.order, spec.parallel)
    for ds in sets:
        for rec in ds:
            if cfg.places:
                check_local(codec, rec.meta)
            record_docs(codec, rec, spec, np.random.default_rng(0), cfg.long, places=cfg.places)
            break


def doc_row(doc: dict[str, np.ndarray], block_size: int) -> dict[str, np.ndarray]:
    """One document alone in a row of block_size positions, padded (eval and probes: a row per document)."""
    filler = RowFiller(block_size, doc["coords"].shape[1], "groups" in doc, "places" in doc, "lane" in doc)
    rows = list(filler.add(doc))
    return rows[0] if rows else filler.flush()


class RowFiller:
    """Fills rows of block_size positions greedily with documents, with a doc id per position (-1: padding)."""

    def __init__(self, block_size: int, n_axes: int, parallel: bool = False, places: bool = False, lanes: bool = False):
        self.T, self.A = block_size, n_axes
        self.fields = [k for k in PAD_VALUES if (parallel or k not in ("groups", "query")) and (places or k != "places")
                       and (lanes or k != "lane")]
        self._new()

    def _new(self) -> None:
        T = self.T
        self.row = {k: np.full((T, SHAPES[k] or self.A) if k in SHAPES else T, PAD_VALUES[k],
                               dtype=np.float32 if k == "loss_mask" else np.int64) for k in self.fields}
        self.row["doc_ids"] = np.full(T, -1, dtype=np.int64)
        self.fill = 0
        self.ndocs = 0

    def add(self, doc: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        n = doc["idx"].size
        if self.fill + n > self.T and self.fill:
            yield self.flush()
        s = slice(self.fill, self.fill + n)
        for k in self.fields:
            self.row[k][s] = doc[k]
        self.row["doc_ids"][s] = self.ndocs
        self.fill += n
        self.ndocs += 1
        if self.fill >= self.T:
            yield self.flush()

    def flush(self) -> dict[str, np.ndarray]:
        row = self.row
        self._new()
        return row

    def state_dict(self) -> dict:
        return {"row": {k: v[: self.fill].tolist() for k, v in self.row.items()}, "ndocs": self.ndocs}

    def load_state_dict(self, st: dict) -> None:
        self._new()
        for k, v in st["row"].items():
            if v:
                self.row[k][: len(v)] = v
        self.fill, self.ndocs = len(st["row"]["doc_ids"]), int(st["ndocs"])


class LaneStream(IterableDataset):
    """A rank's lanes (`vistok.train.sampling`) as parts of its batches: each DataLoader worker (or the process
    itself) packs its share of the lanes and yields, per loader step, their rows and where each lane's next row
    starts. The loader joins the workers' parts of a step in lane order."""

    def __init__(self, cfg: DataConfig, codec: Codec, order: GlobalOrder, lanes: range, total: int,
                 starts: dict[int, tuple[int, int]]):
        super().__init__()
        self.cfg, self.codec, self.order, self.lanes, self.total, self.starts = cfg, codec, order, lanes, total, starts
        self.spec = cfg.spec

    def docs(self, epoch: int, rec: TokenRecord) -> list[dict[str, np.ndarray]]:
        c = self.cfg
        return record_docs(self.codec, rec, self.spec, record_seed(c.seed, epoch, rec.key), c.long,
                           places=c.places).docs

    def __iter__(self) -> Iterator[dict]:
        wi = get_worker_info()
        worker, n_workers = (wi.id, wi.num_workers) if wi else (0, 1)
        mine = [lane for j, lane in enumerate(self.lanes) if j % n_workers == worker]
        c = self.cfg
        lanes = self.spec.parallel is not None and self.spec.parallel.unit_lanes
        gens = [lane_rows(self.order, self.docs, RowFiller(c.block_size, len(self.codec.axes), bool(c.parallel),
                                                           c.places, lanes), lane, self.total,
                          self.starts.get(lane, (0, 0)))
                for lane in mine]
        while True:
            rows, nexts = zip(*(next(g) for g in gens))
            yield {"lanes": mine, "next": [list(n) for n in nexts],
                   "rows": {k: np.stack([r[k] for r in rows]) for k in rows[0]}}


def _as_is(part: dict) -> dict:  # the DataLoader's collate: parts stay numpy until the loader joins them
    return part


def join_parts(parts: list[dict]) -> tuple[dict[str, np.ndarray], dict[int, tuple[int, int]]]:
    """One loader step's parts -> its rows in lane order, and each lane's next start."""
    lanes = [lane for p in parts for lane in p["lanes"]]
    at = np.argsort(lanes)
    rows = {k: np.concatenate([p["rows"][k] for p in parts])[at] for k in parts[0]["rows"]}
    return rows, {lane: tuple(n) for p in parts for lane, n in zip(p["lanes"], p["next"])}


def fit_workers(cfg: DataConfig, world: int = 1) -> DataConfig:
    """Loader workers split a rank's lanes (its --batch-size rows): more workers than lanes would idle, so they
    are cut to that many, saying so."""
    if cfg.num_workers <= cfg.batch_size:
        return cfg
    print(f"note: a batch of {cfg.batch_size} rows feeds {cfg.batch_size} loader worker(s) per rank (--workers "
          f"{cfg.num_workers} asked for more)", file=sys.stderr)
    return replace(cfg, num_workers=cfg.batch_size)


def leave_signals_to_main(worker: int) -> None:
    """A loader worker ignores SIGINT and SIGTERM sent to the whole process group (Ctrl-C, a scheduler's stop):
    the main process finishes its step and writes a checkpoint, then ends the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def worker_error(exc: Exception) -> Exception:
    """A vistok error raised in a DataLoader worker, as its one-line self: torch re-raises it in the main
    process wrapped in the worker's traceback text (as a RuntimeError when the type takes other arguments)."""
    m = re.findall(r"^vistok\.errors\.(\w+): (.+)$", str(exc), re.M)
    if not m:
        return exc
    name, msg = m[-1]
    kind = getattr(errors, name, None)
    return DatasetError(msg) if kind is errors.DamagedShard else kind(msg) if kind else exc


def dataset_marks(sets: list, order: GlobalOrder) -> list[dict]:
    """What a resumed run must find unchanged in each dataset: its config hash, shards and training records."""
    return [{"dataset": str(getattr(ds, "folder", getattr(ds, "path", ""))), "config_hash": ds.manifest.config_hash,
             "shards": len(getattr(ds, "shards", ())), "records": o.n} for ds, o in zip(sets, order.orders)]


def check_resume_state(state: dict, cfg: DataConfig, marks: list[dict], lanes: int, world: int) -> None:
    """Refuse a loader state this run cannot continue exactly, in one line saying why."""
    if state.get("version") != LOADER_STATE_VERSION:
        raise UsageError(f"the checkpoint's loader state is version {state.get('version')}, from a vistok before "
                         f"position-based resume ({LOADER_STATE_VERSION}): it cannot continue the same batches; "
                         "start a new run")
    for then, now in zip(state["datasets"], marks):
        for what in ("config_hash", "shards", "records"):
            if then[what] != now[what]:
                raise UsageError(f"{now['dataset']} changed since the checkpoint: {what} {then[what]} then, "
                                 f"{now[what]} now; resume with the data it was trained on, or start a new run")
    if len(state["datasets"]) != len(marks):
        raise UsageError(f"the checkpoint trained on {len(state['datasets'])} datasets, this run names {len(marks)}")
    if state["lanes"] != lanes:
        fit = (f"--batch-size {state['lanes'] // world}" if state["lanes"] % world == 0 else
               f"a number of ranks that divides {state['lanes']}")
        raise UsageError(f"the checkpoint's global batch is {state['lanes']} rows and {world} rank(s) x --batch-size "
                         f"{cfg.batch_size} make {lanes}: resume with {fit}")


def merge_states(ranks: list[dict]) -> dict:
    """Every rank's loader state -> one (each rank's lanes' starts together): what any number of ranks resumes."""
    merged = dict(ranks[0])
    merged["starts"] = {k: v for st in ranks for k, v in st.get("starts", {}).items()}
    return merged


class Loader:
    """Batches of filled rows as torch tensors, with a position to resume at.

    The rows are the global order's lanes (`vistok.train.sampling`): this rank's lanes, split among the DataLoader
    workers. The state is each lane's next start, so a resume reads one record per lane and replays nothing,
    and any --workers and any number of ranks that divides the global batch see the same batches.
    """

    def __init__(self, cfg: DataConfig, rank: int = 0, world: int = 1, device: str = "cpu",
                 options: dict | None = None, cache: Cache | None = None, on_damage: OnDamage | None = None):
        self.cfg, self.device, self.world = fit_workers(cfg, world), device, world
        self.sets, self.codec, self.order, self.lanes_total, self.lanes = open_lanes(cfg, rank, world, options,
                                                                                    on_damage, cache)
        self.starts: dict[int, tuple[int, int]] = {}
        self.batches = 0
        self._it: Iterator | None = None
        self.limits: list[int] | None = None  # the model's embedding table sizes, once known

    def _make(self) -> Iterator:
        nw = self.cfg.num_workers
        stream = LaneStream(self.cfg, self.codec, self.order, self.lanes, self.lanes_total, dict(self.starts))
        dl = DataLoader(stream, batch_size=None, collate_fn=_as_is, num_workers=nw, persistent_workers=False,
                        prefetch_factor=4 if nw else None, worker_init_fn=leave_signals_to_main if nw else None)
        return iter(dl)

    def next(self) -> dict[str, torch.Tensor]:
        if self._it is None:
            self._it = self._make()
        try:
            rows, nexts = join_parts([next(self._it) for _ in range(max(1, self.cfg.num_workers))])
        except (RuntimeError, VistokError) as exc:
            self.close()
            raise worker_error(exc) from None
        self.starts.update(nexts)
        self.batches += 1
        batch = {k: torch.from_numpy(v) for k, v in rows.items()}
        if self.limits is not None:
            check_coords(batch["coords"], self.limits, self.codec.axes)
            check_coords(batch["next_coords"], self.limits, self.codec.axes)
        if self.device.startswith("cuda"):
            return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
        return batch

    def close(self) -> None:
        """End the workers now. They ignore SIGTERM (`leave_signals_to_main`), and an error's traceback keeps the
        iterator alive, so without this the process would wait for them forever at exit."""
        it, self._it = self._it, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def state_dict(self) -> dict:
        return {"version": LOADER_STATE_VERSION, "batches": self.batches, "lanes": self.lanes_total,
                "starts": {str(k): list(v) for k, v in self.starts.items()},
                "datasets": dataset_marks(self.sets, self.order), "config": self.cfg.to_json()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (one rank's, or `merge_states` of several): this rank's lanes pick up where the
        checkpoint left them, whatever workers and ranks wrote it."""
        check_resume_state(state, self.cfg, dataset_marks(self.sets, self.order), self.lanes_total, self.world)
        self.batches = int(state["batches"])
        self.starts = {lane: tuple(state["starts"][str(lane)]) for lane in self.lanes if str(lane) in state["starts"]}
        self._it = None


def open_lanes(cfg: DataConfig, rank: int, world: int, options: dict | None, on_damage: OnDamage | None,
               cache: Cache | None) -> tuple[list, Codec, GlobalOrder, int, range]:
    """What `Loader` and `Rows` read: the checked config's datasets, codec, global order, the global batch's
    rows (lanes) and this rank's share of them; refusals before any record is read."""
    cfg.check()
    sets, codec = open_datasets(cfg.datasets, options, on_damage)
    stores = [isinstance(s, PackedStore) for s in sets]
    if any(stores) and not all(stores):
        raise UsageError("mix either dataset folders or packed stores in one run, not both")
    check_order(sets, codec, cfg)
    order = open_order(sets, cfg.heldout, cfg.seed, cfg.shuffle_block, cfg.weights, cache)
    total = cfg.batch_size * world
    return sets, codec, order, total, lanes_of(rank, world, total)


class Rows(IterableDataset):
    """Training rows for a loop of your own: a torch `IterableDataset` of dicts of tensors, one row each (the
    keyword arguments of `vistok.nn.gpt.GPT.forward`: idx, targets, coords, next_coords, loss_mask, doc_ids,
    and groups, query when parallel; places with `DataConfig(places=True)`, for local attention), the held-out
    split left out, endless (epoch after epoch).

    Rows come a batch at a time in the trainer's order: batched by `DataLoader(rows, batch_size=cfg.batch_size)`
    they are the batches `vistok train` sees on this rank. `state_dict()` after any row, `load_state_dict()` on
    a new `Rows` of the same config, and iterating again gives exactly the rows that would have come next,
    reading one record per lane (no replay). Iterate it in the process that keeps the state (a `DataLoader`
    with the default `num_workers=0`); each rank of a job makes its own."""

    def __init__(self, cfg: DataConfig, rank: int = 0, world: int = 1, options: dict | None = None,
                 on_damage: OnDamage | None = None, cache: Cache | None = None):
        super().__init__()
        self.cfg, self.world = cfg, world
        self.sets, self.codec, self.order, self.lanes_total, self.lanes = open_lanes(cfg, rank, world, options,
                                                                                    on_damage, cache)
        self.starts: dict[int, tuple[int, int]] = {}  # as of the last whole step
        self.offset = 0  # rows of the current step handed out
        self.delivered = 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if get_worker_info() is not None:
            raise UsageError("iterate vistok.rows in the process that keeps its state (DataLoader num_workers=0)")
        parts = iter(LaneStream(self.cfg, self.codec, self.order, self.lanes, self.lanes_total, dict(self.starts)))
        skip = self.offset
        for part in parts:
            rows, nexts = join_parts([part])
            for i in range(skip, len(self.lanes)):
                self.offset, self.delivered = i + 1, self.delivered + 1
                if self.offset == len(self.lanes):
                    self.starts.update(nexts)
                    self.offset = 0
                yield {k: torch.from_numpy(v[i]) for k, v in rows.items()}
            skip = 0

    def state_dict(self) -> dict:
        return {"version": LOADER_STATE_VERSION, "rows": self.delivered, "offset": self.offset,
                "lanes": self.lanes_total, "starts": {str(k): list(v) for k, v in self.starts.items()},
                "datasets": dataset_marks(self.sets, self.order), "config": self.cfg.to_json()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != LOADER_STATE_VERSION or state.get("config") != self.cfg.to_json():
            raise DatasetError("this rows state was saved with another vistok or another data config")
        check_resume_state(state, self.cfg, dataset_marks(self.sets, self.order), self.lanes_total, self.world)
        self.delivered, self.offset = int(state["rows"]), int(state["offset"])
        self.starts = {lane: tuple(state["starts"][str(lane)]) for lane in self.lanes if str(lane) in state["starts"]}


def heldout_records(sets: list, fraction: float, limit: int | None = None,
                    whole: frozenset[str] = frozenset()) -> Iterator[TokenRecord]:
    """The held-out records of `sets` (at most `limit`); every record of a dataset whose config hash is in
    `whole` (a separate test set, which training never saw)."""
    n = 0
    for ds in sets:
        every = ds.manifest.config_hash in whole
        for rec in ds:
            if every or is_heldout(rec.key, fraction):
                yield rec
                n += 1
                if limit is not None and n >= limit:
                    return


def check_coords(coords: torch.Tensor | np.ndarray, limits: list[int], axes: tuple[str, ...]) -> None:
    """Refuse coordinates beyond the model's embedding tables (a larger image than it was built for)."""
    c = torch.as_tensor(coords).reshape(-1, len(limits))
    if not c.numel():
        return
    top = c.amax(dim=0)
    for a, (m, n) in enumerate(zip(top.tolist(), limits)):
        if m >= n:
            what = (f"the clips have more frames ({m}) than the model was built for ({n - 1}): use clips of the "
                    "training length" if axes[a] == "frame" else
                    "the images are larger than the model was built for; use the training size")
            raise UsageError(f"coordinate {m - 1} on axis {axes[a]!r} is beyond the model's table (up to {n - 2}): {what}")


def axis_sizes(sets: list, codec: Codec, scan: int = 256, headroom: float = 2.0) -> list[int]:
    """Embedding table sizes per axis from the data: (max shifted coordinate seen) x headroom, +1."""
    mx = np.zeros(len(codec.axes), dtype=np.int64)
    n = 0
    for ds in sets:
        for rec in ds:
            mx = np.maximum(mx, codec.layout(rec.meta).positions(rec).coords.max(axis=0) + 1)
            n += 1
            if n >= scan:
                break
    return [int(np.ceil((m + 1) * headroom)) + 1 for m in mx]
