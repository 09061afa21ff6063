"""Build the optional C kernels (the JPEG codec's, and the AVC encoder's intra decisions); everything else is in
pyproject.toml.

`optional=True`: without a C compiler the install still succeeds and vistok uses its numpy code paths
(`vistok.tokenize.dct.NATIVE` and `vistok.tokenize.avc.encoder.NATIVE` tell which is active).
"""

from setuptools import Extension, setup

FLAGS = ["-O3", "-ffp-contract=off"]

setup(
    ext_modules=[
        Extension("vistok._jpegc", ["vistok/_jpegc.c"], extra_compile_args=FLAGS, optional=True),
        Extension("vistok._avcc", ["vistok/_avcc.c"], extra_compile_args=FLAGS, optional=True),
    ]
)
