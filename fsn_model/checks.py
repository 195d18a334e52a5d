"""Argument checks shared by the configs, ``build_model``, the layers and the models: each
raises a TypeError (wrong kind) or ValueError (wrong value) naming the argument, what was
expected and what came, before any work."""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor


def check_int(name: str, value: Any, low: int, high: Optional[int] = None) -> None:
    """``value`` an int (not a bool) in ``low..high`` (``high`` None: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be an int {allowed}, got {value}")


def check_number(name: str, value: Any, low: Optional[float] = None, low_ok: bool = True) -> None:
    """``value`` a finite real number (int or float, not a bool), ``>= low`` (``> low`` when
    not ``low_ok``) when ``low`` is given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or (low is not None and (value < low if low_ok else value <= low)):
        bound = "" if low is None else f" {'>=' if low_ok else '>'} {low:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")


def check_bool(name: str, value: Any) -> None:
    """``value`` a bool (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def check_token_ids(name: str, idx: Any, vocab_size: int, shape: str = "(B, T)") -> None:
    """``idx`` an integer tensor with ``len(shape)`` dims ("(B, T)") whose ids lie in
    ``0..vocab_size - 1``. The range is read only from a CPU tensor outside ``torch.compile``
    (on a GPU it would cost a device sync per call; there the embedding's own index check
    fires, as a device-side assert)."""
    dims = shape.count(",") + 1
    if not isinstance(idx, Tensor) or idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        got = f"a {idx.dtype} tensor" if isinstance(idx, Tensor) else type(idx).__name__
        raise TypeError(f"{name} must be an integer tensor of token ids {shape}, got {got}")
    if idx.dim() != dims:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(idx.shape)}")
    if idx.numel() and idx.device.type == "cpu" and not torch.compiler.is_compiling():
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"{name} must hold token ids in 0..{vocab_size - 1} (vocab_size {vocab_size}), got {bad}")
