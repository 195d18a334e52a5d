"""FSN in the Hugging Face stack (optional extra ``pip install -e ".[hf]"``; docs: fsn_model/huggingface.md).

* :class:`FSNHFConfig` (``model_type = "fsn"``) and :class:`FSNForCausalLM`, a
  ``PreTrainedModel`` + ``GenerationMixin`` around :class:`fsn_model.FSNLM`, registered with
  ``AutoConfig`` / ``AutoModelForCausalLM`` when this module is imported.
* :class:`FSNPhaseCache`, the ``transformers`` ``Cache`` that carries FSN's preallocated
  :class:`fsn_model.PhaseCache` through ``generate()``.
* :func:`replace_attention`: FrustratedAttention in place of the self-attention of an HF
  Llama, Mistral, Qwen2 or GPT-2.

The core package never imports this module; importing it needs ``transformers``.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
import transformers
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .attention import FrustratedAttention, rope_frequencies
from .config import RENAMED_FIELDS, FSNConfig, with_current_names
from .fsn import FSNLM, PhaseCache

# The oldest transformers release the tests were run on (setup.py's hf extra says the same).
TRANSFORMERS_FLOOR = "5.0"


def _check_version() -> None:
    found = tuple(int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    if found < tuple(int(x) for x in TRANSFORMERS_FLOOR.split(".")):
        raise ImportError(f"fsn_model.hf needs transformers >= {TRANSFORMERS_FLOOR}, found {transformers.__version__}: "
                          f'pip install -e ".[hf]"')


_check_version()

# The name under which this transformers version passes a Cache to forward() and returns
# it in model outputs: "cache" in recent releases, "past_key_values" before.
CACHE_NAME = "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"
FSN_FIELDS = tuple(f.name for f in dataclasses.fields(FSNConfig))


class FSNHFConfig(PretrainedConfig):
    """Hugging Face config of an :class:`FSNForCausalLM`: the fields of
    :class:`fsn_model.FSNConfig` (same names and defaults, checked the same way) plus
    ``backend``, the compute backend of the attention op (a runtime choice, "auto": Triton
    on CUDA, the PyTorch reference on CPU).

    ``hidden_size``, ``num_hidden_layers`` and ``num_attention_heads`` read ``dim``,
    ``n_layers`` and ``n_heads`` (for generic HF code)."""

    model_type = "fsn"
    attribute_map = {"hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads"}

    def __init__(self, vocab_size: int = 256, dim: int = 64, n_layers: int = 4, n_heads: int = 4,
                 n_harmonics: int = 2, mixer: str = "swiglu", hidden: int = 128, n_modes: int = 64,
                 delay: bool = True, k1_init: float = 0.5, coupling_std: float = 0.02, gate_std: float = 0.02,
                 readout_norm: bool = False, embed_scale: float = 1.0, token_shift: bool = False,
                 projections: bool = False, projected_heads: Optional[int] = None, project_output: bool = True,
                 backend: str = "auto", **kwargs):
        old = with_current_names({k: kwargs.pop(k) for k in RENAMED_FIELDS if k in kwargs})  # exports before the rename
        projections = old.get("projections", projections)
        projected_heads = old.get("projected_heads", projected_heads)
        project_output = old.get("project_output", project_output)
        self.vocab_size, self.dim, self.n_layers, self.n_heads = vocab_size, dim, n_layers, n_heads
        self.n_harmonics, self.mixer, self.hidden, self.n_modes = n_harmonics, mixer, hidden, n_modes
        self.delay, self.k1_init, self.coupling_std, self.gate_std = delay, k1_init, coupling_std, gate_std
        self.readout_norm, self.embed_scale, self.backend = readout_norm, embed_scale, backend
        self.token_shift, self.projections = token_shift, projections
        self.projected_heads, self.project_output = projected_heads, project_output
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


class FSNPhaseCache(Cache):
    """The ``transformers`` Cache of an :class:`FSNForCausalLM`: it holds FSN's preallocated
    :class:`fsn_model.PhaseCache` (per layer the phases the attention reads, (B, T_max, dim) float32;
    ``dim`` floats per token per layer) instead of keys and values.

    ``generate()`` makes an empty one with room for ``max_length`` tokens; the first forward
    fills it (``FSNLM`` prefill), each later one-token forward decodes through it in place.
    It supports what generation needs of a Cache: the length, crop (assisted decoding),
    beam reordering and batch expansion. ``update`` (keys and values) does not apply.

    Args:
        n_layers: FSN blocks of the model.
        capacity: tokens to preallocate when the cache is first filled (at least the
            prompt; the cache doubles when it runs out).
    """

    def __init__(self, n_layers: int, capacity: int = 0):
        super().__init__(layers=[])
        self.n_layers, self.capacity_hint = int(n_layers), int(capacity)
        self.phase_cache: Optional[PhaseCache] = None

    def __repr__(self) -> str:
        return f"FSNPhaseCache(n_layers={self.n_layers}, length={self.get_seq_length()})"

    def __len__(self) -> int:
        return self.n_layers

    # --- what generation reads -------------------------------------------------------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.phase_cache is None else self.phase_cache.length

    def get_max_length(self, layer_idx: Optional[int] = None) -> int:
        return -1  # grows by doubling

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return -1

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0):
        return self.get_seq_length() + query_length, 0

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        return True

    @property
    def is_initialized(self) -> bool:
        return self.phase_cache is not None

    @property
    def is_sliding(self):
        return [False] * self.n_layers

    @property
    def is_linear(self):
        return [False] * self.n_layers

    @property
    def is_dummy(self):
        return [False] * self.n_layers

    @property
    def batch_size(self) -> int:
        return -1 if self.phase_cache is None else int(self.phase_cache.seqlens.shape[0])

    # --- what generation does to it ----------------------------------------------------
    def update(self, *args, **kwargs):
        raise NotImplementedError("FSNPhaseCache holds FSN phases, not keys and values: it is filled by "
                                  "FSNForCausalLM.forward, and update() does not apply")

    def reset(self) -> None:
        if self.phase_cache is not None:
            self._set_length(0)

    def crop(self, tokens: int) -> None:
        """``tokens <= 0``: drop the last ``-tokens`` tokens; ``tokens > 0``: keep the first
        ``tokens`` (the older convention). Rows past the length are overwritten later."""
        length = self.get_seq_length()
        self._set_length(max(length + tokens, 0) if tokens <= 0 else min(tokens, length))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._select_batch(beam_idx)

    def batch_select_indices(self, indices: Tensor) -> None:
        self._select_batch(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        pc = self.phase_cache
        if pc is not None:
            pc.phases = [p.repeat_interleave(repeats, dim=0) for p in pc.phases]
            pc.seqlens = pc.seqlens.repeat_interleave(repeats, dim=0)

    def activate_past_recording(self) -> None:
        pass  # crop is exact at any time: nothing to record

    def offload(self, *args, **kwargs) -> None:
        pass

    def prefetch(self, *args, **kwargs) -> None:
        pass

    def _select_batch(self, indices: Tensor) -> None:
        pc = self.phase_cache
        if pc is not None:
            idx = indices.to(pc.seqlens.device)
            pc.phases = [p.index_select(0, idx) for p in pc.phases]
            pc.seqlens = pc.seqlens.index_select(0, idx)

    def _set_length(self, length: int) -> None:
        if self.phase_cache is not None:
            self.phase_cache.length = length
            self.phase_cache.seqlens.fill_(length)


class FSNPreTrainedModel(PreTrainedModel):
    """Base of the FSN HF models: config class, weight init (the FSN init of
    :class:`fsn_model.FSNLM` is kept; only the drift buffers, which are not saved, are
    recomputed)."""

    config_class = FSNHFConfig
    base_model_prefix = "fsn"
    main_input_name = "input_ids"
    _no_split_modules = ["FSNBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, FrustratedAttention):
            omega = rope_frequencies(module.n_heads, module.head_dim)
            with torch.no_grad():
                if module.omega.is_meta:
                    module.omega = omega
                else:
                    module.omega.copy_(omega)


class FSNForCausalLM(FSNPreTrainedModel, GenerationMixin):
    """:class:`fsn_model.FSNLM` as an HF causal LM (byte ids 0..255 for the byte models).

    ``forward(input_ids (B, T) int64, labels=None, attention_mask=None, cache=None)`` ->
    ``CausalLMOutputWithPast`` with logits (B, T, vocab) float32, the shifted
    cross-entropy ``loss`` when ``labels`` are given (-100 ignored), and the
    :class:`FSNPhaseCache` when ``use_cache``. FSN has no padding mask: an attention_mask
    with a 0 is refused (ValueError); an all-ones mask is accepted. The weights live in
    ``self.fsn`` (an FSNLM), saved under ``fsn.*``.
    """

    def __init__(self, config: FSNHFConfig):
        super().__init__(config)
        self.fsn = FSNLM(config.to_fsn_config(), backend=config.backend)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.fsn.embed

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.fsn.embed = value

    def get_output_embeddings(self):
        return None  # the readout acts on [cos, sin] features: nothing to tie

    def _prepare_cache_for_generation(self, generation_config, model_kwargs: Dict[str, Any], *args, **kwargs):
        """generate(): an empty :class:`FSNPhaseCache` with room for ``max_length`` tokens
        (unless use_cache is False or the caller passed a cache)."""
        given = model_kwargs.get(CACHE_NAME)
        if given is not None:
            _check_cache(given)
            given._is_user_defined = True
            return
        if generation_config.use_cache is False:
            return
        model_kwargs[CACHE_NAME] = FSNPhaseCache(self.config.n_layers, generation_config.max_length or 0)

    def forward(self, input_ids: Optional[Tensor] = None, attention_mask: Optional[Tensor] = None,
                labels: Optional[Tensor] = None, use_cache: Optional[bool] = None,
                cache: Optional[FSNPhaseCache] = None, past_key_values: Optional[FSNPhaseCache] = None,
                logits_to_keep: int = 0, inputs_embeds: Optional[Tensor] = None, return_dict: Optional[bool] = None,
                **kwargs) -> CausalLMOutputWithPast:
        """See the class docstring. ``logits_to_keep`` k > 0: logits of the last k positions
        only. Other HF keyword arguments (``position_ids``, ``output_attentions`` ...) are
        accepted and ignored: FSN positions are the token order, and it returns no
        attentions or hidden states."""
        if inputs_embeds is not None:
            raise ValueError("FSNForCausalLM takes input_ids, not inputs_embeds (its embedding is a phase table)")
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (torch.int64,
                                                                                                 torch.int32):
            raise ValueError(f"input_ids must be an integer tensor (B, T), got "
                             f"{getattr(input_ids, 'shape', None) if input_ids is not None else None}")
        _check_all_ones(attention_mask)
        cache = cache if cache is not None else past_key_values
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training and labels is None
        if cache is None and use_cache:
            cache = FSNPhaseCache(self.config.n_layers)
        if cache is not None:
            _check_cache(cache)
        logits = self._logits(input_ids, cache)
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        loss = None
        if labels is not None:
            if logits.shape[1] != labels.shape[1]:
                raise ValueError(f"labels must be (B, T) like input_ids, got {tuple(labels.shape)} for "
                                 f"logits {tuple(logits.shape[:2])} (with logits_to_keep, pass labels=None)")
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_NAME: cache})

    def _logits(self, idx: Tensor, cache: Optional[FSNPhaseCache]) -> Tensor:
        """Logits (B, T, vocab) of the new tokens ``idx``; fills (FSNLM prefill) or advances
        (FSNLM.decode, one token at a time) ``cache``."""
        if cache is None:
            return self.fsn(idx)
        B, T = idx.shape
        if cache.phase_cache is None or cache.get_seq_length() == 0:  # prefill into a fresh cache
            if cache.phase_cache is None or cache.phase_cache.capacity < T or cache.batch_size != B:
                cache.phase_cache = self.fsn.new_cache(B, max(cache.capacity_hint, T, 1))
            return self.fsn.logits(self.fsn.phases(idx, cache.phase_cache))
        if cache.batch_size != B:
            raise ValueError(f"input_ids has batch {B} but the cache holds {cache.batch_size} sequences")
        return torch.stack([self.fsn.decode(idx[:, t], cache.phase_cache)[0] for t in range(T)], dim=1)


def _check_cache(cache: Any) -> None:
    if not isinstance(cache, FSNPhaseCache):
        raise TypeError(f"the cache of an FSNForCausalLM must be an FSNPhaseCache (or None), "
                        f"got {type(cache).__name__}")


def _check_all_ones(attention_mask: Optional[Tensor]) -> None:
    """Refuse padding: FrustratedAttention has no key mask, every token attends to all earlier ones."""
    if attention_mask is None or not isinstance(attention_mask, Tensor) or attention_mask.dim() != 2:
        return
    if not bool(attention_mask.bool().all()):
        raise ValueError("attention_mask has zeros (padding), but FSN attention has no padding mask: every token "
                         "attends to all earlier ones; pass sequences of equal length (or one at a time) and an "
                         "all-ones mask or none")


AutoConfig.register("fsn", FSNHFConfig, exist_ok=True)
AutoModelForCausalLM.register(FSNHFConfig, FSNForCausalLM, exist_ok=True)


# --------------------------------------------------------------------------------------
# FrustratedAttention in place of the self-attention of an existing HF decoder
# --------------------------------------------------------------------------------------

# model_type -> class names of its self-attention modules
SUPPORTED_ATTENTION = {"llama": ("LlamaAttention",), "mistral": ("MistralAttention",),
                       "qwen2": ("Qwen2Attention",), "gpt2": ("GPT2Attention",)}
ATTENTION_KWARGS = ("rope_base", "k1_init", "coupling_std", "gate_std", "backend", "delay", "n_heads")


class FrustratedSelfAttention(nn.Module):
    """Drop-in for the self-attention module of an HF decoder layer: FrustratedAttention
    on the layer's (normalised) hidden states, ``forward(hidden_states, ...) ->
    (dtheta, None)``. The attention mask and position ids are ignored (attention is causal
    by construction, positions are the token order); padding is refused before the model
    runs (see :func:`replace_attention`).

    With a ``transformers`` Cache (``generate(use_cache=True)``) this layer keeps its phase
    history in that cache, as keys of shape (B, 1, T, dim) (the values are empty): a one-token
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
        history, _ = cache.update(theta.detach().unsqueeze(1), theta.new_zeros(B, 1, T, 0), self.layer_idx)
        sliding = getattr(cache, "is_sliding", None)
        if history.shape[-2] != past + T or (isinstance(sliding, list) and self.layer_idx < len(sliding)
                                             and sliding[self.layer_idx]):
            raise RuntimeError(f"layer {self.layer_idx}: the cache kept {history.shape[-2]} of {past + T} tokens "
                               f"(a sliding-window cache?); FrustratedAttention needs the whole history: pass "
                               f"use_cache=False or a DynamicCache without a sliding window")
        history = history[:, 0]
        if past == 0:
            return self.attn(theta), None
        if T == 1 and not (torch.is_grad_enabled() and theta.requires_grad):
            seqlens = torch.full((B,), past, dtype=torch.int32, device=theta.device)
            return self.attn.decode(theta, history.contiguous(), seqlens), None
        full = torch.cat([history[:, :past].to(theta.dtype), theta], dim=1)
        return self.attn(full)[:, past:], None


def replace_attention(model: nn.Module, n_harmonics: int = 2, **kw) -> nn.Module:
    """Swap the self-attention of every decoder layer of an HF causal LM (Llama, Mistral,
    Qwen2, GPT-2) for :class:`FrustratedSelfAttention` (a :class:`FrustratedAttention` with
    ``n_harmonics`` harmonics on that layer's hidden states); returns ``model`` (modified in
    place), in training mode as it was, on the device and dtype of the attention it replaced.

    Args:
        model: a ``transformers`` model whose ``config.model_type`` is llama, mistral, qwen2
            or gpt2 (the LM or its base model).
        n_harmonics: NH of the FrustratedAttention (1..8).
        **kw: ``n_heads`` (default: the config's attention heads), ``rope_base``, ``k1_init``,
            ``coupling_std``, ``gate_std``, ``backend``, ``delay`` (see FrustratedAttention).

    The model then refuses an ``attention_mask`` with zeros (padding) with a ValueError, and
    drops a sliding window from its config (this attention sees the whole past), so that
    ``generate(use_cache=True)`` gives the tokens of ``use_cache=False``.

    Raises:
        ValueError: an architecture not listed above, or a bad argument.
        TypeError: an unknown keyword argument.
    """
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
        attn = FrustratedAttention(hidden, n_heads, n_harmonics, **kw).to(device=ref.device, dtype=ref.dtype)
        attn.train(old.training)
        layer_idx = getattr(old, "layer_idx", None)
        setattr(parent, attr, FrustratedSelfAttention(attn, _index(name) if layer_idx is None else layer_idx))
    _drop_sliding_window(config)
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
    _check_all_ones(mask)
