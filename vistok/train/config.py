"""Run options, one small dataclass per component, each field with its help: the data (`DataConfig`), the model
(`ModelConfig`), the optimizer and its schedule (`OptimConfig`) and the run itself (`RunConfig`).

`TrainConfig` is the three training components in one flat dataclass (what the trainer reads, and what a run's
config.json has always stored). `vistok train`'s flags are generated from these fields (`cli_flags`), and its
RUN/run.toml has a table per component, so an option's default and help live here once, and `vistok.rows`,
`make pretrain`, `make pretrain-video` and the study build the same dataclasses. No torch is imported here: the CLI
reads the fields without loading it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from vistok.errors import UsageError
from vistok.tokenize.orders import adaptive_orders, order_help, parse_order
from vistok.tokenize.parallel import mode_help, parse_mode
from vistok.tokenize.stream import StreamSpec

DEFAULT_ORDER = "canonical"  # the codec's own order, when none is asked for
DEFAULT_MAX_STEPS = 1000  # a new run's optimizer steps when --max-steps is not given


def option(default: Any, help: str | Callable[[], str], *, flag: str | None = None, cli: bool = True,
           decls: tuple[str, ...] = (), hidden: bool = False, cli_default: Any = MISSING, **limits: float) -> Any:
    """A config field with its help (a callable when the help lists a registry). `flag`: the option's name when it
    is not the field's; `cli=False`: no flag (set otherwise); `decls`: the flag's spellings (`--out`, `-o`);
    `cli_default`: the flag's default where it means "from elsewhere" (0 = the preset's context); `limits`: min, max."""
    meta = {"help": help, "flag": flag, "cli": cli, "decls": decls, "hidden": hidden, "cli_default": cli_default,
            "limits": limits}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def field_help(f: Field) -> str:
    h = f.metadata["help"]
    return h() if callable(h) else h


@dataclass
class DataConfig:
    """Where the rows come from and how a record becomes them."""

    datasets: list[str] = option([], "Dataset folders or URLs, or packed .zarr stores.", cli=False)
    weights: list[float] | None = option(None, "Mixing weights, one per dataset.", cli=False)
    heldout: float = option(0.1, "Fraction of inputs held out for evaluation (by key hash).", min=0, max=1)
    order: str = option(DEFAULT_ORDER, lambda: f"Token order: {order_help()}. Orders a decoder could not follow on "
                        "the dataset's codec and layout are refused, saying why.")
    block_size: int = option(512, "Context length (tokens per row; 0 = the preset's).", min=0, cli_default=0)
    batch_size: int = option(16, "Rows per micro-batch (per rank).", min=1)
    seed: int = option(0, "Seed of the data order and the orderings (the run's --seed).", cli=False)
    num_workers: int = option(1, "DataLoader worker processes per rank (they split the batch's rows; the batches do "
                              "not depend on them).", flag="workers", min=0)
    long: str = option("split", "A record longer than the context: split (read in windows every --stride) or crop "
                       "(its first window only).")
    stride: int = option(0, "A record longer than the context (a clip) is read in windows of the context's length "
                         "every STRIDE positions, each scored on its new targets, so every token sees at least context "
                         "- stride earlier ones (0 = half the context; the context length = independent pieces); with "
                         "--parallel, each window predicts whole groups in at most STRIDE positions after the context "
                         "- 1 - STRIDE tokens before them. Eval, sample and compress read it the same way.", min=0)
    parallel: str = option("", lambda: f"Predict groups at once: {mode_help()}. any and masked:R take --order random "
                           "when none is given; masked:R is scored on its masked part (eval reports those bits) and "
                           "cannot sample or compress; every mode needs one token per place (dense layouts, learned "
                           "codes, pixels).")
    places: bool = option(False, "Rows carry each position's places (set by --attention local:R).", cli=False)
    shuffle_block: int = option(4096, "Training records shuffled together: blocks of shards holding at least this "
                                "many records.", min=1)

    def resolved(self) -> DataConfig:
        """The options as every entry point fills them in (`vistok train`, `vistok.rows`, pretrain, the study), so
        that their defaults cannot drift: stride 0 is half the context, and `any` or `masked:R` over the canonical
        order is over a random one (both are defined over random orders). A checkpoint stores this."""
        mode = parse_mode(self.parallel)
        order = mode.default_order if mode is not None and self.order == DEFAULT_ORDER else self.order
        return replace(self, order=order, stride=self.stride or self.block_size // 2)

    def followed_in(self, order: str | None, run: object = "") -> DataConfig:
        """These options with the order a command follows: the run's own (None), or one the model chooses while
        it decodes (`--order confident`, an `--parallel any` run); another is refused, naming the run's own."""
        if order is None or order == self.order:
            return self
        if not parse_order(order).adaptive:
            raise UsageError(f"--order takes an order the model chooses ({', '.join(adaptive_orders())}); run {run} "
                             f"follows its own order otherwise, {self.order}")
        mode = parse_mode(self.parallel)
        if mode is None or not mode.steps:
            raise UsageError(f"--order {order} is chosen by an --parallel any run's model; run {run} is "
                             f"{'--parallel ' + str(mode) if mode else 'token by token'}")
        return replace(self, order=order)

    @property
    def spec(self) -> StreamSpec:
        """The stream these options name, checked (`StreamSpec.parse`)."""
        return self.spec_for(self.block_size, self.stride)

    def spec_for(self, block_size: int, stride: int, steps: int | None = None) -> StreamSpec:
        """This run's stream as a command reads it: in a model's context (`block_size`), windows every `stride`
        positions, and an `any` run's test-time `steps`."""
        return StreamSpec.parse(self.order, self.parallel, steps, block_size, stride)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> DataConfig:
        """A checkpoint's data config; keys of older vistoks that no longer steer anything are dropped
        (`shuffle_buffer`: the stream before the global order)."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def check(self) -> None:
        """Refuse values no run can use, naming the option, before any data is read."""
        bad = [(f"--heldout {self.heldout}", "a fraction in [0, 1): the share of inputs held out",
                0 <= self.heldout < 1),
               (f"--block-size {self.block_size}", "at least 2", self.block_size >= 2),
               (f"--batch-size {self.batch_size}", "at least 1", self.batch_size >= 1),
               (f"--workers {self.num_workers}", "0 or more", self.num_workers >= 0),
               (f"--stride {self.stride}", f"0 up to the context ({self.block_size})", 0 <= self.stride <= self.block_size),
               (f"--long {self.long}", "split or crop", self.long in ("split", "crop")),
               ("shuffle_block", "at least 1", self.shuffle_block >= 1)]
        for what, want, ok in bad:
            if not ok:
                raise UsageError(f"{what}: must be {want}")
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.size != len(self.datasets):
                raise UsageError(f"--weights: {w.size} weights for {len(self.datasets)} datasets (one each)")
            if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise UsageError(f"--weights {','.join(map(str, self.weights))}: weights must be >= 0, with a "
                                 "positive sum")


@dataclass
class ModelConfig:
    """The model: its size and what it is shown."""

    preset: str = option("tiny", "Model size: tiny (~1M, CPU; context 512), small (~10M; 1024), base (~100M; 1024); "
                         "for clips tiny-video (1024) and small-video (2048), whose contexts hold two 64x64 frames or "
                         "more; for whole 256x256 images small-8k and base-8k (8192).")
    next_coords: bool = option(True, "Embed the next token's position (sigma-GPT).")
    rope: bool = option(True, "Rotate queries and keys by places (the one predicted, each token's), on the known axes "
                        "but time: attending to the same place in an earlier frame is one pattern.")
    co_attend: bool | None = option(None, "With --parallel: the query slots of a group attend to each other (they "
                                    "carry places, never tokens). Default: on for any, off for segments and scales "
                                    "(what measured better).")
    attention: str = option("full", "full (the whole context) or local:R[,F]: a token attends to the earlier tokens in "
                            "the R unit rows above its own and in its own row, and within R rows in the F frames before "
                            "(default 1): Lepton's context, at a cost per token bounded by R and the image's width. "
                            "Places come from the stream's prefix, so eval, sample and compress use the same mask.")
    compile: bool = option(False, "torch.compile the model.")
    checkpoint_activations: bool = option(False, "Recompute each block's activations in the backward pass: the memory "
                                          "of one block instead of all (long contexts: small-8k, base-8k), for about a "
                                          "third more compute.")


@dataclass
class OptimConfig:
    """AdamW and its schedule: warmup, then a cosine to min_lr_ratio of the peak."""

    max_steps: int = option(0, f"Optimizer steps: {DEFAULT_MAX_STEPS} when not given; with --resume, N moves the "
                            "run's end to N (the cosine is stretched to end there) and 0 keeps the run's own.", min=0)
    max_minutes: float = option(0.0, "Stop after this long (within about 10%, however slow the steps); the LR schedule "
                                "is fitted to it (0 = off).", min=0)
    lr: float = option(2e-3, "Peak learning rate.", min=0)
    min_lr_ratio: float = option(0.1, "The cosine ends at this fraction of the peak learning rate.", min=0, max=1)
    warmup: int = option(50, "Warmup steps.", min=0)
    weight_decay: float = option(0.1, "AdamW weight decay (on weight matrices and embeddings, not on norms and biases).", min=0)
    grad_clip: float = option(1.0, "Clip the gradient's norm to this (0 = off).", min=0)
    grad_accum: int = option(1, "Micro-batches per optimizer step.", min=1)


@dataclass
class RunConfig:
    """Where the run lives, what it writes and when, and on what."""

    out: str = option("runs/run", "Run folder (checkpoints, metrics.jsonl, config.json).", decls=("--out", "-o"))
    eval_every: int = option(100, "Held-out evaluation every N steps (0 = never).", min=0)
    eval_samples: int = option(48, "Held-out records each periodic evaluation scores.", min=1)
    ckpt_every: int = option(200, "Checkpoint every N steps.", min=1)
    keep_ckpts: int = option(2, "Checkpoints kept (the newest).", min=1)
    log_every: int = option(10, "Write a metrics row every N steps.", min=1)
    device: str = option("auto", "auto, cpu, cuda, cuda:N.")
    seed: int = option(0, "Seed for initialization, data order and orderings.", min=0)
    tensorboard: bool = option(False, "Also write TensorBoard logs (needs tensorboard).")
    halt_at: int = option(0, "Stop right after this step as if killed (tests of --resume).", hidden=True, min=0)


@dataclass
class TrainConfig(RunConfig, OptimConfig, ModelConfig):
    """The model, optimizer and run components in one flat dataclass: what the trainer reads and a run's
    config.json stores (`to_json`)."""

    def to_json(self) -> dict:
        return asdict(self)


COMPONENTS = (DataConfig, ModelConfig, OptimConfig, RunConfig)


def cli_flags(*components: type) -> Iterator[tuple[Field, str, str, Any]]:
    """Each field of these components that is a flag: (field, the option's name, its help, its default)."""
    for component in components:
        for f in fields(component):
            if f.metadata.get("cli", False):
                m = f.metadata
                default = m["cli_default"] if m["cli_default"] is not MISSING else (
                    f.default if f.default is not MISSING else f.default_factory())
                yield f, m["flag"] or f.name, field_help(f), default
