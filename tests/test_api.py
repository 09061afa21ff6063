"""The Python API as a user's own loop uses it: `import vistok`, open a dataset, train on `vistok.rows`."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import vistok
from vistok.errors import DatasetError
from vistok.media.preprocess import Preprocess
from vistok.media.sources import decode_image, sample_files
from vistok.pipelines.job import run_job
from vistok.pipelines.pack import pack
from vistok.tokenize import JpegCodec


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "ds"
    run_job(["sample"], out, JpegCodec(quality=20), Preprocess(size=32, crops=3, seed=0), shard_size=16,
            executor="local", quiet=True)
    return out


def test_a_plain_torch_loop_over_vistok_rows_trains(folder):
    ds = vistok.open_dataset(folder)
    assert ds.manifest.codec["id"] == "jpeg" and ds.codec.decode(next(iter(ds))).shape == (32, 32, 3)
    torch.manual_seed(0)
    rows = vistok.rows(folder, order="random", block_size=128, heldout=0.2, shuffle_block=8)
    model = vistok.model_for(rows, "tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step, batch in enumerate(DataLoader(rows, batch_size=4)):
        assert set(batch) >= {"idx", "targets", "coords", "next_coords", "loss_mask", "doc_ids"}
        _, loss = model(**batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        if step == 39:
            break
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])  # it learns


@pytest.mark.parametrize("packed", [False, True])
def test_rows_resume_exactly_from_their_state(folder, tmp_path, packed):
    src = pack(folder, tmp_path / "d.zarr") if packed else folder

    def batches(rows, n):
        it = iter(DataLoader(rows, batch_size=3))
        return [next(it) for _ in range(n)]

    kw = dict(order="randsac:4,2", block_size=96, shuffle_block=8)
    whole = batches(vistok.rows(src, **kw), 7)
    first = vistok.rows(src, **kw)
    batches(first, 4)
    state = json.loads(json.dumps(first.state_dict()))  # plain JSON: it can go in any checkpoint
    again = vistok.rows(src, **kw)
    again.load_state_dict(state)
    for a, b in zip(whole[4:], batches(again, 3)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(DatasetError, match="another data config"):
        vistok.rows(src, **{**kw, "order": "random"}).load_state_dict(state)


def test_a_codec_encodes_and_decodes_one_image():
    img = decode_image(sample_files()[0].read_bytes())[:64, :64]
    codec = vistok.get_codec({"id": "jpeg", "quality": 50})
    rec = codec.encode(img)
    back = codec.decode(rec)
    assert back.shape == img.shape
    assert 10 * np.log10(255**2 / np.mean((back.astype(float) - img) ** 2)) > 25
    assert "open_dataset" in dir(vistok)


def test_the_readme_example_runs(tmp_path, monkeypatch):
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", section.index("```python") + 9)]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
    assert (tmp_path / "shards/api/manifest.json").exists()


def test_a_model_of_ones_own_loop_is_saved_as_a_run_that_eval_sample_and_compress_take(folder, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    from vistok.errors import CodecError, UsageError

    torch.manual_seed(0)
    rows = vistok.rows(str(folder), order="random", block_size=128, heldout=0.2, shuffle_block=8)
    model = vistok.model_for(str(folder))  # a path is taken as vistok.rows(path)
    assert model.cfg.block_size == 512
    model = vistok.model_for(rows)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step, batch in enumerate(DataLoader(rows, batch_size=4)):
        model(**batch)[1].backward()
        opt.step()
        opt.zero_grad()
        if step == 3:
            break
    ck = vistok.save_run(model, rows, tmp_path / "mine", step=4, optimizer=opt)
    assert ck.name == "step-000004"
    ev = vistok.evaluate(tmp_path / "mine")
    assert ev["step"] == 4 and ev["order"] == "random" and ev["bits_per_image"] > 0
    for args in (["eval", tmp_path / "mine", "--json"], ["sample", tmp_path / "mine", "--n", "1", "--out", tmp_path / "s.png"],
                 ["compress", tmp_path / "mine", folder, "--out", tmp_path / "c"]):
        proc = subprocess.run([sys.executable, "-m", "vistok.cli", *map(str, args)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "vistok.cli", "train", str(folder), "--out", str(tmp_path / "mine"),
                           "--resume", "--block-size", "128"], capture_output=True, text=True)
    assert proc.returncode == 2 and "saved by vistok.save_run" in proc.stderr
    with pytest.raises(UsageError, match="another run's checkpoint"):
        vistok.save_run(model, rows, tmp_path / "mine", step=9)
    # the small things a first session reaches for
    res = vistok.shard("sample", tmp_path / "one", {"id": "jpeg", "quality": 20}, size=16)  # a string: one source
    assert res.samples == len(sample_files())
    codec = vistok.get_codec({"id": "jpeg", "quality": 20})
    img = Image.fromarray(np.zeros((16, 16, 3), np.uint8)).convert("RGBA")
    assert codec.decode(codec.encode(img)).shape == (16, 16, 3)
    with pytest.raises(CodecError, match="takes an"):
        codec.encode("photo.png")
