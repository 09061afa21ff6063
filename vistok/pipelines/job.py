"""The sharding job: plan -> one task per shard (any executor) -> manifest.

reader (`vistok.media.sources`) -> worker (`process_shard`: read, decode, preprocess, encode and write one
shard through `vistok.pipelines.encode`) -> writer (`ShardWriter`, atomic) -> distributor
(`vistok.executors`: bounded in-flight tasks, every status collected, failed tasks recorded, never dropped).

Resume: `stats/shard-NNNNNN.json` is written last by a shard's task; a shard with a stats file is done.
Rerunning the same command redoes only shards without one, and the final folder is byte-identical to an
uninterrupted run (nothing in the shards, stats, errors or manifest depends on time or on the executor).
"""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

import vistok
from vistok.errors import DatasetError, InputError, StorageError, UsageError, one_line
from vistok.executors import ExecutorConfig, run_tasks
from vistok.media.preprocess import Preprocess
from vistok.media.sources import InputList, check_label_mode, is_deferred, media_extensions, unit_inputs
from vistok.pipelines.encode import encode_input, error_row
from vistok.progress import Progress
from vistok.record import TokenRecord, input_key, json_bytes, parse_input_id, parse_key
from vistok.shards.integrity import HEADER, header_bytes
from vistok.shards.manifest import (
    ERRORS,
    ERRORS_DIR,
    MANIFEST,
    STATS_DIR,
    Manifest,
    ShardStats,
    config_hash,
    done_shards,
    load_manifest,
    read_json,
    shard_errors_path,
    shard_name,
    stats_path,
    write_json,
)
from vistok.shards.reader import iter_shards
from vistok.shards.writer import ShardWriter
from vistok.storage import Loc, read_each
from vistok.tokenize.base import SIDE_INFO, Codec, geometry_of, get_codec
from vistok.tokenize.orders import stored_names

JOB = "job.json"
RAY_FROM_INPUTS = 200  # executor="auto": smaller jobs run in-process (bench_shard: Ray takes ~4 s to start on 2 cores)


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
    label_from: str = ""
    per_part: int = 0  # inputs per shard file when a task expands a tar (0: one file)
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)  # never printed: may hold keys
    extensions: tuple[str, ...] = ()  # what folders in a large list's range take (empty: the default set)
    config_hash: str = ""  # the dataset's: each shard file's `__vistok__` header carries it
    stamps: tuple[str, ...] = ()  # "SIZE:MARKER" of each input, as the driver listed it (the stats keep them)


# --- the worker ---------------------------------------------------------------------------------------
def task_stamps(task: ShardTask) -> dict[str, str]:
    """Input name -> its stamp when this shard was made (what --retry-errors compares to redo changed inputs)."""
    return {parse_input_id(iid).name: st for iid, st in zip(task.inputs, task.stamps, strict=True)}


def _previous(task: ShardTask, folder: Loc) -> tuple[set[str], dict[str, list[TokenRecord]]]:
    """For --retry-errors: the inputs of this shard to redo (those that failed, and those changed since) and the
    records it already holds, by input key."""
    failed: set[str] = set()
    err_path = shard_errors_path(folder, task.index)
    if err_path.exists():
        failed = {json.loads(line)["key"] for line in err_path.read_text().splitlines() if line.strip()}
    kept: dict[str, list[TokenRecord]] = {}
    previous = ShardStats.read_if_done(folder, task.index)
    if previous is not None and previous.stamps:
        failed |= {input_key(name) for name, st in task_stamps(task).items() if previous.stamps.get(name) != st}
    if previous is not None:
        for rec in iter_shards([folder / f["name"] for f in previous.files()]):
            kept.setdefault(parse_key(rec.key).input, []).append(rec)
    return failed, kept


@functools.lru_cache(maxsize=1)
def single_threaded_blas() -> None:
    """Per-image matrix products are small: BLAS threads only add synchronization and fight the decoder
    threads (and the other workers) for cores. Measured: 1.5-2x faster codecs with one BLAS thread."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def process_shard(task: ShardTask) -> dict[str, Any]:
    """Write shard `task.index` and its stats file; return the stats. The driver gives only shards without a
    stats file (a task run twice, as a retry may, writes the same bytes twice).

    In object storage the shard is written to a local temporary file and uploaded; the stats object follows
    only once the upload has finished, so a shard is done exactly when its stats object exists."""
    single_threaded_blas()
    folder = Loc(task.out, task.storage_options)
    codec, pre = get_codec(task.codec), Preprocess(**task.preprocess)
    failed, kept = _previous(task, folder) if task.retry_errors else (None, {})
    inputs, errors = _expand_units(task.inputs, task.extensions, task.storage_options)
    n_inputs = len(inputs) + len(errors)  # an unreadable tar counts as one input, with its error row
    per_part = task.per_part or max(1, len(inputs))
    files: list[dict[str, Any]] = []
    tally = _Tally(errors, codec.vocab.size)
    for part, first in enumerate(range(0, max(1, len(inputs)), per_part)):
        name = shard_name(task.index, task.compress, part)
        target = folder / name
        with _staging(folder) as tmp:  # object storage: write here, then upload
            local = tmp / name if tmp else Path(target)
            with ShardWriter(local, compress=task.compress, header=header_bytes(task.config_hash, name)) as writer:
                _encode_into(writer, inputs[first : first + per_part], task, codec, pre, failed, kept, tally)
            if writer.count:
                files.append({"name": name, "samples": writer.count, "bytes": writer.bytes, "sha256": writer.sha256})
                if tmp:
                    target.upload(local)
        if not writer.count:
            target.unlink()
    if errors or task.retry_errors or folder.local_path is not None:  # a bucket: spare a DELETE per shard
        _write_errors(folder, task.index, errors)  # (finalize reads rows only of shards whose stats count some)
    nz = np.flatnonzero(tally.counts)
    stats = ShardStats(task.index, files[0]["name"] if files else None, n_inputs, len(errors),
                       sum(f["samples"] for f in files), sum(f["bytes"] for f in files), tally.lengths,
                       {"ids": nz.tolist(), "counts": tally.counts[nz].tolist()}, codec.collected_side_info() if SIDE_INFO in codec.capabilities else {},
                       sorted(tally.labels), files if len(files) > 1 else [], tally.geometries,
                       files[0]["sha256"] if len(files) == 1 else "", task_stamps(task))
    stats.write(folder)  # last: marks the shard done
    return {**stats.to_json(), "files": len(task.inputs)}


def _expand_units(units: tuple[str, ...], exts: tuple[str, ...],
                  options: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The task's inputs: a whole tar or a range of a large list expanded here rather than by the driver (folders
    in it walked for `exts`, empty: the default set); one that cannot be read is one error row."""
    inputs: list[str] = []
    errors: list[dict[str, Any]] = []
    for unit in units:
        try:
            inputs.extend(unit_inputs(unit, frozenset(exts) or None, options))
        except (UsageError, StorageError) as exc:
            errors.append(error_row(unit, "read", InputError(str(exc))))
    return inputs, errors


@contextlib.contextmanager
def _staging(folder: Loc) -> Iterator[Path | None]:
    """A local temporary folder for a shard bound for object storage; none for a local dataset, whose
    `ShardWriter` renames its own temporary file into place."""
    if folder.local_path is not None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="vistok-shard-") as d:
        yield Path(d)


class _Tally:
    """What a shard task gathers across its shard files: error rows, samples' lengths, labels, token counts."""

    def __init__(self, errors: list[dict[str, Any]], vocab_size: int):
        self.errors, self.lengths, self.labels = errors, [], set()
        self.counts = np.zeros(vocab_size, dtype=np.int64)
        self.geometries: list[dict[str, Any]] = []  # distinct, two at most: enough to tell one shared geometry

    def add(self, codec: Codec, rec: TokenRecord) -> None:
        self.lengths.append(len(rec))
        if "label" in rec.meta:
            self.labels.add(str(rec.meta["label"]))
        self.counts += np.bincount(rec.tokens, minlength=self.counts.size)
        g = geometry_of(codec, rec.meta)
        if len(self.geometries) < 2 and g not in self.geometries:
            self.geometries.append(g)


def _encode_into(writer: ShardWriter, inputs: list[str], task: ShardTask, codec: Codec, pre: Preprocess,
                 failed: set[str] | None, kept: dict[str, list[TokenRecord]], tally: _Tally) -> None:
    """Encode `inputs` into `writer` (reusing `kept` records of inputs that did not fail before), counting
    into `tally`."""
    for iid in inputs:
        key = parse_input_id(iid).key
        reuse = failed is not None and key not in failed and key in kept
        recs = iter(kept[key]) if reuse else encode_input(iid, codec, pre, task.store_orders, task.label_from,
                                                            task.storage_options)
        batch: list[TokenRecord] = []
        try:
            batch.extend(recs)
        except InputError as exc:  # records made before the failure (a video's first clips) are kept
            tally.errors.append(error_row(iid, getattr(exc, "stage", "decode"), exc))
        for rec in batch:
            writer.write(rec)
            tally.add(codec, rec)


def _write_errors(folder: Loc, index: int, rows: list[dict[str, Any]]) -> None:
    path = shard_errors_path(folder, index)
    if rows:
        path.write_bytes(b"".join(json_bytes(e) + b"\n" for e in rows))
    else:
        path.unlink()


def task_failure(task: ShardTask, exc: BaseException) -> dict[str, Any]:
    """A task that failed after its retries: every input becomes an error row, the job goes on.

    A storage failure (an upload that kept failing) is not the inputs' fault: nothing is marked done, the
    job ends with an error, and the next run redoes the shard."""
    cause = getattr(exc, "cause", None) or exc  # Ray wraps the task's exception
    if isinstance(cause, StorageError):
        return {"index": task.index, "inputs": len(task.inputs), "files": len(task.inputs), "samples": 0, "errors": 0,
                "storage_failure": one_line(cause)}
    rows = [error_row(iid, "task", exc) for iid in task.inputs]
    folder = Loc(task.out, task.storage_options)
    _write_errors(folder, task.index, rows)
    stats = ShardStats(task.index, None, len(task.inputs), len(rows), 0, 0, stamps=task_stamps(task))
    stats.write(folder)
    return {**stats.to_json(), "files": len(task.inputs)}


# --- the driver ---------------------------------------------------------------------------------------
@dataclass
class JobResult:
    folder: Path | Loc  # a Path for a local dataset
    up_to_date: bool
    samples: int
    errors: int
    inputs: int
    shards: int
    seconds: float
    manifest: Manifest = field(repr=False)

    @property
    def skipped(self) -> dict[str, int]:
        """Files the folder walks did not take, by extension ("" for none)."""
        return self.manifest.skipped


def resolve_folder(out: Loc, names: set[str], codec_id: str, chash: str) -> tuple[Loc, set[str]]:
    """--out is the dataset folder, unless it is an existing non-empty folder that is not a dataset: then it is
    a parent and the dataset goes to ``out/<codec>-<hash>/``, so different configurations never mix.
    `names`: those in --out. Returns the folder and the names already in it."""
    if names and not names & {MANIFEST, JOB, STATS_DIR}:
        folder = out / f"{codec_id}-{chash}"
        return folder, folder.names()
    return out, names


def run_job(sources: list[str], out: str | Path, codec: Codec, pre: Preprocess, shard_size: int = 1000,
            compress: bool = False, executor: str = "ray", workers: int | None = None, address: str | None = None,
            retry_errors: bool = False, store_orders: tuple[str, ...] = (), progress_stream: IO[str] | None = None,
            quiet: bool = False, label_from: str = "", storage_options: dict[str, Any] | None = None,
            extensions: str = "") -> JobResult:
    """Tokenize `sources` into the dataset folder `out`, a local path or an fsspec URL such as
    ``s3://bucket/prefix`` (see the module docstring). `storage_options` go to the filesystem (e.g.
    ``endpoint_url``) travel with the locations and the tasks; they are never written anywhere.
    `extensions`: what folder walks take (`vistok.media.sources.media_extensions`)."""
    t0 = time.monotonic()
    runner = ExecutorConfig("ray" if executor == "auto" else executor, workers, address)  # checked now, fixed below
    if shard_size < 1:
        raise UsageError("--shard-size must be >= 1")
    bad = [n for n in store_orders if n not in stored_names()]
    if bad:
        raise UsageError(f"--store-order takes {' or '.join(stored_names())}, got {', '.join(bad)}")
    check_label_mode(label_from)
    opts = dict(storage_options or {})
    out_loc = Loc(out, opts)
    out_names = out_loc.check_writable()  # a missing bucket or refused credentials: one line, before any work
    exts = media_extensions(extensions)
    with InputList(sources, defer=True, exts=exts, options=opts) as inputs:  # a tar (a large list's range) is one entry: its task expands it
        if not inputs.count:
            raise UsageError(f"no inputs found in {' '.join(sources)}")
        if executor == "auto" and not (address or workers or inputs.deferred or inputs.count >= RAY_FROM_INPUTS):
            runner = ExecutorConfig("local")  # Ray's start-up (~5 s) would outweigh what it saves
        config = job_config(codec, pre, shard_size, compress, inputs, store_orders, label_from)
        chash = config_hash(identity(config))  # the inputs' names, not their stamps: --retry-errors after a fix
        folder, present = resolve_folder(out_loc, out_names, codec.codec_id, chash)
        per_shard = max(1, shard_size // pre.samples_per_input)
        if MANIFEST in present and not retry_errors:
            m = load_manifest(folder)
            if m.config_hash == chash and m.sources.get("fingerprint") == inputs.fingerprint:
                return _result(folder, True, m, t0)
            if m.config_hash == chash:
                raise UsageError(inputs_changed(folder, inputs, per_shard))
        _prepare_folder(folder, present, config, chash, codec.codec_id, retry_errors)

        sizes = [len(g) for g in plan_shards(inputs, per_shard)]  # a pass over the list; the tasks are a second
        n_shards = len(sizes)
        done = {p.name for p in (folder / STATS_DIR).glob("shard-*.json")} if STATS_DIR in present else set()
        todo = _todo(folder, n_shards, done, retry_errors, inputs, per_shard)
        tasks = (ShardTask(i, tuple(iid for iid, _ in group), folder.url, codec.get_config(), pre.to_json(), compress,
                           retry_errors, tuple(sorted(store_orders)), label_from, per_shard, opts,
                           tuple(sorted(exts)) if extensions else (), chash, tuple(st for _, st in group))
                 for i, group in enumerate(plan_shards(inputs.stamped(), per_shard)) if i in todo)
        with Progress("shard", sum(sizes[i] for i in todo), "files" if inputs.deferred else "inputs", progress_stream,
                      quiet) as prog:
            totals = _run_shards(tasks, runner, codec.gpus_per_task, prog)
    return _result(folder, False, finalize(folder, codec, config, chash, n_shards, totals, inputs.walk.skipped), t0)


def _run_shards(tasks: Iterable[ShardTask], runner: ExecutorConfig, gpus: float, prog: Progress) -> Totals:
    """Run the shard tasks, summing what the manifest needs of each; a shard that could not be written (its
    upload kept failing) ends the job with an error once the others are done, nothing of it marked done."""
    seen: dict[str, Any] = {"samples": 0, "errors": 0, "storage": []}
    totals = Totals()

    def on_status(st: dict[str, Any]) -> None:
        if "storage_failure" in st:
            seen["storage"].append(st["storage_failure"])
        else:
            totals.add(st)
        seen["samples"] += st["samples"]
        seen["errors"] += st["errors"]
        prog.advance(st["files"], info=f"{seen['samples']} samples, {seen['errors']} errors")

    run_tasks(process_shard, tasks, on_status, task_failure, runner, gpus=gpus)
    if seen["storage"]:
        n = len(seen["storage"])
        raise StorageError(f"{n} shard{'s' if n > 1 else ''} could not be written ({seen['storage'][0]}); nothing "
                           "of them is marked done: rerun the same command to complete them")
    return totals


def job_config(codec: Codec, pre: Preprocess, shard_size: int, compress: bool, inputs: InputList,
               store_orders: tuple[str, ...], label_from: str) -> dict[str, Any]:
    """`job.json`: everything that determines the shards' bytes (its hash names the dataset)."""
    config = {"codec": codec.get_config(), "preprocess": pre.to_json(), "shard_size": shard_size,
              "compress": compress, "sources": {"inputs": inputs.count, "names": inputs.names,
                                                "fingerprint": inputs.fingerprint}}
    if store_orders:
        config["store_orders"] = sorted(store_orders)
    if label_from:
        config["label_from"] = label_from
    return config


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """What names a dataset (its config hash): the job's config less the inputs' stamps, so a dataset stays the
    same dataset when an input is fixed (`--retry-errors` redoes it) and its manifest says when inputs changed."""
    return {**config, "sources": {k: v for k, v in config["sources"].items() if k != "fingerprint"}}


def inputs_changed(folder: Loc, inputs: InputList, per_shard: int, show: int = 5) -> str:
    """The refusal when the inputs of a finished dataset changed since it was made, naming them."""
    stats = {st.index: st.stamps for st in done_shards(folder)}
    changed = [parse_input_id(iid).name for i, group in enumerate(plan_shards(inputs.stamped(), per_shard))
               for iid, st in group if stats.get(i, {}).get(parse_input_id(iid).name) != st]
    named = ", ".join(changed[:show]) + (f" and {len(changed) - show} more" if len(changed) > show else "")
    return (f"the inputs of {folder} changed since it was made ({named or 'their sizes or times'}): rerun with "
            "--retry-errors to redo the inputs that failed or changed, or choose another --out to rebuild it whole")


def plan_shards(inputs: Iterable[Any], per_shard: int) -> Iterator[tuple[Any, ...]]:
    """The inputs of each shard task, from the sorted input list: consecutive files in groups of `per_shard`,
    each whole tar or list range on its own (its task writes a shard file per `per_shard` of its inputs). A shard's
    content is a function of its slice, so reruns and other executors give the same shards. Items are input ids,
    or (id, stamp) pairs (`InputList.stamped`)."""
    run: list[Any] = []
    for iid in inputs:
        if is_deferred(iid if isinstance(iid, str) else iid[0]):
            if run:
                yield tuple(run)
                run = []
            yield (iid,)
            continue
        run.append(iid)
        if len(run) == per_shard:
            yield tuple(run)
            run = []
    if run:
        yield tuple(run)


def _result(folder: Loc, up_to_date: bool, manifest: Manifest, t0: float) -> JobResult:
    c = manifest.counts
    return JobResult(folder.local_path or folder, up_to_date, c["samples"], c["errors"], c["inputs"], len(manifest.shards),
                     time.monotonic() - t0, manifest)


def _prepare_folder(folder: Loc, present: set[str], config: dict[str, Any], chash: str, codec_id: str,
                    retry_errors: bool) -> None:
    """Refuse a folder of another configuration; make its subfolders; clear a killed run's temporary files.
    `present`: the names already in the folder."""
    job_path = folder / JOB
    prev = read_json(job_path) if JOB in present else None
    if prev is not None and prev.get("config_hash") != chash and identity(prev.get("config", {})) != identity(config):
        raise DatasetError(
            f"{folder} holds a dataset with a different configuration ({config_difference(prev.get('config', {}), config)}); "
            f"choose another --out, or pass a parent folder to get {codec_id}-{chash}/")
    for sub in (STATS_DIR, ERRORS_DIR):
        (folder / sub).mkdir()
    if folder.local_path is not None:  # object storage never holds partial objects
        for d in (folder.local_path, folder.local_path / STATS_DIR, folder.local_path / ERRORS_DIR):
            for stale in d.glob(".*.tmp-*"):
                stale.unlink(missing_ok=True)  # leftovers of a killed run
    if prev is None or prev.get("config") != config:  # new, or its inputs fixed since (--retry-errors)
        write_json(job_path, {"config": config, "config_hash": chash, "vistok_version": vistok.__version__})
    if retry_errors:
        (folder / MANIFEST).unlink()


def config_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'codec.quality 50 -> 20, shard_size 100 -> 1000': what differs between two job configs."""
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        return {k: v for key, val in d.items() if key != "fingerprint" for k, v in flat(val, f"{prefix}{key}.").items()}

    a, b = flat(old), flat(new)
    diff = [f"{k.rstrip('.')} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(diff[:4]) or "another vistok's job file"


def _todo(folder: Loc, n_shards: int, done: set[str], retry_errors: bool, inputs: InputList,
          per_shard: int) -> set[int]:
    """The shards to run: those without a stats file (`done`: the names listed), and with `retry_errors` those
    whose stats count errors or whose inputs changed since (stats read concurrently: a bucket answers thousands
    of them in seconds)."""
    todo = {i for i in range(n_shards) if stats_path(folder, i).name not in done}
    if retry_errors:
        finished = [i for i in range(n_shards) if i not in todo]
        stamps = {}
        for i, raw in zip(finished, read_each([stats_path(folder, i) for i in finished]), strict=True):
            st = json.loads(raw)
            if st["errors"]:
                todo.add(i)
            stamps[i] = st.get("stamps")
        for i, group in enumerate(plan_shards(inputs.stamped(), per_shard)):
            if stamps.get(i) and stamps[i] != {parse_input_id(iid).name: s for iid, s in group}:
                todo.add(i)
    return todo


class Totals:
    """What the manifest sums over the shards, gathered a shard's stats at a time in any order: counts, labels,
    a histogram of sample lengths (exact percentiles without every length in memory), and per shard only its
    file entries and side info. The driver's memory grows with shards, never with samples."""

    def __init__(self) -> None:
        self.inputs = self.samples = self.errors = 0
        self.labels: set[str] = set()
        self.length_counts = np.zeros(0, dtype=np.int64)  # [n] = how many samples have n tokens
        self.files: dict[int, list[dict[str, Any]]] = {}
        self.side: dict[int, dict[str, Any]] = {}
        self.with_errors: list[int] = []
        self.geometries: list[dict[str, Any]] | None = []  # None: a shard (of an older vistok) did not say

    @property
    def geometry(self) -> dict[str, Any] | None:
        """The geometry every sample shares, or None (several, or not known)."""
        return self.geometries[0] if self.geometries is not None and len(self.geometries) == 1 else None

    def add(self, stats: dict[str, Any]) -> None:
        st = ShardStats(**{k: stats[k] for k in ShardStats.__dataclass_fields__ if k in stats})
        self.inputs += st.inputs
        self.samples += st.samples
        self.errors += st.errors
        self.labels.update(st.labels)
        self.files[st.index] = st.files()
        if st.side_info:
            self.side[st.index] = st.side_info
        if st.errors:
            self.with_errors.append(st.index)
        if st.samples and not st.geometries:
            self.geometries = None
        elif self.geometries is not None:
            self.geometries += [g for g in st.geometries if g not in self.geometries][: 2 - len(self.geometries)]
        if st.lengths:
            counts = np.bincount(np.asarray(st.lengths, dtype=np.int64))
            if counts.size > self.length_counts.size:
                self.length_counts = np.pad(self.length_counts, (0, counts.size - self.length_counts.size))
            self.length_counts[: counts.size] += counts


def finalize(folder: Loc, codec: Codec, config: dict[str, Any], chash: str, n_shards: int, totals: Totals,
             skipped: dict[str, int] | None = None) -> Manifest:
    """Merge per-shard stats and errors into `errors.jsonl` and `manifest.json` (written last). `totals`: those of
    the shards this run's tasks reported; the other shards' stats (done by an earlier run) are read back,
    concurrently, and added. `skipped`: the files folder walks did not take, by extension."""
    earlier = [i for i in range(n_shards) if i not in totals.files]
    try:
        for raw in read_each([stats_path(folder, i) for i in earlier]):
            totals.add(json.loads(raw))
    except FileNotFoundError:
        raise DatasetError(f"{folder}: a shard's stats file is gone since the job started; rerun the command to "
                           "complete it") from None
    side = dict(codec.side_info()) if SIDE_INFO in codec.capabilities else {}
    for i in sorted(totals.side):  # e.g. H.264 headers: one entry per distinct header, merged in shard order
        for k, v in totals.side[i].items():
            side[k] = {**side.get(k, {}), **v} if isinstance(v, dict) else v
    errors = read_each([shard_errors_path(folder, i) for i in sorted(totals.with_errors)])
    (folder / ERRORS).write_bytes(b"".join(errors))
    shards = [f for i in range(n_shards) for f in totals.files[i]]
    manifest = Manifest(
        config_hash=chash, codec=codec.get_config(), vocabulary=codec.vocab.to_json(), axes=list(codec.axes),
        preprocess=config["preprocess"], sources=config["sources"], shard_size=config["shard_size"],
        counts={"inputs": totals.inputs, "samples": totals.samples, "errors": totals.errors, "shards": len(shards)},
        shards=shards, tokens=length_stats(totals.length_counts), vistok_version=vistok.__version__, side_info=side,
        stored_orders=config.get("store_orders", []), labels=sorted(totals.labels), skipped=dict(sorted((skipped or {}).items())),
        geometry=totals.geometry, shard_header=HEADER)
    manifest.write(folder)  # last: the folder is a finished dataset from here on
    return manifest


def length_stats(counts: np.ndarray) -> dict[str, Any]:
    """Total, mean, median, 95th percentile, max and min of sample lengths given as a histogram (`counts[n]`
    samples of n tokens); the percentiles are numpy's default (linear) ones, computed from the histogram."""
    n = int(counts.sum())
    total = int(np.dot(np.arange(counts.size, dtype=np.int64), counts))
    tok: dict[str, Any] = {"total": total}
    if n:
        present = np.flatnonzero(counts)
        tok.update(mean=round(total / n, 2), p50=round(_percentile(counts, n, 50), 1),
                   p95=round(_percentile(counts, n, 95), 1), max=int(present[-1]), min=int(present[0]))
    return tok


def _percentile(counts: np.ndarray, n: int, q: float) -> float:
    """np.percentile(lengths, q) of the `n` lengths `counts` holds: the sorted values at the two ranks around
    (n - 1) q / 100, interpolated as numpy does."""
    cum = np.cumsum(counts)
    h = (n - 1) * (q / 100)
    lo = int(np.floor(h))
    a = float(np.searchsorted(cum, lo, side="right"))  # the value of rank lo
    b = float(np.searchsorted(cum, min(lo + 1, n - 1), side="right"))
    t = h - lo
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t
