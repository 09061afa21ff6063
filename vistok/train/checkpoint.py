"""Run folders and their checkpoints: atomic `step-N/` folders (tensors only, loaded with
`weights_only=True`), the latest one, and the model a checkpoint holds.

    RUN/step-000200/   model.pt, optim.pt, state.json (step, planned steps, loader state, configs)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from vistok.atomic import AtomicPath
from vistok.errors import DatasetError
from vistok.nn.gpt import GPT, GPTConfig


def checkpoints(run: Path) -> list[Path]:
    return sorted(p for p in run.glob("step-*") if p.is_dir() and (p / "state.json").exists())


def latest_checkpoint(run: str | Path) -> Path | None:
    ck = checkpoints(Path(run))
    return ck[-1] if ck else None


def save_checkpoint(run: Path, step: int, model: GPT, opt, state: dict, keep: int) -> Path:
    """Write `run/step-N/` atomically (`vistok.atomic.AtomicPath`: a temporary folder, its files and itself
    fsynced, renamed, the run folder fsynced); keep the newest `keep`."""
    final = run / f"step-{step:06d}"
    with AtomicPath(final, folder=True) as tmp:
        torch.save(model.state_dict(), tmp / "model.pt")
        if opt is not None:  # a model saved from a loop of one's own may come without its optimizer
            torch.save(opt.state_dict(), tmp / "optim.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
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
    state = read_state(ckpt)
    model = GPT(GPTConfig.from_json(state["model"]))
    load_weights(ckpt, model, None, device)
    return model.to(device), state


def read_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "state.json").read_text())


def load_weights(ckpt: Path, model: GPT, opt: torch.optim.Optimizer | None, device: str) -> None:
    """Model (and optimizer) tensors of a checkpoint, never unpickled."""
    model.load_state_dict(torch.load(ckpt / "model.pt", map_location=device, weights_only=True))
    if opt is not None:
        opt.load_state_dict(torch.load(ckpt / "optim.pt", map_location=device, weights_only=True))
