import pytest
import torch

from vistok.errors import UsageError
from vistok.executors import ExecutorConfig, run_tasks
from vistok.tokenize import BSQCodec


def _square(x: int) -> dict:
    if x == 3:
        raise ValueError("three is bad")
    return {"task": x, "value": x * x}


def _failed(task, exc):
    return {"task": task, "failed": type(exc).__name__}


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_every_task_gives_one_status_and_failures_are_recorded(kind):
    got = []
    run_tasks(_square, range(6), got.append, _failed, ExecutorConfig(kind, workers=2, retries=0))
    by_task = {s["task"]: s for s in got}
    assert sorted(by_task) == list(range(6)) and len(got) == 6
    assert "ValueError" in by_task[3]["failed"]  # Ray wraps it: RayTaskError(ValueError)
    assert all(by_task[i]["value"] == i * i for i in (0, 1, 2, 4, 5))


def test_unknown_executor_is_refused():
    with pytest.raises(UsageError, match="--executor"):
        ExecutorConfig("threads")


def _gpu_ids(task):
    import ray

    return {"task": task, "gpus": ray.get_gpu_ids()}


def _unexpected(task, exc):
    raise AssertionError(f"task {task} failed: {exc}")


@pytest.fixture(scope="module")
def gpu_ray():
    """A real local Ray that declares one GPU (so a task that asks for one is given it), shared by the tests
    that bring their own Ray: run_ray then leaves it up."""
    import ray

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_learned_codec_tasks_get_a_gpu_when_the_cluster_has_one(bsq_tok, gpu_ray):
    from vistok.executors import run_ray, task_gpus

    codec = BSQCodec(str(bsq_tok))  # device auto: asks for a GPU per task, runs where torch finds one
    assert codec.gpus_per_task == 1.0 and codec.torch_device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert BSQCodec(str(bsq_tok), device="cpu").gpus_per_task == 0.0
    assert task_gpus(1.0, {"CPU": 8.0}) == 0.0  # a CPU-only cluster runs the tasks on CPU
    # The Ray declares one GPU: each task is given it (Ray sets CUDA_VISIBLE_DEVICES).
    got = []
    run_ray(_gpu_ids, range(3), got.append, _unexpected, gpus=codec.gpus_per_task)
    assert sorted(s["task"] for s in got) == [0, 1, 2] and all(len(s["gpus"]) == 1 for s in got)
    got.clear()
    run_ray(_gpu_ids, range(2), got.append, _unexpected, gpus=0.0)
    assert all(s["gpus"] == [] for s in got)


def _interrupt(task):
    import os
    import signal
    import time

    driver, slow = task
    if not slow:
        os.kill(driver, signal.SIGINT)  # Ctrl-C at the driver while it waits on the other tasks
    time.sleep(2.0 if slow else 0.2)
    return {"task": task}


def test_ctrl_c_stops_the_driver_between_waits_and_its_handler_is_given_back(gpu_ray):
    """A SIGINT while Ray runs sets a flag the loop turns into KeyboardInterrupt (Python's own handler raised
    inside Ray's waits, which once lost it); no status of an unfinished task is reported; SIGINT is the
    caller's again afterwards."""
    import os
    import signal

    from vistok.executors import run_ray

    before = signal.getsignal(signal.SIGINT)
    got = []
    tasks = [(os.getpid(), False)] + [(os.getpid(), True)] * 4  # the first interrupts; the rest take 2 s
    with pytest.raises(KeyboardInterrupt):
        run_ray(_interrupt, tasks, got.append, _unexpected)
    assert len(got) <= 1  # at most the interrupting task's: the driver stopped while the slow ones ran
    assert signal.getsignal(signal.SIGINT) is before


def test_interrupted_shard_job_says_so_and_leaves_no_ray_process(tmp_path):
    """Ctrl-C during a Ray shard job: exit 130, "interrupted: rerun the same command to finish", no Ray process
    left behind (the raylet's agents used to outlive an interrupted job by minutes); a rerun finishes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def descendants(root: int) -> set[int]:  # this job's processes only: another Ray may run beside it
        parents = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                parents[int(pid)] = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        found, frontier = set(), {root}
        while frontier:
            frontier = {p for p, pp in parents.items() if pp in frontier} - found
            found |= frontier
        return found

    out = tmp_path / "ds"
    args = [sys.executable, "-m", "vistok.cli", "shard", "sample", "--size", "64", "--crops", "1500", "--shard-size",
            "100", "--workers", "2", "--out", str(out)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90  # interrupted once the first shard is done: mid-job, Ray long up (a SIGINT
    while not any((out / "stats").glob("*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # a second after planning once landed in ray.init's start-up, under load, and was lost)
    assert proc.poll() is None, "the job ended before it could be interrupted"
    ray = descendants(proc.pid)  # the driver's raylet, GCS, agents and workers
    assert ray
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().endswith("interrupted: rerun the same command to finish") and "Traceback" not in err
    time.sleep(1.0)

    def alive(pid: int) -> bool:
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    assert not [p for p in ray if alive(p)]
    assert not (out / "manifest.json").exists()
