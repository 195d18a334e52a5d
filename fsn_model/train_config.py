"""The settings of a training run: :class:`TrainConfig`, the one declaration of everything a
run depends on (each field is also a flag of ``fsn-train``, and ``fsn-compare`` / ``fsn-sweep``
take the shared ones from it), and :func:`validate`, which checks every setting before any
work."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Union

import torch

from .build import MODEL_NAMES, build_model, parse_params
from .config import ModelConfig
from .data import separator_bytes

MAX_SEED = 2**64 - 1  # torch.manual_seed takes seeds up to this


def _setting(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:
    """A TrainConfig field; ``help`` (and ``choices``, ``metavar``) become its fsn-train flag's."""
    extra = {"default_factory": dict} if default is dict else {"default": default}
    return field(metadata=dict(help=help, **metadata), **extra)


@dataclass
class TrainConfig:
    """Everything a run depends on: the one declaration of a run's settings. Defaults are the
    CPU quickstart (~2-3 min on 2 idle cores, ~200k-param FSN, 1000 steps).

    Each field is a flag of ``fsn-train`` (``batch_size`` -> ``--batch-size``, help from the
    field's metadata; ``progress`` -> ``--no-progress``); ``fsn-compare`` and ``fsn-sweep``
    take the shared ones from here too (:func:`fsn_model.cli.add_dataclass_flags`)."""

    model: str = _setting("fsn", "the model: fsn, fsn-meanfield (with learned projections around the attention, the "
                          "best measured), fsn-paper, fsn-meanfield-paper (the paper's, without them; what fsn and "
                          "fsn-meanfield built before), transformer (the baseline)", choices=MODEL_NAMES)
    params: Union[int, str] = _setting("200k", "target size, e.g. 250k, 1M")
    data: Optional[str] = _setting(None, "byte corpus file (enwik8 gets its standard split); None: Python stdlib "
                                   "sources. Stored resolved, with its sha256")
    steps: int = _setting(1000, "optimizer steps")
    batch_size: int = _setting(16, "windows per step")
    seq_len: int = _setting(128, "bytes per window")
    lr: float = _setting(1.2e-2, "peak learning rate (FSN's best at 250k in the tuning study; the transformer's "
                         "was 6e-3)")
    min_lr_ratio: float = _setting(0.1, "the cosine schedule ends at min_lr_ratio * lr")
    warmup: int = _setting(50, "linear warmup steps")
    weight_decay: float = _setting(0.1, "AdamW weight decay of 2-D weights (not embeddings)")
    grad_clip: float = _setting(1.0, "gradient-norm clipping")
    seed: int = _setting(0, "init and batch seed (0 .. 2**64 - 1)")
    device: str = _setting("auto", "auto, cpu, cuda, cuda:1 ...")
    out: str = _setting("runs/fsn-quickstart", "run directory (checkpoint.pt, log.json); one run at a time")
    resume: bool = _setting(False, "continue the run in --out with its saved settings; flags given explicitly "
                            "override them")
    overwrite: bool = _setting(False, "replace a run already in --out")
    allow_different_data: bool = _setting(False, "resume on a corpus whose sha256 differs from the one the run "
                                          "recorded (or on another --data file)")
    eval_every: int = _setting(250, "validate and checkpoint every N steps")
    eval_windows: int = _setting(64, "validation windows")
    log_every: int = _setting(10, "read the loss back from the device and update the progress bar every N steps")
    stop_at: Optional[int] = _setting(None, "stop (with a checkpoint) after this step, as if interrupted")
    progress: bool = _setting(True, "a progress bar on stderr; --no-progress turns it off")
    model_overrides: Dict[str, Any] = _setting(dict, "build_model knobs, e.g. n_layers=2,k1_init=1.0")
    pack_documents: Optional[str] = _setting(None, "split each training window into documents ending with SEP "
                                             "(backslash escapes allowed, e.g. '\\n\\n'); attention never "
                                             "crosses a document (FSN models)", metavar="SEP")
    compile: bool = _setting(False, "torch.compile the model (CPU and CUDA; the first steps compile; "
                             "fsn_model/README.md says when it pays)")


# Fields that describe where and how this process runs, not the run itself.
RUNTIME_FIELDS = ("device", "out", "resume", "overwrite", "progress", "allow_different_data", "compile")
# Fields a resumed run cannot change: the saved weights and batches depend on them.
FIXED_ON_RESUME = ("model", "params", "model_overrides", "data", "pack_documents")

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(cfg: TrainConfig) -> None:
    """Raise ValueError naming the first bad field of ``cfg``. Checks every setting before
    any work (a knob of ``model_overrides`` that build_model does not take included)."""
    if cfg.model not in MODEL_NAMES:
        raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}; got {cfg.model!r}")
    parse_params(cfg.params)
    for name in ("steps", "batch_size", "seq_len", "eval_every", "eval_windows", "log_every"):
        value = getattr(cfg, name)
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not _is_int(cfg.warmup) or cfg.warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {cfg.warmup!r}")
    if not _is_int(cfg.seed) or not 0 <= cfg.seed <= MAX_SEED:
        raise ValueError(f"seed must be an int in 0..2**64 - 1 ({MAX_SEED}), got {cfg.seed!r}")
    for name, low, low_ok in (("lr", 0.0, False), ("grad_clip", 0.0, False), ("weight_decay", 0.0, True),
                              ("min_lr_ratio", 0.0, True)):
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and (value >= low if low_ok else value > low)):
            raise ValueError(f"{name} must be a finite number {'>=' if low_ok else '>'} {low:g}, got {value!r}")
    if cfg.min_lr_ratio > 1:
        raise ValueError(f"min_lr_ratio must be <= 1, got {cfg.min_lr_ratio}")
    if cfg.stop_at is not None and (not _is_int(cfg.stop_at) or cfg.stop_at < 1):
        raise ValueError(f"stop_at must be an int >= 1 when set, got {cfg.stop_at!r}")
    if not isinstance(cfg.out, (str, os.PathLike)) or not str(cfg.out).strip():
        raise ValueError(f"out must name a run directory, got {cfg.out!r}")
    if cfg.data is not None and not isinstance(cfg.data, (str, os.PathLike)):
        raise ValueError(f"data must be a file path or None, got {cfg.data!r}")
    if not isinstance(cfg.model_overrides, dict):
        raise ValueError(f"model_overrides must be a dict of build_model knobs, got {cfg.model_overrides!r}")
    if cfg.pack_documents is not None:
        separator_bytes(cfg.pack_documents)
        if cfg.model == "transformer":
            raise ValueError("pack_documents: the transformer baseline has no packed attention; "
                             f"use it with the FSN models ({', '.join(m for m in MODEL_NAMES if m != 'transformer')})")
    if cfg.model_overrides and not cfg.resume:
        with torch.device("meta"):  # an unknown knob fails here, not after the data is read
            try:
                build_model(cfg.model, cfg.params, **cfg.model_overrides)
            except TypeError as e:
                raise ValueError(f"model_overrides {cfg.model_overrides}: {e}") from None


_validate = validate  # the name used before it was public


def model_config_of(cfg: TrainConfig) -> ModelConfig:
    """The model config a fresh run of ``cfg`` builds (its model, params and
    model_overrides through :func:`fsn_model.build_model`), without allocating weights."""
    with torch.device("meta"):
        return build_model(cfg.model, cfg.params, **cfg.model_overrides).config


