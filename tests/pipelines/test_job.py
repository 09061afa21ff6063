import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from vistok.errors import DatasetError, UsageError
from vistok.media.preprocess import Preprocess
from vistok.media.sources import sample_files
from vistok.pipelines.job import run_job
from vistok.shards.reader import Dataset, iter_shards
from vistok.tokenize import JpegCodec


def _photos(tmp_path: Path, n: int = 6) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for p in sample_files()[:n]:
        (src / p.name).write_bytes(p.read_bytes())
    return src


def _broken_corpus(folder: Path) -> dict[str, str]:
    good = simplejpeg.encode_jpeg(np.full((32, 32, 3), 100, np.uint8), quality=80)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(buf, format="PNG")
    files = {
        "zero.jpg": b"",
        "truncated.jpg": good[: len(good) // 3],
        "text.png": b"this is not an image at all\n",
        "bomb.png": buf.getvalue(),  # over the --max-pixels limit used below
        "ok.jpg": good,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {"zero.jpg": "decode", "truncated.jpg": "decode", "text.png": "decode", "bomb.png": "decode"}


def test_local_runs_are_deterministic_and_resume(tmp_path, folder_bytes):
    src = _photos(tmp_path)
    pre = Preprocess(size=32, crops=3, seed=7)
    a = run_job([str(src)], tmp_path / "a", JpegCodec(), pre, shard_size=6, executor="local", quiet=True)
    b = run_job([str(src)], tmp_path / "b", JpegCodec(), pre, shard_size=6, executor="local", quiet=True)
    assert a.samples == 18 and a.shards == 3 and a.errors == 0
    assert folder_bytes(a.folder) == folder_bytes(b.folder)
    # drop a finished shard as if the job had been killed before it: the rerun redoes only that shard
    (b.folder / "stats" / "shard-000002.json").unlink()
    (b.folder / "shard-000002.tar").unlink()
    (b.folder / "manifest.json").unlink()
    before = {p: p.stat().st_mtime_ns for p in b.folder.glob("shard-*")}
    run_job([str(src)], tmp_path / "b", JpegCodec(), pre, shard_size=6, executor="local", quiet=True)
    assert folder_bytes(a.folder) == folder_bytes(b.folder)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    again = run_job([str(src)], tmp_path / "b", JpegCodec(), pre, shard_size=6, executor="local", quiet=True)
    assert again.up_to_date


def test_ray_and_local_executors_write_identical_folders(tmp_path, folder_bytes):
    src = _photos(tmp_path, 4)
    pre = Preprocess(size=48, crops=2)
    a = run_job([str(src)], tmp_path / "local", JpegCodec(), pre, shard_size=2, executor="local", quiet=True)
    b = run_job([str(src)], tmp_path / "ray", JpegCodec(), pre, shard_size=2, executor="ray", workers=2, quiet=True)
    assert a.samples == b.samples == 8
    assert folder_bytes(a.folder) == folder_bytes(b.folder)


def test_broken_inputs_are_recorded_and_the_job_finishes(tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    expected = _broken_corpus(src)
    res = run_job([str(src)], tmp_path / "out", JpegCodec(max_pixels=50_000), Preprocess(size=32, max_pixels=50_000),
                  shard_size=2, executor="local", quiet=True)
    rows = [json.loads(line) for line in (res.folder / "errors.jsonl").read_text().splitlines()]
    assert {Path(r["source"]).name for r in rows} == set(expected)
    assert all(r["reason"] and "\n" not in r["reason"] and r["stage"] and r["error"] for r in rows)
    assert res.samples + res.errors == res.inputs == 5
    assert len(list(Dataset(res.folder))) == res.samples == 1


def test_retry_errors_reprocesses_only_failed_inputs(tmp_path, folder_bytes):
    src = _photos(tmp_path, 3)
    victim = sorted(src.iterdir())[1]
    good, st = victim.read_bytes(), victim.stat()
    victim.write_bytes(b"\0" * len(good))  # same size and mtime: a transient read failure, not a new file
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    kw = dict(shard_size=10, executor="local", quiet=True)
    res = run_job([str(src)], tmp_path / "o", JpegCodec(), Preprocess(size=32), **kw)
    assert res.errors == 1 and res.samples == 2
    victim.write_bytes(good)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    res2 = run_job([str(src)], tmp_path / "o", JpegCodec(), Preprocess(size=32), retry_errors=True, **kw)
    assert res2.errors == 0 and res2.samples == 3
    clean = run_job([str(src)], tmp_path / "clean", JpegCodec(), Preprocess(size=32), **kw)
    assert folder_bytes(clean.folder) == folder_bytes(res2.folder)


def test_retry_errors_after_the_file_is_fixed_and_changed_inputs_are_named(tmp_path, folder_bytes):
    """A user replaces a truncated file (a new size and time): --retry-errors redoes it (the dataset's identity is
    its inputs' names, not their stamps); a plain rerun names the inputs that changed instead of calling the
    folder another configuration; a succeeded input that changed is redone by --retry-errors too."""
    src = _photos(tmp_path, 3)
    victim, other = sorted(src.iterdir())[1], sorted(src.iterdir())[2]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 3])
    kw = dict(shard_size=2, executor="local", quiet=True)
    res = run_job([str(src)], tmp_path / "o", JpegCodec(), Preprocess(size=32), **kw)
    assert res.errors == 1
    victim.write_bytes(good)
    with pytest.raises(UsageError, match=rf"changed since it was made \({src.name}/{victim.name}\): rerun with --retry-errors"):
        run_job([str(src)], tmp_path / "o", JpegCodec(), Preprocess(size=32), **kw)
    res2 = run_job([str(src)], tmp_path / "o", JpegCodec(), Preprocess(size=32), retry_errors=True, **kw)
    assert res2.errors == 0 and res2.samples == 3
    assert run_job([str(src)], tmp_path / "o", JpegCodec(), Preprocess(size=32), **kw).up_to_date
    other.write_bytes(victim.read_bytes())  # a succeeded input replaced by other pixels
    res3 = run_job([str(src)], tmp_path / "o", JpegCodec(), Preprocess(size=32), retry_errors=True, **kw)
    clean = run_job([str(src)], tmp_path / "clean", JpegCodec(), Preprocess(size=32), **kw)
    assert res3.samples == 3 and folder_bytes(clean.folder) == folder_bytes(res3.folder)


def test_a_different_config_never_mixes_into_a_folder(tmp_path):
    src = _photos(tmp_path, 2)
    kw = dict(shard_size=10, executor="local", quiet=True)
    run_job([str(src)], tmp_path / "ds", JpegCodec(quality=20), Preprocess(size=32), **kw)
    with pytest.raises(DatasetError, match=r"different configuration \(codec.quality 20 -> 50\)"):
        run_job([str(src)], tmp_path / "ds", JpegCodec(quality=50), Preprocess(size=32), **kw)
    parent = tmp_path / "shards"
    parent.mkdir()
    (parent / "README").write_text("datasets live here")
    r1 = run_job([str(src)], parent, JpegCodec(quality=20), Preprocess(size=32), **kw)
    r2 = run_job([str(src)], parent, JpegCodec(quality=50), Preprocess(size=32), **kw)
    assert r1.folder.parent == r2.folder.parent == parent and r1.folder != r2.folder
    assert r1.folder.name.startswith("jpeg-")


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_uninterrupted_folder(tmp_path, folder_bytes):
    args = ["sample", "--size", "32", "--crops", "40", "--shard-size", "20", "--executor", "local", "-q"]
    cmd = [sys.executable, "-m", "vistok.cli", "shard", *args]
    subprocess.run([*cmd, "--out", str(tmp_path / "full")], check=True, capture_output=True)
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stats = tmp_path / "killed" / "stats"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(stats.glob("*.json"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(stats.glob("*.json")))
    total = len(list((tmp_path / "full" / "stats").glob("*.json")))
    assert 0 < done < total, "the kill should land mid-job"
    assert not (tmp_path / "killed" / "manifest.json").exists()
    for p in (tmp_path / "killed").glob("shard-*"):  # every visible shard is complete
        assert list(iter_shards([p]))
    subprocess.run([*cmd, "--out", str(tmp_path / "killed")], check=True, capture_output=True)
    assert folder_bytes(tmp_path / "full") == folder_bytes(tmp_path / "killed")


def test_wavelet_lossless_dataset_decodes_exactly(tmp_path):
    from vistok.media.sources import expand_sources, load_image, read_input
    from vistok.record import parse_input_id
    from vistok.tokenize import WaveletCodec

    src = _photos(tmp_path, 3)
    pre = Preprocess(size=40, crops=2, seed=3)
    res = run_job([str(src)], tmp_path / "w", WaveletCodec(lossless=True), pre, shard_size=4, executor="local",
                  quiet=True)
    ds = Dataset(res.folder)
    want = {}
    for iid in expand_sources([str(src)]):
        for key, pix in pre.apply(load_image(read_input(iid)[0]), parse_input_id(iid).key):
            want[key] = pix
    recs = list(ds)
    assert len(recs) == 6
    for rec in recs:
        np.testing.assert_array_equal(ds.codec.decode(rec), want[rec.key])


def test_keys_and_split_do_not_depend_on_where_the_files_live(tmp_path):
    import shutil

    from vistok.train.data import is_heldout

    src = _photos(tmp_path, 4)
    moved = tmp_path / "mounted" / "elsewhere" / "src"
    shutil.copytree(src, moved)  # copy2: the same bytes and modification times, another absolute path
    pre = Preprocess(size=32, crops=2, seed=1)
    a = run_job([str(src)], tmp_path / "a", JpegCodec(), pre, shard_size=4, executor="local", quiet=True)
    b = run_job([str(moved)], tmp_path / "b", JpegCodec(), pre, shard_size=4, executor="local", quiet=True)
    ra, rb = list(Dataset(a.folder)), list(Dataset(b.folder))
    assert len(ra) == 8 and [r.key for r in ra] == [r.key for r in rb]
    assert all(r.key.startswith(Path(sample_files()[0].name).stem) or True for r in ra)
    assert all(np.array_equal(x.tokens, y.tokens) for x, y in zip(ra, rb))  # crops seeded by the key: the same
    assert a.manifest.config_hash == b.manifest.config_hash
    held = [r.key for r in ra if is_heldout(r.key, 0.5)]
    assert held == [r.key for r in rb if is_heldout(r.key, 0.5)]


def _webdataset_tar(path: Path, n: int) -> Path:
    """A WebDataset tar of n small PNGs with a .json beside each."""
    import tarfile

    with tarfile.open(path, "w") as t:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(np.full((16, 16, 3), 7 * i, np.uint8)).save(buf, format="PNG")
            for name, data in ((f"{i:04d}.png", buf.getvalue()), (f"{i:04d}.json", json.dumps({"i": i}).encode())):
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return path


def test_a_tar_is_planned_as_one_input_and_its_task_writes_a_shard_per_shard_size(tmp_path):
    """The driver never reads a tar's members: its task expands them, writing one shard file per
    --shard-size samples; pack, reading and retries see the same dataset as one written shard by shard."""
    from vistok.media.sources import expand_sources
    from vistok.pipelines.job import plan_shards
    from vistok.pipelines.pack import pack
    from vistok.shards.store import PackedStore

    src = tmp_path / "tars"
    src.mkdir()
    _webdataset_tar(src / "a.tar", 23)
    _webdataset_tar(src / "b.tar", 4)
    (src / "c.tar").write_bytes(b"not a tar at all" * 40)
    photos = _photos(tmp_path, 3)
    units = expand_sources([str(src / "*.tar"), str(photos)], defer=True)
    assert len(units) == 6  # three tars, three photos: no member listed
    assert [len(g) for g in plan_shards(units, 2)] == [1, 1, 1, 2, 1]
    res = run_job([str(src / "*.tar"), str(photos)], tmp_path / "ds", JpegCodec(), Preprocess(), shard_size=10,
                  executor="local", quiet=True)
    names = [s["name"] for s in res.manifest.shards]
    assert names == ["shard-000000.tar", "shard-000000-0001.tar", "shard-000000-0002.tar", "shard-000001.tar",
                     "shard-000003.tar"]  # a.tar: 10 + 10 + 3; b.tar: 4; c.tar: none; photos: 3
    assert [s["samples"] for s in res.manifest.shards] == [10, 10, 3, 4, 3]
    assert res.inputs == 23 + 4 + 1 + 3 and res.samples == 30 and res.errors == 1
    rows = [json.loads(r) for r in (res.folder / "errors.jsonl").read_text().splitlines()]
    assert rows[0]["key"].startswith("c-") and "cannot read tar source" in rows[0]["reason"] and rows[0]["error"] == "InputError"
    recs = list(Dataset(res.folder))
    assert [r.meta["source_json"]["i"] for r in recs[:23]] == list(range(23))
    store = PackedStore(pack(res.folder, tmp_path / "p.zarr"))
    assert [store[i].key for i in range(len(store))] == [r.key for r in recs]
    again = run_job([str(src / "*.tar"), str(photos)], tmp_path / "ds", JpegCodec(), Preprocess(), shard_size=10,
                    executor="local", quiet=True, retry_errors=True)
    assert again.samples == 30 and [s["name"] for s in again.manifest.shards] == names


@given(st.lists(st.integers(0, 300), min_size=0, max_size=80), st.integers(1, 5))
def test_length_stats_from_a_histogram_are_numpys_over_every_length(lengths, shards):
    """The manifest's token statistics come from shard-by-shard length histograms, never every length at once."""
    from vistok.pipelines.job import Totals, length_stats

    totals = Totals()
    for k in range(shards):  # the same lengths reported as several shards, in any order
        part = lengths[k::shards]
        totals.add({"index": shards - k, "name": None, "inputs": 0, "errors": 0, "samples": len(part), "bytes": 0,
                    "lengths": part})
    arr = np.asarray(lengths, dtype=np.int64)
    expected = {"total": int(arr.sum())}
    if arr.size:
        expected.update(mean=round(float(arr.mean()), 2), p50=round(float(np.percentile(arr, 50)), 1),
                        p95=round(float(np.percentile(arr, 95)), 1), max=int(arr.max()), min=int(arr.min()))
    assert length_stats(totals.length_counts) == expected and totals.samples == len(lengths)
