"""Codecs (media <-> tokens), orders and parallel modes, and their registries.

Every module of this package is imported here, so a new codec, order or mode registers itself by being a
module of the package (`register_codec`, `register_order`, `register_mode`): no import line to add.
"""

import importlib
import pkgutil

from vistok.tokenize.avc.codec import AvcCodec
from vistok.tokenize.base import Codec, TokenRange, Vocabulary, codec_ids, get_codec, register_codec
from vistok.tokenize.h264 import H264Codec
from vistok.tokenize.jpeg import JpegCodec
from vistok.tokenize.jpeg_refine import JpegRefineCodec
from vistok.tokenize.learned import BSQCodec, VQCodec
from vistok.tokenize.pixels import PixelCodec
from vistok.tokenize.wavelet import WaveletCodec

for _module in pkgutil.walk_packages(__path__, __name__ + "."):  # the registrations the names above leave out
    importlib.import_module(_module.name)

__all__ = ["AvcCodec", "BSQCodec", "VQCodec", "Codec", "H264Codec", "JpegCodec", "JpegRefineCodec", "PixelCodec", "TokenRange", "Vocabulary", "WaveletCodec", "codec_ids", "get_codec", "register_codec"]
