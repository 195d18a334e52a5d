"""The one compute-dtype rule of the PyTorch paths (the reference in ``naive.py`` and the
stock path in ``stock.py`` / ``stock_decode.py``): float64 if any input is float64, else
float32 (bfloat16 / float16 inputs are computed in float32)."""
from __future__ import annotations

import torch


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any of ``dtypes`` is float64, else float32."""
    return torch.float64 if torch.float64 in dtypes else torch.float32
