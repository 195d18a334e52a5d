"""Self-describing checkpoints, written atomically.

A checkpoint is a dict saved by torch.save with keys: ``model_config`` (rebuilds the model
via :func:`fsn_model.build.model_from_config`), ``train_config``, ``model`` (state dict),
``optimizer``, ``step`` (the next step to run), ``log`` and ``corpus`` (name, path, sha256).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch import nn

from .build import model_from_config


def save_checkpoint(path: str, obj: Dict[str, Any]) -> None:
    """torch.save to ``path.tmp`` then os.replace: a reader never sees a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load a checkpoint dict onto the CPU. Raises FileNotFoundError / ValueError."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # corrupt or not a torch file
        raise ValueError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(ckpt, dict) or "model_config" not in ckpt:
        raise ValueError(f"{path} is not an fsn_model checkpoint (no model_config)")
    return ckpt


def load_model(path: str, device: str = "cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the model of a checkpoint, in eval mode on ``device``; returns (model, ckpt)."""
    ckpt = load_checkpoint(path)
    model = model_from_config(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    model.config = dict(ckpt["model_config"])
    return model.to(device).eval(), ckpt


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda if available else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
