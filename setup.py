"""Build the optional C kernels of the JPEG codec; everything else is in pyproject.toml.

`optional=True`: without a C compiler the install still succeeds and vistok uses its numpy code path
(`vistok.tokenize.dct.NATIVE` tells which is active).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("vistok._jpegc", ["vistok/_jpegc.c"], extra_compile_args=["-O3", "-ffp-contract=off"], optional=True)
    ]
)
