import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from vistok.errors import UsageError
from vistok.record import TokenRecord
from vistok.shards.reader import Dataset
from vistok.tokenize import JpegCodec, dct, jpegfile
from vistok.tokenize.base import EOS
from vistok.tokenize.stream import StreamSpec, stream_masks
from vistok.train.checkpoint import latest_checkpoint, load_model
from vistok.train.data import (
    DataConfig,
    Loader,
    heldout_records,
    is_heldout,
    merge_states,
    open_datasets,
    record_docs,
    record_rng,
)
from vistok.train.evaluate import evaluate
from vistok.train.sample import sample_images
from vistok.train.trainer import TrainConfig, train


def _cfgs(ds, out, **kw):
    data = DataConfig(datasets=[str(ds)], block_size=128, batch_size=4, num_workers=0, heldout=0.2, shuffle_block=16,
                      order=kw.pop("order", "canonical"))
    cfg = TrainConfig(**{"out": str(out), "max_steps": 8, "warmup": 2, "eval_every": 0, "ckpt_every": 4, "log_every": 1, **kw})
    return data, cfg


def test_checkpointed_activations_train_the_same_run(small_dataset, tmp_path, logged_losses):
    """--checkpoint-activations trades compute for memory and nothing else: the same losses, step for step."""
    for name, ckpt in (("plain", False), ("ckpt", True)):
        train(*_cfgs(small_dataset, tmp_path / name, max_steps=3, checkpoint_activations=ckpt), quiet=True)
    plain, ckpt = logged_losses(tmp_path / "plain"), logged_losses(tmp_path / "ckpt")
    assert sorted(plain) == [1, 2, 3] and all(abs(plain[k] - ckpt[k]) < 1e-4 for k in plain)


def test_killed_and_resumed_run_reproduces_the_loss_curve(small_dataset, tmp_path, logged_losses):
    data, cfg = _cfgs(small_dataset, tmp_path / "full", order="random")
    train(data, cfg, quiet=True)
    data, cfg = _cfgs(small_dataset, tmp_path / "resumed", order="random", halt_at=6)  # dies after step 6
    train(data, cfg, quiet=True)
    assert latest_checkpoint(tmp_path / "resumed").name == "step-000004"
    data, cfg = _cfgs(small_dataset, tmp_path / "resumed", order="random")
    train(data, cfg, resume=True, quiet=True)
    full, resumed = logged_losses(tmp_path / "full"), logged_losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(1, 9))
    assert full == resumed
    a, _ = load_model(tmp_path / "full")
    b, _ = load_model(tmp_path / "resumed")
    for (k, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), k


def test_checkpoints_load_without_unpickling(small_dataset, tmp_path):
    data, cfg = _cfgs(small_dataset, tmp_path / "r")
    train(data, cfg, quiet=True)
    ck = latest_checkpoint(tmp_path / "r")
    assert sorted(p.name for p in ck.iterdir()) == ["model.pt", "optim.pt", "state.json"]
    torch.load(ck / "model.pt", weights_only=True)
    torch.load(ck / "optim.pt", weights_only=True)
    assert not list((tmp_path / "r").glob(".step-*"))  # no temporary folder left behind


def test_sampled_streams_always_decode(small_dataset, tmp_path):
    data, cfg = _cfgs(small_dataset, tmp_path / "r", max_steps=2)
    train(data, cfg, quiet=True)
    model, state = load_model(tmp_path / "r")
    codec = JpegCodec(**{k: v for k, v in state["codec"].items() if k != "id"})
    meta = {"height": 32, "width": 32, "components": 3, "subsampling": "420"}
    for seed, temp in ((0, 1.0), (1, 2.0), (2, 0.0)):
        images, streams, _ = sample_images(model, codec, meta, n=3, temperature=temp, top_k=50 if seed == 1 else None,
                                        top_p=0.9 if seed == 2 else None, seed=seed)
        for img, toks in zip(images, streams):
            assert img.shape == (32, 32, 3)
            rec = TokenRecord("s", toks, dict(meta))
            grid, coefs = codec.coefficients(rec)  # the whole stream parses, no token left over
            assert toks[-1] != EOS and codec.layout(meta).frame_max_tokens >= toks.size
            # a sampled stream may escape a value that fits a direct token, so compare coefficients, not
            # tokens: the canonical re-tokenization parses back to the same coefficients and pixels
            again = TokenRecord("s", codec.tokenize(grid, coefs), dict(meta))
            np.testing.assert_array_equal(codec.coefficients(again)[1], coefs)
            np.testing.assert_array_equal(codec.decode(again), img)
    # the cached sampler and the uncached one draw the same streams
    a = sample_images(model, codec, meta, n=2, seed=3, use_cache=True)[1]
    b = sample_images(model, codec, meta, n=2, seed=3, use_cache=False)[1]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_eval_reports_bits_and_the_jpeg_ratio(small_dataset, tmp_path):
    data, cfg = _cfgs(small_dataset, tmp_path / "r", max_steps=3)
    train(data, cfg, quiet=True)
    ev = evaluate(tmp_path / "r")
    for k in ("bits_per_token", "bits_per_image", "jpeg_bits_per_image", "model_to_jpeg_ratio", "unigram_bits_per_token"):
        assert ev[k] > 0, k
    # the same figures from an independent pass: one document at a time, no padding or batching, float64,
    # the softmax over the tokens the grammar allows at each position
    model, state = load_model(tmp_path / "r")
    sets, codec = open_datasets(data.datasets)
    recs = list(heldout_records(sets, data.heldout))
    assert ev["images"] == len(recs) > 0
    bits, n, jpeg_bits = 0.0, 0, 0
    with torch.no_grad():
        for rec in recs:
            n_rec = 0  # positions of this record scored so far
            rd = record_docs(codec, rec, StreamSpec.parse(data.order, block_size=128), record_rng(data.seed, rec.key))
            allowed = stream_masks(codec, rec.meta, rd.stream.plan, rec.tokens[rd.stream.perm].astype(np.int64))
            for d in rd.docs:
                t, c, nc = (torch.from_numpy(d[k])[None] for k in ("idx", "coords", "next_coords"))
                logits, _ = model(t, c, nc)
                logits = logits.double()[0].masked_fill(~torch.from_numpy(allowed[n_rec : n_rec + t.size(1)]), -math.inf)
                logp = torch.log_softmax(logits, -1).gather(1, torch.from_numpy(d["targets"])[:, None])
                bits -= float(logp.sum()) / math.log(2)
                n += t.size(1)
                n_rec += t.size(1)
            jpg = codec.to_jpeg(rec, optimize=True)
            _, comps, _, _ = jpegfile.read_coefficients(jpg, 1 << 20)  # the file holds the record's coefficients
            np.testing.assert_array_equal(dct.from_components(codec.coefficients(rec)[0], comps), codec.coefficients(rec)[1])
            jpeg_bits += 8 * (len(jpg) - jpg.index(b"\xff\xda") - 2 - int.from_bytes(jpg[jpg.index(b"\xff\xda") + 2:][:2], "big") - 2)
    assert ev["bits_per_token"] == pytest.approx(bits / n, rel=1e-4)
    assert ev["bits_per_image"] == pytest.approx(bits / len(recs), rel=1e-4)
    assert ev["tokens_per_image"] + 1 == pytest.approx(n / len(recs)) == ev["steps_per_image"]  # and EOS
    assert ev["order_bits"] == 0 and ev["parallel"] == "none"
    assert ev["jpeg_bits_per_image"] == pytest.approx(jpeg_bits / len(recs))


def _torchrun(ds, out, *extra):
    # --standalone: torchrun picks free ports itself (fixed ones clashed with a run that had just used them)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vistok.cli", "train", str(ds), "--out", str(out), "--block-size", "128", "--order", "random",
           "--batch-size", "2", "--max-steps", "6", "--warmup", "1", "--eval-every", "0", "--ckpt-every", "3",
           "--workers", "0", "--heldout", "0.2", "--log-every", "1", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _rank_losses(run) -> dict[int, list[float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["rank_loss_bits"] for r in rows if "rank_loss_bits" in r}


@pytest.mark.slow
@pytest.mark.parametrize("packed", [False, True])
def test_two_gloo_ranks_halted_and_resumed_reproduce_each_ranks_loss_curve(small_dataset, tmp_path, packed):
    """Each rank reads its own part of the data, so each rank's loader position is checkpointed (a packed
    store's mixing generator and partial row are per rank); a resumed run gives every rank's loss again."""
    ds = small_dataset
    if packed:
        from vistok.pipelines.pack import pack

        ds = pack(small_dataset, tmp_path / "d.zarr")
    proc = _torchrun(ds, tmp_path / "full")
    assert "x 2 ranks" in proc.stderr
    _torchrun(ds, tmp_path / "resumed", "--halt-at", "5")
    state = json.loads((latest_checkpoint(tmp_path / "resumed") / "state.json").read_text())
    assert state["step"] == 3 and len(state["loader_ranks"]) == 2
    assert state["loader_ranks"][0]["starts"] != state["loader_ranks"][1]["starts"]  # each rank's own lanes
    _torchrun(ds, tmp_path / "resumed", "--resume")
    full, resumed = _rank_losses(tmp_path / "full"), _rank_losses(tmp_path / "resumed")
    assert sorted(full) == list(range(1, 7)) and full == resumed
    assert all(a != b for a, b in full.values())  # the ranks saw different rows
    # elastic: one process with the whole global batch continues where the two gloo ranks left off
    data = DataConfig(**{**state["data"], "batch_size": 4})
    one = Loader(data)
    one.load_state_dict(merge_states(state["loader_ranks"]))
    ranks = [Loader(DataConfig(**state["data"]), rank=r, world=2) for r in range(2)]
    for _ in range(3):
        [rank.next() for rank in ranks]
    for _ in range(3):
        got, parts = one.next(), [rank.next() for rank in ranks]
        for k in got:
            assert torch.equal(got[k], torch.cat([p[k] for p in parts])), k
    with pytest.raises(UsageError, match="global batch is 4 rows"):  # 1 x 2 rows is not the checkpoint's batch
        data, cfg = _cfgs(ds, tmp_path / "resumed", order="random", max_steps=9)
        train(replace(data, batch_size=2), cfg, resume=True, quiet=True)


def test_a_time_budget_holds_when_steps_are_slow(small_dataset, tmp_path, monkeypatch):
    """0.4 s steps under a 6 s budget: fitting at step 30 would take 12 s; the fit comes once 10% of the budget
    is spent, and the run stops at the budget whatever was planned."""
    import time

    from vistok.train import trainer

    real = trainer.train_step

    def slow_step(*args):
        time.sleep(0.4)
        return real(*args)

    monkeypatch.setattr(trainer, "train_step", slow_step)
    data, cfg = _cfgs(small_dataset, tmp_path / "r", max_steps=1000, max_minutes=0.1, ckpt_every=1000)
    out = train(data, cfg, quiet=True)
    assert 6 <= out["step"] < 15
    assert 4.5 <= out["last"]["elapsed_s"] <= 6.6  # never 10% over the budget (and most of it used)
    assert latest_checkpoint(tmp_path / "r").name == f"step-{out['step']:06d}"  # the last step is saved


def test_no_held_out_records_turns_periodic_eval_off_before_step_1(small_dataset, tmp_path):
    import io

    data, cfg = _cfgs(small_dataset, tmp_path / "r", max_steps=4, eval_every=2)
    data.heldout = 0.0
    log = io.StringIO()
    train(data, cfg, progress=log)
    assert log.getvalue().splitlines()[0].startswith("no held-out records (--heldout 0.0")
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 4 and not any("eval_bits_per_token" in r for r in rows)


def test_stored_gradwalk_order_trains_and_draws(tmp_path):
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.shards.reader import Dataset
    from vistok.shards.render import draw_order

    res = run_job(["sample"], tmp_path / "ds", JpegCodec(), Preprocess(size=48, crops=2), shard_size=8,
                  executor="local", quiet=True, store_orders=("gradwalk:max", "gradwalk:min"))
    ds = Dataset(res.folder)
    rec = next(iter(ds))
    assert set(rec.orders) == {"gradwalk-max", "gradwalk-min"}
    assert sorted(rec.orders["gradwalk-max"]) == list(range(9))  # 3x3 MCUs
    for order in ("gradwalk:max", "randsac:5,2", "hilbert"):
        img = draw_order(ds.codec, rec, order)
        assert img.size[0] >= 48
    data, cfg = _cfgs(res.folder, tmp_path / "r", order="gradwalk:min", max_steps=2)
    train(data, cfg, quiet=True)
    assert latest_checkpoint(tmp_path / "r").name == "step-000002"
    ev = evaluate(tmp_path / "r", split="all")  # the walk is side information: its bits are counted
    assert ev["order_bits"] > 0 and ev["bits_per_image"] > ev["order_bits"]
    from vistok.train.sample import sample_run

    assert sample_run(tmp_path / "r", 2, tmp_path / "s.png").exists()  # along walks of the dataset's images


def test_store_training_resumes_exactly(small_dataset, tmp_path, logged_losses):
    from vistok.pipelines.pack import pack

    store = pack(small_dataset, tmp_path / "d.zarr")
    data, cfg = _cfgs(store, tmp_path / "full", order="randsac:4,2")
    train(data, cfg, quiet=True)
    data, cfg = _cfgs(store, tmp_path / "resumed", order="randsac:4,2", halt_at=7)
    train(data, cfg, quiet=True)
    ck = json.loads((latest_checkpoint(tmp_path / "resumed") / "state.json").read_text())
    assert min(k for k, _ in ck["loader"]["starts"].values()) > 0  # each lane's position, not a replay count
    data, cfg = _cfgs(store, tmp_path / "resumed", order="randsac:4,2")
    train(data, cfg, resume=True, quiet=True)
    assert logged_losses(tmp_path / "full") == logged_losses(tmp_path / "resumed")
    ev = evaluate(tmp_path / "full")
    assert ev["bits_per_token"] > 0 and ev["model_to_jpeg_ratio"] > 0


def test_eval_scores_a_separate_test_set_whole(small_dataset, tmp_path):
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.shards.reader import Dataset

    data, cfg = _cfgs(small_dataset, tmp_path / "r", max_steps=2)
    train(data, cfg, quiet=True)
    own = evaluate(tmp_path / "r")
    held = [r for r in Dataset(small_dataset) if is_heldout(r.key, data.heldout)]
    assert own["split"] == "heldout" and own["images"] == len(held)
    other = run_job(["sample"], tmp_path / "test", JpegCodec(quality=20), Preprocess(size=32, crops=1, seed=5),
                    shard_size=16, compress=True, executor="local", quiet=True)
    ev = evaluate(tmp_path / "r", [str(other.folder)])
    assert ev["split"] == "all" and ev["images"] == other.samples == 24  # not only its keys in the run's split
    both = evaluate(tmp_path / "r", [str(small_dataset), str(other.folder)])
    assert both["split"] == "heldout+all" and both["images"] == len(held) + 24
    # checkpoints written before they named their datasets: the hashes come from the training folders
    from vistok.train.evaluate import training_hashes

    assert training_hashes({}, data) == {Dataset(small_dataset).manifest.config_hash}


def test_sample_and_compress_use_the_size_every_training_record_shares(tmp_path):
    """32x32 files sharded with --resize none: the manifest says every record is 32x32, so `sample` needs no
    --size and a compressed file leaves the size out; a dataset of mixed sizes says none."""
    from PIL import Image

    from vistok.media.preprocess import Preprocess
    from vistok.media.sources import decode_image, sample_files
    from vistok.pipelines.job import run_job
    from vistok.train.compress import Coder
    from vistok.train.container import container_bytes
    from vistok.train.sample import sample_run

    for i, f in enumerate(sample_files()[:6]):
        (tmp_path / "in").mkdir(exist_ok=True)
        Image.fromarray(decode_image(f.read_bytes())[:32, :32]).save(tmp_path / "in" / f"{i}.png")
    res = run_job([str(tmp_path / "in")], tmp_path / "ds", JpegCodec(), Preprocess(resize="none"), shard_size=4,
                  executor="local", quiet=True)
    assert res.manifest.geometry == {"height": 32, "width": 32, "components": 3, "subsampling": "420"}
    data, cfg = _cfgs(res.folder, tmp_path / "r", max_steps=1)
    train(data, cfg, quiet=True)
    assert sample_run(tmp_path / "r", 2, tmp_path / "s.png").exists()
    coder = Coder.load(tmp_path / "r")
    ((_, blob),) = coder.compress([next(iter(Dataset(res.folder)))])
    assert container_bytes(blob) == 16
    Image.fromarray(decode_image(sample_files()[0].read_bytes())[:40, :24]).save(tmp_path / "in" / "odd.png")
    mixed = run_job([str(tmp_path / "in")], tmp_path / "mixed", JpegCodec(), Preprocess(resize="none"), shard_size=4,
                    executor="local", quiet=True)
    assert mixed.manifest.geometry is None and "geometry" not in json.loads((mixed.folder / "manifest.json").read_text())


def test_a_run_folder_is_never_overwritten_and_resume_extends_it(small_dataset, tmp_path, logged_losses):
    """train --out on a run refuses (eval would score the old model); --resume --max-steps N extends it, its
    cosine stretched to end at N; resumed at its end it trains nothing and says so."""
    data, cfg = _cfgs(small_dataset, tmp_path / "r", max_steps=4)
    train(data, cfg, quiet=True)
    before = (tmp_path / "r" / "config.json").read_text()
    with pytest.raises(UsageError, match="holds a run already: pass --resume"):
        train(*_cfgs(small_dataset, tmp_path / "r", max_steps=2), quiet=True)
    assert (tmp_path / "r" / "config.json").read_text() == before
    res = train(*_cfgs(small_dataset, tmp_path / "r", max_steps=0), resume=True, quiet=True)
    assert res["step"] == res["planned"] == 4 and "step" not in res["last"]  # nothing to do, no NaN loss
    res = train(*_cfgs(small_dataset, tmp_path / "r", max_steps=7), resume=True, quiet=True)
    assert res["step"] == 7 and sorted(logged_losses(tmp_path / "r")) == list(range(1, 8))
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in rows}
    assert lr[5] > lr[6] > lr[7] > cfg.lr * cfg.min_lr_ratio  # decaying again, toward the new end
    with pytest.raises(UsageError, match="behind the checkpoint's step 7"):
        train(*_cfgs(small_dataset, tmp_path / "r", max_steps=5), resume=True, quiet=True)


def test_bad_data_options_are_refused_before_step_1(small_dataset, tmp_path):
    for kw, says in (({"heldout": 1.0}, "--heldout 1.0: must be a fraction"), ({"heldout": -0.5}, "--heldout -0.5"),
                     ({"batch_size": 0}, "--batch-size 0"), ({"weights": [1, -1]}, "--weights: 2 weights for 1"),
                     ({"stride": 999}, "--stride 999")):
        data, cfg = _cfgs(small_dataset, tmp_path / "x")
        with pytest.raises(UsageError, match=says):
            train(DataConfig(**{**data.to_json(), **kw}), cfg, quiet=True)
    data, cfg = _cfgs(small_dataset, tmp_path / "y")
    data = DataConfig(**{**data.to_json(), "weights": [0.0]})
    with pytest.raises(UsageError, match="positive sum"):
        train(data, cfg, quiet=True)


def test_a_dataset_held_out_whole_is_refused_not_a_hang(small_dataset, tmp_path):
    """--heldout 0.99 leaves no training record in a small dataset: one clear error, not an endless loader."""
    from vistok.errors import DatasetError

    data, cfg = _cfgs(small_dataset, tmp_path / "r")
    with pytest.raises(DatasetError, match=r"every record of .* is held out \(--heldout 0.99\)"):
        train(DataConfig(**{**data.to_json(), "heldout": 0.99}), cfg, quiet=True)


def test_sigint_writes_a_checkpoint_and_resume_continues(small_dataset, tmp_path):
    """Ctrl-C (to the whole process group) or SIGTERM mid-run: a checkpoint at the step it stopped, exit 130 and
    how to resume; --resume then goes on from there."""
    import signal
    import time

    run = tmp_path / "r"
    for sig in (signal.SIGINT, signal.SIGTERM):
        args = [sys.executable, "-m", "vistok.cli", "train", str(small_dataset), "--out", str(run), "--max-steps",
                "100000", "--block-size", "128", "--batch-size", "2", "--eval-every", "0", "--log-every", "1", "-q"]
        if sig == signal.SIGTERM:
            args.append("--resume")
        proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, start_new_session=True)
        metrics, start = run / "metrics.jsonl", len(_steps(run))
        deadline = time.monotonic() + 120
        while len(_steps(run)) < start + 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        step = max(_steps(run))
        assert f"interrupted at step {step}: checkpoint {run}/step-{step:06d} written" in err and "--resume" in err
        assert latest_checkpoint(run).name == f"step-{step:06d}" and metrics.exists()


def _steps(run) -> list[int]:
    path = run / "metrics.jsonl"
    return [json.loads(x)["step"] for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
