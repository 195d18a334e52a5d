"""``FSNPreTrainedModel`` and ``FSNForCausalLM``: :class:`fsn_model.FSNLM` as a Hugging Face causal LM,
registered with ``AutoConfig`` / ``AutoModelForCausalLM`` when this module is imported."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..attention import FrustratedAttention, rope_frequencies
from ..fsn import FSNLM
from ..mixers import MeanFieldCoupling, PhaseSwiGLU
from .cache import FSNPhaseCache
from .compat import CACHE_NAME
from .configuration_fsn import FSNHFConfig


class FSNPreTrainedModel(PreTrainedModel):
    """Base of the FSN HF models: config class and weight init.

    A model built from a config keeps the FSN init of :class:`fsn_model.FSNLM` (its
    parameters are marked initialised, so ``post_init`` leaves them alone). A parameter
    that ``from_pretrained`` did not find in the weights (a tensor missing from
    ``model.safetensors``, a config with more layers than the weights) gets a fresh init
    from the module's own init code (:data:`FSN_INITS`), as a new FSNLM would have it:
    finite, never HF's generic init, never uninitialised memory. The drift buffers
    ``omega``, which are not saved, are recomputed."""

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
        owner = self._init_owner(module)
        if owner is not None:
            owned, init = next(v for kind, v in FSN_INITS.items() if isinstance(owner, kind))
            init_missing(owned(owner), lambda: init(owner))

    def _init_owner(self, module: nn.Module) -> Optional[nn.Module]:
        """The module whose init writes ``module``'s parameters: itself or its nearest
        ancestor of a type in :data:`FSN_INITS` (HF visits only modules with a missing
        tensor, e.g. the Embedding, whose init lives in FSNLM)."""
        owners = {}
        for name, m in self.named_modules():
            if isinstance(m, tuple(FSN_INITS)):
                for sub in m.modules():
                    owners.setdefault(id(sub), [])
                    owners[id(sub)].append((name.count("."), m))
        found = owners.get(id(module))
        return max(found, key=lambda x: x[0])[1] if found else None


def init_missing(params, init) -> None:
    """Run ``init()`` (an in-place init of ``params`` and maybe more), then put back every
    parameter of ``params`` that was already initialised (loaded, or built with its init:
    the ``_is_hf_initialized`` mark)."""
    params = list(params)
    missing = [p for p in params if not getattr(p, "_is_hf_initialized", False)]
    if not missing:
        return
    kept = [(p, p.detach().clone()) for p in params if getattr(p, "_is_hf_initialized", False)]
    init()
    with torch.no_grad():
        for p, value in kept:
            p.copy_(value)
    for p in missing:
        p._is_hf_initialized = True  # initialised now: a later visit of the same owner keeps it


# module type -> (the parameters its init writes, that init in place): the inits FSNLM's
# constructor runs, one per module that owns parameters.
FSN_INITS = {
    FSNLM: (lambda m: [m.embed.weight, *m.readout.parameters(), *m.readout_norm.parameters()],
            lambda m: (m.init_embedding(), m.init_readout())),
    FrustratedAttention: (lambda m: m.parameters(), lambda m: m.reset_parameters()),
    PhaseSwiGLU: (lambda m: m.parameters(), lambda m: m.reset_parameters()),
    MeanFieldCoupling: (lambda m: m.parameters(), lambda m: m.reset_parameters()),
}


def mark_initialised(module: nn.Module) -> None:
    """Mark the parameters of ``module`` that hold values (not meta) as initialised, so that
    HF's ``post_init`` keeps them."""
    for p in module.parameters():
        if not p.is_meta:
            p._is_hf_initialized = True


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
        mark_initialised(self.fsn)  # the FSN init, kept by post_init
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
        check_all_ones(attention_mask)
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


def check_all_ones(attention_mask: Optional[Tensor]) -> None:
    """Refuse padding: FrustratedAttention has no key mask, every token attends to all earlier
    ones. ``attention_mask`` must be None or a 2-D (batch, length) tensor of ones; any other
    shape, a value other than 0 and 1, or a zero (padding) is a ValueError (a non-tensor a
    TypeError), never silently ignored."""
    if attention_mask is None:
        return
    if not isinstance(attention_mask, Tensor):
        raise TypeError(f"attention_mask must be a tensor or None, got {type(attention_mask).__name__}")
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be 2-D (batch, length) ones, got shape {tuple(attention_mask.shape)}: "
                         "FSN attention takes no other mask")
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        bad = attention_mask[(attention_mask != 0) & (attention_mask != 1)].flatten()[0].item()
        raise ValueError(f"attention_mask must hold 0s and 1s, got {bad!r}")
    if not bool(attention_mask.bool().all()):
        raise ValueError("attention_mask has zeros (padding), but FSN attention has no padding mask: every token "
                         "attends to all earlier ones; pass sequences of equal length (or one at a time) and an "
                         "all-ones mask or none")


AutoConfig.register("fsn", FSNHFConfig, exist_ok=True)
AutoModelForCausalLM.register(FSNHFConfig, FSNForCausalLM, exist_ok=True)
