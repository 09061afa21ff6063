"""`vistok verify`: read every shard of one or more datasets once and say which are damaged.

One task per shard on any executor (in-process, or Ray tasks for large datasets, as `vistok shard` runs):
the task checks the shard's size and `__vistok__` header (`check_shards`), streams it once through the
checking reader (`read_shard`: every member a vistok record, tokens integers inside the vocabulary, the sample
count and sha256 the manifest lists), and has the dataset's codec read each record's metadata (its geometry,
and a length within that geometry's bound); `deep` also has the codec parse every token (units and
coordinates), at about twice the cost of a read. A task returns one status; damage is data, never an
exception, so every shard is reported.

`write=True` records the sha256 of every shard in a manifest that lacks them (a dataset written before
manifests listed hashes), once every shard has been read without damage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from vistok.errors import DamagedShard, DatasetError, StorageError, VistokError, one_line
from vistok.executors import ExecutorConfig, run_tasks
from vistok.progress import Progress
from vistok.shards.integrity import Expect, check_shards, read_shard
from vistok.shards.manifest import Manifest, dataset_codec, load_manifest
from vistok.shards.store import is_store
from vistok.storage import Loc

RAY_FROM_SHARDS = 64  # `executor="auto"`: Ray (seconds to start) only for datasets at least this large


@dataclass(frozen=True)
class VerifyTask:
    """One shard to check; small and picklable (the manifest travels as its JSON)."""

    dataset: str
    name: str
    manifest: dict[str, Any]
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)  # never printed: may hold keys
    deep: bool = False  # also parse every record's tokens with the codec (its units and coordinates)


def verify_shard(task: VerifyTask) -> dict[str, Any]:
    """Check one shard; return its status: dataset, shard, samples, bytes, sha256 and `damage` ("" when sound)."""
    folder = Loc(task.dataset, task.storage_options)
    manifest = Manifest.from_json(task.manifest)
    expect = Expect(str(folder), manifest.config_hash, int(manifest.vocabulary["size"]),
                    {s["name"]: s for s in manifest.shards}, headers=bool(manifest.shard_header))
    status: dict[str, Any] = {"dataset": str(folder), "shard": task.name, "samples": 0, "bytes": 0, "sha256": "",
                              "damage": ""}
    try:
        try:
            size = (folder / task.name).size()
        except FileNotFoundError:
            size = None
        ok, damages = check_shards(folder, [task.name], expect, {} if size is None else {task.name: size})
        if damages:
            return {**status, "damage": damages[0].detail}
        codec = dataset_codec(manifest)
        for rec in read_shard(ok[0], expect=expect, seen=status):
            try:
                layout = codec.layout(rec.meta)  # cached per geometry: the metadata is the codec's
                if len(rec) > layout.max_tokens:
                    raise DatasetError(f"{len(rec)} tokens, more than the {layout.max_tokens} its geometry allows")
                if task.deep:
                    layout.positions(rec)  # the codec parses every token
            except Exception as exc:  # foreign data may trip any parser: whatever it raises is this shard's damage
                raise expect.damage(task.name, f"is not a {codec.codec_id} record its codec can read ({one_line(exc)})",
                                    rec.key) from None
    except DamagedShard as damage:
        where = f"member {damage.member}: " if damage.member else ""
        status["damage"] = where + damage.detail
    return status


def verify_failure(task: VerifyTask, exc: BaseException) -> dict[str, Any]:
    """A task that raised (storage that kept failing, a crashed worker): the shard is reported, not dropped."""
    cause = getattr(exc, "cause", None) or exc  # Ray wraps the task's exception
    kind = "could not be read" if isinstance(cause, StorageError) else "could not be checked"
    return {"dataset": task.dataset, "shard": task.name, "samples": 0, "bytes": 0, "sha256": "",
            "damage": f"{kind} ({one_line(cause)})"}


@dataclass
class Report:
    """What `verify` found in one dataset."""

    dataset: str
    shards: int = 0
    samples: int = 0
    bytes: int = 0
    damaged: list[dict[str, str]] = field(default_factory=list)  # shard, damage
    unlisted: list[str] = field(default_factory=list)  # shard files in the folder the manifest does not list
    problem: str = ""  # the dataset itself could not be read (no manifest, a damaged one)
    hashes_written: bool = False

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.problem

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "ok": self.ok, "shards": self.shards, "samples": self.samples,
                "bytes": self.bytes, "damaged": self.damaged, "unlisted": self.unlisted, "problem": self.problem,
                "hashes_written": self.hashes_written}

    def lines(self) -> Iterator[str]:
        """One line per damaged shard, then a summary."""
        if self.problem:
            yield f"{self.dataset}: {self.problem}"
            return
        for d in self.damaged:
            yield f"{self.dataset}: shard {d['shard']} {d['damage']}" if not d["damage"].startswith("member ") else \
                f"{self.dataset}: shard {d['shard']}, {d['damage']}"
        for name in self.unlisted:
            yield f"{self.dataset}: note: {name} is in the folder but not in the manifest (readers ignore it)"
        state = f"{len(self.damaged)} of {self.shards} shards damaged" if self.damaged else f"all {self.shards} shards sound"
        written = "; sha256 of every shard written to the manifest" if self.hashes_written else ""
        yield f"{self.dataset}: {state} ({self.samples:,} samples, {self.bytes:,} bytes read){written}"


def verify(datasets: list[str], executor: str = "auto", workers: int | None = None, address: str | None = None,
           write: bool = False, storage_options: dict[str, Any] | None = None, quiet: bool = False,
           deep: bool = False) -> list[Report]:
    """Check every shard of each dataset folder (local or a URL); one `Report` per dataset. `executor`: local,
    ray, or auto (Ray from `RAY_FROM_SHARDS` shards on). `write`: add missing sha256s to a sound dataset's
    manifest. `deep`: also have the codec parse every record's tokens (about twice the time of a read)."""
    opened: list[tuple[Loc, Manifest | None, Report]] = []
    for d in datasets:
        loc = Loc(d, storage_options)
        report = Report(str(loc))
        try:
            if is_store(loc):
                raise DatasetError("is a packed store: verify checks dataset folders (a store is checked as it is written)")
            manifest = load_manifest(loc)
        except VistokError as exc:
            report.problem = one_line(exc).removeprefix(f"{loc}: ").removeprefix(f"{loc} ")
            manifest = None
        opened.append((loc, manifest, report))
    tasks = [VerifyTask(loc.url, s["name"], m.to_json(), dict(storage_options or {}), deep)
             for loc, m, _ in opened if m is not None for s in m.shards]
    reports = {r.dataset: r for _, _, r in opened}
    statuses: dict[tuple[str, str], dict[str, Any]] = {}
    kind = executor if executor != "auto" else ("ray" if len(tasks) >= RAY_FROM_SHARDS else "local")

    def on_status(st: dict[str, Any]) -> None:
        statuses[(st["dataset"], st["shard"])] = st
        prog.advance(1, info=f"{sum(1 for s in statuses.values() if s['damage'])} damaged")

    with Progress("verify", len(tasks), "shards", quiet=quiet) as prog:
        run_tasks(verify_shard, tasks, on_status, verify_failure, ExecutorConfig(kind, workers, address))
    for loc, manifest, report in opened:
        if manifest is None:
            continue
        _tally(report, manifest, statuses)
        listed = {s["name"] for s in manifest.shards}
        report.unlisted = sorted(n for n in loc.names() if n.startswith("shard-") and n not in listed)
        if write and report.ok and any("sha256" not in s for s in manifest.shards):
            _write_hashes(loc, manifest, statuses)
            report.hashes_written = True
    return [reports[str(Loc(d, storage_options))] for d in datasets]


def _tally(report: Report, manifest: Manifest, statuses: dict[tuple[str, str], dict[str, Any]]) -> None:
    for s in manifest.shards:
        st = statuses[(report.dataset, s["name"])]
        report.shards += 1
        report.samples += st["samples"]
        report.bytes += st["bytes"]
        if st["damage"]:
            report.damaged.append({"shard": s["name"], "damage": st["damage"]})


def _write_hashes(loc: Loc, manifest: Manifest, statuses: dict[tuple[str, str], dict[str, Any]]) -> None:
    """The manifest again, each shard's entry with the sha256 just read (written whole, atomically)."""
    shards = [{**s, "sha256": statuses[(str(loc), s["name"])]["sha256"]} for s in manifest.shards]
    replace(manifest, shards=shards).write(loc)
