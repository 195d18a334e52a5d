"""Model configurations: what :func:`fsn_model.build_model` resolves and checkpoints store.

``FSNConfig`` and ``TransformerConfig`` are the whole shape of a model (as nanoGPT's
``GPTConfig``); ``model_from_config(config)`` rebuilds the model from one. The compute
backend of the FSN attention is a runtime choice, not part of a saved model: it is passed
beside the config (``FSNLM(config, backend=...)``).

In a checkpoint a config is the plain dict of :func:`config_to_dict` (its fields plus
``"name"``), so that loading needs no pickled classes.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

from fsn_kernels.frustrated_attention.validation import MAX_HARMONICS

from .checks import check_bool, check_int, check_number

FSN_MIXERS = {"swiglu": "fsn", "meanfield": "fsn-meanfield"}
# Old field names -> current ones. Stored configs (checkpoints, result files) written under
# the old names load silently; a caller passing an old name gets a DeprecationWarning.
RENAMED_FIELDS = {"attn_proj": "projections", "attn_proj_heads": "projected_heads",
                  "attn_proj_out": "project_output"}


@dataclass(frozen=True)
class FSNConfig:
    """Shape of an :class:`fsn_model.FSNLM`.

    Args:
        vocab_size: tokens (256 for bytes).
        dim: phase channels C = n_heads * head_dim.
        n_layers: FSN blocks.
        n_heads: attention heads H.
        n_harmonics: NH, harmonics of the coupling kernel (1..8).
        mixer: "swiglu" (model name "fsn") or "meanfield" (model name "fsn-meanfield").
        hidden: PhaseSwiGLU hidden width (used when mixer == "swiglu").
        n_modes: collective modes per head (used when mixer == "meanfield").
        delay: False removes the one-step delay term of the attention (the ablation).
        k1_init, coupling_std, gate_std: attention init (K_1 = k1_init; other coupling
            coefficients and the gate weights ~N(0, std^2)); finite, the stds >= 0.
        readout_norm: a LayerNorm on the readout features [cos, sin] (default norm-free).
        embed_scale: s (finite, > 0) in theta_0 = s * E[idx], E uniform on [-pi/s, pi/s): the same phases
            at init, and the phase embedding moves s times faster under Adam.
        token_shift: each block's mixer also reads the previous token's cached phases (its
            block input, or with ``projections`` their projection), through learned
            per-feature mixes (fsn_model/README.md, "The model"); default off.
        projections: learned projections around each attention op (a phase projection in,
            a linear map of the increments out, both identity at init; fsn_model/README.md,
            "The model"); default off.
        projected_heads: with ``projections``, how many heads (the first ones) attend over
            projected phases; the others attend over the block input, as without
            projections. None (default): all heads; 0: none, only the linear map of the
            increments.
        project_output: with ``projections``, the linear map of the increments (default True);
            False: each increment goes to the oscillator it was computed for, as without
            projections.
    """

    vocab_size: int = 256
    dim: int = 64
    n_layers: int = 4
    n_heads: int = 4
    n_harmonics: int = 2
    mixer: str = "swiglu"
    hidden: int = 128
    n_modes: int = 64
    delay: bool = True
    k1_init: float = 0.5
    coupling_std: float = 0.02
    gate_std: float = 0.02
    readout_norm: bool = False
    embed_scale: float = 1.0
    token_shift: bool = False
    projections: bool = False
    projected_heads: Optional[int] = None
    project_output: bool = True

    def __post_init__(self) -> None:
        _check_flags(self)
        check_number("FSNConfig.embed_scale", self.embed_scale, low=0.0, low_ok=False)
        if self.mixer not in FSN_MIXERS:
            raise ValueError(f"mixer must be one of {sorted(FSN_MIXERS)}, got {self.mixer!r}")
        _check_shape(self)
        check_attention_options(self.dim, self.n_heads, self.n_harmonics, k1_init=self.k1_init,
                                coupling_std=self.coupling_std, gate_std=self.gate_std, delay=self.delay,
                                projections=self.projections, projected_heads=self.projected_heads,
                                project_output=self.project_output, where="FSNConfig.")

    @property
    def name(self) -> str:
        """"fsn" or "fsn-meanfield"."""
        return FSN_MIXERS[self.mixer]


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of a :class:`fsn_model.TransformerLM` (RoPE + SwiGLU + RMSNorm).

    Args:
        vocab_size: tokens. dim: model width. n_layers: blocks. n_heads: heads.
        hidden: SwiGLU hidden width.
        token_shift: the MLP also reads the previous token's block input, as FSN's mixer
            does with ``FSNConfig.token_shift`` (the control trial); default off.
    """

    vocab_size: int = 256
    dim: int = 64
    n_layers: int = 4
    n_heads: int = 4
    hidden: int = 176
    token_shift: bool = False

    def __post_init__(self) -> None:
        _check_flags(self)
        _check_shape(self)

    @property
    def name(self) -> str:
        return "transformer"


ModelConfig = Union[FSNConfig, TransformerConfig]


def check_attention_options(dim: int, n_heads: int, n_harmonics: int, *, k1_init: float, coupling_std: float,
                            gate_std: float, delay: bool, projections: bool, projected_heads: Optional[int],
                            project_output: bool, rope_base: Optional[float] = None, where: str = "") -> None:
    """The arguments of a :class:`fsn_model.FrustratedAttention` (and the same fields of an
    :class:`FSNConfig`), checked before anything is built: ``dim`` and ``n_heads`` ints >= 1
    with ``n_heads`` dividing ``dim``, ``n_harmonics`` in 1..MAX_HARMONICS (what the op
    takes), ``k1_init`` finite, ``coupling_std`` and ``gate_std`` finite and >= 0, ``delay``
    and ``projections`` bools, the projection options (:func:`check_projection_options`) and
    ``rope_base`` (when given) finite and > 0. ``where`` prefixes each name (e.g.
    "FSNConfig."). Raises TypeError / ValueError naming the argument."""
    check_int(f"{where}dim", dim, 1)
    check_int(f"{where}n_heads", n_heads, 1)
    if dim % n_heads:
        raise ValueError(f"{where}dim ({dim}) must be divisible by {where}n_heads ({n_heads})")
    check_int(f"{where}n_harmonics", n_harmonics, 1, MAX_HARMONICS)
    check_number(f"{where}k1_init", k1_init)
    check_number(f"{where}coupling_std", coupling_std, low=0.0)
    check_number(f"{where}gate_std", gate_std, low=0.0)
    check_bool(f"{where}delay", delay)
    check_bool(f"{where}projections", projections)
    check_projection_options(projected_heads, project_output, n_heads, projections)
    if rope_base is not None:
        check_number(f"{where}rope_base", rope_base, low=0.0, low_ok=False)


def check_projection_options(projected_heads: Optional[int], project_output: bool, n_heads: int,
                             projections: bool) -> None:
    """The options of the attention projections: ``projected_heads`` None or an int in
    0..n_heads, ``project_output`` a bool, either away from its default only with
    ``projections``, and not both off (TypeError / ValueError naming them)."""
    heads, output, switch = "projected_heads", "project_output", "projections"
    if projected_heads is not None and (isinstance(projected_heads, bool) or not isinstance(projected_heads, int)):
        raise TypeError(f"{heads} must be None or an int, got {projected_heads!r}")
    if not isinstance(project_output, bool):
        raise TypeError(f"{output} must be a bool, got {project_output!r}")
    if projected_heads is not None and not 0 <= projected_heads <= n_heads:
        raise ValueError(f"{heads} must be in 0..n_heads ({n_heads}), got {projected_heads}")
    if not projections and (projected_heads is not None or not project_output):
        given = f"{heads}={projected_heads}" if projected_heads is not None else f"{output}=False"
        raise ValueError(f"{given} needs {switch}=True")
    if projected_heads == 0 and not project_output:
        raise ValueError(f"{heads}=0 with {output}=False projects nothing; pass {switch}=False instead")


def _check_flags(cfg: ModelConfig) -> None:
    """Every bool field holds a bool (TypeError naming the field otherwise)."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if field.type in ("bool", bool) and not isinstance(value, bool):
            raise TypeError(f"{type(cfg).__name__}.{field.name} must be a bool, got {value!r}")


def _check_shape(cfg: ModelConfig) -> None:
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if field.type in ("int", int) and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{type(cfg).__name__}.{field.name} must be a positive int, got {value!r}")
    if cfg.dim % cfg.n_heads:
        raise ValueError(f"{type(cfg).__name__}: dim ({cfg.dim}) must be divisible by n_heads ({cfg.n_heads})")


def with_current_names(fields: Dict[str, Any], warn_as: Optional[str] = None) -> Dict[str, Any]:
    """``fields`` with old option names (:data:`RENAMED_FIELDS`) replaced by the current ones.

    ``warn_as``: where the names came from (e.g. "build_model"); when given, each old name
    raises a DeprecationWarning naming its replacement. Both names at once: ValueError."""
    out = dict(fields)
    for old, new in RENAMED_FIELDS.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{old!r} is the old name of {new!r}; pass only {new!r}")
        if warn_as:
            warnings.warn(f"{warn_as}: {old!r} is deprecated, use {new!r}", DeprecationWarning, stacklevel=3)
        out[new] = out.pop(old)
    return out


def config_to_dict(config: ModelConfig) -> Dict[str, Any]:
    """The plain dict stored in checkpoints and logs: the fields plus "name"."""
    return {"name": config.name, **dataclasses.asdict(config)}


def config_from_dict(data: Dict[str, Any]) -> ModelConfig:
    """Inverse of :func:`config_to_dict`. Keys "params" and "backend" (written by older
    versions) are ignored; old option names (:data:`RENAMED_FIELDS`) load as the current
    ones. Raises ValueError for an unknown name or unknown keys."""
    if not isinstance(data, dict) or "name" not in data:
        raise ValueError(f"a model config must be a dict with a 'name', got {data!r}")
    fields = with_current_names({k: v for k, v in data.items() if k not in ("name", "params", "backend")})
    name = data["name"]
    if name == "transformer":
        cls = TransformerConfig
    elif name in FSN_MIXERS.values():
        cls = FSNConfig
        fields["mixer"] = next(m for m, n in FSN_MIXERS.items() if n == name)
    else:
        raise ValueError(f"model config name must be one of fsn, fsn-meanfield, transformer; got {name!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"model config for {name!r} has unknown keys {unknown}; expected a subset of {sorted(known)}")
    return cls(**fields)
