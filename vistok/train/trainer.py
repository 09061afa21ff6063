"""The training loop: AdamW, warmup + cosine, clipping, accumulation, bf16 autocast and compile on CUDA,
DDP under torchrun, atomic `step-N/` checkpoints and an exact `--resume`.

A run folder:
    config.json          model, data and train configs, the codec config and the data's preprocessing
    metrics.jsonl        one JSON object per logged step / eval (loss in bits per token)
    step-000200/         model.pt, optim.pt (tensors only, loaded with weights_only=True), state.json
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vistok.errors import DatasetError, UsageError
from vistok.train.data import DataConfig, Loader, axis_sizes
from vistok.train.model import GPT, PRESETS, GPTConfig

LN2 = math.log(2)
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16


@dataclass
class TrainConfig:
    out: str = "runs/run"
    preset: str = "tiny"
    next_coords: bool = True
    max_steps: int = 1000
    max_minutes: float = 0.0  # 0: no time limit; else the schedule is fitted to the budget at step 30
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_every: int = 100
    eval_samples: int = 48
    ckpt_every: int = 200
    keep_ckpts: int = 2
    log_every: int = 10
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    tensorboard: bool = False
    halt_at: int = 0  # stop right after this step as if killed (tests of --resume)

    def to_json(self) -> dict:
        return asdict(self)


def pick_device(name: str) -> str:
    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * p))


# --- checkpoints ----------------------------------------------------------------------------------------
def checkpoints(run: Path) -> list[Path]:
    return sorted(p for p in run.glob("step-*") if p.is_dir() and (p / "state.json").exists())


def latest_checkpoint(run: str | Path) -> Path | None:
    ck = checkpoints(Path(run))
    return ck[-1] if ck else None


def save_checkpoint(run: Path, step: int, model: GPT, opt, state: dict, keep: int) -> Path:
    final = run / f"step-{step:06d}"
    tmp = run / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model.state_dict(), tmp / "model.pt")
    torch.save(opt.state_dict(), tmp / "optim.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoints(run)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_model(ckpt: str | Path, device: str = "cpu") -> tuple[GPT, dict]:
    """Model and state.json from a checkpoint folder (or a run folder: its latest checkpoint)."""
    ckpt = Path(ckpt)
    if not (ckpt / "state.json").exists():
        latest = latest_checkpoint(ckpt)
        if latest is None:
            raise DatasetError(f"{ckpt} holds no checkpoint (step-N/ folder with state.json)")
        ckpt = latest
    state = json.loads((ckpt / "state.json").read_text())
    model = GPT(GPTConfig(**state["model"]))
    model.load_state_dict(torch.load(ckpt / "model.pt", map_location=device, weights_only=True))
    return model.to(device), state


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

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])


def train(data: DataConfig, cfg: TrainConfig, resume: bool = False, progress=sys.stderr) -> dict[str, Any]:
    device = pick_device(cfg.device)
    dist_info = init_distributed(device)
    if device == "cuda" and dist_info.world > 1:
        device = f"cuda:{dist_info.local_rank}"
    run = Path(cfg.out)
    if dist_info.main:
        run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    ckpt = latest_checkpoint(run) if resume else None
    if resume and ckpt is None and dist_info.main:
        print(f"--resume: no checkpoint in {run}, starting from scratch", file=progress)

    loader = Loader(data, dist_info.rank, dist_info.world, device)
    codec, sets = loader.codec, loader.sets
    if ckpt is not None:
        state = json.loads((ckpt / "state.json").read_text())
        mcfg = GPTConfig(**state["model"])
    else:
        if cfg.preset not in PRESETS:
            raise UsageError(f"unknown preset {cfg.preset!r}; available: {', '.join(PRESETS)}")
        preset = dict(PRESETS[cfg.preset])
        preset["block_size"] = data.block_size
        known = [i for i, a in enumerate(codec.axes) if a in codec.known_axes] if cfg.next_coords else []
        mcfg = GPTConfig(vocab_size=codec.vocab.size, axis_sizes=axis_sizes(sets, codec), next_axes=known, **preset)
        state = {"step": 0, "planned_steps": cfg.max_steps}
    if mcfg.block_size != data.block_size:
        raise UsageError(f"--block-size {data.block_size} differs from the checkpoint's {mcfg.block_size}")
    model = GPT(mcfg).to(device)
    opt = model.configure_optimizer(cfg.weight_decay, cfg.lr, device_type="cuda" if device.startswith("cuda") else "cpu")
    if ckpt is not None:
        model.load_state_dict(torch.load(ckpt / "model.pt", map_location=device, weights_only=True))
        opt.load_state_dict(torch.load(ckpt / "optim.pt", map_location=device, weights_only=True))
        loader.load_state_dict(state["loader"])
    step, planned = int(state["step"]), int(state["planned_steps"])
    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[dist_info.local_rank] if device.startswith("cuda") else None)
    is_cuda = device.startswith("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if is_cuda else nullcontext()
    peak = next((v for k, v in PEAK_FLOPS.items() if is_cuda and k in torch.cuda.get_device_name()), None)

    run_config = {"model": mcfg.to_json(), "data": data.to_json(), "train": cfg.to_json(),
                  "codec": codec.get_config(), "preprocess": sets[0].manifest.get("preprocess", {}),
                  "params": raw_model.num_params()}
    if dist_info.main:
        (run / "config.json").write_text(json.dumps(run_config, indent=1))
    log = MetricsLog(run, step if ckpt is not None else None, dist_info.main, cfg.tensorboard)
    if dist_info.main:
        print(f"model {cfg.preset}: {raw_model.num_params() / 1e6:.2f}M parameters on {device}"
              + (f" x {dist_info.world} ranks" if dist_info.world > 1 else "") + f", starting at step {step}", file=progress)

    def checkpoint(at: int) -> None:
        if dist_info.main:
            st = {"step": at, "planned_steps": planned, "loader": loader.state_dict(), "model": mcfg.to_json(),
                  "data": data.to_json(), "train": cfg.to_json(), "codec": codec.get_config(),
                  "preprocess": run_config["preprocess"]}
            save_checkpoint(run, at, raw_model, opt, st, cfg.keep_ckpts)

    t_start = t_fit = time.monotonic()
    last = {"loss_bits": float("nan")}
    while step < planned:
        t0 = time.monotonic()
        lr = lr_at(step, cfg, planned)
        for g in opt.param_groups:
            g["lr"] = lr
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
        step += 1
        if is_cuda:
            torch.cuda.synchronize()
        dt = time.monotonic() - t0
        if dist_info.world > 1:
            import torch.distributed as dist

            t = torch.tensor([loss_acc, tokens], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            loss_acc, tokens = t[0].item() / dist_info.world, int(t[1].item())
        if cfg.max_minutes and ckpt is None:
            # Fit the schedule to the time budget once, from the step time measured over steps 10..30
            # (start-up excluded); fixed from then on and stored in checkpoints.
            if step == 10:
                t_fit = time.monotonic()
            elif step == 30 and planned > 30:
                rate = (time.monotonic() - t_fit) / 20
                left = cfg.max_minutes * 60 * 0.98 - (time.monotonic() - t_start)
                planned = max(step + 1, min(cfg.max_steps, step + int(left / rate)))
        row = {"step": step, "loss_bits": round(loss_acc / LN2, 5), "lr": lr, "tokens_per_s": round(tokens / dt, 1),
               "data_wait": round(wait / dt, 4), "elapsed_s": round(time.monotonic() - t_start, 2)}
        if peak:
            row["mfu"] = round(raw_model.flops_per_token() * tokens / dt / (peak * dist_info.world), 4)
        last = row
        if step % cfg.log_every == 0 or step == planned or step == 1:
            log.write(row)
            if dist_info.main:
                msg = (f"step {step}/{planned}  loss {row['loss_bits']:.4f} bits/token  lr {lr:.2e}  "
                       f"{row['tokens_per_s']:.0f} tok/s  data-wait {100 * row['data_wait']:.1f}%")
                progress.write(("\r" + msg) if progress.isatty() else msg + "\n")
                progress.flush()
        if cfg.eval_every and step % cfg.eval_every == 0 and dist_info.main:
            from vistok.train.evaluate import heldout_bits

            ev = heldout_bits(raw_model, codec, sets, data, cfg.eval_samples, device)
            log.write({"step": step, "eval_bits_per_token": round(ev["bits_per_token"], 5),
                       "eval_bits_per_image": round(ev["bits_per_image"], 2)})
        if cfg.halt_at and step == cfg.halt_at:
            if dist_info.main:
                progress.write(f"\nhalting at step {step} (--halt-at)\n")
            break
        if step % cfg.ckpt_every == 0 or step == planned:
            checkpoint(step)
    if progress.isatty() and dist_info.main:
        progress.write("\n")
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return {"run": str(run), "step": step, "last": last, "params": raw_model.num_params()}
