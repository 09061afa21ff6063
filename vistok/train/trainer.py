"""The training loop: AdamW, warmup + cosine, clipping, accumulation, bf16 autocast and compile on CUDA,
DDP under torchrun, atomic `step-N/` checkpoints and an exact `--resume`.

A run folder:
    config.json          model, data and train configs, the codec config and the data's preprocessing
    metrics.jsonl        one JSON object per logged step / eval (loss in bits per token)
    step-000200/         model.pt, optim.pt (tensors only, loaded with weights_only=True), state.json
"""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import torch

from vistok.errors import Interrupted, UsageError
from vistok.nn.attention import attention_name, parse_attention
from vistok.nn.gpt import GPT, PRESETS, GPTConfig
from vistok.progress import Progress
from vistok.shards.integrity import OnDamage
from vistok.storage import Cache
from vistok.tokenize.base import Codec
from vistok.tokenize.parallel import parse_mode
from vistok.train.checkpoint import checkpoints, latest_checkpoint, load_weights, read_state, save_checkpoint
from vistok.train.config import DEFAULT_MAX_STEPS, DataConfig, TrainConfig
from vistok.train.data import Loader, axis_sizes, heldout_records, merge_states
from vistok.train.evaluate import heldout_bits

LN2 = math.log(2)
DAMAGED = "damaged.jsonl"  # a run's skipped shards (--skip-damaged), a JSON line each
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16


# whether a parallel mode's query slots see each other by default: what measured better at 300 steps
# (README, "Any number of steps"): any with co-attention; segments and scales with queries alone


def pick_device(name: str) -> str:
    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def warmup_steps(cfg: TrainConfig, total: int) -> int:
    """--warmup, or a tenth of the run when the run is not longer than it (the LR would never decay)."""
    return cfg.warmup if cfg.warmup < total else max(1, total // 10)


def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    warmup = warmup_steps(cfg, total)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * p))


# --- the loop -------------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    if "RANK" not in os.environ:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    d = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device.startswith("cuda"):
        torch.cuda.set_device(d.local_rank)
    return d


class MetricsLog:
    def __init__(self, run: Path, resume_step: int | None, enabled: bool, tensorboard: bool):
        self.path = run / "metrics.jsonl"
        self.enabled = enabled
        if enabled and resume_step is not None and self.path.exists():  # drop rows past the checkpoint
            rows = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= resume_step]
            self.path.write_text("".join(r + "\n" for r in rows))
        elif enabled and resume_step is None:
            self.path.write_text("")
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run / "tb"))
            except ImportError:
                print("tensorboard is not installed; `pip install tensorboard` to enable --tensorboard", file=sys.stderr)

    def write(self, row: dict) -> str:
        """Append `row`; return it as a line for the console."""
        line = "  ".join(f"{k} {v}" for k, v in row.items())
        if not self.enabled:
            return line
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])
        return line


# --- the pieces of a run ---------------------------------------------------------------------------------
FIT_FROM, FIT_TO = 10, 30  # --max-minutes: the step time is measured over these steps (start-up excluded)
FIT_SHARE = 0.1  # ... or fitted earlier, once this share of the budget is spent (slow steps)
BUDGET_USE = 0.98  # the fraction of the time budget the fitted schedule plans to use (eval, checkpoints)


class ScheduleFit:
    """With a time budget, fit the number of planned steps once: at step FIT_TO from the time per step since
    FIT_FROM, or earlier, as soon as FIT_SHARE of the budget is spent (from the steps after the first, which
    pays for start-up, where there are any). Fixed from then on (and stored in checkpoints, so a resumed
    run keeps it), except that a run whose budget is spent stops at that step whatever was planned."""

    def __init__(self, cfg: TrainConfig, active: bool):
        self.budget_s, self.active = cfg.max_minutes * 60, active and cfg.max_minutes > 0
        self.max_steps = cfg.max_steps or DEFAULT_MAX_STEPS
        self.t_start = time.monotonic()
        self.mark = (0, self.t_start)  # (step, time) the step time is measured from
        self.fitted = False

    def known(self, step: int, planned: int) -> int:
        """The planned steps as far as they are known at `step` (0 until the fit: for progress bars)."""
        return 0 if self.active and not self.fitted else planned

    def __call__(self, step: int, planned: int) -> int:
        if not self.active:
            return planned
        now = time.monotonic()
        spent = now - self.t_start
        if not self.fitted and (step >= FIT_TO or spent >= FIT_SHARE * self.budget_s):
            s0, t0 = self.mark
            per_step = (now - t0) / (step - s0)
            planned = max(step, min(self.max_steps, step + int((self.budget_s * BUDGET_USE - spent) / per_step)))
            self.fitted = True
        if step in (1, FIT_FROM):
            self.mark = (step, now)
        return step if spent >= self.budget_s else planned


def setup_device(name: str) -> tuple[str, Dist]:
    """The device to train on and this process's place in a torchrun job (one rank when not under torchrun)."""
    device = pick_device(name)
    dist_info = init_distributed(device)
    if device == "cuda" and dist_info.world > 1:
        device = f"cuda:{dist_info.local_rank}"
    return device, dist_info


def model_config(cfg: TrainConfig, data: DataConfig, loader: Loader, ckpt: Path | None) -> tuple[GPTConfig, dict]:
    """The model's config and the run state: a checkpoint's, or a fresh one from the preset and the data. The
    loader then refuses a record beyond the model's embedding tables (never clamps it)."""
    if ckpt is not None:
        state = read_state(ckpt)
        if state.get("saved_by") == "vistok.save_run":
            raise UsageError(f"{ckpt.parent} was saved by vistok.save_run from a loop of its own: eval, sample, "
                             "compress and probe take it, but `vistok train --resume` cannot continue its data stream")
        mcfg = GPTConfig.from_json(state["model"])
        if mcfg.block_size != data.block_size:
            raise UsageError(f"--block-size {data.block_size} differs from the checkpoint's {mcfg.block_size}")
        if mcfg.neighbourhood != local_attention(cfg.attention):
            raise UsageError(f"--attention {cfg.attention} differs from the checkpoint's {attention_name(mcfg.neighbourhood)}")
        if cfg.max_steps and cfg.max_steps != state["planned_steps"]:  # --max-steps N moves the run's end to N
            if cfg.max_steps < state["step"]:
                raise UsageError(f"--max-steps {cfg.max_steps} is behind the checkpoint's step {state['step']}")
            state["planned_steps"] = cfg.max_steps  # the cosine is stretched (or shrunk) to end at N
    else:
        mcfg = fresh_model_config(cfg.preset, loader.sets, loader.codec, data, cfg.next_coords, cfg.rope,
                                  cfg.co_attend, local_attention(cfg.attention))
        state = {"step": 0, "planned_steps": cfg.max_steps or DEFAULT_MAX_STEPS}
    loader.limits = mcfg.axis_sizes
    return mcfg, state


def local_attention(spec: str) -> list[int]:
    """`--attention` as the model's `local` ([] = the whole context), or a usage error."""
    try:
        return parse_attention(spec)
    except ValueError as e:
        raise UsageError(str(e)) from None


def fresh_model_config(preset: str, sets: list, codec: Codec, data: DataConfig, next_coords: bool = True,
                       rope: bool = True, co_attend: bool | None = None, local: list[int] | None = None) -> GPTConfig:
    """A new model's config for `preset` on these datasets: vocabulary, embedding tables sized from the data,
    the axes the model is shown the next token's place on, and the axes places rotate on."""
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    # the next token's place (sigma-GPT); group-parallel query slots carry their own place instead (wavefront
    # lanes go token by token: their tokens are shown their lane's next place too)
    lanes = bool(data.parallel) and parse_mode(data.parallel).unit_lanes
    known = ([i for i, a in enumerate(codec.axes) if a in codec.known_axes]
             if next_coords and (lanes or not data.parallel) else [])
    # places rotate queries and keys on the known axes but time: attention sees where a token sits relative
    # to the one being predicted, so "the same place in an earlier frame" is one pattern for every place
    axes = [i for i, a in enumerate(codec.axes) if a in codec.known_axes and a != "frame"] if known or data.parallel else []
    return GPTConfig(vocab_size=codec.vocab.size, axis_sizes=axis_sizes(sets, codec), next_axes=known,
                     rope_axes=axes if rope else [], query_slots=bool(data.parallel),
                     co_attend=bool(data.parallel) and (parse_mode(data.parallel).co_attend if co_attend is None
                                                           else co_attend),
                     neighbourhood=list(local or []),
                     **{**PRESETS[preset], "block_size": data.block_size})


def shared_geometry(sets: list) -> dict | None:
    """The geometry every training record shares (each dataset's manifest says whether its records share one),
    for `sample` and `compress` to use when they are not told a size; None when they do not share one."""
    geoms = [ds.manifest.geometry for ds in sets]
    return geoms[0] if geoms[0] is not None and all(g == geoms[0] for g in geoms) else None


def wrap_model(model: GPT, cfg: TrainConfig, dist_info: Dist, device: str) -> torch.nn.Module:
    """The module the loop calls: activations checkpointed and compiled on request, under DDP when there are
    several ranks."""
    model.checkpoint = cfg.checkpoint_activations
    if cfg.compile:
        model = torch.compile(model)
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[dist_info.local_rank] if device.startswith("cuda") else None)
    return model


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, loader: Loader, cfg: TrainConfig,
               dist_info: Dist, autocast) -> tuple[float, int, float, list[float]]:
    """One optimizer step over `grad_accum` micro-batches -> (mean loss in nats over the ranks, loss tokens of
    all ranks, data wait s, each rank's own loss)."""
    wait, loss_acc, tokens = 0.0, 0.0, 0
    model.train()
    for micro in range(cfg.grad_accum):
        tw = time.monotonic()
        batch = loader.next()
        wait += time.monotonic() - tw
        sync = nullcontext() if dist_info.world == 1 or micro == cfg.grad_accum - 1 else model.no_sync()
        with sync, autocast:
            _, loss = model(**batch)
        (loss / cfg.grad_accum).backward()
        loss_acc += loss.item() / cfg.grad_accum
        tokens += int(batch["loss_mask"].sum().item())
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    ranks = [loss_acc]
    if dist_info.world > 1:  # every rank logs each rank's loss, their mean and the total tokens
        import torch.distributed as dist

        t = torch.tensor([loss_acc, tokens], dtype=torch.float64, device=next(model.parameters()).device)
        every = [torch.zeros_like(t) for _ in range(dist_info.world)]
        dist.all_gather(every, t)
        ranks = [float(e[0]) for e in every]
        loss_acc, tokens = sum(ranks) / dist_info.world, int(sum(int(e[1]) for e in every))
    return loss_acc, tokens, wait, ranks


def from_rank0(value: int, dist_info: Dist) -> int:
    """Rank 0's value on every rank (the fitted schedule: ranks that planned different steps would hang)."""
    if dist_info.world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64)
    dist.broadcast(t, 0)
    return int(t.item())


def loader_states(loader: Loader, dist_info: Dist) -> list[dict]:
    """Every rank's loader state, in rank order (each rank reads its own part of the data). Collective."""
    st = loader.state_dict()
    if dist_info.world == 1:
        return [st]
    import torch.distributed as dist

    out: list[Any] = [None] * dist_info.world
    dist.all_gather_object(out, st)
    return out


def rank_loader_state(state: dict) -> dict:
    """The loader state in a checkpoint, every rank's lanes together: any number of ranks resumes it (the loader
    refuses one that does not divide the global batch)."""
    return merge_states(state.get("loader_ranks") or [state["loader"]])


def periodic_eval(cfg: TrainConfig, data: DataConfig, loader: Loader, main: bool, planned: int) -> tuple[int, int, str]:
    """(eval_every, ckpt_every, a note). A run shorter than twice either is evaluated and checkpointed halfway
    too; the warmup of a run not longer than it is cut to a tenth of the run; periodic eval is turned off,
    saying why, when the datasets hold no held-out record (known before step 1, not at the first eval)."""
    half = max(1, planned // 2)
    ckpt_every, eval_every = min(cfg.ckpt_every, half), min(cfg.eval_every, half)
    note = (f"--warmup {cfg.warmup} is not shorter than the run's {planned} steps: warming up over "
            f"{warmup_steps(cfg, planned)} instead\n") if cfg.warmup >= planned else ""
    if not (eval_every and main):
        return eval_every, ckpt_every, note
    if data.heldout > 0 and next(heldout_records(loader.sets, data.heldout, 1), None) is not None:
        return eval_every, ckpt_every, note
    return 0, ckpt_every, note + (f"no held-out records (--heldout {data.heldout} of these datasets' inputs is none): "
                                  "periodic eval is off; raise --heldout to evaluate while training\n")


def _start_note(cfg: TrainConfig, model: GPT, device: str, dist_info: Dist, step: int, fresh_resume: bool) -> str:
    return (f"--resume: no checkpoint in {cfg.out}, starting from scratch\n" if fresh_resume else "") + (
        f"model {cfg.preset}: {model.num_params() / 1e6:.2f}M parameters on {device}"
        + (f" x {dist_info.world} ranks" if dist_info.world > 1 else "") + f", starting at step {step}")


def run_configs(mcfg: GPTConfig, data: DataConfig, cfg: TrainConfig, loader: Any) -> dict[str, Any]:
    """What every checkpoint records besides the step, the schedule and the loader's position: the configs,
    the training data's preprocessing and shared geometry, and the datasets' hashes (eval tells them from
    separate test sets). `loader`: a `Loader`, or anything with its `sets` and `codec` (`vistok.Rows`)."""
    return {"model": mcfg.to_json(), "data": data.to_json(), "train": cfg.to_json(), "codec": loader.codec.get_config(),
            "preprocess": loader.sets[0].manifest.preprocess, "geometry": shared_geometry(loader.sets),
            "datasets": [ds.manifest.config_hash for ds in loader.sets]}


def _more_metrics(rank_losses: list[float], mfu: float | None) -> dict[str, Any]:
    """Each rank's loss under several ranks; the model FLOPs utilization against the GPU's dense bf16 peak."""
    out: dict[str, Any] = {"rank_loss_bits": [round(v / LN2, 5) for v in rank_losses]} if len(rank_losses) > 1 else {}
    if mfu:
        out["mfu"] = round(mfu, 4)
    return out


def _checkpoint(run: Path, step: int, planned: int, model: GPT, opt, loader: Loader, configs: dict, keep: int,
                dist_info: Dist) -> None:
    """Every rank's loader position (a collective), saved with the model by rank 0."""
    ranks = loader_states(loader, dist_info)
    if dist_info.main:
        st = {"step": step, "planned_steps": planned, "loader": ranks[0], "loader_ranks": ranks, **configs}
        save_checkpoint(run, step, model, opt, st, keep)


def close_distributed(dist_info: Dist, poll_s: float = 0.02, wait_s: float = 60.0) -> None:
    """Leave the process group, rank 0 last. Call it once DDP's wrapper is released: DDP's reducer holds the
    group, and a reducer freed after `destroy_process_group` frees the group with the GIL held (its binding
    keeps it), so ~ProcessGroupGloo joins gloo's worker threads while one of them waits for the GIL to drop
    the tensors of the last collective: a deadlock, seen in about 1 of 12 launches on 2 busy cores. Collected
    first, the reducer only lets go of its reference; the group is freed by `destroy_process_group`, whose
    binding releases the GIL. Each rank then checks in on the store, and rank 0 waits for all of them (at
    most `wait_s`) before it goes: a rank still tearing down must not lose the store."""
    if dist_info.world == 1:
        return
    import torch.distributed as dist
    from torch.distributed import distributed_c10d

    gc.collect()  # should the wrapper sit in a reference cycle, it is freed here, before the group
    dist.barrier()
    store = distributed_c10d._get_default_store()
    dist.destroy_process_group()
    left = store.add("vistok/closed", 1)
    deadline = time.monotonic() + wait_s
    while dist_info.main and left < dist_info.world and time.monotonic() < deadline:
        time.sleep(poll_s)
        left = store.add("vistok/closed", 0)


# --- the loop -------------------------------------------------------------------------------------------
def train(data: DataConfig, cfg: TrainConfig, resume: bool = False, progress: IO[str] = sys.stderr, quiet: bool = False,
          storage_options: dict | None = None, cache: Cache | None = None, skip_damaged: bool = False) -> dict[str, Any]:
    """Train (or resume) the run `cfg.out` on `data` (URLs with `storage_options`, shards cached in `cache`). A
    damaged shard stops the run naming it, or with `skip_damaged` is left out and listed (`skipped_damaged`)."""
    device, dist_info = setup_device(cfg.device)
    run, main = Path(cfg.out), dist_info.main
    ckpt = check_run_folder(run, resume)
    torch.manual_seed(cfg.seed)
    data = replace(data, places=bool(local_attention(cfg.attention)))  # rows carry places for local attention
    on_damage = OnDamage(skip_damaged, str(run / DAMAGED))  # a skipped shard is listed there
    loader = Loader(data, dist_info.rank, dist_info.world, device, storage_options, cache, on_damage)
    mcfg, state = model_config(cfg, data, loader, ckpt)
    raw_model, is_cuda = GPT(mcfg).to(device), device.startswith("cuda")
    opt = raw_model.configure_optimizer(cfg.weight_decay, cfg.lr, device_type="cuda" if is_cuda else "cpu")
    if ckpt is not None:
        load_weights(ckpt, raw_model, opt, device)
        loader.load_state_dict(rank_loader_state(state))
    step, planned = int(state["step"]), int(state["planned_steps"])
    model = wrap_model(raw_model, cfg, dist_info, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if is_cuda else nullcontext()
    peak = next((v for k, v in PEAK_FLOPS.items() if is_cuda and k in torch.cuda.get_device_name()), None)
    configs = run_configs(mcfg, data, cfg, loader)
    if main:
        (run / "config.json").write_text(json.dumps({**configs, "params": raw_model.num_params()}, indent=1))
    log = MetricsLog(run, step if ckpt is not None else None, main, cfg.tensorboard)
    eval_every, ckpt_every, eval_note = periodic_eval(cfg, data, loader, main, planned)
    fit = ScheduleFit(cfg, active=ckpt is None)
    last: dict[str, Any] = {"loss_bits": float("nan")}
    with Progress("train", fit.known(step, planned), "steps", progress, quiet or not main) as bar, \
            StopRequests(dist_info.world == 1) as stop:
        bar.note(eval_note + _start_note(cfg, raw_model, device, dist_info, step, resume and ckpt is None))
        bar.advance(step)
        while step < planned and not stop.requested:
            t0, lr = time.monotonic(), set_lr(opt, lr_at(step, cfg, planned))
            loss, tokens, wait, rank_losses = train_step(model, opt, loader, cfg, dist_info, autocast)
            step += 1
            if is_cuda:
                torch.cuda.synchronize()
            dt = time.monotonic() - t0
            planned = from_rank0(fit(step, planned), dist_info) if fit.active else planned
            last = {"step": step, "loss_bits": round(loss / LN2, 5), "lr": lr, "tokens_per_s": round(tokens / dt, 1),
                    "data_wait": round(wait / dt, 4), "elapsed_s": round(time.monotonic() - fit.t_start, 2),
                    **_more_metrics(rank_losses, peak and raw_model.flops_per_token() * tokens / dt / (peak * dist_info.world))}
            if step % cfg.log_every == 0 or step == planned or step == 1:
                log.write(last)
            bar.advance(1, total=fit.known(step, planned),
                        info=f"loss {last['loss_bits']:.4f} bits/token  lr {lr:.2e}  {last['tokens_per_s']:.0f} tok/s")
            if eval_every and step % eval_every == 0 and main:
                bar.note(log.write({"step": step, **heldout_metrics(raw_model, loader, data, cfg, device)}))
            if cfg.halt_at and step == cfg.halt_at:
                bar.note(f"halting at step {step} (--halt-at)")
                break
            if step % ckpt_every == 0 or step == planned or stop.requested:
                _checkpoint(run, step, planned, raw_model, opt, loader, configs, cfg.keep_ckpts, dist_info)
    del model  # DDP's reducer must go before the process group (close_distributed)
    close_distributed(dist_info)
    stop.check(step, run)
    return {"run": str(run), "step": step, "planned": planned, "last": last, "params": raw_model.num_params(),
            "skipped_shards": skipped_damaged(run)}


def set_lr(opt: torch.optim.Optimizer, lr: float) -> float:
    for g in opt.param_groups:
        g["lr"] = lr
    return lr


def check_run_folder(run: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from; a folder holding another run is refused unless resumed (a new run would
    overwrite its config and metrics and leave its checkpoints, which eval would then score)."""
    if not resume and ((run / "config.json").exists() or checkpoints(run)):
        raise UsageError(f"{run} holds a run already: pass --resume to continue it (--max-steps N extends it), "
                         "or choose a new --out")
    run.mkdir(parents=True, exist_ok=True)  # by every rank: harmless where it exists, and only rank 0 writes
    return latest_checkpoint(run) if resume else None


class StopRequests:
    """SIGINT and SIGTERM, while a single-process run trains: the first asks the loop to stop after its step and
    write a checkpoint (`check` then raises `Interrupted`, saying how to resume); a second SIGINT stops at once.
    Several ranks keep the default handlers (a checkpoint is a collective all ranks must reach together)."""

    def __init__(self, active: bool):
        self.active, self.requested, self._old = active and threading.current_thread() is threading.main_thread(), 0, {}

    def _handler(self, signum, frame) -> None:
        self.requested += 1
        if self.requested > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt

    def __enter__(self) -> StopRequests:
        if self.active:
            self._old = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def check(self, step: int, run: Path) -> None:
        if self.requested:
            raise Interrupted(f"interrupted at step {step}: checkpoint {run}/step-{step:06d} written; rerun the same "
                              "command with --resume to continue")


def heldout_metrics(model: GPT, loader: Loader, data: DataConfig, cfg: TrainConfig, device: str) -> dict[str, float]:
    """The periodic held-out evaluation's metrics row."""
    ev = heldout_bits(model, loader.codec, loader.sets, data, cfg.eval_samples, device)
    return {"eval_bits_per_token": round(ev["bits_per_token"], 5), "eval_bits_per_image": round(ev["bits_per_image"], 2)}


def skipped_damaged(run: Path) -> int:
    """How many distinct damaged shards a run left out (--skip-damaged): RUN/damaged.jsonl has a line each."""
    path = run / DAMAGED
    return len({line for line in path.read_text().splitlines() if line}) if path.exists() else 0
