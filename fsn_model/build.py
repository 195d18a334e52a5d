"""``build_model``: the three architectures sized to a parameter target (within 2%).

Aspect rules (any can be overridden by keyword):
  * n_layers = 4 below 2M params, 6 below 8M, 8 above; head_dim = 16 below 2M, else 32.
  * fsn: SwiGLU hidden ~ 2 * dim (on 2*dim features, so ~12 dim^2 per block like the
    transformer); fsn-meanfield: ~64 modes per head; transformer: hidden ~ 8/3 * dim.
  * fsn: embed_scale 8 (fsn-meanfield: 1, untuned); see fsn_model/README.md, "Tuning study".
The width is searched over multiples of head_dim, then the hidden size (or mode count)
is solved exactly, since the parameter count is linear in it. Counts are exact: they
instantiate the model on the meta device.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Union

import torch
from torch import nn

from .config import FSNConfig, ModelConfig, TransformerConfig, config_from_dict
from .fsn import FSNLM
from .transformer import TransformerLM

MODEL_NAMES = ("fsn", "fsn-meanfield", "transformer")
TOLERANCE = 0.02
_OVERRIDES = {"dim", "n_layers", "head_dim", "n_harmonics", "hidden", "n_modes", "delay"}
# FSN init / readout knobs (the tuning study's), FSNConfig fields
FSN_KNOBS = ("k1_init", "coupling_std", "gate_std", "readout_norm", "embed_scale", "attn_proj",
             "attn_proj_heads", "attn_proj_out")
_OVERRIDES |= set(FSN_KNOBS) | {"token_shift"}
# "fsn" default from the 250k tuning study: the phase embedding learns 8x faster under Adam
# (FSNConfig's own default stays 1, so configs saved before this default rebuild unchanged)
FSN_EMBED_SCALE = 8.0


def parse_params(params: Union[int, str]) -> int:
    """``250000``, ``"250k"``, ``"1M"``, ``"1.5M"``, ``"2G"`` -> int. Bad input: ValueError."""
    if isinstance(params, bool):
        raise ValueError(f"params must be an int or a size string like '1M', got {params!r}")
    if isinstance(params, int):
        value = params
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", str(params))
        if not m:
            raise ValueError(f"params must be an int or a size string like '250k', '1M', got {params!r}")
        value = int(round(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]))
    if value < 1000:
        raise ValueError(f"params must be at least 1000, got {params!r}")
    return value


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_from_config(config: Union[ModelConfig, Dict[str, Any]], backend: str = "auto") -> nn.Module:
    """Build the model of ``config`` (an FSNConfig / TransformerConfig, or its checkpoint dict)
    with fresh weights. ``backend`` is the FSN attention's compute backend (runtime only)."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    if isinstance(config, TransformerConfig):
        return TransformerLM(config)
    if isinstance(config, FSNConfig):
        return FSNLM(config, backend=backend)
    raise TypeError(f"config must be an FSNConfig, a TransformerConfig or a dict, got {type(config).__name__}")


def _count(config: ModelConfig) -> int:
    with torch.device("meta"):
        return count_params(model_from_config(config))


def _resolved(name: str, vocab_size: int, dim: int, fine: int, o: Dict[str, Any]) -> ModelConfig:
    shape = dict(vocab_size=vocab_size, dim=dim, n_layers=o["n_layers"], n_heads=dim // o["head_dim"])
    if name == "transformer":
        return TransformerConfig(**shape, hidden=fine, token_shift=o.get("token_shift", False))
    mixer = "swiglu" if name == "fsn" else "meanfield"
    knobs = {k: o[k] for k in FSN_KNOBS + ("token_shift",) if k in o}
    if name == "fsn":
        knobs.setdefault("embed_scale", FSN_EMBED_SCALE)
    return FSNConfig(**shape, n_harmonics=o.get("n_harmonics", 2), mixer=mixer, delay=o.get("delay", True),
                     **{"hidden" if name == "fsn" else "n_modes": fine}, **knobs)


def _memory_bytes() -> int:
    """Physical memory of this machine in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def build_model(name: str, params: Union[int, str], vocab_size: int = 256, backend: str = "auto",
                **overrides) -> nn.Module:
    """Build ``name`` in {"fsn", "fsn-meanfield", "transformer"} with ~``params`` parameters.

    Args:
        name: architecture.
        params: target count, an int or a string like "250k", "1M", "10M".
        vocab_size: tokens (256 for bytes).
        backend: compute backend of the FSN attention ("auto", "triton", "stock", "reference"); a runtime
            choice, not part of the config.
        **overrides: any of dim, n_layers, head_dim, n_harmonics, hidden, n_modes, delay
            (FSN names: False removes the one-step delay term, the ablation), and for
            FSN k1_init, coupling_std, gate_std (attention init), readout_norm (bool),
            embed_scale (phase-embedding multiplier: its Adam step size relative to the rest),
            attn_proj (bool: learned projections around each attention op), attn_proj_heads
            (int: with attn_proj, how many heads attend over projected phases; default all, 0 none),
            attn_proj_out (bool: with attn_proj, the linear map of the increments; default True);
            for every model token_shift (bool: the mixer / MLP also reads the previous token).

    Returns:
        The model (fresh weights); ``model.config`` is its :class:`FSNConfig` or
        :class:`TransformerConfig`, and ``model_from_config(model.config)`` rebuilds it.

    Raises:
        ValueError: unknown name, bad params string, unknown override, no shape within
            2% of the target under the given overrides, or more float32 weights than this
            machine has memory.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"model name must be one of {', '.join(MODEL_NAMES)}; got {name!r}")
    target = parse_params(params)
    bad = set(overrides) - _OVERRIDES
    if bad:
        raise ValueError(f"unknown build_model overrides {sorted(bad)}; allowed: {sorted(_OVERRIDES)}")
    if name == "transformer" and set(overrides) & set(FSN_KNOBS):
        raise ValueError(f"overrides {sorted(set(overrides) & set(FSN_KNOBS))} apply to FSN models only")
    o = dict(overrides)
    o.setdefault("n_layers", 4 if target < 2e6 else 6 if target < 8e6 else 8)
    o.setdefault("head_dim", 16 if target < 2e6 else 32)
    fine_key = "n_modes" if name == "fsn-meanfield" else "hidden"

    def default_fine(dim: int) -> int:
        return {"fsn": 2 * dim, "transformer": 8 * dim // 3}.get(name, 64)

    min_heads = o["attn_proj_heads"] if isinstance(o.get("attn_proj_heads"), int) else 1  # FSNConfig checks it
    heads = range(max(1, min_heads), 4096 // o["head_dim"] + 1)
    dims = [o["dim"]] if "dim" in o else [o["head_dim"] * h for h in heads]
    best = None  # (badness, config, count)
    for dim in dims:
        if fine_key in o:
            fine = o[fine_key]
        else:
            c1 = _count(_resolved(name, vocab_size, dim, 1, o))
            if c1 > target * (1 + TOLERANCE):
                break
            slope = _count(_resolved(name, vocab_size, dim, 2, o)) - c1
            fine = max(1, 1 + round((target - c1) / slope))
        cfg = _resolved(name, vocab_size, dim, fine, o)
        n = _count(cfg)
        err = abs(n - target) / target
        badness = (err > TOLERANCE, abs(fine / default_fine(dim) - 1) if fine_key not in o else err)
        if best is None or badness < best[0]:
            best = (badness, cfg, n)
    if best is None or best[0][0]:
        got = "none" if best is None else f"{best[2]:,}"
        raise ValueError(f"params: no {name} shape within 2% of {target:,} with overrides "
                         f"{overrides} (closest {got})")
    memory = _memory_bytes()
    if memory and 4 * best[2] > memory:
        raise ValueError(f"params: {best[2]:,} float32 weights need {4 * best[2] / 2**30:,.0f} GiB, more than this "
                         f"machine's {memory / 2**30:,.0f} GiB of memory")
    return model_from_config(best[1], backend=backend)
