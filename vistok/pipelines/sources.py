"""Inputs: expanding source arguments into a sorted list of input ids, reading them, decoding images.

Source arguments (`vistok shard SRC...`):
  - a file (any extension: a non-image becomes a recorded error, not a crash)
  - a folder (recursive; only files with an image extension are taken)
  - a glob pattern (``'photos/**/*.jpg'``)
  - ``@list.txt`` (one source per line; blank lines and ``#`` comments ignored; relative to the list)
  - a WebDataset tar shard (``.tar``): its image members (.jpg/.jpeg/.png/.webp) become inputs,
    keyed by the member key; a ``KEY.json`` member beside the image is carried into the record metadata
  - ``sample``: the real photos bundled inside the scikit-image package (no network needed);
    ``sample-video``: the animated GIF bundled with it
  - videos (.mp4 .mov .mkv .webm .avi .gif ...): decoded with PyAV into clips (`video.py`)

An input id is a string: an absolute file path, or ``TARPATH#OFFSET:SIZE:JOFFSET:JSIZE:MEMBER`` for a tar
member, where offsets and sizes locate the member's data and its sibling .json (JOFFSET -1 if none), so a
worker reads them with a seek each.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vistok.errors import InputError, UsageError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MEDIA_EXTS = IMAGE_EXTS | {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts"}
TAR_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white


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


def _tar_members(path: Path) -> Iterator[str]:
    images, jsons = [], {}
    try:
        with tarfile.open(path, "r|*") as tar:  # streaming: headers only, members' data skipped
            for ti in tar:
                name = ti.name
                if not ti.isfile() or ".." in Path(name).parts or name.startswith("/"):
                    continue  # never follow paths out of the archive's namespace
                stem, _, ext = name.rpartition(".")
                if ext.lower() in TAR_IMAGE_EXTS:
                    images.append((ti.offset_data, ti.size, name))
                elif ext == "json":
                    jsons[stem] = (ti.offset_data, ti.size)
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"cannot read tar source {path}: {exc}") from None
    for off, size, name in images:
        joff, jsize = jsons.get(name.rpartition(".")[0], (-1, 0))
        yield f"{path}#{off}:{size}:{joff}:{jsize}:{name}"


def expand_sources(sources: list[str], base: Path | None = None) -> list[str]:
    """Sorted, de-duplicated input ids for the given source arguments."""
    out: set[str] = set()
    for src in sources:
        if src == "sample":
            out.update(str(p) for p in sample_files())
            continue
        if src == "sample-video":
            out.add(str(sample_gif()))
            continue
        if src.startswith("@"):
            lst = Path(src[1:])
            if not lst.is_file():
                raise UsageError(f"list file {lst} does not exist")
            lines = [ln.strip() for ln in lst.read_text().splitlines()]
            entries = [ln for ln in lines if ln and not ln.startswith("#")]
            out.update(expand_sources([str(lst.parent / e) if not os.path.isabs(e) else e for e in entries]))
            continue
        p = Path(src)
        if p.is_dir():
            out.update(str(f.resolve()) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_EXTS)
        elif p.is_file():
            if p.suffix.lower() == ".tar":
                out.update(_tar_members(p.resolve()))
            else:
                out.add(str(p.resolve()))
        elif glob.has_magic(src):
            matches = [Path(m) for m in glob.glob(src, recursive=True)]
            files = [m for m in matches if m.is_file()]
            if not files:
                raise UsageError(f"glob {src!r} matches no files")
            out.update(expand_sources([str(m) for m in files]))
        else:
            raise UsageError(f"source {src!r} is not a file, folder, glob, @list or 'sample'")
    return sorted(out)


_SLUG = re.compile(r"[^A-Za-z0-9_\-]+")


def input_key(input_id: str) -> str:
    """A stable, dot-free key: a readable slug of the name plus a hash of the full identity."""
    name = input_id.rsplit(":", 1)[-1] if "#" in input_id else input_id
    stem = Path(name).name.rsplit(".", 1)[0] if "." in Path(name).name else Path(name).name
    slug = _SLUG.sub("_", stem).strip("_")[:40] or "x"
    digest = hashlib.blake2b(input_id.encode(), digest_size=5).hexdigest()
    return f"{slug}-{digest}"


def fingerprint(input_ids: list[str]) -> str:
    """Hash over the inputs' identities, sizes and modification times (content changes are detected by these)."""
    h = hashlib.sha256()
    stat_cache: dict[str, tuple[int, int]] = {}
    for iid in input_ids:
        path = iid.split("#", 1)[0]
        if path not in stat_cache:
            try:
                st = os.stat(path)
                stat_cache[path] = (st.st_size, st.st_mtime_ns)
            except OSError:
                stat_cache[path] = (-1, -1)
        h.update(f"{iid}\0{stat_cache[path][0]}\0{stat_cache[path][1]}\n".encode())
        if len(stat_cache) > 4096:
            stat_cache.clear()
    return h.hexdigest()[:16]


def read_input(input_id: str, max_bytes: int = 1 << 30) -> tuple[bytes, dict]:
    """Raw bytes of an input and the metadata carried with it (a tar member's sibling .json)."""
    import json

    try:
        if "#" in input_id:
            path, loc = input_id.split("#", 1)
            offset, size, joff, jsize, member = loc.split(":", 4)
            meta: dict = {"source": f"{path}:{member}"}
            with open(path, "rb") as f:
                f.seek(int(offset))
                data = f.read(int(size))
                if len(data) != int(size):
                    raise InputError(f"tar member {member} is truncated")
                if int(joff) >= 0 and int(jsize) <= 1 << 20:
                    f.seek(int(joff))
                    try:
                        extra = json.loads(f.read(int(jsize)))
                        if isinstance(extra, dict):
                            meta["source_json"] = extra
                    except ValueError:
                        pass
            return data, meta
        size = os.path.getsize(input_id)
        if size > max_bytes:
            raise InputError(f"file of {size} bytes exceeds the read limit of {max_bytes}")
        with open(input_id, "rb") as f:
            return f.read(), {"source": input_id}
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}") from None


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
