"""``FSNHFConfig``: the Hugging Face config of an FSN causal LM, derived from :class:`fsn_model.FSNConfig`."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

from transformers import PretrainedConfig

from ..config import RENAMED_FIELDS, FSNConfig, with_current_names

FSN_FIELDS = tuple(f.name for f in dataclasses.fields(FSNConfig))


def fsn_defaults() -> Dict[str, Any]:
    """The default of every :class:`FSNConfig` field, by name (the one source of the HF defaults)."""
    out = {}
    for f in dataclasses.fields(FSNConfig):
        out[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return out


class FSNHFConfig(PretrainedConfig):
    """Hugging Face config of an :class:`FSNForCausalLM`: every field of
    :class:`fsn_model.FSNConfig` (same names and defaults, read from that dataclass, and
    checked the same way) plus ``backend``, the compute backend of the attention op (a
    runtime choice, "auto": Triton on CUDA, the PyTorch path on CPU).

    Keyword arguments only. Old option names (``attn_proj``, ``attn_proj_heads``,
    ``attn_proj_out``: a ``config.json`` exported before the rename) load as the current
    ones. ``hidden_size``, ``num_hidden_layers`` and ``num_attention_heads`` read ``dim``,
    ``n_layers`` and ``n_heads`` (for generic HF code)."""

    model_type = "fsn"
    attribute_map = {"hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads"}

    def __init__(self, backend: str = "auto", **kwargs):
        given = with_current_names({k: kwargs.pop(k) for k in (*FSN_FIELDS, *RENAMED_FIELDS) if k in kwargs})
        for name, default in fsn_defaults().items():
            setattr(self, name, given.get(name, default))
        self.backend = backend
        self.use_cache = kwargs.pop("use_cache", True)
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)
        self.to_fsn_config()  # raises ValueError for a bad shape

    def to_fsn_config(self) -> FSNConfig:
        """The :class:`fsn_model.FSNConfig` of these fields (ValueError if invalid)."""
        return FSNConfig(**{name: getattr(self, name) for name in FSN_FIELDS})

    @classmethod
    def from_fsn_config(cls, config: FSNConfig, **kwargs) -> "FSNHFConfig":
        """The HF config of an :class:`fsn_model.FSNConfig` (``kwargs``: ``backend`` and HF options)."""
        if not isinstance(config, FSNConfig):
            raise TypeError(f"config must be an FSNConfig, got {type(config).__name__}")
        return cls(**dataclasses.asdict(config), **kwargs)
