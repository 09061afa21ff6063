"""Executors: run one function over a stream of small task objects, in-process or as Ray tasks.

They know nothing of shards or stores: a job hands over `fn` (task -> status dict), the tasks, a
callback for every status, and `on_failure` (task, exception -> status) for a task that raised after
its retries. Every task yields exactly one status; nothing is dropped. Both executors call `on_result`
from the driver only, so a callback may print or collect freely.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vistok.errors import UsageError

EXECUTORS = ("ray", "local")

Status = dict[str, Any]


@dataclass(frozen=True)
class ExecutorConfig:
    """`kind`: ray (local Ray by default, a cluster with `address`) or local (in-process, one at a time).
    `workers`: CPUs of a local Ray (default: all). `retries`: Ray retries of a task that raised or died."""

    kind: str = "ray"
    workers: int | None = None
    address: str | None = None
    retries: int = 2

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise UsageError(f"--executor must be ray or local, got {self.kind!r}")


def run_tasks(fn: Callable[[Any], Status], tasks: Iterable[Any], on_result: Callable[[Status], None],
              on_failure: Callable[[Any, BaseException], Status], cfg: ExecutorConfig = ExecutorConfig(),
              gpus: float = 0.0, cpus: float = 1.0, on_submit: Callable[[Any], None] | None = None) -> None:
    """Run `fn` over `tasks` with the executor `cfg` names (see `run_local` and `run_ray`). `on_submit`, when
    given, hears of each task as it is handed to the executor (in-process: as it starts)."""
    if cfg.kind == "local":
        run_local(fn, tasks, on_result, on_failure, on_submit)
    else:
        run_ray(fn, tasks, on_result, on_failure, cfg, gpus, cpus, on_submit)


def run_local(fn: Callable[[Any], Status], tasks: Iterable[Any], on_result: Callable[[Status], None],
              on_failure: Callable[[Any, BaseException], Status], on_submit: Callable[[Any], None] | None = None) -> None:
    for task in tasks:
        if on_submit:
            on_submit(task)
        try:
            status = fn(task)
        except Exception as exc:  # same policy as the Ray path: record, go on
            status = on_failure(task, exc)
        on_result(status)


def task_gpus(wanted: float, cluster: dict[str, float]) -> float:
    """GPUs per task: what the caller wants when the cluster has GPUs, none on a CPU-only cluster."""
    return float(wanted) if wanted and cluster.get("GPU", 0) > 0 else 0.0


def run_ray(fn: Callable[[Any], Status], tasks: Iterable[Any], on_result: Callable[[Status], None],
            on_failure: Callable[[Any, BaseException], Status], cfg: ExecutorConfig = ExecutorConfig(),
            gpus: float = 0.0, cpus: float = 1.0, on_submit: Callable[[Any], None] | None = None) -> None:
    """One Ray task per item of `tasks`, at most 2 x the tasks the cluster's CPUs hold at once in flight (the
    task stream is consumed lazily, so the driver holds only those); failures after `cfg.retries` go to
    `on_failure`. `gpus`: GPUs each task asks for when the cluster has any (Ray then sets
    CUDA_VISIBLE_DEVICES); `cpus`: CPUs each asks for."""
    import ray  # imported here: ray takes seconds to import, and the local executor never needs it

    started = not ray.is_initialized()
    with _interrupt_flag() as interrupted:
        try:
            _ray_loop(ray, fn, tasks, on_result, on_failure, cfg, gpus, cpus, on_submit, started, interrupted)
        finally:
            if started:
                shutdown_ray(ray)


@contextlib.contextmanager
def _interrupt_flag():
    """While Ray runs, SIGINT only sets a flag that the driver's loop turns into KeyboardInterrupt between waits.
    Python's own handler raises wherever the main thread checks for signals, which includes Ray's C++ waits:
    those turn the exception into a status, and a Ctrl-C that came at the wrong moment was once lost there (the
    job ran on to the end and exited 0). A second SIGINT raises at once."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signals reach the main thread only; whoever runs it keeps its own handling
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: at once, wherever the driver is (ray.init's start-up)
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _ray_loop(ray: Any, fn: Callable[[Any], Status], tasks: Iterable[Any], on_result: Callable[[Status], None],
              on_failure: Callable[[Any, BaseException], Status], cfg: ExecutorConfig, gpus: float, cpus: float,
              on_submit: Callable[[Any], None] | None, started: bool, interrupted: threading.Event) -> None:
    if started:
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                                      configure_logging=True)
        if cfg.address:
            ray.init(address=cfg.address, **kwargs)
        else:
            ray.init(num_cpus=cfg.workers or os.cpu_count() or 1, **kwargs)
    resources = ray.cluster_resources()
    remote = ray.remote(fn).options(num_cpus=cpus, num_gpus=task_gpus(gpus, resources), max_retries=cfg.retries,
                                    retry_exceptions=True)
    max_in_flight = 2 * max(1, int(resources.get("CPU", 1) // max(cpus, 1e-9)))
    in_flight: dict[Any, Any] = {}
    pending = iter(tasks)
    exhausted = False
    while True:
        while not exhausted and len(in_flight) < max_in_flight:
            task = next(pending, None)
            if task is None:
                exhausted = True
                break
            in_flight[remote.remote(task)] = task
            if on_submit:
                on_submit(task)
        if not in_flight:
            break
        if interrupted.is_set():
            raise KeyboardInterrupt
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)  # short: a Ctrl-C is seen within it
        for ref in done:
            task = in_flight.pop(ref)
            try:
                status = ray.get(ref)
            except Exception as exc:  # retries exhausted (worker crash, OOM kill, bug): record it
                status = on_failure(task, exc)
            on_result(status)


def shutdown_ray(ray: Any) -> None:
    """Shut down the Ray this process started, leaving no process behind: an interrupt can come while the
    raylet is still starting its agents, which then outlive it for a minute or two; they are ended here."""
    local = [] if getattr(ray._private.worker, "_global_node", None) is None else _session_pids(ray)
    ray.shutdown()
    for pid in local:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _session_pids(ray: Any) -> list[int]:
    """The local Ray session's processes and their children (agents, workers), read from /proc (Linux)."""
    node = ray._private.worker._global_node
    if not getattr(node, "head", False) or not os.path.isdir("/proc"):
        return []  # a cluster's processes are the cluster's to end
    roots = {p.process.pid for procs in node.all_processes.values() for p in procs if p.process is not None}
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return sorted(found)
