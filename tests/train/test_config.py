"""`vistok train --config run.toml`: keys are the options' own names, flags override the file, and every run
writes its resolved options to RUN/run.toml, which reruns it to the same losses."""

import json

import pytest

from vistok.cli import main


def _train(*args):
    with pytest.raises(SystemExit) as exc:
        main(["train", *args])
    return exc.value.code


def _losses(run):
    return [json.loads(line)["loss_bits"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if '"loss_bits"' in line]


def test_a_config_file_flags_over_it_and_the_resolved_file_rerun(small_dataset, tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'datasets = ["{small_dataset}"]\norder = "random"\nmax_steps = 40\nblock_size = 256\n'
                   '[optim]\nlr = 3e-3\nwarmup = 2\nweight_decay = 0.05\n[run]\nlog-every = 1\neval_every = 0\nquiet = true\n')
    with pytest.raises(SystemExit) as exc:  # quiet is how to run this time, not an option of the run
        main(["train", "--config", str(cfg)])
    assert exc.value.code == 2 and "no option named quiet" in capsys.readouterr().err
    cfg.write_text(cfg.read_text().replace("quiet = true\n", ""))
    assert _train("--config", str(cfg), "--max-steps", "3", "--out", str(tmp_path / "a"), "-q") == 0
    a = json.loads((tmp_path / "a" / "config.json").read_text())
    assert a["data"]["order"] == "random" and a["data"]["block_size"] == 256  # from the file
    assert a["train"]["max_steps"] == 3 and a["train"]["lr"] == 3e-3  # the flag over the file; a table's key
    assert a["train"]["weight_decay"] == 0.05  # every field of a component is an option (`cli_flags`)
    resolved = (tmp_path / "a" / "run.toml").read_text()
    assert "max_steps = 3" in resolved and 'order = "random"' in resolved and "quiet" not in resolved
    assert _train("--config", str(tmp_path / "a" / "run.toml"), "--out", str(tmp_path / "b"), "-q") == 0
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a") and len(_losses(tmp_path / "a")) == 3


def test_a_bad_config_is_one_line_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("order = \n")
    assert _train("--config", str(bad)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "bad.toml" in err and "\n" not in err
    bad.write_text('max_stpes = 3\ndatasets = ["x"]\n')
    assert _train("--config", str(bad)) == 2
    assert "no option named max_stpes" in capsys.readouterr().err
    assert _train("--config", str(tmp_path / "missing.toml")) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_the_cli_and_the_api_fill_in_the_same_options(tmp_path):
    """`vistok train` and `vistok.rows` resolve the same options alike (DataConfig.resolved): the stride is half
    the context and `--parallel any` orders randomly in both, so their rows are the same."""
    from dataclasses import replace

    import torch

    import vistok
    from vistok.train.data import DataConfig

    small_dataset = vistok.shard(["sample"], tmp_path / "dense", {"id": "jpeg", "quality": 20, "layout": "dense"},
                                 size=16, crops=1).folder
    assert _train(str(small_dataset), "--parallel", "any", "--block-size", "256", "--max-steps", "1", "--eval-every",
                  "0", "--out", str(tmp_path / "cli"), "-q") == 0
    cli = DataConfig.from_json(json.loads((tmp_path / "cli" / "config.json").read_text())["data"])
    api = vistok.rows(str(small_dataset), parallel="any", block_size=256, batch_size=16)
    assert cli.order == "random" and cli.stride == 128
    assert api.cfg == replace(cli, num_workers=0)
    again = vistok.rows(cli.datasets, order=cli.order, parallel=cli.parallel, block_size=cli.block_size,
                        stride=cli.stride, batch_size=cli.batch_size)
    a, b = next(iter(api)), next(iter(again))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_flags_of_train_are_the_fields_of_the_config_dataclasses():
    """`vistok train`'s options are generated from the fields of `vistok.train.config`'s components (their help,
    defaults and limits): every field is a flag unless it says why not, and each flag's help is its field's."""
    from dataclasses import fields

    from vistok.cli import command
    from vistok.train.config import COMPONENTS, cli_flags, field_help

    params = {p.name: p for p in command().commands["train"].params}
    flags = {name: (f, help_text) for f, name, help_text, _ in cli_flags(*COMPONENTS)}
    not_flags = {f.name for c in COMPONENTS for f in fields(c) if not f.metadata["cli"]}
    assert not_flags == {"datasets", "weights", "seed", "places"}  # an argument, a comma list, --seed, from --attention
    for name, (f, help_text) in flags.items():
        assert params[name].help == help_text == field_help(f)
    own = {"datasets", "config", "weights", "resume", "quiet", "shard_cache", "shard_cache_gb", "skip_damaged",
           "storage_options"}  # how to run this time, or not a field
    assert set(params) == set(flags) | own
    assert params["lr"].default == 2e-3 and params["block_size"].default == 0  # 0: the preset's context
