"""The frustrated-synchronization attention op: reference (``naive``), fused Triton
forward and backward kernels, the public function (``op``) and the decode step
(``decoding``). The math is in
README.md beside this file."""
from .decoding import frustrated_attention_decode
from .naive import naive_frustrated_attention
from .op import FrustratedAttentionFunction, frustrated_attention

__all__ = ["frustrated_attention", "frustrated_attention_decode", "naive_frustrated_attention",
           "FrustratedAttentionFunction"]
