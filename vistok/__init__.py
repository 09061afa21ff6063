"""vistok: images and videos to discrete token shards, and GPT-style models trained on them."""

__version__ = "0.1.0"
