"""Codecs (media <-> tokens) and their registry."""

from vistok.tokenize.base import Codec, TokenRange, Vocabulary, codec_ids, get_codec, register_codec
from vistok.tokenize.jpeg import JpegCodec

__all__ = ["Codec", "JpegCodec", "TokenRange", "Vocabulary", "codec_ids", "get_codec", "register_codec"]
