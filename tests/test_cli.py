import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vistok.shards.reader import Dataset


def vistok(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "vistok.cli", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"vistok {args} exited {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ds"
    vistok("shard", "sample", "--size", "32", "--crops", "2", "--shard-size", "10", "--executor", "local", "--out", out)
    return out


def test_help_lists_commands():
    out = vistok("--help").stdout
    for cmd in ("shard", "inspect", "decode", "train", "eval", "sample", "probe", "study", "compress", "decompress"):
        assert cmd in out


def test_study_command_defaults_are_the_study_modules():
    """`vistok study` (make study) and `vistok.study.StudyConfig` have the same default grid and budget."""
    import inspect

    from vistok import cli
    from vistok.study import StudyConfig

    d, params = StudyConfig(), inspect.signature(cli.study).parameters
    assert params["orders"].default == ",".join(d.orders) and params["steps"].default == d.steps
    assert params["parallel"].default == ",".join(p or "none" for p in d.parallel)
    for name in ("size", "batch_size", "preset", "probe_train", "probe_test", "finetune", "finetune_images", "seeds", "psnr",
                 "executor", "row_cpus"):
        assert params[name].default == getattr(d, name), name


def test_inspect_json(dataset):
    s = json.loads(vistok("inspect", dataset, "--json").stdout)
    assert s["samples"] == len(list(Dataset(dataset))) > 0
    assert s["errors"] == 0 and 0 < s["unigram_entropy_bits"] < np.log2(s["vocab_size"])
    assert s["tokens_per_sample"]["p50"] <= s["tokens_per_sample"]["p95"] <= s["tokens_per_sample"]["max"]
    assert s["bytes_per_sample"] > 0
    assert "samples" in vistok("inspect", dataset).stdout


def test_decode_png_jpg_and_all(dataset, tmp_path):
    ds = Dataset(dataset)
    rec = next(iter(ds))
    vistok("decode", dataset, "--key", rec.key, "--out", tmp_path / "a.png")
    vistok("decode", dataset, "--key", rec.key, "--out", tmp_path / "a.jpg")
    png = np.asarray(Image.open(tmp_path / "a.png"))
    assert png.shape == (32, 32, 3)
    with Image.open(tmp_path / "a.jpg") as im:
        assert im.format == "JPEG" and im.size == (32, 32)
    vistok("decode", dataset, "--all", "--out-dir", tmp_path / "all")
    assert len(list((tmp_path / "all").glob("*.png"))) == len(ds)


@pytest.mark.parametrize("args", [
    ["inspect", "/no/such/folder"],
    ["shard", "sample", "--out", "/tmp/x", "--codec", "nope"],
    ["shard", "/no/such/file.jpg", "--out", "/tmp/x"],
    ["shard", "sample", "--out", "/tmp/x", "--resize", "sideways", "--size", "8"],
    ["decode", "/no/such/folder", "--key", "k", "--out", "x.png"],
    ["shard", "sample", "--out", "/tmp/x", "--label-from", "folder"],
    ["shard", "fashion-mnist:validation", "--out", "/tmp/x"],
])
def test_misuse_gives_a_message_not_a_traceback(args):
    proc = vistok(*args, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and proc.stderr.strip()


def test_more_loader_workers_than_rows_are_cut_to_the_rows_saying_so(dataset, tmp_path):
    """Loader workers split a batch's rows (lanes) between them: extra workers would idle, so they are cut (the
    number of shards no longer limits them)."""
    proc = vistok("train", dataset, "--out", tmp_path / "run", "--workers", 3, "--batch-size", 2, "--max-steps", 1,
                  "--block-size", 128)
    assert "note: a batch of 2 rows feeds 2 loader worker(s) per rank (--workers 3" in proc.stderr


def test_fail_on_error_exit_code(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.png").write_bytes(b"nope")
    (tmp_path / "in" / "ok.png").write_bytes(_png())
    ok = vistok("shard", tmp_path / "in", "--out", tmp_path / "o1", "--executor", "local", "-q")
    assert "1 errors" in ok.stdout
    bad = vistok("shard", tmp_path / "in", "--out", tmp_path / "o2", "--executor", "local", "-q", "--fail-on-error",
                 check=False)
    assert bad.returncode != 0


def _png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_train_eval_sample_from_the_command_line(dataset, tmp_path):
    run = tmp_path / "run"
    vistok("train", dataset, "--out", run, "--max-steps", "3", "--block-size", "128", "--batch-size", "2",
           "--warmup", "1", "--eval-every", "0", "--workers", "0", "--heldout", "0.3", "--order", "random")
    ev = json.loads(vistok("eval", run, "--json").stdout)
    assert {"bits_per_token", "bits_per_image", "jpeg_bits_per_image", "model_to_jpeg_ratio"} <= set(ev)
    vistok("sample", run, "--n", "2", "--out", tmp_path / "s.png", "--top-k", "40")
    assert Image.open(tmp_path / "s.png").size[0] > 64
    bad = vistok("train", dataset, "--out", tmp_path / "x", "--order", "sideways", check=False)
    assert bad.returncode != 0 and "unknown order" in bad.stderr and "Traceback" not in bad.stderr
    bad = vistok("train", dataset, "--out", run, "--max-steps", "2", check=False)  # would overwrite the run
    assert bad.returncode == 2 and "holds a run already: pass --resume" in bad.stderr
    for args, says in ((["--order", "freq-major"], "--layout dense"), (["--parallel", "sideways"], "--parallel takes"),
                       (["--order", "randsac:4", "--parallel", "segments"], "variable-length")):
        bad = vistok("train", dataset, "--out", tmp_path / "x", *args, check=False)
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    ev = json.loads(vistok("eval", run, "--json", "--split", "all").stdout)
    assert ev["split"] == "all" and ev["order"] == "random" and ev["parallel"] == "none" and ev["order_bits"] == 0
    bad = vistok("eval", run, "--split", "some", check=False)
    assert bad.returncode == 2 and "'--split'" in bad.stderr and "heldout" in bad.stderr and "Traceback" not in bad.stderr


def test_progress_lines_when_not_a_terminal_and_quiet_silences_them(tmp_path):
    loud = vistok("shard", "sample", "--size", "16", "--shard-size", "8", "--executor", "local", "--no-gzip",
                  "--out", tmp_path / "a")
    assert "shard 24/24 inputs" in loud.stderr and "inputs/s" in loud.stderr and "ETA" in loud.stderr
    quiet = vistok("shard", "sample", "--size", "16", "--shard-size", "8", "--executor", "local", "--no-gzip",
                   "--out", tmp_path / "b", "--quiet")
    assert quiet.stderr == "" and "24 samples" in quiet.stdout
    for cmd in ("shard", "pack", "train", "train-tokenizer"):
        assert "--quiet" in vistok(cmd, "--help").stdout


def test_version_and_usage_errors_are_one_line():
    import vistok as package

    assert vistok("--version").stdout.strip() == f"vistok {package.__version__}"
    for args, says in ((["train", "ds", "--batch-size", "x"], "'--batch-size'"), (["nosuchcommand"], "No such command"),
                       (["train"], "Missing argument"), (["train", "ds", "--weights", "3,x"], "--weights 3,x")):
        bad = vistok(*args, check=False)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("error: "), bad.stderr
    assert "Usage: vistok" in vistok(check=False).stdout  # no command: the help


def test_help_is_plain_text_at_80_columns():
    import os

    env = {**os.environ, "COLUMNS": "80"}
    for cmd in ("shard", "train", "decode", "study"):
        out = subprocess.run([sys.executable, "-m", "vistok.cli", cmd, "--help"], capture_output=True, text=True,
                             env=env).stdout
        assert "--" in out and "╭" not in out and "inspect._empty" not in out and "<bool>" not in out
        assert max(len(line) for line in out.splitlines()) <= 80, cmd
    decode = vistok("decode", "--help").stdout
    assert "[default: .]" not in decode and "<int" not in vistok("train", "--help").stdout
    assert "fashion-mnist:train:12000" in " ".join(vistok("study", "--help").stdout.split())  # no emoji codes


def test_decode_makes_the_output_folder_and_counts_clip_frames(dataset, tmp_path):
    rec = next(iter(Dataset(dataset)))
    vistok("decode", dataset, "--key", rec.key, "--out", tmp_path / "no" / "deep" / "a.png")
    assert (tmp_path / "no" / "deep" / "a.png").exists()
    bad = vistok("decode", dataset, "--key", rec.key, "--out", tmp_path / "a.gif", check=False)
    assert bad.returncode == 2 and ".png, .jpg, .mp4, .264 or .y4m" in bad.stderr
    clips = tmp_path / "clips"
    vistok("shard", "sample-video", "--size", "32", "--clip-len", "4", "--max-clips", "2", "--executor", "local",
           "--out", clips)
    out = vistok("decode", clips, "--all", "--out-dir", tmp_path / "frames").stdout
    n = len(list((tmp_path / "frames").glob("*.png")))
    assert n == 8 and f"wrote {n} files of 2 records" in out


def test_inspect_lists_keys_and_labels_of_folders_and_stores(tmp_path):
    for cls, n in (("cat", 2), ("dog", 3)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    ds = tmp_path / "ds"
    vistok("shard", tmp_path / "imgs", "--label-from", "parent", "--out", ds, "--executor", "local")
    vistok("pack", ds, "--out", tmp_path / "p.zarr")
    want = [(r.key, r.meta["label"]) for r in Dataset(ds)]
    for src in (ds, tmp_path / "p.zarr"):
        out = vistok("inspect", src, "--keys", "--labels").stdout.splitlines()
        assert [tuple(line.split("\t")) for line in out[:-1]] == want and out[-1] == "5 records; classes: cat 2, dog 3"
    assert vistok("inspect", ds, "--keys").stdout.split() == [k for k, _ in want]
    js = json.loads(vistok("inspect", ds, "--keys", "--labels", "--json").stdout)
    assert js["classes"] == {"cat": 2, "dog": 3} and js["keys"][0] == {"key": want[0][0], "label": want[0][1]}


@pytest.mark.slow
def test_a_first_day_off_the_happy_path(dataset, tmp_path):
    """#41's items, each as a new user met it: what they now get instead of silence, a traceback or a wreck."""
    run = tmp_path / "run"
    ok = vistok("train", dataset, "--out", run, "--max-steps", "6", "--block-size", "128", "--batch-size", "2",
                "--workers", "9", "--heldout", "0.3")
    assert "warming up over 1 instead" in ok.stderr  # --warmup 50 >= 6 steps: the LR would never decay
    assert "loader worker(s) per rank (--workers 9 asked for more)" in ok.stderr  # capped, not refused
    assert (run / "step-000003").exists() and "eval_bits_per_token" in ok.stderr  # mid-run ckpt and eval, shown
    ev = vistok("eval", run)
    assert re.search(r"eval \d+/\d+ images", ev.stderr)  # a sign of life
    bad = vistok("compress", run, dataset, "--key", "nothing", "--out", tmp_path / "c", check=False)
    assert bad.returncode == 2 and "no record with key nothing" in bad.stderr and "wrote 0" not in bad.stdout
    Image.fromarray(np.zeros((100, 150, 3), np.uint8)).save(tmp_path / "wide.png")
    note = vistok("compress", run, tmp_path / "wide.png", "--out", tmp_path / "c", "-q")
    assert "images are made 32x32 (center-crop)" in note.stderr
    vistok("compress", run, dataset, "--out", tmp_path / "c", "-q")
    files = sorted((tmp_path / "c").glob("*.vtkz"))[:3]
    broken = tmp_path / "broken.vtkz"
    broken.write_bytes(b"garbage" * 10)
    out = vistok("decompress", run, files[0], broken, files[1], "--out", tmp_path / "d", "-q", check=False)
    assert out.returncode == 1 and f"error: {broken}: " in out.stderr and "wrote 2 images" in out.stdout
    gone = vistok("shard", tmp_path / "nosuchdir", "--out", tmp_path / "x", check=False)
    assert gone.returncode == 2 and "does not exist" in gone.stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"\x89PNG not really")
    failed = vistok("shard", tmp_path / "junk", "--out", tmp_path / "j", check=False)
    assert failed.returncode == 2 and "every input failed" in failed.stderr and "a.png" in failed.stderr
    empty = vistok("train", tmp_path / "j", "--out", tmp_path / "rj", check=False)
    assert empty.returncode == 1 and "holds no samples" in empty.stderr
    summary = vistok("inspect", tmp_path / "j").stdout
    assert "None" not in summary and "tokens/sample     mean -" in summary
    exact = tmp_path / "exact"
    vistok("shard", "sample", "--codec", "wavelet", "--lossless", "--size", "16", "--out", exact)
    assert "all 3 records exact (lossless)" in vistok("inspect", exact, "--psnr", "3").stdout


def test_a_clip_longer_than_the_model_is_named_by_its_frames():
    from vistok.errors import UsageError
    from vistok.train.data import check_coords

    with pytest.raises(UsageError, match=r"the clips have more frames \(9\) than the model was built for \(8\)"):
        check_coords(np.array([[9, 3, 3]]), [9, 40, 40], ("frame", "row", "col"))
    with pytest.raises(UsageError, match="the images are larger"):
        check_coords(np.array([[1, 50, 3]]), [9, 40, 40], ("frame", "row", "col"))


def test_small_shard_jobs_run_in_process_by_default(tmp_path):
    """--executor auto: a job of a few inputs never starts Ray (seconds of start-up for a second of work)."""
    code = ("import sys; sys.modules['ray'] = None\n"  # importing Ray would fail: the job must not need it
            "from vistok.cli import main\nmain(sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", code, "shard", "sample", "--size", "16", "--out", str(tmp_path / "d")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "24 samples" in proc.stdout, proc.stderr
