"""Inputs: expanding source arguments into a sorted list of input ids, reading them, decoding images.

Source arguments (`vistok shard SRC...`):
  - a file (any extension: a non-image becomes a recorded error, not a crash)
  - a folder (recursive; files of every extension Pillow or PyAV opens are taken, `media_extensions`; the
    others are counted as skipped, by extension)
  - a glob pattern (``'photos/**/*.jpg'``)
  - ``@list.txt`` (one source per line; blank lines and ``#`` comments ignored; relative to the list)
  - a WebDataset tar shard (``.tar``): its image members (.jpg/.jpeg/.png/.webp) become inputs,
    keyed by the member key; a ``KEY.json`` member beside the image is carried into the record metadata
  - ``sample``: the real photos bundled inside the scikit-image package (no network needed);
    ``sample-video``: the animated GIF bundled with it
  - ``fashion-mnist:train`` / ``fashion-mnist:test`` (``:N``: the first N): Fashion-MNIST from the Debian
    package ``dataset-fashion-mnist``, each image labelled with its class
  - videos (.mp4 .mov .mkv .webm .avi .gif ...): decoded with PyAV into clips (`video.py`)

Inputs are named and identified as `vistok.record` says (`InputId`); this module makes and reads them.
"""

from __future__ import annotations

import array
import glob
import gzip
import hashlib
import heapq
import io
import itertools
import json
import os
import posixpath
import re
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from vistok.errors import InputError, StorageError, UsageError
from vistok.media.video import video_extensions
from vistok.record import InputId, Member, parse_input_id
from vistok.storage import Loc, is_remote

TAR_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
Stamp = tuple[int, str]  # a file's size and change marker (`Loc.stamp`)
Found = tuple[InputId, Stamp | None]  # an input as a source lists it, stamped where the listing says how
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """The extensions of every image format the installed Pillow can open (its stub plugins, which identify a
    format they cannot decode, left out)."""
    from PIL import Image, ImageFile

    Image.init()
    def real(opener: Any) -> bool:  # a plugin class or a factory function (JPEG)
        return not (isinstance(opener, type) and issubclass(opener, ImageFile.StubImageFile))

    return frozenset(e for e, fmt in Image.registered_extensions().items() if fmt in Image.OPEN and real(Image.OPEN[fmt][0]))


def media_extensions(spec: str = "") -> frozenset[str]:
    """The extensions a folder walk takes: every image Pillow opens and every video PyAV opens, or `spec`
    (`--extensions`): a comma-separated list replaces that set (`jpg,png`), `+ext` adds to it, `-ext` removes."""
    exts = set(image_extensions() | video_extensions())
    items = [e.strip().lower() for e in spec.split(",") if e.strip()]
    if any(e[0] not in "+-" for e in items):
        exts = set()
    for e in items:
        sign, name = (e[0], e[1:]) if e[0] in "+-" else ("+", e)
        name = name if name.startswith(".") else "." + name
        if len(name) < 2 or "/" in name:
            raise UsageError(f"--extensions takes names such as jpg,png or +tga,-gif; got {e!r}")
        (exts.add if sign == "+" else exts.discard)(name)
    if not exts:
        raise UsageError(f"--extensions {spec!r} leaves no extension to take")
    return frozenset(exts)


class Walk:
    """How sources are expanded: what a folder walk takes (`exts`), the storage `options` of remote sources,
    and what the walk skipped: files counted by extension ("" for none)."""

    def __init__(self, exts: frozenset[str] | None = None, options: dict[str, Any] | None = None):
        self.exts = media_extensions() if exts is None else exts
        self.options = options or {}
        self.skipped: dict[str, int] = {}

    def takes(self, rel: str) -> bool:
        ext = os.path.splitext(rel)[1].lower()
        if ext in self.exts:
            return True
        self.skipped[ext] = self.skipped.get(ext, 0) + 1
        return False


def sample_files() -> list[Path]:
    """The embedded default data: the photographs shipped in scikit-image's `data` folder."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    skip = {"chessboard_GRAY.png", "chessboard_RGB.png"}  # synthetic, a few pixels
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg"} and p.name not in skip)
    if not files:
        raise UsageError(f"no sample photos found in {folder}; reinstall scikit-image")
    return files


def sample_gif() -> Path:
    """The animated GIF bundled with scikit-image (24 frames of 14x25 pixels): the embedded video sample."""
    import skimage

    return Path(skimage.__file__).parent / "data" / "no_time_for_that_tiny.gif"


# why a tar member is refused (stored as its input id's size, with offset -1)
REFUSALS = {1: "its path is absolute", 2: "its path has a '..' component", 3: "it is a link",
            4: "it is not a regular file"}


def _refusal(ti: tarfile.TarInfo) -> int:
    if ti.isdir():
        return 0
    if ti.name.startswith("/"):
        return 1
    if ".." in Path(ti.name).parts:
        return 2
    if ti.issym() or ti.islnk():
        return 3
    return 0 if ti.isfile() else 4


def _tar_members(path: Path | Loc) -> Iterator[InputId]:
    """The members of a tar (local or in object storage, read as one stream), as inputs."""
    loc = Loc(path)
    images, jsons, classes = [], {}, {}
    try:
        with loc.open() as f, tarfile.open(fileobj=f, mode="r|*") as tar:  # streaming: members' data skipped
            for ti in tar:
                name = ti.name
                refused = _refusal(ti)
                if refused:  # never followed out of the archive's namespace; an error row says so
                    yield InputId(f"{loc.name}/{name}", loc.url, Member(-1, refused, -1, 0))
                    continue
                if not ti.isfile():
                    continue  # folders
                stem, _, ext = name.rpartition(".")
                if ext.lower() in TAR_IMAGE_EXTS:
                    images.append((ti.offset_data, ti.size, name))
                elif ext == "json":
                    jsons[stem] = (ti.offset_data, ti.size)
                elif ext == "cls":
                    classes[stem] = (ti.offset_data, ti.size)
    except (tarfile.TarError, OSError, StorageError) as exc:
        raise UsageError(f"cannot read tar source {loc}: {exc}") from None
    for off, size, name in images:
        stem = name.rpartition(".")[0]
        joff, jsize = jsons.get(stem, (-1, 0))
        coff, csize = classes.get(stem, (-1, 0))
        yield InputId(f"{loc.name}/{name}", loc.url, Member(off, size, joff, jsize, coff, csize))


def _folder_name(folder: str) -> str:
    """The name a folder argument gives its files: its last component as written (after normalizing `..`,
    without following links, so a link and its target's mount point do not matter); none for the cwd."""
    return "" if os.path.normpath(folder) == "." else Path(os.path.abspath(folder)).name


def _glob_base(pattern: str) -> Path:
    """The folder a glob pattern starts from: its leading components without wildcards."""
    parts = Path(pattern).parts
    fixed = [p for p in itertools.takewhile(lambda p: not glob.has_magic(p), parts[:-1])]
    return Path(*fixed) if fixed else Path(".")


# --- Fashion-MNIST from the Debian package `dataset-fashion-mnist` (idx files, no network) ---------------
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
_FASHION_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}


def _fashion_images_path(split: str) -> Path:
    if split not in _FASHION_FILES:
        raise UsageError(f"fashion-mnist splits are train and test, got {split!r}")
    path = FASHION_DIR / _FASHION_FILES[split]
    if not path.is_file():
        raise UsageError(f"Fashion-MNIST is not installed ({path} is missing): apt-get install dataset-fashion-mnist")
    return path


@lru_cache(maxsize=4)
def _idx(path: str) -> np.ndarray:
    """An idx file (gzip) -> its array; sizes checked against the header before anything is trusted."""
    with gzip.open(path, "rb") as f:
        head = f.read(4)
        if len(head) != 4 or head[:2] != b"\0\0" or head[2] != 8:
            raise InputError(f"{path} is not an idx file of bytes")
        dims = np.frombuffer(f.read(4 * head[3]), dtype=">u4").astype(np.int64)
        n = int(np.prod(dims))
        if n > 1 << 28:
            raise InputError(f"{path}: idx dimensions {dims.tolist()} are too large")
        data = f.read(n + 1)
    if len(data) != n:
        raise InputError(f"{path}: {len(data)} bytes of data for dimensions {dims.tolist()}")
    out = np.frombuffer(data, dtype=np.uint8).reshape(dims)
    out.setflags(write=False)
    return out


def _fashion(src: str) -> Iterator[InputId]:
    """`fashion-mnist:SPLIT[:N]`: the split's images (its first N), named fashion-mnist-SPLIT/NNNNN.png."""
    parts = src.split(":")
    split = parts[1] if len(parts) > 1 else ""
    path = _fashion_images_path(split)
    try:
        limit = int(parts[2]) if len(parts) > 2 else None
    except ValueError:
        raise UsageError(f"{src!r}: the count after the split must be a number") from None
    n = len(_idx(str(path))) if limit is None else min(limit, len(_idx(str(path))))
    for i in range(n):
        yield InputId(f"fashion-mnist-{split}/{i:05d}.png", str(path), Member(i, 784, -1, 0))


def _read_fashion(ref: InputId) -> tuple[bytes, dict]:
    """One Fashion-MNIST image as PNG bytes, its class name in the metadata (`label`)."""
    from PIL import Image

    images = _idx(ref.path)
    labels = _idx(ref.path.replace("images-idx3", "labels-idx1"))
    i = ref.member.offset
    if not 0 <= i < len(images) or len(labels) != len(images):
        raise InputError(f"{ref.name}: no image {i} in {ref.path}")
    buf = io.BytesIO()
    Image.fromarray(np.asarray(images[i])).save(buf, format="PNG")
    return buf.getvalue(), {"source": ref.source, "label": FASHION_CLASSES[int(labels[i])]}


def is_fashion(ref: InputId) -> bool:
    return ref.name.startswith("fashion-mnist-") and ref.member is not None


# --- labels (`vistok shard --label-from`) ------------------------------------------------------------------
LABEL_MODES = ("parent", "json:FIELD", "cls")


def check_label_mode(mode: str) -> None:
    if mode and mode not in ("parent", "cls") and not (mode.startswith("json:") and len(mode) > 5):
        raise UsageError(f"--label-from takes {', '.join(LABEL_MODES)}, got {mode!r}")


def input_label(ref: InputId, meta: dict, mode: str) -> str | None:
    """The class name of an input: its parent folder (ImageFolder layout), a field of its WebDataset JSON, or
    its `.cls` member. None when no label is asked for; `InputError` when one is asked for and missing."""
    if not mode:
        return meta.get("label")
    if mode == "parent":
        parts = Path(ref.name).parts
        if len(parts) < 2 or (len(parts) == 2 and (ref.member or _has_subfolders(ref.path.rsplit("/", 1)[0]))):
            # a file given alone, or a loose file beside the class folders of an ImageFolder-style source
            raise InputError("it is in no class folder: --label-from parent takes the folder a file is in as its "
                             "class (SOURCE/CLASS/FILE, or a source folder of one class with no subfolders)")
        return parts[-2]
    if mode == "cls":
        if "cls" not in meta:
            raise InputError("no .cls member beside it to take a label from (--label-from cls)")
        return meta["cls"]
    field_name = mode[5:]
    value = meta.get("source_json", {}).get(field_name)
    if value is None or isinstance(value, (dict, list)):
        raise InputError(f"no {field_name!r} field in its JSON to take a label from (--label-from {mode})")
    return str(value)


@lru_cache(maxsize=256)
def _has_subfolders(folder: str) -> bool:
    """Whether a folder holds folders (then its own files belong to no class of an ImageFolder layout)."""
    try:
        if "://" in folder:
            loc = Loc(folder)
            return any(info.get("type") == "directory" for info in loc.fs.ls(loc.path, detail=True))
        with os.scandir(folder) as entries:
            return any(e.is_dir() for e in entries)
    except (OSError, StorageError):
        return False


def _tar(path: Path | Loc, whole: bool, stamp: Stamp | None = None) -> Iterator[Found]:
    """A tar source: one input per member, or (`whole`) the tar itself, for a task to expand (`unit_inputs`)."""
    loc = Loc(path)
    if whole:
        yield InputId(loc.name, loc.url), stamp
    else:
        yield from ((member, stamp) for member in _tar_members(loc))


def is_deferred(input_id: str) -> bool:
    """An input id that stands for many (a whole tar, a range of a large list file), planned with
    `expand_sources(..., defer=True)` and expanded by the task that owns it (`unit_inputs`)."""
    name, path, *member = input_id.split("\0")  # string tests only: the planner asks of every input
    return name.startswith("@") if member else path.lower().endswith(".tar")


def unit_inputs(input_id: str, exts: frozenset[str] | None = None, options: dict[str, Any] | None = None) -> list[str]:
    """The inputs an id stands for: a whole tar's members (unsafe ones included: reading them records why), the
    entries of a list range (folders in it walked for `exts`), or the id itself."""
    if not is_deferred(input_id):
        return [input_id]
    ref = parse_input_id(input_id)
    if is_list_range(ref):
        return _range_inputs(ref, Walk(exts, options))
    return [str(i) for i in _tar_members(Loc(ref.path, options))]


# --- @list files planned in byte ranges ---------------------------------------------------------------------
LIST_RANGE_BYTES = 1 << 20  # a list file larger than this is planned as ranges of this size, read by the tasks


def _list_ranges(lst: Loc) -> Iterator[InputId]:
    """A large list file as ranges of `LIST_RANGE_BYTES`: the driver reads none of its lines."""
    size = lst.size()
    for start in range(0, size, LIST_RANGE_BYTES):
        length = min(LIST_RANGE_BYTES, size - start)
        yield InputId(f"@{lst.name}:{start:014d}", lst.url, Member(start, length, -1, 0)), None


def is_list_range(ref: InputId) -> bool:
    return ref.member is not None and ref.name.startswith("@")


def range_lines(read: Callable[[int, int], bytes], size: int, start: int, length: int) -> list[str]:
    """The lines that start inside bytes [start, start + length) of a file of `size` bytes, read with
    `read(a, b)` -> bytes [a, b): the range, the rest of its last line, and the byte before it (a line that
    started in the previous range, or the newline ending it, belongs to that range)."""
    lo, end = max(0, start - 1), min(size, start + length)
    data = read(lo, end)
    while end < size and not data.endswith(b"\n"):  # finish the last line
        more = read(end, min(size, end + (1 << 16)))
        nl = more.find(b"\n")
        data += more if nl < 0 else more[: nl + 1]
        end += len(more) if nl < 0 else nl + 1
    if start > 0:
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else b""
    return [ln.strip() for ln in data.decode("utf-8", "replace").splitlines()]


def _range_inputs(ref: InputId, walk: Walk) -> list[str]:
    lst = Loc(ref.path, walk.options)
    out: list[str] = []
    for e in range_lines(lst.read_bytes, lst.size(), ref.member.offset, ref.member.size):
        if e and not e.startswith("#"):
            src, name = _list_entry_source(lst, e), _list_entry_name(e)
            try:
                out.extend(sorted(str(i) for i, _ in _expand_one(src, f"list {lst}", name=name, walk=walk)))
            except UsageError:  # a missing entry: read as a file, it becomes an error row naming it
                out.append(str(InputId(name, src)))
    return out


def _list_entry_source(lst: Loc, entry: str) -> str:
    """Where a list file's entry is read: relative entries against the list's folder (or prefix)."""
    return entry if os.path.isabs(entry) or "://" in entry else str(lst.parent / entry)


def _list_entry_name(entry: str) -> str:
    """The name of a file a list entry names: the path as written (normalized), so `a/1.jpg` and `b/1.jpg`
    in one list are two names; a folder or glob entry names its files as on the command line."""
    if "://" in entry:
        return entry.split("://", 1)[1].strip("/")
    return posixpath.normpath(entry.replace(os.sep, "/")).lstrip("/") if not os.path.isabs(entry) else entry


def _expand_list(lst: Loc, defer: bool, walk: Walk) -> Iterator[Found]:
    """A list file's entries (a large one, with `defer`, as byte ranges its tasks read)."""
    if not lst.is_file():
        raise UsageError(f"list file {lst} does not exist")
    if defer and lst.size() > LIST_RANGE_BYTES:
        yield from _list_ranges(lst)
        return
    lines = [ln.strip() for ln in lst.read_text().splitlines()]
    for e in (ln for ln in lines if ln and not ln.startswith("#")):
        yield from _expand_one(_list_entry_source(lst, e), f"list {lst}", defer, _list_entry_name(e), walk)


def _expand_one(src: str, where: str, defer: bool = False, name: str | None = None,
                walk: Walk | None = None) -> Iterator[Found]:
    """The inputs of one source argument, in no particular order, each with its file's stamp where the
    listing gave it (`where` names the argument in errors: the command line or a list file; `name`, for a
    list entry, the name a plain file gets instead of its file name; `walk`, what folders take)."""
    walk = walk or Walk()
    if src.startswith("fashion-mnist:"):
        yield from ((i, None) for i in _fashion(src))
        return
    if src == "sample":
        yield from ((InputId(f"sample/{p.name}", str(p)), None) for p in sample_files())
        return
    if src == "sample-video":
        yield InputId(f"sample-video/{sample_gif().name}", str(sample_gif())), None
        return
    if src.startswith("@"):
        yield from _expand_list(Loc(src[1:], walk.options), defer, walk)
        return
    if is_remote(src):
        yield from _expand_remote(src, where, defer, name, walk)
        return
    p = Path(src)
    if p.is_dir():  # streamed, one folder at a time
        prefix, real, given = _folder_name(src), str(p.resolve()), str(p)
        for rel, found, stamp in Loc(p).walk():
            if walk.takes(rel):
                # named by the path inside the folder; read at its real path: a plain file's is below the
                # resolved folder, a link's is its target (which the walk gives in place of the link)
                at = f"{real}/{rel}" if found == f"{given}/{rel}" else found
                yield InputId(f"{prefix}/{rel}" if prefix else rel, at), stamp
    elif p.is_file():
        if p.suffix.lower() == ".tar":
            yield from _tar(p.resolve(), defer)
        else:
            yield InputId(name or p.name, str(p.resolve())), None
    elif glob.has_magic(src):
        base = _glob_base(src)
        prefix, matched = _folder_name(str(base)), False
        for m in map(Path, glob.iglob(src, recursive=True)):  # a generator: matches are not collected
            try:
                st = m.stat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            matched, stamp = True, (st.st_size, str(st.st_mtime_ns))
            if m.suffix.lower() == ".tar":
                yield from _tar(m.resolve(), defer, stamp)
            else:
                rel = m.relative_to(base).as_posix()
                yield InputId(f"{prefix}/{rel}" if prefix else rel, str(m.resolve())), stamp
        if not matched:
            raise UsageError(f"glob {src!r} matches no files")
    elif not p.exists():
        raise UsageError(f"source {src!r} ({where}) does not exist")
    else:
        raise UsageError(f"source {src!r} ({where}) is not a file, folder, glob, @list or 'sample'")


def _expand_remote(src: str, where: str, defer: bool = False, name: str | None = None,
                   walk: Walk | None = None) -> Iterator[Found]:
    """An object, a prefix (every media object below it) or a glob in object storage, named as the local
    equivalents are (a prefix or glob base by its last component, then the path below it). Prefixes and
    globs are listed one folder level at a time, with fsspec's glob semantics."""
    walk = walk or Walk()
    loc = Loc(src, walk.options)
    if glob.has_magic(src):
        from fsspec.utils import glob_translate

        proto, rest = src.split("://", 1)
        parts = rest.split("/")
        fixed = list(itertools.takewhile(lambda p: not glob.has_magic(p), parts[:-1]))
        base = Loc(f"{proto}://{'/'.join(fixed)}", walk.options)
        pattern = re.compile(glob_translate(loc.path))
        depth = None if "**" in rest else len(parts) - len(fixed)  # as fsspec's glob limits its listing
        matched = False
        for rel, found, stamp in base.walk(depth):
            if pattern.match(found):
                matched = True
                url = base.url_of(found)
                yield from _tar(Loc(url, walk.options), defer, stamp) if url.lower().endswith(".tar") else \
                    [(InputId(f"{base.name}/{rel}", url), stamp)]
        if not matched:
            raise UsageError(f"glob {src!r} matches no objects")
    elif loc.is_file():
        yield from _tar(loc, defer) if loc.name.lower().endswith(".tar") else [(InputId(name or loc.name, loc.url), None)]
    elif loc.is_dir():
        for rel, found, stamp in loc.walk():
            if walk.takes(rel):  # as a local folder
                yield InputId(f"{loc.name}/{rel}", loc.url_of(found)), stamp
    else:
        raise UsageError(f"source {src!r} ({where}) is not an object, a prefix with objects below it, or a glob")


# --- the sorted input list, planned in bounded memory ---------------------------------------------------------
RUN_ENTRIES = 1 << 14  # inputs sorted in memory at a time; each further run of them is spilled to a temporary file
MERGE_RUNS = 128  # spilled runs merged into one larger run when this many pile up (open files stay bounded)


def _entry_line(entry: tuple[str, Stamp | None]) -> str:
    """An input id and its stamp as one line: ids hold NULs between fields, never in them; a backslash or newline
    in a name is escaped."""
    iid, stamp = entry
    if "\\" in iid or "\n" in iid:
        iid = iid.replace("\\", "\\\\").replace("\n", "\\n")
    return f"{iid}\0{stamp[0]}\0{stamp[1]}\n" if stamp else f"{iid}\0\0\n"


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def _read_run(path: str) -> Iterator[tuple[str, Stamp | None]]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        for line in f:
            iid, size, mark = line[:-1].rsplit("\0", 2)
            yield _unescape(iid) if "\\" in iid else iid, (int(size), mark) if size else None


class InputList:
    """The input ids of some source arguments, sorted, de-duplicated and checked, without holding them all.

    Sources are listed as streams (folders one level at a time); their entries are sorted in runs of
    `RUN_ENTRIES`, runs past the first spilled to temporary files and merged whenever the list is read. The
    driver keeps 8 bytes per input, a hash of the file it reads, to find one file reached under two names
    (it counts once, by its smallest name), plus an entry per file so reached. Two different files with one
    name are refused when the list is read, since their keys would collide.

    Iterating gives the ids; `entries()` gives (id, stamp) pairs; `count`, `fingerprint` and `deferred`
    come from one pass over them. Use as a context manager (or `close()`) to delete the spilled runs.

    `defer`: a tar stays one id, and a list file over `LIST_RANGE_BYTES` becomes one id per range of that many
    bytes; the task that owns such an id expands it (`unit_inputs`), so planning costs one entry per input
    file or list range, however many members or lines they hold. (Names in a deferred list are not checked
    against each other: the driver never reads them.)
    """

    def __init__(self, sources: list[str], defer: bool = False, exts: frozenset[str] | None = None,
                 options: dict[str, Any] | None = None):
        self.walk = Walk(exts, options)  # what folder walks take (`skipped` counts the rest), storage options
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._runs: list[str] = []  # spilled runs, each sorted
        self._small: list[str] = []  # spilled runs not yet merged into a larger one
        self._written = 0
        hashes = array.array("Q")
        run: list[tuple[str, Stamp | None]] = []
        try:
            for src in sources:
                for iid, stamp in _expand_one(src, "on the command line", defer, walk=self.walk):
                    run.append((str(iid), stamp))
                    hashes.append(_target_hash(iid.path, iid.member))
                    if len(run) == RUN_ENTRIES:
                        self._spill(run)
                        run = []
        except BaseException:
            self.close()
            raise
        run.sort(key=_first)
        self._head = run  # the last run stays in memory (for most datasets, the only one)
        self._runs += self._small
        h = np.sort(np.frombuffer(hashes, dtype=np.uint64)) if hashes else np.zeros(0, np.uint64)
        self._twice = set(h[1:][h[1:] == h[:-1]].tolist())  # files (or hash twins) reached more than once
        self._summary: tuple[int, str, bool, str] | None = None

    def _spill(self, run: list[tuple[str, Stamp | None]]) -> None:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="vistok-plan-")
        run.sort(key=_first)
        self._small.append(self._write_run(run))
        if len(self._small) == MERGE_RUNS:
            self._runs.append(self._write_run(heapq.merge(*map(_read_run, self._small), key=_first)))
            for path in self._small:
                os.unlink(path)
            self._small = []

    def _write_run(self, entries: Iterable[tuple[str, Stamp | None]]) -> str:
        assert self._tmp is not None
        self._written += 1
        path = os.path.join(self._tmp.name, f"run-{self._written:06d}")
        with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as f:
            f.writelines(map(_entry_line, entries))
        return path

    def _entries(self) -> Iterator[tuple[str, InputId, Stamp | None]]:
        """(input id, parsed, stamp) in order, each file once, checked for name collisions."""
        kept: dict[int, set[tuple[str, Member | None]]] = {}  # of files reached twice: those already given
        last_name = last_path = None
        for iid, stamp in heapq.merge(*map(_read_run, self._runs), iter(self._head), key=_first):
            ref = parse_input_id(iid)
            if self._twice and (h := _target_hash(ref.path, ref.member)) in self._twice:
                target = (ref.path, ref.member)
                if target in kept.setdefault(h, set()):
                    continue  # given already, under a smaller name (the list is sorted by name first)
                kept[h].add(target)
            if ref.name == last_name and ref.path != last_path:
                raise UsageError(f"two inputs share the name {ref.name!r} ({last_path} and {ref.path}), so their keys "
                                 "would collide; give them under folders of different names")
            last_name, last_path = ref.name, ref.path
            yield iid, ref, stamp

    def entries(self) -> Iterator[tuple[str, Stamp | None]]:
        """(input id, (size, change marker) or None where the listing did not say) in order."""
        return ((iid, stamp) for iid, _, stamp in self._entries())

    def __iter__(self) -> Iterator[str]:
        return (iid for iid, _, _ in self._entries())

    def _summarize(self) -> tuple[int, str, bool, str]:
        if self._summary is None:
            n, deferred = 0, False
            h = _Fingerprint(self.walk.options)
            for iid, ref, stamp in self._entries():
                n += 1
                deferred = deferred or is_deferred(iid)
                h.add(ref, stamp)
            self._summary = (n, h.hexdigest(), deferred, h.names_hexdigest())
        return self._summary

    def stamped(self) -> Iterator[tuple[str, str]]:
        """(input id, "SIZE:MARKER") in order: what `fingerprint` hashes, per input (a stamp the listing did not
        give is looked up, once per file)."""
        h = _Fingerprint(self.walk.options)
        return ((iid, ":".join(map(str, h.stamp(ref, stamp)))) for iid, ref, stamp in self._entries())

    @property
    def names(self) -> str:
        """Hash over the inputs' names alone: which inputs, not what they hold (a dataset's identity)."""
        return self._summarize()[3]

    @property
    def count(self) -> int:
        return self._summarize()[0]

    @property
    def fingerprint(self) -> str:
        """Hash over the inputs' names, sizes and modification times (content changes are detected by these)."""
        return self._summarize()[1]

    @property
    def deferred(self) -> bool:
        """Whether any id stands for many inputs (a tar, a list range) that its task expands."""
        return self._summarize()[2]

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> InputList:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first(entry: tuple[str, Any]) -> str:
    return entry[0]


def _target_hash(path: str, member: Member | None) -> int:
    """64 bits naming the bytes an input reads (a file, or a member of it): Python's own hash, stable within
    the process, which is all the list needs (equal hashes are compared in full)."""
    return hash((path, member)) & 0xFFFF_FFFF_FFFF_FFFF


class _Fingerprint:
    """The running hash of `InputList.fingerprint`: stamps the listing did not give are looked up (once per
    file: a tar's members share theirs)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._h, self._names = hashlib.sha256(), hashlib.sha256()
        self._stamps: dict[str, Stamp] = {}
        self.options = options  # of remote inputs

    def stamp(self, ref: InputId, stamp: Stamp | None) -> Stamp:
        """The input's stamp: as the listing gave it, or looked up."""
        if stamp is None:
            if ref.path not in self._stamps:
                if len(self._stamps) > 4096:
                    self._stamps.clear()
                try:
                    self._stamps[ref.path] = Loc(ref.path, self.options).stamp()
                except (OSError, StorageError):
                    self._stamps[ref.path] = (-1, "-1")
            stamp = self._stamps[ref.path]
        return stamp

    def add(self, ref: InputId, stamp: Stamp | None) -> None:
        stamp = self.stamp(ref, stamp)
        self._h.update(f"{ref.name}\0{ref.member}\0{stamp[0]}\0{stamp[1]}\n".encode("utf-8", "surrogateescape"))
        self._names.update(f"{ref.name}\0{ref.member}\n".encode("utf-8", "surrogateescape"))

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:16]

    def names_hexdigest(self) -> str:
        return self._names.hexdigest()[:16]


def expand_sources(sources: list[str], defer: bool = False, exts: frozenset[str] | None = None,
                   options: dict[str, Any] | None = None) -> list[str]:
    """Sorted input ids (`vistok.record.InputId`) of the given source arguments, one per file or member (see
    `InputList`, which gives them without holding them all).

    An input's name (what its key is made of) does not depend on where the files live: a file argument is
    named by its file name, a list file's entry by its path as written, a folder argument by the folder's name and the path inside it, a glob by the
    name of its fixed leading folder and the path inside that, a tar member by the tar's file name and the
    member name, and `sample` photos by ``sample/FILE``. One file reached twice counts once (by its
    smallest name); two different files with one name are refused, since their keys would collide.
    """
    with InputList(sources, defer, exts, options) as inputs:
        return list(inputs)


def read_input(input_id: str, max_bytes: int = 1 << 30, options: dict[str, Any] | None = None) -> tuple[bytes, dict]:
    """Raw bytes of an input and the metadata carried with it (a tar member's sibling .json)."""
    ref = parse_input_id(input_id)
    meta: dict = {"source": ref.source}
    if is_fashion(ref):
        return _read_fashion(ref)
    loc = Loc(ref.path, options)
    try:
        if ref.member is not None:  # ranged reads: only this member's bytes (and its .json/.cls siblings)
            m = ref.member
            if m.offset < 0:
                raise InputError(f"tar member refused, not read: {REFUSALS.get(m.size, 'unsafe')}")
            ranges = [(m.offset, m.offset + m.size)]
            with_cls = 0 <= m.cls_offset and m.cls_size <= 256
            with_json = m.json_offset >= 0 and m.json_size <= 1 << 20
            ranges += [(m.cls_offset, m.cls_offset + m.cls_size)] if with_cls else []
            ranges += [(m.json_offset, m.json_offset + m.json_size)] if with_json else []
            data, *siblings = loc.read_ranges(ranges)  # one open file, or concurrent GETs
            if len(data) != m.size:
                raise InputError(f"tar member {ref.name} is truncated")
            if with_cls:
                meta["cls"] = siblings.pop(0).decode("utf-8", "replace").strip()
            if with_json:
                try:
                    extra = json.loads(siblings.pop(0))
                    if isinstance(extra, dict):
                        meta["source_json"] = extra
                except ValueError:
                    pass
            return data, meta
        size = loc.size()
        if size > max_bytes:
            raise InputError(f"file of {size} bytes exceeds the read limit of {max_bytes}")
        return loc.read_bytes(), meta
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}") from None
    except StorageError as exc:
        raise InputError(str(exc)) from None


def load_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int = 0):
    """Bytes -> RGB `PIL.Image`, EXIF orientation applied, alpha composited on `BACKGROUND`.

    `draft` > 0 lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 while decoding, keeping both sides
    >= `draft` (a large speed-up when the image is only going to be shrunk to that size anyway).
    """
    from PIL import Image, ImageOps

    if not data:
        raise InputError("empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > max_pixels:
            raise InputError(f"image of {w}x{h} pixels exceeds the limit of {max_pixels} (--max-pixels)")
        if draft and im.format == "JPEG":
            im.draft("RGB", (draft, draft))
        im.load()
        im = ImageOps.exif_transpose(im, in_place=False) if im.getexif().get(0x0112, 1) != 1 else im
        return to_rgb(im)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"decompression bomb refused: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.UnidentifiedImageError) as exc:
        msg = str(exc) or type(exc).__name__
        if "cannot identify image file" in msg:
            msg = "not an image (Pillow cannot identify the format)"
        raise InputError(msg) from None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes -> (H, W, 3) uint8 RGB (see `load_image`)."""
    return np.asarray(load_image(data, max_pixels), dtype=np.uint8)


def to_rgb(im):
    """Any Pillow mode -> an RGB image (16-bit and float greys scaled to 8 bits)."""
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64 if mode == "F" else np.int64)
        if mode != "F":
            top = 65535 if mode.startswith("I;16") or arr.max() > 255 else 255
            arr = arr * 255 // max(top, 1)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        bg = Image.new("RGB", im.size, BACKGROUND)
        bg.paste(im, mask=im.getchannel("A"))
        im = bg
    return im if im.mode == "RGB" else im.convert("RGB")
