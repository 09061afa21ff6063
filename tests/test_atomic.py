"""`vistok.atomic`: a target is the old one or the new one, never a part, and no temporary is left behind."""

import pytest

from vistok.atomic import AtomicPath


def test_a_file_or_folder_appears_whole_or_the_old_one_stays(tmp_path):
    target = tmp_path / "a.bin"
    with AtomicPath(target) as tmp:
        tmp.write_bytes(b"one")
    with pytest.raises(RuntimeError), AtomicPath(target) as tmp:
        tmp.write_bytes(b"two, half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"one"
    folder = tmp_path / "step-1"
    for content in (b"old", b"new"):
        with AtomicPath(folder, folder=True) as tmp:
            (tmp / "model.pt").write_bytes(content)
    assert (folder / "model.pt").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "step-1"]  # no temporary left
