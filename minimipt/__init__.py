"""minimipt: a small PyTorch package that teaches and reproduces MIPT-SSM (arXiv 2604.07716 v1).

Dimension glossary used across the package:

====  =========================================================
B     batch size
L     sequence length (tokens)
D     state channels (complex) of a MIPT layer
d     model width (``d_model``)
K     cache slots
H     attention heads
V     vocabulary size
C     classes
====  =========================================================
"""

from __future__ import annotations

from ._version import __version__

from .config import MIPTConfig, TransformerConfig
from .env import get_device, seed_everything, setup, smoke_mode
from .layer import MIPTLayer
from .cache import CausalSparseCache
from .state import CacheState, MIPTState, ModelAux, PooledMIPTState, TransformerState, state_nbytes
from .models import MIPTClassifier, MIPTLM
from .transformer import TransformerClassifier, TransformerLM
from .optim import count_parameters, param_groups
from .ops import mipt_scan, register_scan_method, scan_methods
from .pretrained import from_pretrained
from .decoding import Decoder

__all__ = [
    "__version__",
    "setup", "smoke_mode", "get_device", "seed_everything",
    "mipt_scan", "register_scan_method", "scan_methods",
    "MIPTConfig", "TransformerConfig", "MIPTLayer",
    "CausalSparseCache", "MIPTClassifier", "MIPTLM", "TransformerClassifier", "TransformerLM", "state_nbytes",
    "MIPTState", "PooledMIPTState", "CacheState", "TransformerState", "ModelAux", "from_pretrained", "Decoder",
    "param_groups", "count_parameters",
]
