"""``replace_attention``: FrustratedAttention in place of the self-attention of an existing HF decoder
(Llama, Mistral, Qwen2, GPT-2)."""
from __future__ import annotations

import inspect
from typing import Optional

import torch
from torch import Tensor, nn
from transformers.cache_utils import Cache

from ..attention import FrustratedAttention
from .modeling_fsn import check_all_ones

# model_type -> class names of its self-attention modules
SUPPORTED_ATTENTION = {"llama": ("LlamaAttention",), "mistral": ("MistralAttention",),
                       "qwen2": ("Qwen2Attention",), "gpt2": ("GPT2Attention",)}
# replace_attention's default for ``projections``: on, from the trial in fsn_model/hf/huggingface.md
# ("The projections in a swapped Llama": with them a swapped Llama matches the unmodified one, without
# them it is 0.29 nats per byte worse on the mean of two seeds).
PROJECTIONS_DEFAULT = True
ATTENTION_KWARGS = ("rope_base", "k1_init", "coupling_std", "gate_std", "backend", "delay", "n_heads",
                    "projected_heads", "project_output")


class FrustratedSelfAttention(nn.Module):
    """Drop-in for the self-attention module of an HF decoder layer: FrustratedAttention
    on the layer's (normalised) hidden states, ``forward(hidden_states, ...) ->
    (dtheta, None)``. The attention mask and position ids are ignored (attention is causal
    by construction, positions are the token order); padding is refused before the model
    runs (see :func:`replace_attention`).

    With a ``transformers`` Cache (``generate(use_cache=True)``) this layer keeps the phases
    its op reads (``attn.cached_phases``: the hidden states, or their projection with
    ``projections``) in that cache, as keys of shape (B, 1, T, dim) (the values are empty): a one-token
    step decodes through it with ``FrustratedAttention.decode`` (no recompute of the past);
    a longer chunk after a non-empty past recomputes the layer over the whole history (exact).
    """

    def __init__(self, attn: FrustratedAttention, layer_idx: int):
        super().__init__()
        self.attn, self.layer_idx = attn, layer_idx

    def forward(self, hidden_states: Tensor, *args, **kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values", kwargs.get("past_key_value",
                                                                             kwargs.get("layer_past"))))
        if cache is not None and hasattr(cache, "self_attention_cache"):
            cache = cache.self_attention_cache  # an EncoderDecoderCache (GPT-2)
        theta = hidden_states
        if not isinstance(cache, Cache):
            return self.attn(theta), None
        B, T, C = theta.shape
        past = cache.get_seq_length(self.layer_idx)
        phases = self.attn.cached_phases(theta)  # theta itself without projections
        history, _ = cache.update(phases.detach().unsqueeze(1), theta.new_zeros(B, 1, T, 0), self.layer_idx)
        sliding = getattr(cache, "is_sliding", None)
        if history.shape[-2] != past + T or (isinstance(sliding, list) and self.layer_idx < len(sliding)
                                             and sliding[self.layer_idx]):
            raise RuntimeError(f"layer {self.layer_idx}: the cache kept {history.shape[-2]} of {past + T} tokens "
                               f"(a sliding-window cache?); FrustratedAttention needs the whole history: pass "
                               f"use_cache=False or a DynamicCache without a sliding window")
        history = history[:, 0]
        if past == 0:
            return self.attn(theta, phases=phases), None
        if T == 1 and not (torch.is_grad_enabled() and theta.requires_grad):
            seqlens = torch.full((B,), past, dtype=torch.int32, device=theta.device)
            return self.attn.decode(theta, history.contiguous(), seqlens), None
        # A chunk after a past: the op over every cached phase; row t reads the gate of token
        # t only, so the past rows (dropped) need no gate input.
        full = torch.cat([history[:, :past].to(phases.dtype), phases], dim=1)
        gate_input = torch.cat([theta.new_zeros(B, past, C), theta], dim=1)
        return self.attn(gate_input, phases=full)[:, past:], None


def replace_attention(model: nn.Module, n_harmonics: int = 2, projections: Optional[bool] = None,
                      **kw) -> nn.Module:
    """Swap the self-attention of every decoder layer of an HF causal LM (Llama, Mistral,
    Qwen2, GPT-2) for :class:`FrustratedSelfAttention` (a :class:`FrustratedAttention` with
    ``n_harmonics`` harmonics on that layer's hidden states); returns ``model`` (modified in
    place), in training mode as it was, on the device and dtype of the attention it replaced.

    Args:
        model: a ``transformers`` model whose ``config.model_type`` is llama, mistral, qwen2
            or gpt2 (the LM or its base model).
        n_harmonics: NH of the FrustratedAttention (1..8).
        projections: the learned projections around each attention op (a phase projection
            in, a linear map of the increments out, both the identity at init; see
            FrustratedAttention); the cache then holds the projected phases (same size).
            Default (None): PROJECTIONS_DEFAULT, on, chosen from the trial in
            fsn_model/hf/huggingface.md; pass False for the plain FrustratedAttention.
        **kw: ``projected_heads``, ``project_output`` (with ``projections``), ``n_heads``
            (default: the config's attention heads), ``rope_base``, ``k1_init``,
            ``coupling_std``, ``gate_std``, ``backend``, ``delay`` (see FrustratedAttention).

    The model then refuses an ``attention_mask`` with zeros (padding) with a ValueError.
    FrustratedAttention has no window: it sees the whole past. So a sliding window is
    dropped: ``sliding_window`` is cleared and ``use_sliding_window`` set False in the config,
    every layer type becomes full attention, and what the model read from its config when it
    was built (Qwen2's ``has_sliding_layers``, a layer's ``attention_type``) follows; the
    swapped layers then attend over every earlier token, and ``generate(use_cache=True)``
    gives the tokens of ``use_cache=False``.

    Raises:
        ValueError: an architecture not listed above, or a bad argument.
        TypeError: an unknown keyword argument.
    """
    projections = PROJECTIONS_DEFAULT if projections is None else projections
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_ATTENTION:
        raise ValueError(f"replace_attention supports the HF architectures {sorted(SUPPORTED_ATTENTION)}; "
                         f"got model_type {model_type!r} ({type(model).__name__})")
    unknown = sorted(set(kw) - set(ATTENTION_KWARGS))
    if unknown:
        raise TypeError(f"replace_attention got unknown keyword arguments {unknown}; expected some of "
                        f"{list(ATTENTION_KWARGS)}")
    hidden = config.hidden_size
    n_heads = kw.pop("n_heads", config.num_attention_heads)
    targets = [(name, module) for name, module in model.named_modules()
               if type(module).__name__ in SUPPORTED_ATTENTION[model_type]
               and not getattr(module, "is_cross_attention", False)]
    if not targets:
        raise ValueError(f"no {SUPPORTED_ATTENTION[model_type]} module found in {type(model).__name__} "
                         "(already replaced?)")
    for name, old in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        ref = next(old.parameters())
        attn = FrustratedAttention(hidden, n_heads, n_harmonics, projections=projections, **kw)
        attn = attn.to(device=ref.device, dtype=ref.dtype)
        attn.train(old.training)
        layer_idx = getattr(old, "layer_idx", None)
        setattr(parent, attr, FrustratedSelfAttention(attn, _index(name) if layer_idx is None else layer_idx))
    _drop_sliding_window(config)
    for module in model.modules():  # what the model read from the config when it was built
        if getattr(module, "has_sliding_layers", False):
            module.has_sliding_layers = False
        if getattr(module, "attention_type", None) == "sliding_attention":
            module.attention_type = "full_attention"
    model.register_forward_pre_hook(_refuse_padding, with_kwargs=True)
    return model


def _index(name: str) -> int:
    """Decoder layer index from a module path such as ``model.layers.3.self_attn``."""
    digits = [part for part in name.split(".") if part.isdigit()]
    return int(digits[-1]) if digits else 0


def _drop_sliding_window(config) -> None:
    if getattr(config, "sliding_window", None) is not None:
        config.sliding_window = None
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = ["full_attention"] * len(config.layer_types)
    if getattr(config, "use_sliding_window", False):
        config.use_sliding_window = False


def _refuse_padding(module: nn.Module, args, kwargs):
    mask = kwargs.get("attention_mask")
    if mask is None and args:
        try:
            mask = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments.get("attention_mask")
        except TypeError:
            mask = None
    check_all_ones(mask)
