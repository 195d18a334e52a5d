"""FSN in the Hugging Face stack (optional extra ``pip install -e ".[hf]"``; docs: fsn_model/hf/huggingface.md).

One concern per module:

* :mod:`.configuration_fsn`: :class:`FSNHFConfig` (``model_type = "fsn"``), derived from
  :class:`fsn_model.FSNConfig`.
* :mod:`.cache`: :class:`FSNPhaseCache`, the ``transformers`` ``Cache`` that carries FSN's
  preallocated :class:`fsn_model.PhaseCache` through ``generate()``.
* :mod:`.modeling_fsn`: :class:`FSNPreTrainedModel`, :class:`FSNForCausalLM` (registered
  with ``AutoConfig`` / ``AutoModelForCausalLM`` on import).
* :mod:`.tokenization_fsn`: :class:`FSNByteTokenizer`, the byte-level tokenizer of the
  exports (registered with ``AutoTokenizer``).
* :mod:`.swap`: :func:`replace_attention`, FrustratedAttention in place of the
  self-attention of an HF Llama, Mistral, Qwen2 or GPT-2.
* :mod:`.export`: ``fsn-export``, an fsn-train checkpoint as an HF model directory.
* :mod:`.compat`: the supported ``transformers`` versions.

The core package never imports this sub-package; importing it needs ``transformers``.
"""
from ..config import FSNConfig
from ..fsn import FSNLM
from .cache import FSNPhaseCache
from .compat import CACHE_NAME, TRANSFORMERS_FLOOR
from .configuration_fsn import FSN_FIELDS, FSNHFConfig
from .modeling_fsn import FSNForCausalLM, FSNPreTrainedModel
from .swap import ATTENTION_KWARGS, SUPPORTED_ATTENTION, FrustratedSelfAttention, replace_attention
from .tokenization_fsn import FSNByteTokenizer

__all__ = ["ATTENTION_KWARGS", "CACHE_NAME", "FSN_FIELDS", "FSNByteTokenizer", "FSNConfig", "FSNForCausalLM",
           "FSNHFConfig", "FSNLM", "FSNPhaseCache", "FSNPreTrainedModel", "FrustratedSelfAttention",
           "SUPPORTED_ATTENTION", "TRANSFORMERS_FLOOR", "replace_attention"]
