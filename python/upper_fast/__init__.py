"""upper_fast: personalized two-tower product retrieval (Etsy UPPER), served on CPU.

`import upper_fast` never imports torch; the PyTorch side is `upper_fast_train` (the `upper-fast-train`
distribution in training/).
"""

from upper_fast import data as _data
from upper_fast import featurizer as _featurizer
from upper_fast import index as _index
from upper_fast import kernels as _kernels
from upper_fast import retriever as _retriever
from upper_fast._core import FormatError, __version__, cpu_simd_level, simd_level
from upper_fast.recommender import Recommender
from upper_fast.types import TopK

from upper_fast.kernels import *  # noqa: E402,F401,F403

from upper_fast.index import *  # noqa: E402,F401,F403

from upper_fast.featurizer import *  # noqa: E402,F401,F403

from upper_fast.retriever import *  # noqa: E402,F401,F403

__all__ = sorted(
    ["FormatError", "Recommender", "TopK", "__version__", "cpu_simd_level", "simd_level"]
    + _kernels.__all__
    + _index.__all__
    + _featurizer.__all__
    + _retriever.__all__
)
