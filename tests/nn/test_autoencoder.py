import json
import shutil

import pytest

from vistok.errors import DatasetError
from vistok.nn.autoencoder import AEConfig, Autoencoder, load_tokenizer


def test_weights_are_safetensors_and_checked(bsq_tok, tmp_path):
    from safetensors import safe_open

    assert not list(bsq_tok.glob("*.pt"))  # nothing that would need unpickling
    cfg = json.loads((bsq_tok / "config.json").read_text())
    with safe_open(str(bsq_tok / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(Autoencoder(AEConfig(**cfg["autoencoder"])).state_dict())
    tampered = tmp_path / "tok"
    shutil.copytree(bsq_tok, tampered)
    w = bytearray((tampered / "model.safetensors").read_bytes())
    w[-1] ^= 1
    (tampered / "model.safetensors").write_bytes(bytes(w))
    load_tokenizer(bsq_tok, expect_sha256=cfg["sha256"])
    with pytest.raises(DatasetError, match="use the tokenizer that made it"):
        load_tokenizer(tampered, expect_sha256=cfg["sha256"])
