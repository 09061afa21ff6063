"""A real two-node Ray cluster on localhost for tests: `ray start --head`, a second `ray start --address`, one
CPU each, stopped on exit."""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
    # its own Ray folder (short: socket paths have a length limit), so that no `ray.init()` of this process or
    # another finds it and joins it
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray-cluster-", dir="/tmp")}
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
        stop_cluster(port)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def stop_cluster(port: int) -> None:
    """Kill this cluster's processes only (`ray stop` would end every Ray session on the machine, a test's
    beside it included): those whose command line names its GCS port."""
    marks = (f"127.0.0.1:{port}".encode(), f"--gcs_server_port={port}".encode())
    for _ in range(3):
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if any(m in cmd for m in marks) and int(pid) != os.getpid():
                found.append(int(pid))
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if not found:
            return
        time.sleep(1)
