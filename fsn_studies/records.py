"""The fields of a study's result file that tools read back.

A run's final validation loss is stored as ``final_val_bits_per_byte`` (bits per byte); files
written before that name hold it as ``final_val_bpc``. Readers go through :func:`final_val`, so
both stay readable.
"""
from __future__ import annotations

from typing import Any, Mapping

FINAL_VAL = "final_val_bits_per_byte"
LEGACY_FINAL_VAL = ("final_val_bpc",)


def final_val(run: Mapping[str, Any]) -> float:
    """A run record's final validation bits per byte, under its current or its old key.

    Raises:
        KeyError: the record holds neither key (names both).
    """
    for key in (FINAL_VAL,) + LEGACY_FINAL_VAL:
        if key in run:
            return run[key]
    raise KeyError(f"run record has no {FINAL_VAL} (nor {', '.join(LEGACY_FINAL_VAL)}); keys: {sorted(run)}")
