"""Wavefront lanes, step by step (`--parallel wavefront`): every lane of a wave takes a token per model step,
each from its own lane's prefix and the earlier waves, in the rows training reads
(`vistok.train.data._lane_docs`). What each lane takes is a `pick`: a sampled token (`sampler`), a given one
scored (`Forced`), or one a range coder encodes or decodes (`vistok.train.compress`). A wave's context (BOS
and the positions of the earlier waves it sees) goes through the model once, into a KV cache; each step then
runs the lanes' own positions only, as they see each other nowhere (`lane_mask`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vistok.errors import CodecError
from vistok.nn.gpt import KVCache, group_mask, sample_token
from vistok.record import TokenRecord
from vistok.tokenize.base import BOS, PAD, Codec
from vistok.tokenize.stream import Plan, StreamGrammar
from vistok.train.data import lane_context


class Lane:
    """One lane of a wavefront picture: its cells' grammar and its positions so far (the start slot first)."""

    def __init__(self, codec: Codec, meta: dict, cells: np.ndarray, wave: int, unit: int, local: bool):
        self.g, self.local = StreamGrammar(codec, meta, Plan(cells)), local
        self.pos = [self._position(PAD, self.g.next_input(), 1, self.g.next_place())]
        self.wave, self.unit = wave, unit

    @property
    def done(self) -> bool:
        return self.g.phase != "cells"

    @property
    def cell(self) -> int:
        """The cell the lane's next token goes to."""
        return int(self.g.plan.cells[self.g.i])

    def _position(self, tok: int, coords: np.ndarray, query: int, key_place: np.ndarray) -> dict:
        nxt = self.g.next_input() if self.g.phase == "cells" and not query else np.zeros_like(coords)
        qp = self.g.next_place() if self.g.phase == "cells" or query else key_place
        return {"idx": tok, "coords": coords, "next_coords": nxt, "query": query,
                "places": np.concatenate([qp, key_place]) if self.local else None}

    def take(self, tok: int) -> None:
        coords = self.g.step(tok) + 1
        self.pos.append(self._position(tok, coords, 0, self.g.last_place))


Pick = Callable[[Lane, torch.Tensor, np.ndarray], int]  # (lane, its (V,) logits, (V,) allowed) -> its next token


def sampler(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, generator=None) -> Pick:
    def pick(lane: Lane, logits: torch.Tensor, allowed: np.ndarray) -> int:
        q = logits[None].float().masked_fill(~torch.from_numpy(allowed).to(logits.device), float("-inf"))
        return int(sample_token(q, temperature, top_k, top_p, generator)[0])

    return pick


def cell_queues(codec: Codec, record: TokenRecord) -> dict[int, list[int]]:
    """Each cell's tokens of a record, in order: what the lanes take when they follow a given record."""
    tc = codec.layout(record.meta).token_cells(record)
    order = np.argsort(tc, kind="stable")
    cells, starts = np.unique(tc[order], return_index=True)
    parts = np.split(record.tokens[order].astype(np.int64), starts[1:])
    return {int(c): part.tolist() for c, part in zip(cells, parts)}


class Forced:
    """A pick that takes a record's own tokens and adds up the bits the model gives them under the grammar."""

    def __init__(self, codec: Codec, record: TokenRecord):
        self.queues = cell_queues(codec, record)
        self.bits = 0.0

    def __call__(self, lane: Lane, logits: torch.Tensor, allowed: np.ndarray) -> int:
        tok = self.queues[lane.cell].pop(0)
        q = logits.float().masked_fill(~torch.from_numpy(allowed).to(logits.device), float("-inf"))
        self.bits -= float(F.log_softmax(q, -1)[tok]) / np.log(2)
        return tok


@torch.no_grad()
def run_lanes(model, codec: Codec, meta: dict, p: Plan, pick: Pick, stride: int = 0) -> tuple[np.ndarray, int]:
    """A wavefront picture, wave by wave, a token of every lane per step -> (its tokens in canonical order, model
    steps). A wave is predicted after BOS and the C positions before it (`lane_context` of the model's context
    and `stride`), as training predicts it."""
    local, A, T, dev = bool(model.cfg.neighbourhood), len(codec.axes), model.cfg.block_size, model.lm_head.weight.device
    bos = {"idx": BOS, "coords": np.zeros(A, np.int64), "next_coords": np.zeros(A, np.int64), "query": 0,
           "places": np.full(4, -1, np.int64) if local else None}
    done: list[tuple[dict, int, int]] = [(bos, -1, -1)]  # (position, wave, lane) of the finished waves
    steps, taken = 0, []
    for w in np.unique(p.groups):
        units = p.lanes[p.groups == w]
        lanes = [Lane(codec, meta, p.cells[(p.groups == w) & (p.lanes == u)], int(w), int(u), local)
                 for u in dict.fromkeys(units.tolist())]
        base = done[:1] + done[1 + max(0, len(done) - 1 - lane_context(T, stride)) :]  # BOS, the last C positions
        cache = KVCache(model.cfg, 1, len(base) + T, dev, model.lm_head.weight.dtype)
        b = _batch(model, base)
        groups, lane = b.pop("groups"), b.pop("lane")
        model(**b, cache=cache, attn_mask=group_mask(torch.zeros_like(groups), groups, b["query"], lane=lane)[:, None])
        while not all(lane.done for lane in lanes):
            last = {}  # lane -> its (V,) logits
            for chunk in _fit(base, [lane for lane in lanes if not lane.done], T):
                b = _batch(model, [(q, lane.wave, lane.unit) for lane in chunk for q in lane.pos])
                b.pop("groups")
                seen = torch.ones(b["idx"].size(1), cache.pos, dtype=torch.bool, device=dev)  # all of the context
                mask = torch.cat([seen, lane_mask(b.pop("lane")[0])], dim=1)
                logits = model(**b, cache=cache, attn_mask=mask[None, None], store=0)[0][0]
                ends = np.cumsum([0] + [len(lane.pos) for lane in chunk])[1:] - 1
                last.update({id(lane): logits[int(i)] for lane, i in zip(chunk, ends)})
            for lane in lanes:
                if not lane.done:
                    lane.take(pick(lane, last[id(lane)], lane.g.allowed().copy()))
            steps += 1
        done += [(q, lane.wave, lane.unit) for lane in lanes for q in lane.pos]
        taken += [t for lane in lanes for t in lane.g.taken]
    cells, toks = np.array(taken, np.int64).reshape(-1, 2).T
    return toks[np.argsort(cells, kind="stable")], steps


def _fit(base: list, lanes: list[Lane], T: int) -> list[list[Lane]]:
    """Lanes in runs of at most T positions (the cache holds the context and T more); a lane that would not
    fit a training row beside the context is refused, as training refuses it."""
    out: list[list[Lane]] = []
    used = T
    for lane in lanes:
        if len(base) + len(lane.pos) > T:
            raise CodecError(f"a lane outgrew the context ({T} positions)")
        if used + len(lane.pos) > T:
            out.append([])
            used = 0
        out[-1].append(lane)
        used += len(lane.pos)
    return out


def lane_mask(lane: torch.Tensor) -> torch.Tensor:
    """(P, P) which of a run of lanes' positions (`lane`: (P,) each one's lane) each sees: its own lane's, up to
    itself."""
    P = lane.size(0)
    return (lane[:, None] == lane[None, :]) & torch.ones(P, P, dtype=torch.bool, device=lane.device).tril()


def _batch(model, row: list[tuple[dict, int, int]]) -> dict[str, torch.Tensor]:
    """The model's inputs for positions (position, wave, lane), batch of one, and their waves and lanes."""
    dev = model.lm_head.weight.device
    b = {k: torch.as_tensor(np.array([q[k] for q, _, _ in row]))[None].to(dev) for k in ("idx", "coords", "query")}
    nxt = torch.as_tensor(np.array([q["next_coords"] for q, _, _ in row]))[None].to(dev)
    b["next_coords"] = nxt if model.cfg.next_axes else None
    b["groups"] = torch.tensor([[w for _, w, _ in row]], device=dev)
    b["lane"] = torch.tensor([[u for _, _, u in row]], device=dev)
    b["places"] = (torch.as_tensor(np.stack([q["places"] for q, _, _ in row]))[None].to(dev)
                   if model.cfg.neighbourhood else None)
    return b
