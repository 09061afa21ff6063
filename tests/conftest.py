import io
import json
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photograph (scikit-image's astronaut), 512x512 RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture
def photo_records(photo):
    """n JPEG records of 64x64 crops of the astronaut photo, keyed img-000..., with a source in the metadata."""
    from vistok.tokenize import JpegCodec

    def make(n: int = 5):
        codec = JpegCodec()
        return [codec.encode(photo[i * 40 : i * 40 + 64, :64], key=f"img-{i:03d}", meta={"source": f"s{i}"})
                for i in range(n)]

    return make


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="session")
def psnr():
    """PSNR in dB of two uint8 images (inf when equal)."""
    return _psnr


def _make_video(fmt: str, codec: str, n: int = 30, rate: int = 25, size=(32, 48), pix_fmt="yuv420p") -> bytes:
    """A real encode: frame i is a flat grey of level 5 * i (so a decoded frame tells its index)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        st = out.add_stream(codec, rate=Fraction(rate))
        st.height, st.width = size
        st.pix_fmt = pix_fmt
        if codec == "libx264":
            st.options = {"crf": "10", "threads": "1"}
        for i in range(n):
            img = np.full((*size, 3), min(255, 5 * i), np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def make_video():
    """A real video encoded with PyAV (frame i is a flat grey of level 5 * i)."""
    return _make_video


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def folder_bytes():
    """Every file under a folder, by relative path -> bytes (for byte-identical folder checks)."""
    return _folder_bytes



def _logged_losses(run) -> dict[int, float]:
    rows = [json.loads(ln) for ln in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss_bits"] for r in rows if "loss_bits" in r}


@pytest.fixture(scope="session")
def logged_losses():
    """A run folder -> {step: training loss in bits/token} from its metrics.jsonl."""
    return _logged_losses


def _small_tokenizer(folder, name, kind="bsq", steps=25, **ae) -> dict:
    """Train a tiny BSQ/VQ tokenizer on the embedded photos into `folder/name`; returns its report."""
    from vistok.nn.autoencoder import AEConfig
    from vistok.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    cfg = TokenizerTrainConfig(sources=["sample"], out=str(Path(folder) / name), crop=32, batch=16, max_steps=steps,
                               eval_crops=32, seed=1)
    return train_tokenizer(AEConfig(kind=kind, width=32, blocks=1, latent=16, **ae), cfg, quiet=True)


@pytest.fixture(scope="session")
def small_tokenizer():
    return _small_tokenizer


@pytest.fixture(scope="session")
def bsq_tok(tmp_path_factory):
    """A 10-bit BSQ tokenizer folder, trained once per session."""
    d = tmp_path_factory.mktemp("tok")
    _small_tokenizer(d, "bsq", bits=10)
    return d / "bsq"


@pytest.fixture(scope="session")
def multiscale_tok(tmp_path_factory):
    """An 8-bit BSQ tokenizer over 3 scales, trained once per session."""
    d = tmp_path_factory.mktemp("mstok")
    _small_tokenizer(d, "ms", bits=8, scales=3)
    return d / "ms"


@pytest.fixture(scope="session")
def gradwalk_dataset(tmp_path_factory):
    """72 JPEG records (32x32 crops of the embedded photos) with a stored gradwalk order, in 4 shards."""
    from vistok.media.preprocess import Preprocess
    from vistok.pipelines.job import run_job
    from vistok.tokenize import JpegCodec

    out = tmp_path_factory.mktemp("store") / "ds"
    run_job(["sample"], out, JpegCodec(), Preprocess(size=32, crops=3), shard_size=20, compress=True,
            executor="local", quiet=True, store_orders=("gradwalk:max",))
    return out


@pytest.fixture
def small_chunks(monkeypatch):
    """Tiny store chunks, so a small dataset spans many chunks and pack tasks."""
    import vistok.pipelines.pack as pack_mod

    monkeypatch.setattr(pack_mod, "TOKEN_CHUNK", 1024)
    monkeypatch.setattr(pack_mod, "SAMPLE_CHUNK", 8)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(env_extra: dict | None = None) -> tuple:
    """A real S3 endpoint: moto in server mode on 127.0.0.1 (as s3fs tests itself). Returns (process, url)."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env_extra or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def s3_endpoint():
    """The endpoint URL of a moto S3 server for the whole session. Credentials are moto's test values, set in
    the environment (where s3fs and Ray workers started later find them), as a real deployment would."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(k, v)
    proc, url = start_moto()
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3(s3_endpoint, request):
    """A fresh bucket: (s3://BUCKET, the --storage-options JSON, an s3fs filesystem)."""
    import re

    import s3fs

    bucket = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + "-b"
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    fs.mkdir(bucket)
    return f"s3://{bucket}", json.dumps({"endpoint_url": s3_endpoint}), fs


@pytest.fixture(scope="session", autouse=True)
def index_cache(tmp_path_factory):
    """Shard indexes (`vistok.shards.index`) go to a folder of this test session, not the user's cache."""
    folder = tmp_path_factory.mktemp("index")
    old = os.environ.get("VISTOK_INDEX_DIR")
    os.environ["VISTOK_INDEX_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("VISTOK_INDEX_DIR", None)
    else:
        os.environ["VISTOK_INDEX_DIR"] = old


# Under pytest-xdist (`make test` runs two workers on two cores) each worker's torch, and the vistok commands
# it starts, get one thread: two workers at two threads each would oversubscribe the cores.
# Each worker's Ray keeps its files (and the address a `ray.init()` without one would join) in a folder of its
# own: otherwise a worker's in-process Ray could join the cluster another worker's test started.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import atexit
    import shutil
    import tempfile

    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix=f"ray-{os.environ['PYTEST_XDIST_WORKER']}-", dir="/tmp")
    atexit.register(shutil.rmtree, os.environ["RAY_TMPDIR"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Slow tests first (stable otherwise): the two xdist workers of `make test` then end on short tests that
    either can take, instead of one waiting while the other runs a long test it was handed last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
