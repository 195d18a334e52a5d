"""The frustrated-synchronization attention op: the float64 reference (``naive``), fused
Triton kernels (``features``, ``forward``, ``backward``, ``decoding``), input checks
(``validation``) and the public functions (``op``). The math is in README.md beside this
file."""
from .naive import naive_frustrated_attention
from .op import FrustratedAttentionFunction, frustrated_attention, frustrated_attention_decode

__all__ = ["frustrated_attention", "frustrated_attention_decode", "naive_frustrated_attention",
           "FrustratedAttentionFunction"]
