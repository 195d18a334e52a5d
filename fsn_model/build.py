"""``build_model``: the models by name, sized to a parameter target (within 2%).

Names (:data:`MODEL_NAMES`): ``fsn`` and ``fsn-meanfield`` are FSN with learned projections
around each attention op (``projections=True``, the best measured FSN: fsn_model/README.md,
"Tuning study"); ``fsn-paper`` and ``fsn-meanfield-paper`` are the paper's models, without
them (what ``fsn`` and ``fsn-meanfield`` built before the projections became their default);
``transformer`` is the baseline.

Aspect rules (any can be overridden by keyword):
  * n_layers = 4 below 2M params, 6 below 8M, 8 above (fewer when no shape of that depth fits
    a small target, e.g. fsn at 20k); head_dim = 16 below 2M, else 32.
  * fsn: SwiGLU hidden ~ 2 * dim (on 2*dim features, so ~12 dim^2 per block like the
    transformer); fsn-meanfield: ~64 modes per head; transformer: hidden ~ 8/3 * dim.
  * fsn, fsn-paper: embed_scale 8 (the meanfield models: 1, untuned); see fsn_model/README.md,
    "Tuning study".
The width is searched over multiples of head_dim, then the hidden size (or mode count)
is solved exactly, since the parameter count is linear in it. Counts are exact: they
instantiate the model on the meta device.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Tuple, Union

import torch
from torch import nn

from .checks import check_int
from .config import FSNConfig, ModelConfig, TransformerConfig, config_from_dict, with_current_names
from .fsn import FSNLM
from .transformer import TransformerLM

TOLERANCE = 0.02
_OVERRIDES = {"dim", "n_layers", "head_dim", "n_harmonics", "hidden", "n_modes", "delay"}
# FSN init / readout knobs (the tuning study's), FSNConfig fields
FSN_KNOBS = ("k1_init", "coupling_std", "gate_std", "readout_norm", "embed_scale", "projections",
             "projected_heads", "project_output")
_OVERRIDES |= set(FSN_KNOBS) | {"token_shift"}
# "fsn" default from the 250k tuning study: the phase embedding learns 8x faster under Adam
# (FSNConfig's own default stays 1, so configs saved before this default rebuild unchanged)
FSN_EMBED_SCALE = 8.0
# name -> (architecture: the config's name, the defaults build_model gives it; overrides win).
# FSNConfig's own defaults stay the paper's model (projections off, embed_scale 1), so a
# config saved before these defaults existed loads as the model it was.
MODELS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "fsn": ("fsn", {"embed_scale": FSN_EMBED_SCALE, "projections": True}),
    "fsn-meanfield": ("fsn-meanfield", {"projections": True}),
    "fsn-paper": ("fsn", {"embed_scale": FSN_EMBED_SCALE}),
    "fsn-meanfield-paper": ("fsn-meanfield", {}),
    "transformer": ("transformer", {}),
}
MODEL_NAMES = tuple(MODELS)


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


def _resolved(arch: str, vocab_size: int, dim: int, fine: int, o: Dict[str, Any]) -> ModelConfig:
    """The config of architecture ``arch`` ("fsn", "fsn-meanfield", "transformer") at width
    ``dim`` and hidden width / mode count ``fine``, the other fields from ``o``."""
    shape = dict(vocab_size=vocab_size, dim=dim, n_layers=o["n_layers"], n_heads=dim // o["head_dim"])
    if arch == "transformer":
        return TransformerConfig(**shape, hidden=fine, token_shift=o.get("token_shift", False))
    mixer = "swiglu" if arch == "fsn" else "meanfield"
    knobs = {k: o[k] for k in FSN_KNOBS + ("token_shift",) if k in o}
    return FSNConfig(**shape, n_harmonics=o.get("n_harmonics", 2), mixer=mixer, delay=o.get("delay", True),
                     **{"hidden" if arch == "fsn" else "n_modes": fine}, **knobs)


def _closest(arch: str, target: int, vocab_size: int, o: Dict[str, Any]):
    """The shape of ``arch`` under the fields ``o`` (n_layers and head_dim set) nearest to
    ``target`` parameters: (badness, config, count), badness (outside 2%, distance from the
    default aspect); None when even the narrowest width is too large."""
    fine_key = "n_modes" if arch == "fsn-meanfield" else "hidden"

    def default_fine(dim: int) -> int:
        return {"fsn": 2 * dim, "transformer": 8 * dim // 3}.get(arch, 64)

    min_heads = o["projected_heads"] if isinstance(o.get("projected_heads"), int) else 1  # FSNConfig checks it
    heads = range(max(1, min_heads), 4096 // o["head_dim"] + 1)
    dims = [o["dim"]] if "dim" in o else [o["head_dim"] * h for h in heads]
    best = None  # (badness, config, count)
    for dim in dims:
        if fine_key in o:
            fine = o[fine_key]
        else:
            c1 = _count(_resolved(arch, vocab_size, dim, 1, o))
            if c1 > target * (1 + TOLERANCE):
                break
            slope = _count(_resolved(arch, vocab_size, dim, 2, o)) - c1
            fine = max(1, 1 + round((target - c1) / slope))
        cfg = _resolved(arch, vocab_size, dim, fine, o)
        n = _count(cfg)
        err = abs(n - target) / target
        badness = (err > TOLERANCE, abs(fine / default_fine(dim) - 1) if fine_key not in o else err)
        if best is None or badness < best[0]:
            best = (badness, cfg, n)
    return best


def _memory_bytes() -> int:
    """Physical memory of this machine in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def build_model(name: str, params: Union[int, str], vocab_size: int = 256, backend: str = "auto",
                **overrides) -> nn.Module:
    """Build the model ``name`` with ~``params`` parameters.

    Args:
        name: one of :data:`MODEL_NAMES`: "fsn" (FSN with learned projections around each
            attention op and embed_scale 8, the best measured FSN), "fsn-meanfield" (the
            MLP-free FSN with the projections), "fsn-paper" and "fsn-meanfield-paper" (the
            paper's models: the same without the projections), "transformer" (the baseline).
            ``model.config.name`` is the architecture ("fsn", "fsn-meanfield" or
            "transformer"); ``model.config.projections`` tells the two FSN forms apart.
        params: target count, an int or a string like "250k", "1M", "10M".
        vocab_size: tokens (256 for bytes).
        backend: compute backend of the FSN attention ("auto", "triton", "stock", "reference"); a runtime
            choice, not part of the config.
        **overrides: any of dim, n_layers, head_dim, n_harmonics, hidden, n_modes, delay
            (FSN names: False removes the one-step delay term, the ablation), and for
            FSN k1_init, coupling_std, gate_std (attention init), readout_norm (bool),
            embed_scale (phase-embedding multiplier: its Adam step size relative to the rest),
            projections (bool: learned projections around each attention op; default True for
            "fsn" and "fsn-meanfield", False for the paper's models), projected_heads
            (int: with projections, how many heads attend over projected phases; default all, 0 none),
            project_output (bool: with projections, the linear map of the increments; default True);
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
    overrides = with_current_names(overrides, warn_as="build_model")
    bad = set(overrides) - _OVERRIDES
    if bad:
        raise ValueError(f"unknown build_model overrides {sorted(bad)}; allowed: {sorted(_OVERRIDES)}")
    arch, defaults = MODELS[name]
    if arch == "transformer" and set(overrides) & set(FSN_KNOBS):
        raise ValueError(f"overrides {sorted(set(overrides) & set(FSN_KNOBS))} apply to FSN models only")
    o = {**defaults, **overrides}
    o.setdefault("head_dim", 16 if target < 2e6 else 32)
    check_int("head_dim", o["head_dim"], 1)  # the other fields are checked by the config
    depth = o.get("n_layers", 4 if target < 2e6 else 6 if target < 8e6 else 8)
    # the depth rule's count, or fewer layers when no shape of that depth fits a small target
    best = None
    for n_layers in [depth] if "n_layers" in o else range(depth, 0, -1):
        best = _closest(arch, target, vocab_size, dict(o, n_layers=n_layers))
        if best is not None and not best[0][0]:
            break
    if best is None or best[0][0]:
        got = "none" if best is None else f"{best[2]:,}"
        raise ValueError(f"params: no {name} shape within 2% of {target:,} with overrides "
                         f"{overrides} (closest {got})")
    memory = _memory_bytes()
    if memory and 4 * best[2] > memory:
        raise ValueError(f"params: {best[2]:,} float32 weights need {4 * best[2] / 2**30:,.0f} GiB, more than this "
                         f"machine's {memory / 2**30:,.0f} GiB of memory")
    return model_from_config(best[1], backend=backend)
