"""upper_fast: personalized two-tower product retrieval (Etsy UPPER), served on CPU."""

from upper_fast._core import FormatError, __version__, cpu_simd_level, simd_level

__all__ = ["FormatError", "__version__", "cpu_simd_level", "simd_level"]
