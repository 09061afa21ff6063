"""A real two-node Ray cluster on localhost: `ray start --head`, a second `ray start --address`, one CPU each."""

import subprocess
import sys

import pytest

from tests.ray_cluster import two_node_cluster


@pytest.mark.slow
def test_two_node_cluster_writes_the_same_shards_as_a_local_run(tmp_path, folder_bytes, s3):
    """...to a folder, and to a bucket with no folder shared between the nodes (moto's S3 on localhost)."""
    bucket, opts, fs = s3
    with two_node_cluster(tmp_path) as (addr, env):
        args = ["sample", "--size", "32", "--crops", "3", "--shard-size", "12", "-q"]
        cmd = [sys.executable, "-m", "vistok.cli", "shard", *args]
        subprocess.run([*cmd, "--out", str(tmp_path / "cluster"), "--address", addr], check=True, capture_output=True,
                       env=env, timeout=600)
        subprocess.run([*cmd, "--out", str(tmp_path / "local"), "--executor", "local"], check=True,
                       capture_output=True, env=env, timeout=600)
        assert folder_bytes(tmp_path / "cluster") == folder_bytes(tmp_path / "local")
        subprocess.run([*cmd, "--out", f"{bucket}/cluster", "--address", addr, "--storage-options", opts], check=True,
                       capture_output=True, env=env, timeout=600)
        fs.invalidate_cache()
        prefix = f"{bucket.removeprefix('s3://')}/cluster"
        objects = {p[len(prefix) + 1 :]: fs.cat_file(p) for p in fs.find(prefix)}
        assert objects == folder_bytes(tmp_path / "local")
        for name in ("manifest.json", "stats/shard-000001.json", "stats/shard-000003.json"):
            fs.rm_file(f"{prefix}/{name}")  # as if killed: the cluster redoes those shards only
        subprocess.run([*cmd, "--out", f"{bucket}/cluster", "--address", addr, "--storage-options", opts], check=True,
                       capture_output=True, env=env, timeout=600)
        fs.invalidate_cache()
        assert {p[len(prefix) + 1 :]: fs.cat_file(p) for p in fs.find(prefix)} == folder_bytes(tmp_path / "local")
