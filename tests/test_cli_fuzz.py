"""Every command, every option, bad values of each kind: a non-zero exit and one clear line naming the option
(or the bad value), never a traceback and never a hang. The cases are generated from the CLI itself, so a new
option is fuzzed the day it is added."""

import enum
import signal
import typing
from pathlib import Path

import pytest
import typer.main

from vistok import cli
from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.shards.reader import Dataset
from vistok.tokenize import JpegCodec
from vistok.train.data import DataConfig
from vistok.train.trainer import TrainConfig, train

MISSING = "/nonexistent/vistok-fuzz"
# str options whose value must be a name vistok knows: an unknown one is refused, naming it
NAMED = {"order", "parallel", "attention", "preset", "device", "steps", "weights", "storage_options", "store_order",
         "label_from", "executor", "layout", "codec", "orders", "layer", "key", "prompt", "source"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    ds = root / "ds"
    run_job(["sample"], ds, JpegCodec(quality=20), Preprocess(size=16, crops=1), shard_size=8, executor="local",
            quiet=True)
    run = root / "run"
    train(DataConfig(datasets=[str(ds)], block_size=128, batch_size=2, num_workers=0),
          TrainConfig(out=str(run), max_steps=1, eval_every=0, warmup=1), quiet=True)
    return root, ds, run, next(iter(Dataset(ds))).key


def base_args(command: str, world, tmp: Path) -> list[str]:
    """Valid positionals and options that make `command` reach its own checks quickly."""
    root, ds, run, key = world
    return {
        "shard": ["sample", "--out", str(tmp / "s"), "--executor", "local", "--size", "16"],
        "inspect": [str(ds)], "verify": [str(ds), "--executor", "local"],
        "decode": [str(ds), "--key", key, "--out", str(tmp / "a.png")], "pack": [str(ds), "--out", str(tmp / "p.zarr")],
        "train-tokenizer": ["sample", "--out", str(tmp / "tok"), "--steps", "1"],
        "show-order": [str(ds), "--out", str(tmp / "o.png")],
        "train": [str(ds), "--out", str(tmp / "r"), "--max-steps", "1", "--block-size", "128"],
        "eval": [str(run)], "sample": [str(run), "--out", str(tmp / "s.png"), "--n", "1"], "probe": [str(run)],
        "study": ["--out", str(tmp / "st")], "compress": [str(run), str(ds), "--out", str(tmp / "c")],
        "decompress": [str(run), str(tmp / "x.vtkz"), "--out", str(tmp / "d")],
    }[command]


def cases() -> list[tuple[str, str, str, str]]:
    """(command, option flag or '' for a positional, bad value, its kind)."""
    out = []
    group = typer.main.get_command(cli.app)
    for name, cmd in sorted(group.commands.items()):
        for p in cmd.params:
            if p.hidden or getattr(p, "is_flag", False):
                continue
            flag = p.opts[0] if p.opts[0].startswith("-") else ""
            kind = p.type_descriptor.annotation
            kind = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
            if not flag:
                out.append((name, "", MISSING, "missing path"))
            elif kind in (int, float):
                out.append((name, flag, "abc", "wrong type"))
                if p.min is not None:
                    out.append((name, flag, str(p.min - 7), "below range (negative)"))
                    if p.min == 1:
                        out.append((name, flag, "0", "zero"))
                if p.max is not None:
                    out.append((name, flag, str(p.max + 7), "above range"))
            elif isinstance(kind, type) and issubclass(kind, enum.Enum):
                out.append((name, flag, "nosuch", "unknown name"))
            elif p.name in NAMED:
                out.append((name, flag, "nosuch:9" if p.name != "storage_options" else "{not json", "unknown name"))
    return out


CASES = cases()


@pytest.fixture
def guarded():
    """A hang fails the case (SIGALRM); the CLI's SIGTERM handler is put back after each run."""
    def on_alarm(signum, frame):
        raise TimeoutError("the command did not fail within 120 s")

    old = signal.signal(signal.SIGALRM, on_alarm), signal.getsignal(signal.SIGTERM)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old[0])
    signal.signal(signal.SIGTERM, old[1])


def test_the_fuzz_covers_every_command_and_option_kind():
    commands = {c for c, *_ in CASES}
    assert commands == set(typer.main.get_command(cli.app).commands)
    assert {k for *_, k in CASES} >= {"missing path", "wrong type", "below range (negative)", "zero", "unknown name",
                                      "above range"}
    assert len(CASES) > 200, len(CASES)


@pytest.mark.parametrize("command,flag,value,kind", CASES, ids=[f"{c}{' ' + f if f else ''}={v}" for c, f, v, _ in CASES])
def test_bad_input_is_one_clear_line(command, flag, value, kind, world, tmp_path, capsys, guarded):
    args = base_args(command, world, tmp_path)
    if flag == "--prompt":
        args += ["--out", str(tmp_path / "s.mp4")]  # a continued clip is written as an mp4
    if flag:
        args = [*args, flag, value]
    else:  # the first positional replaced by a path that does not exist
        args = [value, *args[1:]] if not args[0].startswith("-") else [*args, value]
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, *args])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code in (1, 2), f"{kind}: exit {exit_.value.code}\n{err}"
    last = err.splitlines()[-1] if err else ""
    assert last.startswith("error: "), f"{kind}: {err!r}"
    named = flag.lstrip("-") in last or value in last or (value == MISSING and "nonexistent" in last)
    assert named, f"{kind}: the message names neither {flag or 'the path'} nor {value!r}: {last}"
