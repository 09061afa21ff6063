"""Known regions of an image (`vistok sample --complete --known REGION`, `vistok eval --given REGION`).

A region is a side and a fraction (`top:0.5`: the top half), a centred box (`centre:0.5`: half the width and
half the height), or a mask PNG (white or any non-zero pixel: known). A unit is known when its centre lies in
the region, so the same region names the same units for every codec of the same geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vistok.errors import UsageError

SIDES = ("top", "bottom", "left", "right", "centre")
REGION_HELP = ("top:F, bottom:F, left:F, right:F (that fraction of the image from the side), centre:F (a centred "
               "box, F of each side) or a mask PNG (non-zero: known); a unit is known when its centre is inside")


@dataclass(frozen=True)
class Region:
    side: str = ""  # one of SIDES, or "" for a mask
    fraction: float = 0.0
    mask: np.ndarray | None = None  # (H, W) bool, any size: sampled at the units' centres
    inverted: bool = False  # the units outside instead (`inverse`)

    def __str__(self) -> str:
        name = f"{self.side}:{self.fraction:g}" if self.side else "mask"
        return f"not {name}" if self.inverted else name

    def inverse(self) -> Region:
        """The units this region leaves out."""
        return Region(self.side, self.fraction, self.mask, not self.inverted)

    def inside(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Which of the points (y, x), as fractions of the image's height and width in [0, 1), are inside."""
        f = self.fraction
        if self.mask is not None:
            h, w = self.mask.shape
            return self.mask[(y * h).astype(np.int64), (x * w).astype(np.int64)]
        if self.side == "centre":
            return (np.abs(y - 0.5) < f / 2) & (np.abs(x - 0.5) < f / 2)
        return {"top": y < f, "bottom": y >= 1 - f, "left": x < f, "right": x >= 1 - f}[self.side]

    def units(self, grid: tuple[int, int], unit_pixels: tuple[int, int], height: int, width: int) -> np.ndarray:
        """(rows * cols,) bool: the units of a frame's grid (raster order) whose centres are inside."""
        rows, cols = grid
        cy = np.minimum((np.arange(rows) + 0.5) * unit_pixels[0] / height, 1 - 1e-9)
        cx = np.minimum((np.arange(cols) + 0.5) * unit_pixels[1] / width, 1 - 1e-9)
        return self.inside(*np.meshgrid(cy, cx, indexing="ij")).ravel() != self.inverted


def parse_region(text: str) -> Region:
    """`top:0.5`, ..., `centre:0.4`, or the path of a mask PNG; a `UsageError` says what is wrong."""
    side, _, arg = text.partition(":")
    if side in SIDES:
        try:
            f = float(arg)
        except ValueError:
            f = -1.0
        if not 0 < f < 1:
            raise UsageError(f"--known/--given {text!r}: {side}:F takes a fraction between 0 and 1 (top:0.5)")
        return Region(side, f)
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"--known/--given {text!r} is neither a region ({REGION_HELP}) nor a mask file")
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("L", (256, 256))
            return Region(mask=np.asarray(im.convert("L")) > 0)
    except (OSError, Image.DecompressionBombError) as exc:
        raise UsageError(f"--known/--given {text}: not a readable mask image ({exc})") from None
