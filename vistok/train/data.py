"""Training data: dataset folders -> ordered `[BOS] tokens [EOS]` documents -> (B, T) batches of filled rows.

- Several datasets can be mixed with weights; their manifests must agree on the vocabulary and axes.
- A held-out split is chosen by a hash of the *input* key (all crops of one photo fall on the same side).
- Each record is reordered by units (`--order`), gets coordinates shifted by one (0 = none, for specials)
  and the next token's known coordinates; a document longer than the context is split at unit
  boundaries (or cropped), and documents fill rows back to back, with a doc id per position, so the loss
  mask drops every prediction across a document boundary and on padding, and attention stays inside
  a document.
- The loader's state is the number of batches it has delivered; resuming replays the deterministic
  stream up to there (no model work), so a resumed run sees exactly the batches it would have seen.
  Packed stores (`vistok pack`) are shuffled uniformly per epoch and resume from an exact position.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vistok.errors import DatasetError, UsageError
from vistok.record import TokenRecord, parse_key
from vistok.shards.reader import stream_records
from vistok.shards.store import PackedStore, open_any
from vistok.tokenize.base import BOS, EOS, PAD, Codec
from vistok.tokenize.orders import get_order

LOADER_STATE_VERSION = 1


@dataclass
class DataConfig:
    datasets: list[str] = field(default_factory=list)
    weights: list[float] | None = None
    heldout: float = 0.1  # fraction of inputs held out, by key hash
    order: str = "canonical"
    block_size: int = 512
    batch_size: int = 16
    seed: int = 0
    num_workers: int = 1
    long: str = "split"  # split | crop: what to do with documents longer than block_size + 1
    shuffle_buffer: int = 512

    def to_json(self) -> dict:
        return asdict(self)


def heldout_hash(record_key: str) -> float:
    """A record's input key hashed to [0, 1): crops and clips of one input fall on the same side of a split.
    Keys do not depend on where the files live (`vistok.record`), so neither does the split."""
    h = hashlib.blake2b(parse_key(record_key).input.encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def is_heldout(record_key: str, fraction: float) -> bool:
    return heldout_hash(record_key) < fraction


def open_datasets(paths: list[str]) -> tuple[list, Codec]:
    """Dataset folders and/or packed stores (`vistok pack`), checked to share one vocabulary."""
    if not paths:
        raise UsageError("no dataset given")
    sets = [open_any(p) for p in paths]
    first = sets[0].manifest
    for ds in sets[1:]:
        m = ds.manifest
        if m.vocabulary != first.vocabulary or m.axes != first.axes:
            raise DatasetError(f"{ds.folder} has a different vocabulary or coordinate axes than {sets[0].folder}; "
                               "datasets mixed in one run must share them")
    return sets, sets[0].codec


@dataclass
class Doc:
    tokens: np.ndarray  # (n,) int64
    coords: np.ndarray  # (n, A) int64, shifted: 0 = none
    next_coords: np.ndarray  # (n, A) int64: the following token's known axes, 0 elsewhere


def record_docs(codec: Codec, rec: TokenRecord, order: str, rng: np.random.Generator, block_size: int,
                long: str = "split") -> list[Doc]:
    """One record -> one document `[BOS] tokens [EOS]`, or several when longer than a row."""
    inp = codec.positions(rec)
    perm = get_order(order)(inp, rng).perm
    toks = rec.tokens.astype(np.int64)[perm]
    coords = inp.coords.astype(np.int64)[perm] + 1
    units = inp.units[perm]
    A = coords.shape[1]
    known = np.array([a in codec.known_axes for a in codec.axes])
    n = toks.size + 2
    t = np.empty(n, dtype=np.int64)
    t[0], t[1:-1], t[-1] = BOS, toks, EOS
    c = np.zeros((n, A), dtype=np.int64)
    c[1:-1] = coords
    nxt = np.zeros((n, A), dtype=np.int64)
    nxt[:-1, known] = c[1:, known]
    row = block_size + 1
    if n <= row:
        return [Doc(t, c, nxt)]
    # cut at unit boundaries: positions (in t) where a new unit starts
    starts = np.flatnonzero(np.diff(units)) + 2
    docs, a = [], 0
    while a < n:
        if n - a <= row:
            b = n
        else:
            ok = starts[(starts > a) & (starts <= a + row)]
            b = int(ok[-1]) if ok.size else a + row  # a unit longer than a row is cut where it must be
        docs.append(Doc(t[a:b], c[a:b], nxt[a:b]))
        if long == "crop":
            break
        a = b
    return docs


class RowFiller:
    """Fills rows greedily with documents: rows of block_size + 1 tokens (inputs and shifted targets)."""

    def __init__(self, block_size: int, n_axes: int):
        self.T, self.A = block_size, n_axes
        self._new()

    def _new(self) -> None:
        R = self.T + 1
        self.tok = np.full(R, PAD, dtype=np.int64)
        self.crd = np.zeros((R, self.A), dtype=np.int64)
        self.nxt = np.zeros((R, self.A), dtype=np.int64)
        self.doc = np.full(R, -1, dtype=np.int64)
        self.fill = 0
        self.ndocs = 0

    def add(self, doc: Doc) -> Iterator[dict[str, np.ndarray]]:
        n = doc.tokens.size
        if self.fill + n > self.T + 1 and self.fill:
            yield self.flush()
        s = slice(self.fill, self.fill + n)
        self.tok[s], self.crd[s], self.nxt[s], self.doc[s] = doc.tokens, doc.coords, doc.next_coords, self.ndocs
        self.fill += n
        self.ndocs += 1
        if self.fill >= self.T + 1:
            yield self.flush()

    def flush(self) -> dict[str, np.ndarray]:
        d = self.doc
        row = {
            "idx": self.tok[:-1].copy(), "targets": self.tok[1:].copy(),
            "coords": self.crd[:-1].copy(), "next_coords": self.nxt[:-1].copy(),
            "loss_mask": ((d[:-1] == d[1:]) & (d[:-1] >= 0)).astype(np.float32), "doc_ids": d[:-1].copy(),
        }
        self._new()
        return row


class RowStream(IterableDataset):
    """Infinite stream of filled training rows for one rank; splits shards across DataLoader workers."""

    def __init__(self, cfg: DataConfig, rank: int = 0, world: int = 1):
        super().__init__()
        self.cfg, self.rank, self.world = cfg, rank, world
        self.sets, self.codec = open_datasets(cfg.datasets)
        get_order(cfg.order)  # fail early on a bad name

    def _records(self, worker: int, n_workers: int) -> Iterator[tuple[int, TokenRecord]]:
        cfg = self.cfg
        streams = [stream_records(ds.shards, self.rank, self.world, worker, n_workers, cfg.seed, infinite=True)
                   for ds in self.sets]
        if len(streams) == 1:
            yield from streams[0]
            return
        w = np.asarray(cfg.weights or [1.0] * len(streams), dtype=np.float64)
        if w.size != len(streams) or (w < 0).any() or w.sum() <= 0:
            raise UsageError("--weights needs one non-negative weight per dataset")
        rng = np.random.default_rng([cfg.seed, self.rank, worker, 2])
        while True:
            yield next(streams[int(rng.choice(len(streams), p=w / w.sum()))])

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        cfg = self.cfg
        wi = get_worker_info()
        worker, n_workers = (wi.id, wi.num_workers) if wi else (0, 1)
        rng = np.random.default_rng([cfg.seed, self.rank, worker, 3])
        filler = RowFiller(cfg.block_size, len(self.codec.axes))
        buf: list[tuple[int, TokenRecord]] = []
        for epoch, rec in self._records(worker, n_workers):
            if is_heldout(rec.key, cfg.heldout):
                continue
            buf.append((epoch, rec))
            if len(buf) < cfg.shuffle_buffer:
                continue
            epoch, rec = buf.pop(int(rng.integers(len(buf))))
            order_rng = np.random.default_rng(
                [cfg.seed, epoch, int.from_bytes(hashlib.blake2b(rec.key.encode(), digest_size=8).digest(), "little")])
            for doc in record_docs(self.codec, rec, cfg.order, order_rng, cfg.block_size, cfg.long):
                yield from filler.add(doc)


def _rows_state(rows: list[dict[str, np.ndarray]]) -> list[dict[str, list]]:
    return [{k: v.tolist() for k, v in r.items()} for r in rows]


def _rows_load(rows: list[dict[str, list]]) -> list[dict[str, np.ndarray]]:
    dt = {"loss_mask": np.float32}
    return [{k: np.asarray(v, dtype=dt.get(k, np.int64)) for k, v in r.items()} for r in rows]


class StoreRows:
    """Packed rows from zarr stores, in-process, with an exact position: true uniform shuffling per epoch
    (a seeded permutation of the training indices, strided across ranks) and a state of (epoch, index) per
    store, the mixing generator, and the row filler's partial row — so resuming costs nothing."""

    def __init__(self, cfg: DataConfig, stores: list, codec: Codec, rank: int = 0, world: int = 1):
        self.cfg, self.stores, self.codec, self.rank, self.world = cfg, stores, codec, rank, world
        self.train = [np.array([i for i, k in enumerate(st.keys()) if not is_heldout(k, cfg.heldout)], dtype=np.int64)
                      for st in stores]
        for st, idx in zip(stores, self.train):
            if idx.size < world:
                raise DatasetError(f"{st.path} has {idx.size} training samples for {world} ranks")
        self.epoch = [0] * len(stores)
        self.pos = [0] * len(stores)
        self.mix = np.random.default_rng([cfg.seed, rank, 2])
        self.filler = RowFiller(cfg.block_size, len(codec.axes))
        self.queue: list[dict[str, np.ndarray]] = []
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

    def _perm(self, s: int) -> np.ndarray:
        key = (s, self.epoch[s])
        if key not in self._perm_cache:
            self._perm_cache.clear()
            rng = np.random.default_rng([self.cfg.seed, s, self.epoch[s]])
            self._perm_cache[key] = self.train[s][rng.permutation(self.train[s].size)][self.rank :: self.world]
        return self._perm_cache[key]

    def _next_record(self) -> tuple[int, TokenRecord]:
        s = 0
        if len(self.stores) > 1:
            w = np.asarray(self.cfg.weights or [1.0] * len(self.stores), dtype=np.float64)
            s = int(self.mix.choice(len(self.stores), p=w / w.sum()))
        perm = self._perm(s)
        if self.pos[s] >= perm.size:
            self.epoch[s] += 1
            self.pos[s] = 0
            perm = self._perm(s)
        i = int(perm[self.pos[s]])
        self.pos[s] += 1
        return self.epoch[s], self.stores[s][i]

    def next_row(self) -> dict[str, np.ndarray]:
        while not self.queue:
            epoch, rec = self._next_record()
            rng = np.random.default_rng(
                [self.cfg.seed, epoch, int.from_bytes(hashlib.blake2b(rec.key.encode(), digest_size=8).digest(), "little")])
            for doc in record_docs(self.codec, rec, self.cfg.order, rng, self.cfg.block_size, self.cfg.long):
                self.queue.extend(self.filler.add(doc))
        return self.queue.pop(0)

    def state_dict(self) -> dict:
        p = self.filler
        f = p.fill
        return {"epoch": list(self.epoch), "pos": list(self.pos), "mix": self.mix.bit_generator.state,
                "filler": {"tok": p.tok[:f].tolist(), "crd": p.crd[:f].tolist(), "nxt": p.nxt[:f].tolist(),
                           "doc": p.doc[:f].tolist(), "ndocs": p.ndocs},
                "queue": _rows_state(self.queue)}

    def load_state_dict(self, st: dict) -> None:
        self.epoch, self.pos = list(st["epoch"]), list(st["pos"])
        self.mix.bit_generator.state = st["mix"]
        p, ps = self.filler, st["filler"]
        p._new()
        f = len(ps["tok"])
        if f:
            p.tok[:f], p.crd[:f], p.nxt[:f], p.doc[:f] = ps["tok"], ps["crd"], ps["nxt"], ps["doc"]
        p.fill, p.ndocs = f, int(ps["ndocs"])
        self.queue = _rows_load(st["queue"])


class Loader:
    """Batches of filled rows as torch tensors, with a checkpointable position.

    Dataset folders stream through DataLoader workers and resume by replaying the deterministic stream to
    the checkpointed batch count; packed stores are read in-process and resume exactly from their state.
    """

    def __init__(self, cfg: DataConfig, rank: int = 0, world: int = 1, device: str = "cpu"):
        self.cfg, self.device = cfg, device
        self.sets, self.codec = open_datasets(cfg.datasets)
        get_order(cfg.order)
        self.store_rows = None
        if all(isinstance(s, PackedStore) for s in self.sets):
            self.store_rows = StoreRows(cfg, self.sets, self.codec, rank, world)
        elif any(isinstance(s, PackedStore) for s in self.sets):
            raise UsageError("mix either dataset folders or packed stores in one run, not both")
        else:
            self.stream = RowStream(cfg, rank, world)
        self.batches = 0
        self._it: Iterator | None = None

    def _make(self) -> Iterator:
        nw = self.cfg.num_workers
        dl = DataLoader(self.stream, batch_size=self.cfg.batch_size, num_workers=nw,
                        pin_memory=self.device.startswith("cuda"), persistent_workers=False,
                        prefetch_factor=4 if nw else None)
        it = iter(dl)
        for _ in range(self.batches):  # replay to the checkpointed position
            next(it)
        return it

    def next(self) -> dict[str, torch.Tensor]:
        if self.store_rows is not None:
            rows = [self.store_rows.next_row() for _ in range(self.cfg.batch_size)]
            batch = {k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in rows[0]}
        else:
            if self._it is None:
                self._it = self._make()
            batch = next(self._it)
        self.batches += 1
        nb = self.device.startswith("cuda")
        return {k: v.to(self.device, non_blocking=nb) for k, v in batch.items()}

    def state_dict(self) -> dict:
        st = {"version": LOADER_STATE_VERSION, "batches": self.batches, "config": self.cfg.to_json()}
        if self.store_rows is not None:
            st["store"] = self.store_rows.state_dict()
        return st

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != LOADER_STATE_VERSION:
            raise DatasetError(f"loader state version {state.get('version')} is not {LOADER_STATE_VERSION}")
        self.batches = int(state["batches"])
        if self.store_rows is not None:
            self.store_rows.load_state_dict(state["store"])
        self._it = None


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


def axis_sizes(sets: list, codec: Codec, scan: int = 256, headroom: float = 2.0) -> list[int]:
    """Embedding table sizes per axis from the data: (max shifted coordinate seen) x headroom, +1."""
    mx = np.zeros(len(codec.axes), dtype=np.int64)
    n = 0
    for ds in sets:
        for rec in ds:
            mx = np.maximum(mx, codec.positions(rec).coords.max(axis=0) + 1)
            n += 1
            if n >= scan:
                break
    return [int(np.ceil((m + 1) * headroom)) + 1 for m in mx]
