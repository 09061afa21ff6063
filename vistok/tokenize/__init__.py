"""Codecs (media <-> tokens) and their registry; the orders registered outside `orders.py`."""

from vistok.tokenize import confident  # noqa: F401  (importing an order registers it: --order confident)
from vistok.tokenize.avc.codec import AvcCodec
from vistok.tokenize.base import Codec, TokenRange, Vocabulary, codec_ids, get_codec, register_codec
from vistok.tokenize.h264 import H264Codec
from vistok.tokenize.jpeg import JpegCodec
from vistok.tokenize.jpeg_refine import JpegRefineCodec
from vistok.tokenize.learned import BSQCodec, VQCodec
from vistok.tokenize.pixels import PixelCodec
from vistok.tokenize.wavelet import WaveletCodec

__all__ = ["AvcCodec", "BSQCodec", "VQCodec", "Codec", "H264Codec", "JpegCodec", "JpegRefineCodec", "PixelCodec", "TokenRange", "Vocabulary", "WaveletCodec", "codec_ids", "get_codec", "register_codec"]
