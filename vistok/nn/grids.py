"""Code-grid geometry shared by the autoencoder and the learned codecs; plain Python, so a codec can
use it without importing torch."""


def scale_grids(h: int, w: int, scales: int) -> list[tuple[int, int]]:
    """Code grids of a multi-scale tokenizer for an (h, w) latent grid, coarsest first."""
    return [(-(-h // 2**k), -(-w // 2**k)) for k in range(scales - 1, -1, -1)]
