"""A real two-node Ray cluster on localhost: `ray start --head`, a second `ray start --address`, one CPU each."""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_node_cluster_writes_the_same_shards_as_a_local_run(tmp_path, folder_bytes, s3):
    """...to a folder, and to a bucket with no folder shared between the nodes (moto's S3 on localhost)."""
    bucket, opts, fs = s3
    ray = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    # Ray >= 2.59 turns token authentication on for local clusters: give head, worker and driver one token.
    token = tmp_path / "ray_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    try:
        subprocess.run([ray, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                        "--include-dashboard", "false", *common], check=True, capture_output=True, env=env, timeout=180)
        subprocess.run([ray, "start", "--address", addr, "--node-ip-address", "127.0.0.1", *common], check=True,
                       capture_output=True, env=env, timeout=180)
        deadline = time.monotonic() + 60
        while True:  # the second node registers asynchronously
            status = subprocess.run([ray, "status", "--address", addr], capture_output=True, text=True, env=env, timeout=60)
            if status.stdout.count(" node_") >= 2 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert status.stdout.count(" node_") >= 2, status.stdout
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
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
