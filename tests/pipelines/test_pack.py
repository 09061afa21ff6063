import json
import subprocess
import sys

import numpy as np

from vistok.executors import ExecutorConfig
from vistok.pipelines.pack import pack
from vistok.shards.reader import Dataset
from vistok.shards.store import PackedStore


def test_pack_is_deterministic_across_task_splits_and_executors(gradwalk_dataset, tmp_path, small_chunks, folder_bytes):
    a = pack(gradwalk_dataset, tmp_path / "a.zarr", samples_per_task=8)
    b = pack(gradwalk_dataset, tmp_path / "b.zarr", samples_per_task=64)
    c = pack(gradwalk_dataset, tmp_path / "c.zarr", ExecutorConfig("ray", 2), samples_per_task=16)
    assert folder_bytes(a) == folder_bytes(b) == folder_bytes(c)




def test_cli_pack_inspect_decode(gradwalk_dataset, tmp_path):
    def run(*args):
        p = subprocess.run([sys.executable, "-m", "vistok.cli", *map(str, args)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return p.stdout

    run("pack", gradwalk_dataset, "--out", tmp_path / "s.zarr")
    s = json.loads(run("inspect", tmp_path / "s.zarr", "--json"))
    assert s["kind"] == "store" and s["samples"] == 72
    key = PackedStore(tmp_path / "s.zarr")[5].key
    run("decode", tmp_path / "s.zarr", "--key", key, "--out", tmp_path / "x.png")
    ref = Dataset(gradwalk_dataset).get(key)
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), Dataset(gradwalk_dataset).codec.decode(ref))
