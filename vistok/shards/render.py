"""Writing decoded records to image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vistok.errors import UsageError
from vistok.shards.record import TokenRecord
from vistok.tokenize.base import Codec


def save_record(codec: Codec, record: TokenRecord, path: str | Path) -> None:
    from PIL import Image

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        if not hasattr(codec, "to_jpeg"):
            raise UsageError(f"codec {codec.codec_id} cannot write .jpg; use .png")
        path.write_bytes(codec.to_jpeg(record))
    elif suffix == ".png":
        Image.fromarray(np.asarray(codec.decode(record))).save(path, format="PNG")
    else:
        raise UsageError(f"output {path} must end in .png or .jpg")
