"""``FSNByteTokenizer``: the byte-level tokenizer of the byte models (token id = byte value, 256 ids).

``fsn-export`` saves it beside every exported model, so that ``AutoTokenizer.from_pretrained(DIR)``
and ``pipeline("text-generation", model=DIR)`` work (after ``import fsn_model.hf``, which
registers it with ``AutoTokenizer``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from transformers import AutoTokenizer, PreTrainedTokenizer

from .configuration_fsn import FSNHFConfig

N_BYTES = 256


class FSNByteTokenizer(PreTrainedTokenizer):
    """Text <-> byte ids: ``encode(text) == list(text.encode("utf-8"))``, no special tokens
    added, no normalisation, no clean-up of spaces.

    Arbitrary bytes round-trip exactly: ``decode`` maps bytes that are not UTF-8 to lone
    surrogates (Python's ``surrogateescape``), and encoding that text gives the same bytes
    back. A token is the character ``chr(byte)`` (``convert_ids_to_tokens``).

    The vocabulary is fixed (256 ids); ``save_pretrained`` writes only the tokenizer config.
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, **kwargs):
        kwargs.setdefault("special_tokens_pattern", "none")  # transformers 5.0's default adds [CLS]/[SEP]
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.setdefault("model_max_length", int(1e30))
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return N_BYTES

    def get_vocab(self) -> Dict[str, int]:
        return {chr(i): i for i in range(N_BYTES)}

    def _tokenize(self, text: str, **kwargs) -> List[str]:
        return [chr(b) for b in text.encode("utf-8", errors="surrogateescape")]

    def _convert_token_to_id(self, token: str) -> int:
        if len(token) != 1 or ord(token) >= N_BYTES:
            raise ValueError(f"a byte token is one character chr(0)..chr(255), got {token!r}")
        return ord(token)

    def _convert_id_to_token(self, index: int) -> str:
        if not 0 <= int(index) < N_BYTES:
            raise ValueError(f"a byte id is in 0..255, got {index}")
        return chr(index)

    def convert_tokens_to_string(self, tokens: List[str]) -> str:
        return bytes(ord(t) for t in tokens).decode("utf-8", errors="surrogateescape")

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: Optional[bool] = None,
                **kwargs) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        return self.convert_tokens_to_string([self._convert_id_to_token(int(i)) for i in ids])

    def build_inputs_with_special_tokens(self, token_ids_0: List[int], token_ids_1: Optional[List[int]] = None
                                         ) -> List[int]:
        """No special tokens: the ids as given (a pair: concatenated)."""
        return list(token_ids_0) + list(token_ids_1 or [])

    def get_special_tokens_mask(self, token_ids_0: List[int], token_ids_1: Optional[List[int]] = None,
                                already_has_special_tokens: bool = False) -> List[int]:
        return [0] * (len(token_ids_0) + len(token_ids_1 or []))

    def save_vocabulary(self, save_directory: str, filename_prefix: Optional[str] = None) -> Tuple[str, ...]:
        return ()  # the 256 byte ids: nothing to save


AutoTokenizer.register(FSNHFConfig, slow_tokenizer_class=FSNByteTokenizer, exist_ok=True)
