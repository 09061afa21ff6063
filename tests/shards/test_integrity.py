"""Damaged copies of a small dataset, in many ways: `verify`, `train`, `eval`, `pack` and the API each name the
damaged shard in one line, with no traceback, no hang, bounded memory and the documented exit codes."""

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

import vistok
from vistok.errors import DamagedShard, DatasetError, VistokError
from vistok.media.preprocess import Preprocess
from vistok.pipelines.job import run_job
from vistok.pipelines.pack import pack
from vistok.record import npy_bytes
from vistok.shards.integrity import HEADER, parse_head
from vistok.shards.reader import Dataset
from vistok.tokenize.base import get_codec
from vistok.train.data import DataConfig
from vistok.train.evaluate import evaluate
from vistok.train.trainer import TrainConfig, train

VICTIM = "shard-000001.tar.gz"  # the shard each damage is done to


def cli(*args, timeout=240):
    proc = subprocess.run([sys.executable, "-m", "vistok.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)  # a hang fails the test
    return proc


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    for name, codec in (("good", {"id": "jpeg", "quality": 20}), ("q50", {"id": "jpeg", "quality": 50}),
                        ("wavelet", {"id": "wavelet"})):  # gzipped shards, as `vistok shard` writes by default
        run_job(["sample"], root / name, get_codec(codec), Preprocess(size=32, crops=2), shard_size=6, compress=True,
                executor="local", quiet=True)
    return root


@pytest.fixture(scope="module")
def run(sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    train(DataConfig(datasets=[str(sets / "good")], block_size=256, batch_size=2, num_workers=0),
          TrainConfig(out=str(out), preset="tiny", max_steps=2, eval_every=0, warmup=1), quiet=True)
    return out


# --- ways to damage a copy ----------------------------------------------------------------------------------
def members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]


def rewrite(ds: Path, name: str, new_members: list[tuple[str, bytes]], fix_manifest: bool = True) -> None:
    """Write shard `name` anew from `new_members`; with `fix_manifest` its entry gets the new bytes and sha256,
    as a tool that rewrote it carelessly would leave it: only the member checks can tell."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tf:
        for mname, data in new_members:
            ti = tarfile.TarInfo(mname)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    data = buf.getvalue()
    (ds / name).write_bytes(data)
    if fix_manifest:
        m = json.loads((ds / "manifest.json").read_text())
        for s in m["shards"]:
            if s["name"] == name:
                s["bytes"], s["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        (ds / "manifest.json").write_text(json.dumps(m))


def replace_member(ds: Path, suffix: str, data: bytes) -> None:
    """The first record's `suffix` member of the victim shard replaced by `data`."""
    ms = members(ds / VICTIM)
    i = next(i for i, (n, _) in enumerate(ms) if n.endswith("." + suffix))
    ms[i] = (ms[i][0], data)
    rewrite(ds, VICTIM, ms)


def truncate(ds, sets):
    p = ds / VICTIM
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def bit_flip(ds, sets):
    p = ds / VICTIM
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x10
    p.write_bytes(bytes(b))


def from_other_quality(ds, sets):
    shutil.copy(sets / "q50" / VICTIM, ds / VICTIM)


def from_other_codec(ds, sets):
    shutil.copy(sets / "wavelet" / VICTIM, ds / VICTIM)


def swapped_within(ds, sets):
    shutil.copy(ds / "shard-000002.tar.gz", ds / VICTIM)


def missing(ds, sets):
    (ds / VICTIM).unlink()


def headerless_foreign_tar(ds, sets):
    rewrite(ds, VICTIM, [(n, d) for n, d in members(ds / VICTIM) if n != HEADER], fix_manifest=False)


def foreign_member(ds, sets):
    rewrite(ds, VICTIM, members(ds / VICTIM) + [("readme.txt", b"hello")])


def not_npy(ds, sets):
    replace_member(ds, "tokens.npy", np.random.default_rng(0).bytes(300))


def bad_npy_header(ds, sets):
    replace_member(ds, "tokens.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': <garbage" + b" " * 20)


def huge_shape(ds, sets):
    header = "{'descr': '<u2', 'fortran_order': False, 'shape': (4000000000,), }"
    header += " " * (118 - len(header)) + "\n"
    replace_member(ds, "tokens.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64)


def pickled(ds, sets):
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    replace_member(ds, "tokens.npy", buf.getvalue())


def float_tokens(ds, sets):
    replace_member(ds, "tokens.npy", npy_bytes(np.linspace(0, 5, 40)))


def out_of_vocab(ds, sets):
    replace_member(ds, "tokens.npy", npy_bytes(np.full(40, 65000, dtype=np.uint16)))


def bad_json(ds, sets):
    replace_member(ds, "json", b"{not json")


def garbage_manifest(ds, sets):
    (ds / "manifest.json").write_bytes(b"\x00\x01garbage")


def damaged_manifest(ds, sets):
    m = json.loads((ds / "manifest.json").read_text())
    m["shards"] = {"oops": 1}
    (ds / "manifest.json").write_text(json.dumps(m))


# damage -> (what the message says, the shard it names: None for the manifest)
DAMAGES = {
    truncate: ("truncated", VICTIM),
    bit_flip: ("sha256|not a complete tar|malformed|not an .npy|not valid JSON", VICTIM),
    from_other_quality: ("another dataset", VICTIM),
    from_other_codec: ("another dataset", VICTIM),
    swapped_within: ("shard-000002.tar.gz's records", VICTIM),
    missing: ("missing", VICTIM),
    headerless_foreign_tar: ("no vistok header", VICTIM),
    foreign_member: ("readme.txt is not a vistok record member", VICTIM),
    not_npy: ("not an .npy array", VICTIM),
    bad_npy_header: ("broken .npy header", VICTIM),
    huge_shape: (r"declares shape \(4000000000,\)", VICTIM),
    pickled: ("pickled", VICTIM),
    float_tokens: ("float64 values, not integer tokens", VICTIM),
    out_of_vocab: ("outside the vocabulary", VICTIM),
    bad_json: ("not valid JSON", VICTIM),
    garbage_manifest: ("not valid JSON", None),
    damaged_manifest: ("damaged manifest", None),
}
IDS = [f.__name__ for f in DAMAGES]


@pytest.fixture(params=list(DAMAGES), ids=IDS)
def damaged(request, sets, tmp_path):
    ds = tmp_path / "copy"
    shutil.copytree(sets / "good", ds)
    request.param(ds, sets)
    return ds, *DAMAGES[request.param]


def named(text: str, words: str, shard: str | None) -> bool:
    import re

    return re.search(words, text) is not None and (shard is None or shard in text)


def test_the_sound_dataset_verifies_and_webdataset_skips_the_header(sets):
    proc = cli("verify", sets / "good", "--executor", "local")
    assert proc.returncode == 0, proc.stderr
    assert "all 8 shards sound" in proc.stdout
    m = json.loads((sets / "good" / "manifest.json").read_text())
    assert m["shard_header"] == HEADER and all(len(s["sha256"]) == 64 for s in m["shards"])
    for s in m["shards"]:  # the manifest's sha256 is the file's, hashed as it was written
        assert hashlib.sha256((sets / "good" / s["name"]).read_bytes()).hexdigest() == s["sha256"]
    head = parse_head((sets / "good" / VICTIM).read_bytes()[:4096], compressed=True)
    assert head == {"config_hash": m["config_hash"], "kind": "vistok-shard", "name": VICTIM}
    import webdataset as wds

    plain = list(wds.WebDataset(str(sets / "good" / VICTIM), shardshuffle=False))
    assert [s["__key__"] for s in plain] == [r.key for r in Dataset(sets / "good") if r.key in {s["__key__"] for s in plain}]


def test_verify_names_each_damage(damaged):
    ds, words, shard = damaged
    proc = cli("verify", ds, "--executor", "local")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert named(proc.stdout + proc.stderr, words, shard), proc.stdout + proc.stderr
    if shard:  # one line per damaged shard: only the victim is named damaged
        lines = [ln for ln in proc.stdout.splitlines() if "shard-0" in ln]
        assert len(lines) == 1 and shard in lines[0], proc.stdout
        assert "1 of 8 shards damaged" in proc.stdout


def test_readers_refuse_each_damage_naming_the_shard(damaged, run):
    """train, eval, pack and the API: a VistokError naming the shard (the CLI prints it as one line)."""
    ds, words, shard = damaged
    with pytest.raises(VistokError) as e:
        train(DataConfig(datasets=[str(ds)], block_size=256, batch_size=2, num_workers=0),
              TrainConfig(out=str(ds.parent / "run"), preset="tiny", max_steps=1, eval_every=0), quiet=True)
    assert named(str(e.value), words, shard), str(e.value)
    assert not (ds.parent / "run" / "step-000001").exists()  # refused before (or at) the damage, no step done
    with pytest.raises(VistokError) as e:
        evaluate(run, [str(ds)], split="all")
    assert named(str(e.value), words, shard), str(e.value)
    with pytest.raises(VistokError) as e:
        list(vistok.open_dataset(ds))
    assert named(str(e.value), words, shard), str(e.value)
    with pytest.raises(VistokError) as e:
        pack(ds, ds.parent / "p.zarr")
    assert named(str(e.value), words, shard), str(e.value)


@pytest.mark.parametrize("damage", [truncate, from_other_quality, float_tokens], ids=lambda f: f.__name__)
def test_cli_train_and_eval_print_one_line(damage, sets, run, tmp_path):
    ds = tmp_path / "copy"
    shutil.copytree(sets / "good", ds)
    damage(ds, sets)
    words, shard = DAMAGES[damage]
    for args in (("train", ds, "--out", tmp_path / "r", "--max-steps", "1", "--block-size", "256",
                  "--batch-size", "2", "--eval-every", "0", "-q"),  # one loader worker: its error reaches us whole
                 ("eval", run, ds, "--split", "all")):
        proc = cli(*args)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: ") and named(proc.stderr, words, shard), proc.stderr


def test_skip_damaged_goes_on_and_records_the_shard(sets, run, tmp_path):
    ds = tmp_path / "copy"
    shutil.copytree(sets / "good", ds)
    truncate(ds, sets)
    bad = tmp_path / "copy2"
    shutil.copytree(sets / "good", bad)
    float_tokens(bad, sets)  # found only while reading
    out = tmp_path / "r"
    res = train(DataConfig(datasets=[str(ds), str(bad)], block_size=256, batch_size=2, num_workers=0),
                TrainConfig(out=str(out), preset="tiny", max_steps=2, eval_every=0, warmup=1), quiet=True,
                skip_damaged=True)
    assert res["step"] == 2 and res["skipped_shards"] == 2
    logged = {json.loads(line)["dataset"] for line in (out / "damaged.jsonl").read_text().splitlines()}
    assert logged == {str(ds), str(bad)}
    ev = evaluate(run, [str(ds)], split="all", skip_damaged=True)
    assert ev["skipped_shards"] == [f"{ds}: {VICTIM}"] and ev["images"] == 48 - 6
    rows = vistok.rows(str(bad), block_size=256, skip_damaged=True)
    assert next(iter(rows))["idx"].shape == (256,)


def test_huge_declared_shape_costs_no_memory(sets, tmp_path):
    ds = tmp_path / "copy"
    shutil.copytree(sets / "good", ds)
    huge_shape(ds, sets)
    # the peak of this process's own memory (VmHWM): ru_maxrss would carry over the forking worker's peak
    proc = subprocess.run([sys.executable, "-c", "import re, sys, vistok\n"
                           "try:\n list(vistok.open_dataset(sys.argv[1]))\nexcept vistok.errors.DatasetError as e:\n"
                           " print(e)\n"
                           "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))",
                           str(ds)], capture_output=True, text=True, timeout=120)
    msg, peak_kib = proc.stdout.strip().splitlines()
    assert "declares shape (4000000000,)" in msg
    assert 0 < int(peak_kib) < 1_000_000  # a reader of 8 GB of declared tokens stays well under 1 GB


def test_verify_write_adds_hashes_to_an_older_dataset(sets, tmp_path):
    ds = tmp_path / "old"
    shutil.copytree(sets / "good", ds)
    m = json.loads((ds / "manifest.json").read_text())
    want = [s.pop("sha256") for s in m["shards"]]
    del m["shard_header"]
    for s in m["shards"]:  # shards of an older vistok: no header member
        rewrite(ds, s["name"], [(n, d) for n, d in members(ds / s["name"]) if n != HEADER], fix_manifest=False)
        s["bytes"] = (ds / s["name"]).stat().st_size
    (ds / "manifest.json").write_text(json.dumps(m))
    assert len(list(Dataset(ds))) == 48  # still read: nothing to check it against
    proc = cli("verify", ds, "--write", "--executor", "local")
    assert proc.returncode == 0 and "sha256 of every shard written" in proc.stdout, proc.stdout + proc.stderr
    got = [s["sha256"] for s in json.loads((ds / "manifest.json").read_text())["shards"]]
    assert len(got) == len(want) and all(len(h) == 64 for h in got)
    bit_flip(ds, sets)
    with pytest.raises(DatasetError, match=VICTIM):
        list(Dataset(ds))


def test_damage_travels_between_processes():
    import pickle

    d = DamagedShard("s3://b/ds", "shard-000001.tar", "is truncated", "k")
    e = pickle.loads(pickle.dumps(d))
    assert str(e) == str(d) and e.shard == "shard-000001.tar" and isinstance(e, DatasetError)


def test_verify_runs_on_ray_and_in_object_storage(sets, s3):
    """The same report from Ray tasks, on a copy in a real S3 endpoint (moto), with a truncated shard."""
    bucket, opts, fs = s3
    for p in sorted((sets / "good").rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            fs.pipe_file(f"{bucket[len('s3://'):]}/ds/{p.relative_to(sets / 'good')}", data[:300] if p.name == VICTIM else data)
    for executor in ("local", "ray"):
        proc = cli("verify", f"{bucket}/ds", "--executor", executor, "--workers", "2", "--storage-options", opts, "--json")
        assert proc.returncode == 1, proc.stderr
        report = json.loads(proc.stdout)[0]
        assert [d["shard"] for d in report["damaged"]] == [VICTIM] and "truncated" in report["damaged"][0]["damage"]
        assert report["shards"] == 8 and "Traceback" not in proc.stderr


def test_inspect_reports_damage_it_can_see_without_reading(sets, tmp_path):
    ds = tmp_path / "copy"
    shutil.copytree(sets / "good", ds)
    from_other_quality(ds, sets)
    s = json.loads(cli("inspect", ds, "--json").stdout)
    assert len(s["damaged_shards"]) == 1 and s["damaged_shards"][0].startswith(f"{VICTIM} belongs to another dataset")
    assert json.loads(cli("inspect", sets / "good", "--json").stdout)["damaged_shards"] == []
