import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from vistok.errors import InputError, UsageError
from vistok.media.sources import decode_image, expand_sources, read_input, sample_files
from vistok.record import parse_input_id


def _png(arr, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_sample_source_is_real_photos():
    files = sample_files()
    assert len(files) >= 20
    img = decode_image(files[0].read_bytes())
    assert img.ndim == 3 and img.shape[2] == 3


def test_expand_folders_globs_lists_dedup(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ("a/x.png", "a/b/y.jpg", "a/b/notes.txt"):
        (tmp_path / p).write_bytes(b"")
    (tmp_path / "list.txt").write_text("# comment\na/x.png\n\na/b/y.jpg\n")
    ids = expand_sources([str(tmp_path / "a"), str(tmp_path / "a" / "*.png"), f"@{tmp_path / 'list.txt'}"])
    # one input per file, named by its smallest name: the folder's name and the path inside it
    assert [tuple(parse_input_id(i)) for i in ids] == [("a/b/y.jpg", str((tmp_path / "a/b/y.jpg").resolve()), None),
                                                       ("a/x.png", str((tmp_path / "a/x.png").resolve()), None)]
    # a list's entries are named by the path as written: the same names the folder gives its files
    assert [parse_input_id(i).name for i in expand_sources([f"@{tmp_path / 'list.txt'}"])] == ["a/b/y.jpg", "a/x.png"]
    with pytest.raises(UsageError):
        expand_sources([str(tmp_path / "missing")])


def test_names_and_keys_do_not_depend_on_where_the_files_live(tmp_path):
    for root in ("one", "two/deeper"):
        (tmp_path / root / "photos" / "sub").mkdir(parents=True)
        for p in ("x.png", "sub/y.png"):
            (tmp_path / root / "photos" / p).write_bytes(b"")
    a = [parse_input_id(i) for i in expand_sources([str(tmp_path / "one" / "photos")])]
    b = [parse_input_id(i) for i in expand_sources([str(tmp_path / "two/deeper/photos" / ".." / "photos")])]
    assert [r.name for r in a] == [r.name for r in b] == ["photos/sub/y.png", "photos/x.png"]
    assert [r.key for r in a] == [r.key for r in b] and a[0].path != b[0].path
    glob_names = [parse_input_id(i).name for i in expand_sources([str(tmp_path / "one/photos/**/*.png")])]
    assert sorted(glob_names) == ["photos/sub/y.png", "photos/x.png"]
    assert all(parse_input_id(i).name.startswith("sample/") for i in expand_sources(["sample"]))


def test_a_list_of_files_sharing_a_basename_shards_them_all(tmp_path):
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.shards.reader import Dataset
    from vistok.tokenize import JpegCodec

    for i, d in enumerate(("a", "b", "c/d")):
        (tmp_path / d).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / d / "1.png")
    (tmp_path / "list.txt").write_text(f"a/1.png\n./b/1.png\n{tmp_path / 'c/d/1.png'}\n")
    names = [parse_input_id(i).name for i in expand_sources([f"@{tmp_path / 'list.txt'}"])]
    assert names == sorted(["a/1.png", "b/1.png", str(tmp_path / "c/d/1.png")])
    res = run_job([f"@{tmp_path / 'list.txt'}"], tmp_path / "ds", JpegCodec(), Preprocess(), shard_size=8,
                  executor="local", quiet=True)
    assert res.samples == 3 and res.errors == 0
    assert len({r.key for r in Dataset(res.folder)}) == 3


def test_two_files_with_one_name_are_refused(tmp_path):
    for root in ("x", "y"):
        (tmp_path / root / "photos").mkdir(parents=True)
        (tmp_path / root / "photos" / "a.png").write_bytes(root.encode())
    with pytest.raises(UsageError, match="share the name 'photos/a.png'"):
        expand_sources([str(tmp_path / "x" / "photos"), str(tmp_path / "y" / "photos")])


def test_webdataset_tar_source_carries_keys_and_json(tmp_path):
    path = tmp_path / "in.tar"
    img = _png(np.full((8, 8, 3), 7, np.uint8))
    with tarfile.open(path, "w") as t:
        for name, data in (("000001.jpg", img), ("000001.json", b'{"caption": "hi"}'), ("000002.png", img),
                           ("../evil.png", img)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    ids = expand_sources([str(path)])
    assert len(ids) == 3  # the path escaping the archive is an input that is refused when read
    with pytest.raises(InputError, match="'..'"):
        read_input(next(i for i in ids if "evil" in i))
    (first,) = [i for i in ids if parse_input_id(i).name == "in.tar/000001.jpg"]
    data, meta = read_input(first)
    assert data == img and meta["source_json"] == {"caption": "hi"} and meta["source"] == f"{path}:000001.jpg"
    assert parse_input_id(first).key.startswith("000001-")


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_modes_become_rgb(mode):
    rng = np.random.default_rng(0)
    base = Image.fromarray((rng.random((9, 11, 3)) * 255).astype(np.uint8))
    if mode == "I;16":
        im = Image.fromarray((rng.random((9, 11)) * 65535).astype(np.uint16))
    else:
        im = base.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
    out = decode_image(buf.getvalue())
    assert out.shape == (9, 11, 3) and out.dtype == np.uint8


def test_alpha_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    assert (decode_image(_png(rgba, "RGBA")) == 255).all()


def test_exif_orientation_is_applied():
    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue()).shape == (20, 10, 3)


def test_bad_inputs_raise_one_line_input_errors():
    for data in (b"", b"hello, not an image", _png(np.zeros((64, 64, 3), np.uint8))[:60]):
        with pytest.raises(InputError) as ei:
            decode_image(data)
        assert "\n" not in str(ei.value)
    with pytest.raises(InputError, match="exceeds"):
        decode_image(_png(np.zeros((100, 100, 3), np.uint8)), max_pixels=5000)






def test_unsafe_tar_members_become_error_rows_and_the_job_goes_on(tmp_path):
    """Every member of a crafted tar is accounted for: a sample, a sibling, or an error row with the reason."""
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.tokenize import JpegCodec

    img = _png(np.full((8, 8, 3), 90, np.uint8))
    path = tmp_path / "crafted.tar"
    with tarfile.open(path, "w") as t:
        for name, data in (("ok.png", img), ("ok.json", b"{}"), ("/etc/abs.png", img), ("../up.png", img)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        link = tarfile.TarInfo("link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)
    res = run_job([str(path)], tmp_path / "ds", JpegCodec(), Preprocess(), executor="local", quiet=True)
    assert res.samples == 1 and res.errors == 3
    rows = (res.folder / "errors.jsonl").read_text()
    for reason in ("absolute", "'..'", "a link"):
        assert reason in rows
    assert "/etc/passwd" not in rows


@given(lines=st.lists(st.text(alphabet="ab/.# \r", max_size=7), max_size=10), newline_at_end=st.booleans(),
       step=st.integers(1, 9))
def test_ranges_of_a_list_file_own_each_line_once(lines, newline_at_end, step):
    """However a list file is cut into byte ranges, the ranges' lines are its lines, each once, in order."""
    from vistok.media.sources import range_lines

    data = ("\n".join(lines) + ("\n" if newline_at_end and lines else "")).encode()
    got = [ln for start in range(0, len(data), step)
           for ln in range_lines(lambda a, b: data[a:b], len(data), start, step)]
    assert got == [ln.strip() for ln in data.decode().splitlines()]


def test_a_large_list_file_is_planned_in_ranges_that_its_tasks_read(tmp_path, monkeypatch):
    from vistok.media import sources
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.shards.reader import Dataset
    from vistok.tokenize import JpegCodec

    photos = tmp_path / "photos"
    photos.mkdir()
    names = []
    for i in range(12):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(photos / f"p{i:02d}.png")
        names.append(f"photos/p{i:02d}.png")
    (tmp_path / "list.txt").write_text("\n".join(names[:6] + ["# a comment", "photos/missing.png"] + names[6:]) + "\n")
    monkeypatch.setattr(sources, "LIST_RANGE_BYTES", 40)  # ~2.5 lines a range
    units = sources.expand_sources([f"@{tmp_path / 'list.txt'}"], defer=True)
    assert len(units) == -(-(tmp_path / "list.txt").stat().st_size // 40) and all(map(sources.is_deferred, units))
    res = run_job([f"@{tmp_path / 'list.txt'}"], tmp_path / "ds", JpegCodec(), Preprocess(), shard_size=2,
                  executor="local", quiet=True)
    assert sorted(r.meta["source"] for r in Dataset(res.folder)) == sorted(str(photos / f"p{i:02d}.png") for i in range(12))
    assert res.samples == 12 and res.errors == 1 and res.inputs == 13
    assert "missing.png" in (res.folder / "errors.jsonl").read_text()


# --- planning in bounded memory: the input list in spilled runs, folders walked a level at a time ---------------
def _tree(root, rng):
    """A random folder tree: odd names (spaces, dots, a newline, non-ASCII), media and other files, a link to a
    file and a link to a folder."""
    for _ in range(50):
        parts = [rng.choice(["a", "a b", "a.b", "b", "ab", "a-"]) for _ in range(rng.randint(0, 3))]
        stem = rng.choice(["x", "x y", "é", "x\ny", "_"]) + str(rng.randint(0, 2))
        path = root.joinpath(*parts, stem + rng.choice([".png", ".jpg", ".txt", ".PNG", ".tar"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".tar":
            with tarfile.open(path, "w") as t:
                for member in rng.sample(["k.png", "j.jpg", "k.json"], 2):
                    t.addfile(tarfile.TarInfo(member), io.BytesIO(b""))
        else:
            path.write_bytes(bytes(rng.randint(0, 9)))
    (root.parent / "outside.png").write_bytes(b"o")
    (root / "link.png").symlink_to(root.parent / "outside.png")
    (root / "linked").symlink_to(root / "a", target_is_directory=True) if (root / "a").is_dir() else None


def _planned_in_memory(srcs, defer):
    """The planner as it was: every input in memory, one file under two names kept by its smallest, two files
    under one name refused, sorted; the fingerprint over a stat per file."""
    import hashlib

    from vistok.media import sources
    from vistok.record import InputId
    from vistok.storage import Loc

    by_target = {}
    for src in srcs:
        for iid, _ in sources._expand_one(src, "test", defer):
            target = (iid.path, iid.member)
            if target not in by_target or iid.name < by_target[target]:
                by_target[target] = iid.name
    owner = {}
    for (path, _), name in by_target.items():
        if owner.setdefault(name, path) != path:
            raise UsageError(f"two inputs share the name {name!r}")
    ids = sorted(str(InputId(name, path, member)) for (path, member), name in by_target.items())
    h = hashlib.sha256()
    for iid in ids:
        ref = parse_input_id(iid)
        size, mark = Loc(ref.path).stamp()
        h.update(f"{ref.name}\0{ref.member}\0{size}\0{mark}\n".encode())
    return ids, h.hexdigest()[:16]


@pytest.mark.parametrize("seed", range(6))
def test_the_input_list_in_spilled_runs_is_the_list_sorted_in_memory(tmp_path, monkeypatch, seed):
    import random

    from vistok.media import sources

    rng = random.Random(seed)
    root = tmp_path / "data"
    root.mkdir()
    _tree(root, rng)
    files = sorted(p for p in root.rglob("*") if p.is_file() and "\n" not in str(p))  # a list holds a name a line
    (tmp_path / "list.txt").write_text("".join(f"{p.relative_to(tmp_path)}\n" for p in rng.sample(files, 5)))
    candidates = [str(root), str(root / "a"), str(root / "b"), f"{root}/**/*.png", f"{root}/a*/*", f"@{tmp_path}/list.txt"]
    srcs = [s for s in rng.sample(candidates, rng.randint(1, 3)) if "**" in s or "@" in s or Path(s).exists()]
    defer = rng.random() < 0.5
    monkeypatch.setattr(sources, "RUN_ENTRIES", 3)
    monkeypatch.setattr(sources, "MERGE_RUNS", 2)  # runs merged into larger runs, too
    try:
        expected = _planned_in_memory(srcs, defer)
    except UsageError:
        with pytest.raises(UsageError, match="share the name"):
            list(sources.InputList(srcs, defer))
        return
    with sources.InputList(srcs, defer) as inputs:
        assert (list(inputs), inputs.fingerprint, inputs.count) == (*expected, len(expected[0]))
        spilled = inputs._tmp.name
        assert len(list(Path(spilled).iterdir())) >= 1
    assert not Path(spilled).exists()  # closing deletes the runs


def test_a_folder_is_walked_as_rglob_lists_it(tmp_path):
    """Streaming the walk changes nothing: every media file, links to files read at their target, links to
    folders not followed, names made of the path inside the folder."""
    import random

    from vistok.media.sources import media_extensions
    from vistok.record import InputId

    root = tmp_path / "data"
    root.mkdir()
    _tree(root, random.Random(7))
    expected = sorted(str(InputId(f"data/{f.relative_to(root).as_posix()}", str(f.resolve()))) for f in root.rglob("*")
                      if f.is_file() and f.suffix.lower() in media_extensions())
    assert expand_sources([str(root)]) == expected
    assert not any("linked/" in i for i in expected) and any("data/link.png\0" in i for i in expected)


def test_a_folder_walk_takes_what_pillow_opens_and_counts_what_it_skips(tmp_path):
    from vistok.media.preprocess import Preprocess
    from vistok.media.sources import image_extensions, media_extensions
    from vistok.pipelines.job import run_job
    from vistok.shards.manifest import load_manifest
    from vistok.tokenize import JpegCodec

    folder = tmp_path / "mixed"
    folder.mkdir()
    img = Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    made = []
    for ext in (".tga", ".ppm", ".pcx", ".sgi", ".ico", ".png", ".qoi", ".dds", ".webp"):
        try:
            img.save(folder / f"a{ext}")
            made.append(ext)
        except (KeyError, OSError, ValueError):  # a format this Pillow cannot write: nothing to test with it
            continue
    img.convert("L").save(folder / "b.pgm")
    img.convert("1").save(folder / "c.pbm")
    for name in ("notes.txt", "x.txt", "README"):
        (folder / name).write_text("not an image")
    assert {".tga", ".ppm", ".pgm", ".pbm", ".ico", ".psd", ".sgi", ".dds", ".pcx", ".fli", ".jp2"} <= image_extensions()
    res = run_job([str(folder)], tmp_path / "ds", JpegCodec(), Preprocess(size=16), shard_size=64,
                  executor="local", quiet=True)
    assert res.samples == len(made) + 2 and res.errors == 0
    assert res.skipped == {".txt": 2, "": 1} == load_manifest(res.folder).skipped
    narrow = run_job([str(folder)], tmp_path / "narrow", JpegCodec(), Preprocess(size=16), shard_size=64,
                     executor="local", quiet=True, extensions="png,pgm")
    assert narrow.samples == 2 and narrow.skipped[".tga"] == 1
    wide = run_job([str(folder)], tmp_path / "wide", JpegCodec(), Preprocess(size=16), shard_size=64,
                   executor="local", quiet=True, extensions="+txt,-tga")
    assert wide.errors == 2 and wide.samples == len(made) + 1  # text files read and recorded; no .tga
    assert media_extensions("-gif") == media_extensions() - {".gif"}
    with pytest.raises(UsageError, match="--extensions"):
        media_extensions("+")
