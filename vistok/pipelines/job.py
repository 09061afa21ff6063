"""The sharding job: plan -> one task per shard (Ray or in-process) -> manifest.

reader (sources) -> worker (`process_shard`: read, decode, preprocess, encode, write one shard)
-> writer (`ShardWriter`, atomic) -> distributor (`run_job`: bounded in-flight tasks, every status
collected, failed tasks recorded, never dropped).

Resume: `stats/shard-NNNNNN.json` is written last by a shard's task; a shard with a stats file is done.
Rerunning the same command redoes only shards without one, and the final folder is byte-identical to an
uninterrupted run (nothing in the shards, stats, errors or manifest depends on time or on the executor).
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import vistok
from vistok.errors import DatasetError, InputError, UsageError, one_line
from vistok.pipelines.preprocess import Preprocess
from vistok.pipelines.sources import expand_sources, fingerprint, input_key, load_image, read_input
from vistok.pipelines.video import decode_clips, is_video_name
from vistok.shards.manifest import ERRORS, MANIFEST, STATS_DIR, config_hash, read_json, write_json
from vistok.shards.reader import iter_shards
from vistok.shards.record import TokenRecord, json_bytes
from vistok.shards.writer import ShardWriter, atomic_write_bytes
from vistok.tokenize.base import Codec, get_codec
from vistok.tokenize.orders import STORED_ORDERS, compute_stored

JOB = "job.json"
ERRORS_DIR = "errors"


def shard_name(index: int, compress: bool) -> str:
    return f"shard-{index:06d}.tar" + (".gz" if compress else "")


@dataclass(frozen=True)
class ShardTask:
    """Everything one worker needs for one shard; small and picklable."""

    index: int
    inputs: tuple[str, ...]
    out: str
    codec: dict[str, Any]
    preprocess: dict[str, Any]
    compress: bool
    retry_errors: bool = False
    store_orders: tuple[str, ...] = ()


# --- the worker ---------------------------------------------------------------------------------------
def encode_input(input_id: str, codec: Codec, pre: Preprocess, store_orders: tuple[str, ...] = ()) -> Iterator[TokenRecord]:
    """One input -> its records (an image's crops, or a video's clips). Raises InputError (with `.stage`)
    for bad input; a video that fails partway has already yielded the clips before the failure."""
    key = input_key(input_id)
    stage = "read"
    try:
        data, meta = read_input(input_id)
        stage = "decode"
        name = input_id.rsplit(":", 1)[-1] if "#" in input_id else input_id
        if is_video_name(name) and (not name.lower().endswith(".gif") or _animated_gif(data)):
            if getattr(codec, "transcode", "") == "never" and hasattr(codec, "encode_video_bytes"):
                yield from codec.encode_video_bytes(data, key, dict(meta), pre.clip_len, pre.max_clips)
                return
            for i, clip in enumerate(decode_clips(data, pre.video())):
                stage = "encode"
                frames = [pre.frame(f, key) for f in clip]
                rec = codec.encode_clip(frames, f"{key}_v{i:04d}", dict(meta))
                if store_orders:
                    stage = "order"
                    rec.orders.update(compute_stored(codec, rec, frames[0] if len(frames) == 1 else None, store_orders))
                yield rec
                stage = "decode"
            return
        rec = codec.encode_bytes(data, key, meta) if pre.identity() else None
        if rec is not None:
            if store_orders:
                stage = "order"
                rec.orders.update(compute_stored(codec, rec, None, store_orders))
            yield rec
            return
        img = load_image(data, pre.max_pixels, pre.draft)
        stage = "preprocess"
        items = pre.apply(img, key)
        stage = "encode"
        recs = codec.encode_many([pix for _, pix in items], [key + sfx for sfx, _ in items], [dict(meta) for _ in items])
        for (_, pix), rec in zip(items, recs):
            if store_orders:
                stage = "order"
                rec.orders.update(compute_stored(codec, rec, pix, store_orders))
            yield rec
    except InputError as exc:
        exc.stage = stage
        raise
    except MemoryError:
        raise InputError(f"out of memory while at stage {stage}") from None
    except Exception as exc:  # a bug or an unexpected library failure on this input: record it, go on
        err = InputError(f"{type(exc).__name__}: {one_line(exc)}")
        err.stage = stage
        raise err from None


def reference_media(record: TokenRecord, preprocess: dict[str, Any]) -> np.ndarray:
    """The pixels a record was made from, rebuilt from its source file and the dataset's preprocessing
    ((H, W, 3), or (T, H, W, 3) for a clip) — for measuring what the codec lost."""
    source = record.meta.get("source", "")
    if not source or not os.path.isfile(source):
        raise InputError(f"record {record.key}: source {source!r} is not a readable file here")
    pre = Preprocess(**preprocess)
    data = Path(source).read_bytes()
    key = input_key(source)
    if "_v" in record.key[len(key):]:
        want = int(record.key.rsplit("_v", 1)[1])
        for i, clip in enumerate(decode_clips(data, pre.video())):
            if i == want:
                frames = np.stack([pre.frame(f, key) for f in clip])
                return frames[0] if len(frames) == 1 else frames
        raise InputError(f"record {record.key}: clip {want} not found in {source}")
    if pre.identity():
        return np.asarray(load_image(data, pre.max_pixels))
    for suffix, pix in pre.apply(load_image(data, pre.max_pixels, pre.draft), key):
        if key + suffix == record.key:
            return pix
    raise InputError(f"record {record.key}: no matching crop of {source}")


def _animated_gif(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return bool(getattr(im, "is_animated", False))
    except Exception:  # not decodable as an image: let the video path report it
        return True


def error_row(input_id: str, stage: str, exc: BaseException) -> dict[str, Any]:
    source = input_id.split("#", 1)[0] + ":" + input_id.rsplit(":", 1)[-1] if "#" in input_id else input_id
    return {"source": source, "key": input_key(input_id), "stage": stage, "error": type(exc).__name__,
            "reason": one_line(exc)}


def _previous(task: ShardTask, folder: Path) -> tuple[set[str], dict[str, list[TokenRecord]]]:
    """For --retry-errors: the failed inputs of this shard and the records it already holds, by input key."""
    failed: set[str] = set()
    err_path = folder / ERRORS_DIR / f"shard-{task.index:06d}.jsonl"
    if err_path.exists():
        failed = {json.loads(line)["key"] for line in err_path.read_text().splitlines() if line.strip()}
    kept: dict[str, list[TokenRecord]] = {}
    shard = folder / shard_name(task.index, task.compress)
    if shard.exists():
        for rec in iter_shards([shard]):
            kept.setdefault(rec.key[: rec.key.rindex("-") + 11], []).append(rec)  # input key: SLUG-<10 hex>
    return failed, kept


@functools.lru_cache(maxsize=1)
def single_threaded_blas() -> None:
    """Per-image matrix products are small: BLAS threads only add synchronization and fight the decoder
    threads (and the other workers) for cores. Measured: 1.5-2x faster codecs with one BLAS thread."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def process_shard(task: ShardTask) -> dict[str, Any]:
    """Write shard `task.index` and its stats file; return the stats. Idempotent: a done shard is skipped."""
    single_threaded_blas()
    folder = Path(task.out)
    stats_path = folder / STATS_DIR / f"shard-{task.index:06d}.json"
    if stats_path.exists():
        stats = read_json(stats_path)
        if not (task.retry_errors and stats["errors"]):
            return {**stats, "skipped": True}
    codec, pre = get_codec(task.codec), Preprocess(**task.preprocess)
    failed, kept = _previous(task, folder) if task.retry_errors else (None, {})
    name = shard_name(task.index, task.compress)
    errors: list[dict[str, Any]] = []
    lengths: list[int] = []
    counts = np.zeros(codec.vocab.size, dtype=np.int64)
    with ShardWriter(folder / name, compress=task.compress) as writer:
        for iid in task.inputs:
            key = input_key(iid)
            if failed is not None and key not in failed and key in kept:
                recs: Iterator[TokenRecord] = iter(kept[key])
            else:
                recs = encode_input(iid, codec, pre, task.store_orders)
            batch: list[TokenRecord] = []
            try:
                for rec in recs:
                    batch.append(rec)
            except InputError as exc:  # records made before the failure (a video's first clips) are kept
                errors.append(error_row(iid, getattr(exc, "stage", "decode"), exc))
            for rec in batch:
                writer.write(rec)
                lengths.append(len(rec))
                counts += np.bincount(rec.tokens, minlength=counts.size)
        samples, shard_bytes = writer.count, None
    if samples:
        shard_bytes = (folder / name).stat().st_size
    else:
        (folder / name).unlink(missing_ok=True)
    err_path = folder / ERRORS_DIR / f"shard-{task.index:06d}.jsonl"
    if errors:
        atomic_write_bytes(err_path, b"".join(json_bytes(e) + b"\n" for e in errors))
    else:
        err_path.unlink(missing_ok=True)
    nz = np.flatnonzero(counts)
    stats = {"index": task.index, "name": name if samples else None, "inputs": len(task.inputs),
             "errors": len(errors), "samples": samples, "bytes": shard_bytes or 0, "lengths": lengths,
             "token_counts": {"ids": nz.tolist(), "counts": counts[nz].tolist()}}
    if codec.collected_side_info():
        stats["side_info"] = codec.collected_side_info()
    write_json(stats_path, stats)  # last: marks the shard done
    return stats


def task_failure(task: ShardTask, exc: BaseException) -> dict[str, Any]:
    """A task that failed after its retries: every input becomes an error row, the job goes on."""
    folder = Path(task.out)
    rows = [error_row(iid, "task", exc) for iid in task.inputs]
    atomic_write_bytes(folder / ERRORS_DIR / f"shard-{task.index:06d}.jsonl", b"".join(json_bytes(r) + b"\n" for r in rows))
    stats = {"index": task.index, "name": None, "inputs": len(task.inputs), "errors": len(rows), "samples": 0,
             "bytes": 0, "lengths": [], "token_counts": {"ids": [], "counts": []}}
    write_json(folder / STATS_DIR / f"shard-{task.index:06d}.json", stats)
    return stats


# --- executors ----------------------------------------------------------------------------------------
def run_local(tasks: Iterator[Any], on_status: Callable[[dict], None], fn: Callable = process_shard,
              on_failure: Callable = task_failure) -> None:
    for task in tasks:
        try:
            status = fn(task)
        except Exception as exc:  # same policy as the Ray path: record, go on
            status = on_failure(task, exc)
        on_status(status)


def task_gpus(wanted: float, cluster: dict[str, float]) -> float:
    """GPUs per task: what the codec wants when the cluster has GPUs, none on a CPU-only cluster."""
    return float(wanted) if wanted and cluster.get("GPU", 0) > 0 else 0.0


def run_ray(tasks: Iterator[Any], on_status: Callable[[dict], None], workers: int | None,
            address: str | None, retries: int = 2, fn: Callable = process_shard,
            on_failure: Callable = task_failure, gpus: float = 0.0) -> None:
    """One Ray task per item of `tasks`, at most 2 x cluster CPUs in flight; every status collected,
    failures after `retries` handed to `on_failure` (which records them) instead of being dropped.
    `gpus`: GPUs each task asks for when the cluster has any (Ray then sets CUDA_VISIBLE_DEVICES)."""
    import ray

    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                                      configure_logging=True)
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, **kwargs)
        started = True
    try:
        resources = ray.cluster_resources()
        remote = ray.remote(fn).options(num_cpus=1, num_gpus=task_gpus(gpus, resources), max_retries=retries,
                                        retry_exceptions=True)
        max_in_flight = 2 * max(1, int(resources.get("CPU", 1)))
        in_flight: dict[Any, ShardTask] = {}
        tasks = iter(tasks)
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < max_in_flight:
                task = next(tasks, None)
                if task is None:
                    exhausted = True
                    break
                in_flight[remote.remote(task)] = task
            if not in_flight:
                break
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=5.0)
            for ref in done:
                task = in_flight.pop(ref)
                try:
                    status = ray.get(ref)
                except Exception as exc:  # retries exhausted (worker crash, OOM kill, bug): record it
                    status = on_failure(task, exc)
                on_status(status)
    finally:
        if started:
            ray.shutdown()


# --- progress -----------------------------------------------------------------------------------------
class Progress:
    """A live line on a terminal; plain periodic lines otherwise. Only the driver prints."""

    def __init__(self, shards: int, inputs: int, stream=None, interval: float | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 10.0)
        self.shards, self.inputs = shards, inputs
        self.done = self.samples = self.errors = self.inputs_done = 0
        self.t0 = self.last = time.monotonic()

    def update(self, status: dict) -> None:
        self.done += 1
        self.samples += status["samples"]
        self.errors += status["errors"]
        self.inputs_done += status["inputs"]
        now = time.monotonic()
        if now - self.last >= self.interval or self.done == self.shards:
            self.last = now
            self._print(now)

    def _print(self, now: float) -> None:
        dt = max(now - self.t0, 1e-9)
        rate = self.inputs_done / dt
        eta = (self.inputs - self.inputs_done) / rate if rate > 0 else float("inf")
        eta_s = f"{eta:5.0f}s" if eta != float("inf") else "    ?"
        line = (f"shards {self.done}/{self.shards}  samples {self.samples}  errors {self.errors}  "
                f"{self.samples / dt:7.1f} samples/s  ETA {eta_s}")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done == self.shards else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


# --- the driver ---------------------------------------------------------------------------------------
@dataclass
class JobResult:
    folder: Path
    up_to_date: bool
    samples: int
    errors: int
    inputs: int
    shards: int
    seconds: float
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


def _is_dataset_dir(p: Path) -> bool:
    return any((p / n).exists() for n in (MANIFEST, JOB, STATS_DIR))


def resolve_folder(out: Path, codec_id: str, chash: str) -> Path:
    """--out is the dataset folder, unless it is an existing non-empty folder that is not a dataset: then it is
    a parent and the dataset goes to ``out/<codec>-<hash>/``, so different configurations never mix."""
    if out.is_dir() and not _is_dataset_dir(out) and any(out.iterdir()):
        return out / f"{codec_id}-{chash}"
    return out


def run_job(sources: list[str], out: str | Path, codec: Codec, pre: Preprocess, shard_size: int = 1000,
            compress: bool = False, executor: str = "ray", workers: int | None = None, address: str | None = None,
            retry_errors: bool = False, store_orders: tuple[str, ...] = (), progress_stream=None,
            quiet: bool = False) -> JobResult:
    t0 = time.monotonic()
    if shard_size < 1:
        raise UsageError("--shard-size must be >= 1")
    if executor not in ("ray", "local"):
        raise UsageError(f"--executor must be ray or local, got {executor!r}")
    bad = [n for n in store_orders if n not in STORED_ORDERS]
    if bad:
        raise UsageError(f"--store-order takes {' or '.join(STORED_ORDERS)}, got {', '.join(bad)}")
    inputs = expand_sources(sources)
    if not inputs:
        raise UsageError(f"no inputs found in {' '.join(sources)}")
    config = {"codec": codec.get_config(), "preprocess": pre.to_json(), "shard_size": shard_size,
              "compress": compress, "sources": {"inputs": len(inputs), "fingerprint": fingerprint(inputs)}}
    if store_orders:
        config["store_orders"] = sorted(store_orders)
    chash = config_hash(config)
    folder = resolve_folder(Path(out), codec.codec_id, chash)
    manifest_path = folder / MANIFEST
    if manifest_path.exists():
        m = read_json(manifest_path)
        if m.get("config_hash") == chash and not retry_errors:
            c = m["counts"]
            return JobResult(folder, True, c["samples"], c["errors"], c["inputs"], len(m["shards"]),
                             time.monotonic() - t0, m)
    job_path = folder / JOB
    if job_path.exists():
        prev = read_json(job_path)
        if prev.get("config_hash") != chash:
            raise DatasetError(
                f"{folder} holds a dataset with a different configuration (hash {prev.get('config_hash')}, this "
                f"command's is {chash}); choose another --out, or pass a parent folder to get {codec.codec_id}-{chash}/")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATS_DIR).mkdir(exist_ok=True)
    (folder / ERRORS_DIR).mkdir(exist_ok=True)
    for stale in list(folder.glob(".*.tmp-*")) + list((folder / STATS_DIR).glob(".*.tmp-*")) + list(
            (folder / ERRORS_DIR).glob(".*.tmp-*")):
        stale.unlink(missing_ok=True)  # leftovers of a killed run
    if not job_path.exists():
        write_json(job_path, {"config": config, "config_hash": chash, "vistok_version": vistok.__version__})
    if retry_errors:
        manifest_path.unlink(missing_ok=True)

    per_shard = max(1, shard_size // pre.samples_per_input)
    n_shards = -(-len(inputs) // per_shard)

    def needed(i: int) -> bool:
        p = folder / STATS_DIR / f"shard-{i:06d}.json"
        return not p.exists() or (retry_errors and read_json(p)["errors"] > 0)

    todo = [i for i in range(n_shards) if needed(i)]

    def tasks() -> Iterator[ShardTask]:
        for i in todo:
            yield ShardTask(i, tuple(inputs[i * per_shard : (i + 1) * per_shard]), str(folder), codec.get_config(),
                            pre.to_json(), compress, retry_errors, tuple(sorted(store_orders)))

    prog = Progress(len(todo), sum(min(per_shard, len(inputs) - i * per_shard) for i in todo), progress_stream)
    on_status = (lambda s: None) if quiet else prog.update
    if todo:
        if executor == "local":
            run_local(tasks(), on_status)
        else:
            run_ray(tasks(), on_status, workers, address, gpus=codec.gpus_per_task)
    manifest = finalize(folder, codec, config, chash, n_shards)
    c = manifest["counts"]
    return JobResult(folder, False, c["samples"], c["errors"], c["inputs"], len(manifest["shards"]),
                     time.monotonic() - t0, manifest)


def finalize(folder: Path, codec: Codec, config: dict[str, Any], chash: str, n_shards: int) -> dict[str, Any]:
    """Merge per-shard stats and errors into `errors.jsonl` and `manifest.json` (written last)."""
    shards, all_lengths = [], []
    inputs = samples = errors = 0
    err_parts = []
    side = dict(codec.side_info())
    for i in range(n_shards):
        p = folder / STATS_DIR / f"shard-{i:06d}.json"
        if not p.exists():
            raise DatasetError(f"{folder}: shard {i} has no stats file after the job; rerun the command to complete it")
        st = read_json(p)
        for k, v in st.get("side_info", {}).items():  # e.g. H.264 headers: one entry per distinct header
            side[k] = {**side.get(k, {}), **v} if isinstance(v, dict) else v
        inputs += st["inputs"]
        samples += st["samples"]
        errors += st["errors"]
        if st["name"]:
            shards.append({"name": st["name"], "samples": st["samples"], "bytes": st["bytes"]})
            all_lengths.append(np.asarray(st["lengths"], dtype=np.int64))
        ep = folder / ERRORS_DIR / f"shard-{i:06d}.jsonl"
        if ep.exists():
            err_parts.append(ep.read_bytes())
    atomic_write_bytes(folder / ERRORS, b"".join(err_parts))
    lengths = np.concatenate(all_lengths) if all_lengths else np.zeros(0, dtype=np.int64)
    tok = {"total": int(lengths.sum())}
    if lengths.size:
        tok.update(mean=round(float(lengths.mean()), 2), p50=round(float(np.percentile(lengths, 50)), 1),
                   p95=round(float(np.percentile(lengths, 95)), 1), max=int(lengths.max()), min=int(lengths.min()))
    manifest = {
        "kind": "vistok-dataset", "format": vistok.FORMAT_VERSION, "vistok_version": vistok.__version__,
        "config_hash": chash, "codec": codec.get_config(), "vocabulary": codec.vocab.to_json(),
        "axes": list(codec.axes), "side_info": side, "preprocess": config["preprocess"], "sources": config["sources"],
        "shard_size": config["shard_size"], "stored_orders": config.get("store_orders", []),
        "counts": {"inputs": inputs, "samples": samples, "errors": errors, "shards": len(shards)},
        "shards": shards, "tokens": tok,
    }
    write_json(folder / MANIFEST, manifest)
    return manifest
