"""vistok: images and videos to discrete token shards, and GPT-style models trained on them.

The Python API (`vistok.shard`, `vistok.open_dataset`, `vistok.rows`, `vistok.model_for`, `vistok.save_run`,
`vistok.evaluate`, `vistok.get_codec`) lives in
`vistok.api` and is imported on first use, so `import vistok` (and every shard worker) stays light.
"""

__version__ = "0.1.0"

_API = ("Codec", "DataConfig", "Rows", "evaluate", "get_codec", "model_for", "open_dataset", "rows", "save_run", "shard")


def __getattr__(name: str):
    if name in _API:  # imported on first use (and by name, so the layers below never depend on it)
        import importlib

        return getattr(importlib.import_module("vistok.api"), name)
    raise AttributeError(f"module 'vistok' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
