"""A real two-node Ray cluster on localhost for tests: `ray start --head`, a second `ray start --address`, one
CPU each, stopped on exit."""

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def two_node_cluster(tmp: Path):
    """Yields (address, env): the environment a driver needs to join (Ray >= 2.59 turns token authentication
    on for local clusters, so head, worker and driver share one token)."""
    ray = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    token = tmp / "ray_token"
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
        yield addr, env
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
