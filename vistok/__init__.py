"""vistok: images and videos to discrete token shards, and GPT-style models trained on them."""

__version__ = "0.1.0"

# Bumped whenever the on-disk record or manifest layout changes; readers refuse newer formats.
FORMAT_VERSION = 1
