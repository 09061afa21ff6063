"""Datasets and inputs in object storage, against a real S3 endpoint (moto in server mode on 127.0.0.1)."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vistok.errors import StorageError
from vistok.media.preprocess import Preprocess
from vistok.media.sources import expand_sources, sample_files
from vistok.pipelines.job import run_job
from vistok.shards.reader import Dataset, iter_shards
from vistok.storage import Cache, Loc, retry
from vistok.tokenize import JpegCodec

CLI = [sys.executable, "-m", "vistok.cli"]


def _objects(fs, url: str) -> dict[str, bytes]:
    """Every object below an s3:// prefix, by relative name -> bytes (listings fresh from the server)."""
    fs.invalidate_cache()
    prefix = url.removeprefix("s3://").rstrip("/")
    return {p[len(prefix) + 1 :]: fs.cat_file(p) for p in sorted(fs.find(prefix))}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, **kw)


# --- the storage layer -----------------------------------------------------------------------------------
def test_retry_tries_again_with_backoff_then_gives_up_with_one_line():
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError("connection reset by peer")
        return "ok"

    assert retry(flaky, "upload x", tries=4, backoff=0.01) == "ok"
    assert len(calls) == 3 and calls[2] - calls[1] >= calls[1] - calls[0] > 0  # waits grow

    def down():
        raise ConnectionError("endpoint down")

    with pytest.raises(StorageError, match=r"upload x \(failed 3 times\): ConnectionError: endpoint down"):
        retry(down, "upload x", tries=3, backoff=0.0)
    missing = []

    def no_bucket():
        missing.append(1)
        raise FileNotFoundError("NoSuchBucket")

    with pytest.raises(StorageError, match="not found"):
        retry(no_bucket, "write y", tries=5, backoff=0.0)
    assert len(missing) == 1  # not transient: no second try
    bugs = []

    def a_bug():
        bugs.append(1)
        return {}["missing key"]

    with pytest.raises(KeyError):  # a programming error is not retried, and keeps its traceback
        retry(a_bug, "write z", tries=5, backoff=0.0)
    assert len(bugs) == 1


def test_locations_behave_the_same_locally_and_in_a_bucket(tmp_path, s3):
    bucket, opts, _ = s3
    for root in (Loc(tmp_path / "d"), Loc(f"{bucket}/d", json.loads(opts)), Loc(f"file://{tmp_path}/e")):
        root.mkdir()
        (root / "stats").mkdir()
        (root / "a.json").write_bytes(b'{"x": 1}')
        (root / "stats" / "s-1.json").write_bytes(b"1")
        (root / "stats" / "s-2.json").write_bytes(b"22")
        assert (root / "a.json").read_bytes(2, 5) == b'x":'
        assert [p.name for p in (root / "stats").glob("s-*.json")] == ["s-1.json", "s-2.json"]
        assert (root / "stats" / "s-2.json").size() == 2 and root.is_dir() and (root / "a.json").is_file()
        (root / "a.json").unlink()
        (root / "a.json").unlink()  # a missing file is fine
        assert not (root / "a.json").exists()
        assert str(root / "x").startswith(str(root).rstrip("/"))


# --- writing ---------------------------------------------------------------------------------------------
def test_shard_to_s3_writes_the_objects_a_local_run_writes_and_resumes(tmp_path, s3):
    """(The two-node cluster test writes to a bucket with Ray, and resumes there too.)"""
    bucket, opts, fs = s3
    kw = dict(shard_size=12, compress=True, executor="local", quiet=True)
    run_job(["sample"], tmp_path / "local", JpegCodec(), Preprocess(size=32, crops=2), **kw)
    res = run_job(["sample"], f"{bucket}/ds", JpegCodec(), Preprocess(size=32, crops=2), storage_options=json.loads(opts),
                  **kw)
    assert str(res.folder) == f"{bucket}/ds" and res.samples == 48
    assert _objects(fs, f"{bucket}/ds") == _files(tmp_path / "local")
    prefix = bucket.removeprefix("s3://") + "/ds"
    for name in ("manifest.json", "stats/shard-000001.json", "stats/shard-000003.json"):
        fs.rm_file(f"{prefix}/{name}")  # as if killed: those shards are not done
    kw["storage_options"] = json.loads(opts)  # passed each time: nothing lingers in the process
    again = run_job(["sample"], f"{bucket}/ds", JpegCodec(), Preprocess(size=32, crops=2), **kw)
    assert not again.up_to_date and _objects(fs, f"{bucket}/ds") == _files(tmp_path / "local")
    assert run_job(["sample"], f"{bucket}/ds", JpegCodec(), Preprocess(size=32, crops=2), **kw).up_to_date


@pytest.mark.slow
def test_kill_9_mid_upload_then_rerun_gives_the_uninterrupted_objects(tmp_path, s3):
    bucket, opts, fs = s3
    args = ["shard", "sample", "--size", "32", "--crops", "40", "--shard-size", "20", "--executor", "local", "-q"]
    assert _run([*args, "--out", str(tmp_path / "full")]).returncode == 0
    proc = subprocess.Popen([*CLI, *args, "--out", f"{bucket}/killed", "--storage-options", opts],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stats = f"{bucket.removeprefix('s3://')}/killed/stats"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        fs.invalidate_cache()
        if fs.exists(stats) and len(fs.ls(stats, refresh=True)) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    objects = _objects(fs, f"{bucket}/killed")
    done = [n for n in objects if n.startswith("stats/")]
    total = len(list((tmp_path / "full" / "stats").glob("*.json")))
    assert 0 < len(done) < total, "the kill should land mid-job"
    assert "manifest.json" not in objects
    for name in done:  # a shard marked done is there in full
        st = json.loads(objects[name])
        if st["name"]:
            assert len(list(iter_shards([Loc(f"{bucket}/killed/{st['name']}", json.loads(opts))]))) == st["samples"]
    rerun = _run([*args, "--out", f"{bucket}/killed", "--storage-options", opts])
    assert rerun.returncode == 0, rerun.stderr
    assert _objects(fs, f"{bucket}/killed") == _files(tmp_path / "full")


@pytest.mark.slow
def test_a_missing_bucket_wrong_credentials_or_no_endpoint_fail_in_one_line_before_any_work(tmp_path, s3):
    from tests.conftest import start_moto

    bucket, opts, fs = s3
    base = ["shard", "sample", "--size", "32", "--executor", "local", "-q"]
    res = _run([*base, "--out", "s3://no-such-bucket/ds", "--storage-options", opts])
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0
    assert "s3://no-such-bucket/ds" in res.stderr and "not found" in res.stderr
    dead = json.dumps({"endpoint_url": "http://127.0.0.1:9", "config_kwargs": {"retries": {"max_attempts": 1}}})
    res = _run([*base, "--out", f"{bucket}/ds", "--storage-options", dead])
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0 and "connect" in res.stderr.lower()
    res = _run([*base, "--out", f"{bucket}/ds", "--storage-options", "{not json"])
    assert res.returncode == 2 and "--storage-options must be a JSON object" in res.stderr
    # an endpoint that checks credentials (moto with authentication on after its first request: the bucket)
    proc, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "1"})
    try:
        import boto3

        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="guarded")  # the one request without a check
        secret = "not-the-right-secret-1234"
        wrong = json.dumps({"endpoint_url": url, "key": "AKIAWRONG", "secret": secret})
        res = _run([*base, "--out", "s3://guarded/ds", "--storage-options", wrong])
        assert res.returncode == 1 and res.stderr.strip().count("\n") == 0, res.stderr
        assert "access denied" in res.stderr or "InvalidAccessKeyId" in res.stderr
        assert secret not in res.stderr + res.stdout
    finally:
        proc.terminate()
    assert not fs.exists(f"{bucket.removeprefix('s3://')}/ds/job.json")  # nothing was started


@pytest.mark.slow
def test_an_upload_that_keeps_failing_is_not_marked_done_and_the_next_run_completes_it(tmp_path, s3, monkeypatch):
    """A real failure: the bucket disappears under the job. The task fails after its retries, nothing is marked
    done, the job exits non-zero without a manifest, and a rerun once the bucket is back completes it."""
    from vistok.pipelines import job

    bucket, opts, fs = s3
    name = bucket.removeprefix("s3://")
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(src / f"p{i}.png")
    real = job.process_shard

    def bucket_vanishes(task):  # after planning, as if another job deleted it
        fs.rm(name, recursive=True)
        return real(task)

    monkeypatch.setattr(job, "process_shard", bucket_vanishes)
    with pytest.raises(StorageError, match="rerun the same command"):
        run_job([str(src)], f"{bucket}/ds", JpegCodec(), Preprocess(), shard_size=10, executor="local",
                quiet=True, storage_options=json.loads(opts))
    monkeypatch.setattr(job, "process_shard", real)
    fs.mkdir(name)
    fs.invalidate_cache()
    assert not fs.find(name)  # nothing marked done
    res = run_job([str(src)], f"{bucket}/ds", JpegCodec(), Preprocess(), shard_size=10, executor="local", quiet=True,
                  storage_options=json.loads(opts))
    assert res.samples == 3 and res.errors == 0


def test_credentials_appear_nowhere_in_the_dataset(tmp_path, s3):
    bucket, _, fs = s3
    secret_opts = {"endpoint_url": json.loads(s3[1])["endpoint_url"], "key": "testing", "secret": "testing-SECRET"}
    res = run_job(["sample"], f"{bucket}/ds", JpegCodec(), Preprocess(size=16), shard_size=100, executor="local",
                  quiet=True, storage_options=secret_opts)
    assert res.samples > 0 and "SECRET" not in repr(res)
    assert not any(b"SECRET" in data for data in _objects(fs, f"{bucket}/ds").values())


# --- inputs ----------------------------------------------------------------------------------------------
def _upload_inputs(tmp_path: Path, fs, bucket: str) -> Path:
    """Four photos as files (one in a subfolder), a WebDataset tar (with an unsafe member) and a list file, locally and in the bucket."""
    local = tmp_path / "in"
    (local / "photos" / "sub").mkdir(parents=True)
    for i, p in enumerate(sample_files()[:4]):  # one of them a folder deeper
        (local / "photos" / ("sub" if i == 3 else "") / p.name).write_bytes(p.read_bytes())
    png = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(png, format="PNG")
    with tarfile.open(local / "web.tar", "w") as t:
        for name, data in (("a.png", png.getvalue()), ("a.json", b'{"caption": "grey"}'), ("../up.png", png.getvalue())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    (local / "list.txt").write_text("photos/astronaut.png\n# a comment\nweb.tar\n")
    fs.put(str(local) + "/", bucket.removeprefix("s3://") + "/in/", recursive=True)
    return local


@pytest.mark.slow
def test_inputs_in_a_bucket_are_named_and_tokenized_as_local_files(tmp_path, s3):
    bucket, opts, fs = s3
    local = _upload_inputs(tmp_path, fs, bucket)
    for remote_src, local_src in ((f"{bucket}/in/photos", str(local / "photos")),
                                  (f"{bucket}/in/photos/*.png", str(local / "photos" / "*.png")),
                                  (f"{bucket}/in/**/*.png", str(local / "**" / "*.png")),
                                  (f"@{bucket}/in/list.txt", f"@{local / 'list.txt'}"),
                                  (f"{bucket}/in/web.tar", str(local / "web.tar"))):
        names = [i.split("\0")[0] for i in expand_sources([remote_src], options=json.loads(opts))]
        assert names == [i.split("\0")[0] for i in expand_sources([local_src])], remote_src
    kw = dict(shard_size=100, executor="local", quiet=True, storage_options=json.loads(opts))
    remote = run_job([f"{bucket}/in/photos", f"{bucket}/in/web.tar"], tmp_path / "r", JpegCodec(), Preprocess(size=32), **kw)
    here = run_job([str(local / "photos"), str(local / "web.tar")], tmp_path / "l", JpegCodec(), Preprocess(size=32), **kw)
    assert remote.samples == here.samples == 5 and remote.errors == here.errors == 1
    pairs = zip(Dataset(remote.folder), Dataset(here.folder), strict=True)
    for a, b in pairs:  # same keys and tokens; only `source` (where it was read) differs
        assert a.key == b.key and np.array_equal(a.tokens, b.tokens)
        assert a.meta["source"].startswith("s3://") and a.meta.get("source_json") == b.meta.get("source_json")
    assert "'..'" in (remote.folder / "errors.jsonl").read_text()  # the unsafe member, accounted for


# --- reading ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_eval_pack_and_inspect_read_a_dataset_in_a_bucket(tmp_path, s3):
    from vistok.pipelines.pack import pack
    from vistok.train.evaluate import evaluate

    bucket, opts, fs = s3
    kw = dict(shard_size=12, compress=True, executor="local", quiet=True)
    run_job(["sample"], f"{bucket}/ds", JpegCodec(), Preprocess(size=32, crops=2), **kw, storage_options=json.loads(opts))
    run_job(["sample"], tmp_path / "ds", JpegCodec(), Preprocess(size=32, crops=2), **kw)
    so = ["--storage-options", opts]
    res = _run(["inspect", f"{bucket}/ds", "--json", *so])
    assert res.returncode == 0 and json.loads(res.stdout)["samples"] == 48, res.stderr
    pack(Loc(f"{bucket}/ds", json.loads(opts)), tmp_path / "p.zarr")
    pack(tmp_path / "ds", tmp_path / "q.zarr")
    assert _files(tmp_path / "p.zarr") == _files(tmp_path / "q.zarr")
    train = ["train", "--max-steps", "4", "--batch-size", "4", "--block-size", "256", "--eval-every", "0", "-q"]
    cache = ["--shard-cache", str(tmp_path / "cache"), "--shard-cache-gb", "0.000004"]
    res = _run([*train, f"{bucket}/ds", "-o", str(tmp_path / "remote"), *so, *cache])
    assert res.returncode == 0, res.stderr
    res = _run([*train, str(tmp_path / "ds"), "-o", str(tmp_path / "local")])
    assert res.returncode == 0, res.stderr
    loss = [json.loads((tmp_path / n / "metrics.jsonl").read_text().splitlines()[-1])["loss_bits"] for n in ("remote", "local")]
    assert loss[0] == loss[1]  # the same stream of batches, streamed from the bucket
    cached = list((tmp_path / "cache").iterdir())
    assert cached and sum(p.stat().st_size for p in cached) <= 4000  # bounded
    remote, here = evaluate(tmp_path / "remote", limit=4, storage_options=json.loads(opts)), evaluate(tmp_path / "local", limit=4)
    assert remote["bits_per_token"] == here["bits_per_token"]


def test_a_remote_shard_is_streamed_and_a_cached_copy_is_read_back(tmp_path, s3):
    bucket, opts, fs = s3
    o = json.loads(opts)
    res = run_job(["sample"], f"{bucket}/ds", JpegCodec(), Preprocess(size=16), shard_size=5, executor="local", quiet=True,
                  storage_options=o)
    ds = Dataset(Loc(f"{bucket}/ds", o))
    first = list(ds)
    cache = Cache(str(tmp_path / "c"), 1 << 30)
    assert [r.key for r in iter_shards(ds.shards, cache)] == [r.key for r in first]
    cached = sorted((tmp_path / "c").iterdir())
    assert len(cached) == res.shards
    shards = ds.shards
    fs.rm(shards[0].path)  # gone from the bucket: the cache still has it
    assert [r.key for r in iter_shards(shards[:1], cache)] == [r.key for r in first[: ds.manifest.shards[0]["samples"]]]
    assert os.path.getsize(cached[0]) > 0


def test_the_trainer_reads_a_bucket_by_position_with_or_without_a_cache(tmp_path, s3):
    """Each shard's index is built by one read; records come from shards read whole into memory (no cache) or
    from the cache's copy: the same batches as from local disk, and the indexes are read once per shard."""
    import torch

    from vistok.train.data import DataConfig, Loader

    bucket, opts, fs = s3
    o = json.loads(opts)
    for where, options in ((f"{bucket}/ds", o), (tmp_path / "ds", None)):
        run_job(["sample"], where, JpegCodec(), Preprocess(size=16, crops=2), shard_size=8, executor="local",
                quiet=True, storage_options=options)
    cfg = DataConfig(datasets=[str(tmp_path / "ds")], block_size=128, batch_size=3, num_workers=0, order="random",
                     shuffle_block=10)
    ref = Loader(cfg)
    want = [ref.next() for _ in range(6)]
    remote = DataConfig(**{**cfg.to_json(), "datasets": [f"{bucket}/ds"]})
    for cache in (None, Cache(str(tmp_path / "cache"), 1 << 30)):
        loader = Loader(remote, options=o, cache=cache)
        for w in want:
            got = loader.next()
            assert all(torch.equal(got[k], w[k]) for k in w), [k for k in w if not torch.equal(got[k], w[k])]
