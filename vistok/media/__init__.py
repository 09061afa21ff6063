"""Media in: source expansion, image loading, PyAV video helpers, preprocessing (no codec, no torch)."""
