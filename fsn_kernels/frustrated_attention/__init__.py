"""The frustrated-synchronization attention op: reference (``naive``), fused Triton
forward and backward kernels, and the public function (``op``). The math is in
README.md beside this file."""
from .naive import naive_frustrated_attention
from .op import FrustratedAttentionFunction, frustrated_attention

__all__ = ["frustrated_attention", "naive_frustrated_attention", "FrustratedAttentionFunction"]
