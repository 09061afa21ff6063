"""Attention by place, and attention that skips what its mask hides.

Neighbourhood attention (`local_mask`, `vistok train --attention local:R[,F]`): every position carries two
places, (frame, unit row), both known from the stream's prefix: the place of the token it predicts (a
query) and the place of the token it holds (a key). A query sees the keys whose row lies in the R unit
rows above its own or in its own row (in the same frame), and in the F frames before it the keys within R
rows of its own row either way: the context Lepton conditions on, so a token's cost is bounded by R and
the image's width, not by the image's length. A query without a place (-1: predicting EOS, padding) sees
every key; a key without one (BOS, FRAME) only those queries (and itself: `RowMask`); the causal or group
mask still decides what is earlier.

Tiles (`RowMask`, `SparseMask`, `attend`): the mask of a row of packed documents is a function of the
positions (documents, groups, places), so a long row is cut into runs of query positions (whole
documents, or blocks of `BLOCK`), each attending to the one key range that can hold what it sees, found
from per-run summaries; only each tile's mask is evaluated, and a fully visible or causal tile runs the
kernels that need no mask. Built once per forward pass and shared by every layer. For packed documents,
long documents and local attention this skips most of the T x T work, on any device, with the dense
path's result (`tests/nn/test_attention.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

EVERYWHERE = -1  # a place seen by every query and seeing every key (specials, padding)
BLOCK = 256  # query rows per block
SPARSE_FROM = 1024  # positions per row from which tiles pay for their loop (`benchmarks/bench_attention.py`)


def parse_attention(spec: str) -> list[int]:
    """`full` -> [] (the whole context); `local:R` or `local:R,F` -> [R, F] (F frames back, default 1)."""
    if spec in ("", "full"):
        return []
    name, _, args = spec.partition(":")
    try:
        nums = [int(a) for a in args.split(",")] if args else []
    except ValueError:
        nums = []
    if name != "local" or not 1 <= len(nums) <= 2 or min(nums) < 0:
        raise ValueError(f"--attention takes full or local:R[,F] (R unit rows above, F frames before), got {spec!r}")
    return [nums[0], nums[1] if len(nums) == 2 else 1]


def attention_name(local: list[int]) -> str:
    return "full" if not local else f"local:{local[0]},{local[1]}"


def local_mask(qplace: torch.Tensor, kplace: torch.Tensor, rows: int, frames: int) -> torch.Tensor:
    """(B, T, S) boolean mask of neighbourhood attention (see the module docstring): qplace (B, T, 2) and
    kplace (B, S, 2) hold (frame, unit row) per position, -1 = everywhere."""
    q = qplace.to(torch.int16 if qplace.abs().max() < 2**14 else torch.int32)  # (B, T, S) temporaries stay small
    k = kplace.to(q.dtype)
    qf, qr = q[:, :, None, 0], q[:, :, None, 1]
    kf, kr = k[:, None, :, 0], k[:, None, :, 1]
    above = qr - kr  # > 0: the key's row is above the query's
    back = qf - kf  # > 0: the key is in an earlier frame
    same = (back == 0) & (above >= 0) & (above <= rows)
    before = (back > 0) & (back <= frames) & (above.abs() <= rows)
    return same | before | (qr < 0)


@dataclass
class RowMask:
    """The attention mask of rows of packed documents as a function of positions, evaluated tile by tile, so
    a long row never holds a T x T mask (building one costs more than the attention it saves).

    Token by token: causal inside each document (`doc_ids` (B, T); None = one document). Group-parallel:
    `vistok.nn.gpt.group_mask`'s rule (`groups`, `query`, `co_attend`; wavefront lanes: `lane`). With `neighbourhood` = (R, F) and `places`
    (B, T, 4) = (query frame, query row, key frame, key row): also `local_mask`, except that a position
    always sees itself (a window that starts mid-record has no BOS to fall back on).
    """

    doc_ids: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    query: torch.Tensor | None = None
    co_attend: bool = False
    places: torch.Tensor | None = None
    neighbourhood: tuple[int, int] | None = None
    lane: torch.Tensor | None = None  # wavefront rows: `groups` are waves, and a lane sees only itself in its wave

    def _ref(self) -> torch.Tensor:
        for t in (self.doc_ids, self.groups, self.places):
            if t is not None:
                return t
        raise ValueError("a row mask needs doc ids, groups or places")

    def tile(self, rows: slice, qs: slice, ks: slice) -> torch.Tensor:
        """(B', q, k) boolean mask of rows `rows`, query positions `qs` and key positions `ks`."""
        dev = self._ref().device
        i = torch.arange(qs.start, qs.stop, device=dev)[:, None]
        j = torch.arange(ks.start, ks.stop, device=dev)[None, :]
        d = self.doc_ids[rows] if self.doc_ids is not None else None
        if self.groups is None:
            m = (j <= i)[None]
            if d is not None:
                m = m & (d[:, qs, None] == d[:, None, ks])
        else:
            gi, gj = self.groups[rows, qs, None], self.groups[rows, None, ks]
            if self.lane is not None:
                li, lj = self.lane[rows, qs, None], self.lane[rows, None, ks]
                m = (gj < gi) | ((gj == gi) & (li == lj) & (j <= i))
            else:
                qi, qj = self.query[rows, qs, None].bool(), self.query[rows, None, ks].bool()
                m = ~qj & torch.where(qi, gj < gi, gj <= gi)
                if self.co_attend:
                    m = m | (qi & qj & (gj == gi))
            if d is not None:
                m = m & (d[:, qs, None] == d[:, None, ks]) & (d[:, qs, None] >= 0)
            m = m | (i == j)
        if self.neighbourhood is not None:
            p = self.places[rows]
            m = m & (local_mask(p[:, qs, :2], p[:, ks, 2:], *self.neighbourhood) | (i == j))
        return m

    def dense(self) -> torch.Tensor:
        """(B, 1, T, T): the whole mask (the reference path, and rows too short for tiles to pay)."""
        T = self._ref().size(1)
        return self.tile(slice(None), slice(0, T), slice(0, T))[:, None]

    def spans(self, block: int) -> list[list[tuple[int, int]]]:
        """Per row, the runs of query positions cut into tiles: whole documents when token by token without
        local attention (each is one causal tile, the kernels' own causal path), else blocks of `block`."""
        T = self._ref().size(1)
        B = self._ref().size(0)
        if self.groups is None and self.neighbourhood is not None:
            return self._place_runs(block)
        if self.groups is None and self.doc_ids is not None:
            out = []
            for d in self.doc_ids.tolist():
                cuts = [0] + [t for t in range(1, T) if d[t] != d[t - 1]] + [T]
                ids = [d[a] for a in cuts[:-1]]
                if len(set(ids)) != len(ids):  # a document in pieces: fixed blocks, which make no such assumption
                    break
                out.append(list(zip(cuts[:-1], cuts[1:])))
            else:
                return out
        return [[(a, min(T, a + block)) for a in range(0, T, block)] for _ in range(B)]

    def _place_runs(self, block: int) -> list[list[tuple[int, int]]]:
        """Token by token with local attention: runs of queries with one place (at most `block` long), whose
        keys then start at one column, so a tile is causal; fixed blocks where places change too often
        (random orders, where local attention skips little anyway)."""
        T, out = self._ref().size(1), []
        key = self.places[..., 1] * (1 << 20) + self.places[..., 0] * (1 << 10) + self.doc_ids  # (B, T)
        for row in key.tolist():
            cuts = [0] + [t for t in range(1, T) if row[t] != row[t - 1]] + [T]
            if len(cuts) > T // 64 + 2:
                return [[(a, min(T, a + block)) for a in range(0, T, block)] for _ in range(len(key))]
            out.append([(a, min(z, a + block)) for a, z in zip(cuts[:-1], cuts[1:]) for a in range(a, z, block)])
        return out

    def key_ranges(self, spans: list[list[tuple[int, int]]]) -> list[tuple[int, int, int, int, int]]:
        """(b, q0, q1, k0, k1) per tile: the one key range holding every key a span's queries may see, from
        per-span summaries (documents, causality, places), never from the T x T mask. Conservative: a range
        may hold masked keys (the tile's mask hides them), never leave out a visible one."""
        out = []
        for b, row in enumerate(spans):
            stats = [self._summary(b, a, z) for a, z in row]
            for (q0, q1), sq in zip(row, stats):
                seen = [(k0, k1) for (k0, k1), sk in zip(row, stats) if k0 == q0 or self._may_see(sq, sk, q0, k0)]
                out.append((b, q0, q1, min(k for k, _ in seen), max(k for _, k in seen)))
        return out

    def _summary(self, b: int, a: int, z: int) -> dict:
        s = {}
        if self.doc_ids is not None:
            d = self.doc_ids[b, a:z]
            s["doc"] = (int(d.min()), int(d.max()))
        if self.groups is not None:
            g = self.groups[b, a:z]
            s["group"] = (int(g.min()), int(g.max()))
        if self.neighbourhood is not None:  # the places of the span's queries (None: one without a place sees all)
            p = self.places[b, a:z]
            q, k = p[:, :2], p[:, 2:]
            s["q"] = None if (q[:, 1] < 0).any() else (q.amin(0).tolist(), q.amax(0).tolist())
            k = k[k[:, 1] >= 0]  # keys without a place are seen by queries without one only
            s["k"] = (k.amin(0).tolist(), k.amax(0).tolist()) if k.size(0) else "none"
        return s

    def _may_see(self, sq: dict, sk: dict, q0: int, k0: int) -> bool:
        if self.groups is None and k0 > q0:  # causal: a later span holds only later keys
            return False
        if "doc" in sq and (sk["doc"][1] < sq["doc"][0] or sq["doc"][1] < sk["doc"][0]):
            return False
        if "group" in sq and sk["group"][0] > sq["group"][1]:  # every key of a later group than every query
            return False
        if self.neighbourhood is not None and sq["q"] is not None:
            if sk["k"] == "none":
                return False
            (qf0, qr0), (qf1, qr1) = sq["q"]
            (kf0, kr0), (kf1, kr1) = sk["k"]
            R, Fr = self.neighbourhood
            if kf1 < qf0 - Fr or kf0 > qf1 or kr1 < qr0 - R or kr0 > qr1 + R:
                return False
        return True

    def sparse(self, block: int | None = None) -> SparseMask:
        """The mask as tiles (`SparseMask`) of `block` query rows (default `BLOCK`), each evaluated on its own range."""
        block = block or BLOCK
        ranges = []
        whole = self.groups is None and self.neighbourhood is None  # token by token: spans are documents, tiles causal
        for b, q0, q1, k0, k1 in self.key_ranges(self.spans(block)):
            if whole and (k0, k1) == (q0, q1):
                tile = causal_lower_right(q1 - q0, k1 - k0)
            else:
                t = self.tile(slice(b, b + 1), slice(q0, q1), slice(k0, k1))[0]
                seen = t.any(0).nonzero()[:, 0]  # the range narrowed to the columns seen
                a, z = int(seen[0]), int(seen[-1]) + 1
                k0, k1, tile = k0 + a, k0 + z, _tile(t[:, a:z])
            ranges.append((b, q0, q1, k0, k1, tile))
        return SparseMask(ranges, self._ref().size(0), self._ref().size(1))

    def build(self) -> torch.Tensor | SparseMask:
        """Tiles for long rows (`SPARSE_FROM` positions and more), the dense mask for short ones."""
        return self.sparse() if self._ref().size(1) >= SPARSE_FROM else self.dense()


@dataclass
class SparseMask:
    """A mask as tiles: (b, q0, q1, k0, k1, tile) per run of query rows [q0, q1) of row b, whose visible keys
    all lie in [k0, k1); tile is the mask there: None where every entry is True, a lower-right causal bias
    where it is causal (both run the kernels that need no mask), else the (1, 1, q, k) boolean tile."""

    ranges: list[tuple]
    batch: int
    length: int

    @property
    def kept(self) -> float:
        """The share of the T x T rectangle the tiles span (a causal tile computes about half of its own)."""
        return sum((q1 - q0) * (k1 - k0) for _, q0, q1, k0, k1, _ in self.ranges) / max(1, self.batch * self.length ** 2)


def _tile(t: torch.Tensor):
    if t.all():
        return None
    n, s = t.shape
    if s >= n and torch.equal(t, torch.ones_like(t).tril(s - n)):
        return causal_lower_right(n, s)
    return t.contiguous()[None, None]


def attend(q, k, v, mask: torch.Tensor | SparseMask | None, dropout: float = 0.0, causal: bool = False):
    """Scaled dot-product attention of q (B, nh, T, hs) over k, v (B, nh, S, hs) under a boolean mask (True =
    may attend), dense or by tiles; `causal` (no mask): plain causal attention."""
    if not isinstance(mask, SparseMask):
        if mask is None and causal:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    return _tiles(q, k, v, mask, dropout)


@torch.compiler.disable  # tiles change every step: compiled, each new layout would be a new graph
def _tiles(q, k, v, mask: SparseMask, dropout: float):
    rows: list[list[torch.Tensor]] = [[] for _ in range(q.size(0))]
    for b, q0, q1, k0, k1, m in mask.ranges:
        rows[b].append(F.scaled_dot_product_attention(q[b : b + 1, :, q0:q1], k[b : b + 1, :, k0:k1],
                                                      v[b : b + 1, :, k0:k1], attn_mask=m, dropout_p=dropout))
    return torch.cat([torch.cat(r, dim=2) for r in rows], dim=0)
