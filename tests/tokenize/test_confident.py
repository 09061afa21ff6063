"""`--order confident`: the rule, the plan a model fills in group by group, and a decoder that follows it.

The order is chosen by an `--parallel any` run's model from the tokens decoded so far, so the proof that a
decoder can follow it is a file that decodes: compress codes each group where the model chose it, and
decompress, running the same model on what it has decoded, chooses the same places.
"""

import numpy as np
import pytest

from vistok.errors import UsageError
from vistok.tokenize import JpegCodec
from vistok.tokenize.orders import adaptive_orders, parse_order
from vistok.tokenize.stream import StreamGrammar, StreamSpec, order_record, plan


def test_the_rule_takes_the_lowest_entropy_places_ties_to_the_earlier():
    sure, flat, half = np.log([1.0, 1e-300, 1e-300]), np.log([1 / 3] * 3), np.log([0.5, 0.5, 1e-300])
    logp = np.stack([flat, half, sure, half, flat])
    logp[2, 1:] = -np.inf  # the grammar rules tokens out: -inf, no entropy
    rule = parse_order("confident")
    assert rule.choose(logp, 1).tolist() == [2]
    assert rule.choose(logp, 2).tolist() == [1, 2]  # half (row 1) before its tie (row 3)
    assert rule.choose(logp, 3).tolist() == [1, 2, 3]
    assert rule.choose(logp, 5).tolist() == [0, 1, 2, 3, 4]
    assert adaptive_orders() == ["confident"]


def _record(photo):
    codec = JpegCodec(quality=50, layout="dense", subsampling="444")
    return codec, codec.encode(photo[100:116, 100:116], "r")


def test_a_confident_plan_has_the_any_groups_and_places_chosen_one_group_at_a_time(photo):
    codec, rec = _record(photo)
    p = plan(codec, rec.meta, StreamSpec.parse("confident", "any", steps=5), np.random.default_rng(0))
    assert p.adaptive is not None and p.n_groups == 5 and p.order_bits == 0
    g = StreamGrammar(codec, rec.meta, p)
    with pytest.raises(RuntimeError, match="choose"):
        g.group()  # the model chooses first
    n = len(rec.tokens)
    taken = []
    while g.phase == "cells":
        coords, masks, places = g.candidates()
        assert len(coords) == n - len(taken) and masks.shape == (n - len(taken), codec.vocab.size)
        k = g.group_size()
        with pytest.raises(ValueError):
            g.choose(np.arange(k + 1))
        pick = np.arange(len(coords))[::-1][:k][::-1]  # the last k candidates (cells in cell order)
        g.choose(pick)
        want = np.sort(np.setdiff1d(np.arange(n), taken))[pick]
        assert g.plan.cells[g.i : g.i + k].tolist() == want.tolist()
        _, masks = g.group()
        for c, m in zip(want, masks):
            assert m[rec.tokens[c]]  # the grammar allows the record's token at each chosen place
            g.step(int(rec.tokens[c]))
        taken += want.tolist()
    np.testing.assert_array_equal(g.canonical(), rec.tokens)  # every place once: the record back


def test_confident_is_refused_where_no_model_chooses_it(photo):
    codec, rec = _record(photo)
    with pytest.raises(UsageError, match="takes --parallel any"):
        plan(codec, rec.meta, "confident", np.random.default_rng(0))
    with pytest.raises(UsageError, match="train with --order random --parallel any"):
        order_record(codec, rec, StreamSpec.parse("confident", "any"), np.random.default_rng(0))  # training reads every place first
    for mode in ("segments", "scales", "masked:0.5"):
        with pytest.raises(UsageError):
            StreamSpec.parse("confident", mode)
    assert StreamSpec.parse("confident", "any").order.adaptive


@pytest.fixture(scope="module")
def any_run(tmp_path_factory):
    """A --parallel any run (3 steps) on 8x8 dense JPEG crops of the embedded photos (192 places)."""
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.train.data import DataConfig
    from vistok.train.trainer import TrainConfig, train

    d = tmp_path_factory.mktemp("confident")
    run_job(["sample"], d / "ds", JpegCodec(quality=30, layout="dense", subsampling="444"), Preprocess(size=8, crops=2),
            shard_size=16, executor="local", quiet=True)
    data = DataConfig(datasets=[str(d / "ds")], block_size=512, batch_size=2, num_workers=0, heldout=0.2,
                      shuffle_block=8, order="random", parallel="any")
    train(data, TrainConfig(out=str(d / "run"), max_steps=3, warmup=1, eval_every=0, ckpt_every=3), quiet=True)
    return d / "ds", d / "run"


@pytest.mark.slow
def test_eval_sample_and_compress_follow_the_models_choice_and_files_decode(any_run, tmp_path):
    from vistok.shards.reader import Dataset
    from vistok.train.compress import Coder
    from vistok.train.data import heldout_records
    from vistok.train.evaluate import evaluate
    from vistok.train.sample import sample_run

    ds, run = any_run
    ev = evaluate(run, steps=[6], limit=2, order="confident", quiet=True)
    assert ev["order"] == "confident" and ev["order_bits"] == 0 and ev["steps_per_image"] == 6
    assert 0 < ev["bits_per_image"] < np.inf
    assert evaluate(run, steps=[6], limit=2, quiet=True)["order"] == "random"  # the run's own, untouched

    recs = list(heldout_records([Dataset(ds)], 0.2, 2))
    coder = Coder.load(run, 6, "confident")
    blobs = [b for _, b in coder.compress(recs)]
    back = list(Coder.load(run, order="confident").decompress(blobs))  # the steps come from the files
    assert [b.tokens.tolist() for b in back] == [r.tokens.tolist() for r in recs]
    with pytest.raises(Exception, match="--order it was compressed in"):
        list(Coder.load(run).decompress(blobs[:1]))  # the run's own order: another stream

    out = sample_run(run, 2, tmp_path / "s.png", seed=1, steps=4, order="confident", quiet=True)
    assert out.exists()
    with pytest.raises(UsageError, match="an order the model chooses"):
        evaluate(run, steps=[6], limit=1, order="hilbert", quiet=True)


@pytest.mark.parametrize("argv", [["eval", "{run}", "--order", "hilbert"], ["eval", "{run}", "--order", "nonsense"],
                                  ["sample", "{run}", "--order", "confident", "--steps", "0"]])
def test_the_command_line_refuses_in_one_line(any_run, argv, capsys):
    from vistok.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([a.format(run=any_run[1]) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err
