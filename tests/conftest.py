import numpy as np
import pytest


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photograph (scikit-image's astronaut), 512x512 RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def Quiet():  # noqa: N802 - used like a class
    """A progress stream that swallows everything (for trainers in tests)."""
    import io

    return io.StringIO()
