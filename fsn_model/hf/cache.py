"""``FSNPhaseCache``: the ``transformers`` Cache that carries FSN's preallocated phase cache through ``generate()``."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from transformers.cache_utils import Cache

from ..fsn import PhaseCache


class FSNPhaseCache(Cache):
    """The ``transformers`` Cache of an :class:`FSNForCausalLM`: it holds FSN's preallocated
    :class:`fsn_model.PhaseCache` (per layer the phases the attention reads, (B, T_max, dim) in the dtype of
    the model's phases;
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

    def activate_past_recording(self, *args, **kwargs) -> None:
        """Nothing to record: crop is exact at any time. Takes any arguments (5.25 passes
        ``recurrent_states_to_keep``, earlier 5.x releases nothing)."""

    def is_recording_past(self, layer_idx: int = 0) -> bool:
        return False

    def get_recurrent_states_to_keep(self, layer_idx: Optional[int] = None) -> int:
        return 0  # no recurrent states: crop needs no history

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
