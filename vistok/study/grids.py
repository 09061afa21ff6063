"""Named grids (`vistok study --grid NAME`): every StudyConfig field a grid sets; flags given override them.

`tokenizations` (`make study`) is what 2 CPU cores finish in about 45 minutes: five tokenizations at one
quality on 16x16 Fashion-MNIST, three orders each and one masked row, three seeds, small probes. `full`
asks the same question at RandSAC's geometry (32x32, an 8x8 grid of 4x4-pixel units), with more orders,
modes, steps, model and seeds: a GPU's or a cluster's job (`--executor ray`). `orders` is the order study
of one tokenization (the study's defaults: BSQ codes on 32x32).
"""

from __future__ import annotations

from typing import Any

TOKENIZER = "study"  # a codec's `tokenizer` naming the study's own (OUT/tokenizer)


def tokenizations(pixel_unit: int, bsq_modes: list[str]) -> list[dict[str, Any]]:
    """Pixels (in units of pixel_unit^2, and one pixel at a time in raster order: RandSAC's Table 1), JPEG and
    wavelet coefficients, BSQ and VQ codes; BSQ's rows alone have `bsq_modes` (the masked row). Knobs are
    starting points: `psnr` sets them."""
    return [{"id": "pixels", "unit": pixel_unit, "bits": 8},
            {"id": "pixels", "unit": 1, "bits": 8, "orders": ["raster"], "parallel": [""]},
            {"id": "jpeg", "quality": 50, "layout": "dense"},
            {"id": "wavelet", "layout": "dense", "levels": 3, "step": 8.0},
            {"id": "bsq", "tokenizer": TOKENIZER, "parallel": bsq_modes},
            {"id": "vq", "tokenizer": TOKENIZER}]


GRIDS: dict[str, dict[str, Any]] = {
    "orders": {},
    "tokenizations": {
        # 16x16 (resampled): 256 pixel / coefficient tokens an image, 16 BSQ / VQ codes (4x4 patches), so
        # that 17 rows x 3 seeds fit 45 minutes on 2 cores; 21 dB is what the study's 4x4-patch tokenizers
        # reach at this size, so every codec can be matched to it
        "codecs": tokenizations(4, ["", "masked:0.5"]), "psnr": 21.0, "size": 16, "resize": "center-crop",
        "orders": ["raster", "random", "randsac:4"], "parallel": [""],
        "test_sources": ["fashion-mnist:test:1000"], "probe_train": 800, "probe_test": 0, "probe_masks": ["train"],
        "eval_images": 300, "finetune": 0, "steps": 80, "batch_size": 16, "seeds": 3,
        "executor": "ray", "row_cpus": 1,
    },
    "full": {
        "codecs": tokenizations(4, ["", "segments", "any", "masked:0.5"]), "psnr": 30.0, "size": 32, "resize": "border",
        "orders": ["raster", "random", "hilbert", "randsac:7", "randsac:11,5", "squares:2"],
        "parallel": ["", "segments", "any"], "preset": "small", "steps": 5000, "batch_size": 64, "lr": 1e-3,
        "probe_train": 10000, "probe_test": 0, "finetune": 3, "seeds": 5, "executor": "ray",
    },
}
