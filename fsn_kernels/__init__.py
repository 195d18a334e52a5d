"""fsn_kernels: Triton kernels with PyTorch bindings for the Frustrated Synchronization
Network's attention op. Needs only torch, triton and numpy."""
from .frustrated_attention import (
    FrustratedAttentionFunction,
    frustrated_attention,
    frustrated_attention_decode,
    naive_frustrated_attention,
)

__version__ = "0.1.0"
__all__ = ["frustrated_attention", "frustrated_attention_decode", "naive_frustrated_attention",
           "FrustratedAttentionFunction", "__version__"]
