"""Camera raw support: reading Bayer raws (LibRaw), DNG writing, LibRaw development, noise level functions."""

from n3cli.raw.dng import write_dng
from n3cli.raw.io import RawError, RawImage, develop, pack_bayer, read_raw, unpack_bayer
from n3cli.raw.nlf import NLFEstimate, estimate_nlf, estimate_raw_nlf, nlf_from_dng

__all__ = [
    "NLFEstimate",
    "RawError",
    "RawImage",
    "develop",
    "estimate_nlf",
    "estimate_raw_nlf",
    "nlf_from_dng",
    "pack_bayer",
    "read_raw",
    "unpack_bayer",
    "write_dng",
]
