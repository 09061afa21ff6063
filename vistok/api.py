"""The Python API, for people who train with a loop of their own (`import vistok`).

    vistok.shard(["sample"], "shards/api", {"id": "jpeg", "quality": 20}, size=32, crops=4)
    ds = vistok.open_dataset("shards/api")          # a folder, an s3:// prefix, or a packed .zarr store
    ds.manifest, ds.codec                           # what it holds; the codec that wrote it
    for rec in ds: ...                              # TokenRecords, streamed
    rows = vistok.rows("shards/api", order="random", block_size=512, batch_size=8)
    model = vistok.model_for(rows, "tiny")          # a vistok GPT sized for these rows
    for batch in torch.utils.data.DataLoader(rows, batch_size=8):
        logits, loss = model(**batch)
    state = rows.state_dict()                       # resume exactly: rows.load_state_dict(state)
    vistok.save_run(model, rows, "runs/mine", step=100)  # a run `vistok eval/sample/compress` accept
    vistok.evaluate("runs/mine")                    # its held-out bits, as `vistok eval` reports them
    codec = vistok.get_codec({"id": "jpeg", "quality": 20}); rec = codec.encode(pixels); codec.decode(rec)

The command line calls the same library functions (`vistok.pipelines.job.run_job`, `vistok.train.trainer.train`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vistok.errors import UsageError
from vistok.media.preprocess import Preprocess
from vistok.nn.gpt import GPT
from vistok.pipelines.job import run_job
from vistok.shards.integrity import OnDamage
from vistok.shards.store import open_any
from vistok.storage import Loc
from vistok.tokenize.base import Codec, get_codec
from vistok.train.data import DataConfig, Rows
from vistok.train.trainer import fresh_model_config

__all__ = ["Codec", "DataConfig", "Rows", "evaluate", "get_codec", "model_for", "open_dataset", "rows", "save_run",
           "shard"]


def shard(sources: str | list[str], out: str | Path, codec: str | dict | Codec = "jpeg", *, shard_size: int = 1000,
          executor: str = "local", storage_options: dict[str, Any] | None = None, **preprocess: Any):
    """`vistok shard` from Python: tokenize `sources` into the dataset folder (or URL) `out` with `codec` (an id,
    a config such as ``{"id": "jpeg", "quality": 20}``, or a codec); `preprocess` takes `vistok.media.
    preprocess.Preprocess`'s fields (size, crops, resize, ...). Runs in-process unless `executor="ray"`.
    Returns the job's result (`.folder`, `.samples`, `.errors`, `.manifest`)."""
    c = codec if isinstance(codec, Codec) else get_codec(codec)
    sources = [sources] if isinstance(sources, str | Path) else sources  # one source, not its characters
    return run_job([str(x) for x in sources], out, c, Preprocess(**preprocess), shard_size=shard_size, executor=executor,
                   quiet=True, storage_options=storage_options)


def open_dataset(path_or_url: str | Path, storage_options: dict[str, Any] | None = None):
    """A dataset folder or packed store, local or at an fsspec URL: `.manifest`, `.codec` (ready to decode),
    and its records streamed by iterating it (a packed store also has `len`, `[i]` and `by_key`)."""
    return open_any(Loc(path_or_url, storage_options))


def rows(datasets: str | Path | list, *, order: str = "canonical", block_size: int = 512, parallel: str = "",
         heldout: float = 0.1, seed: int = 0, stride: int = 0, long: str = "split", weights: list[float] | None = None,
         batch_size: int = 16, shuffle_block: int = 4096, rank: int = 0, world: int = 1,
         storage_options: dict[str, Any] | None = None, skip_damaged: bool = False) -> Rows:
    """Training rows of `datasets` (folders, URLs or packed stores) in `order`, as the trainer makes them: a
    torch `IterableDataset`, a batch of `batch_size` rows at a time in the trainer's order, with `state_dict()` /
    `load_state_dict()` for exact resume (see `Rows`). Defaults are `vistok train`'s (`DataConfig.resolved`:
    stride 0 is half the context; `parallel` any or masked orders randomly). A damaged
    shard raises `vistok.errors.DamagedShard` naming it, or with `skip_damaged` is left out with a warning."""
    paths = [str(d) for d in (datasets if isinstance(datasets, list | tuple) else [datasets])]
    cfg = DataConfig(datasets=paths, weights=weights, heldout=heldout, order=order, block_size=block_size, seed=seed,
                     long=long, stride=stride, parallel=parallel, batch_size=batch_size, shuffle_block=shuffle_block,
                     num_workers=0).resolved()
    return Rows(cfg, rank, world, storage_options, OnDamage(skip=skip_damaged))


def model_for(data: Rows | str | Path | list, preset: str = "tiny", next_coords: bool = True, rope: bool = True) -> GPT:
    """A new vistok GPT of `preset` for these rows (or for `vistok.rows(data)` when given datasets): their
    vocabulary, context, coordinate tables and mode."""
    data = data if isinstance(data, Rows) else rows(data)
    return GPT(fresh_model_config(preset, data.sets, data.codec, data.cfg, next_coords, rope))


def save_run(model: GPT, data: Rows, out: str | Path, step: int = 0, optimizer: Any = None) -> Path:
    """Save a model trained in a loop of your own as a run folder (`out/step-N/`) that `vistok eval`, `sample`,
    `compress` and `probe` (and `vistok.evaluate`) accept, with what they need of the rows it was trained on:
    their order, mode, context and datasets. `vistok train --resume` does not continue it (its loader state is
    yours). Returns the checkpoint folder."""
    from vistok.train.checkpoint import latest_checkpoint, save_checkpoint
    from vistok.train.trainer import TrainConfig, run_configs

    out = Path(out)
    ck = latest_checkpoint(out)
    if ck is not None and ck.name != f"step-{step:06d}":
        raise UsageError(f"{out} holds another run's checkpoint ({ck.name}); save to a new folder or a later step")
    configs = run_configs(model.cfg, data.cfg, TrainConfig(out=str(out), max_steps=step), data)
    state = {"step": step, "planned_steps": step, "loader": None, "saved_by": "vistok.save_run", **configs}
    out.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(out, step, model, optimizer, state, keep=1)


def evaluate(run: str | Path, datasets: list[str] | None = None, **options: Any) -> dict[str, Any]:
    """`vistok eval` from Python: bits per token and per image of a run (its latest checkpoint) on its held-out
    split or on `datasets`; `options` are `vistok.train.evaluate.evaluate`'s (split, limit, device, steps...)."""
    from vistok.train.evaluate import evaluate as run_eval

    return run_eval(run, [str(d) for d in datasets] if datasets else None, quiet=options.pop("quiet", True), **options)
