"""Result files of the study tools: written whole or not at all, in a folder checked first.

* :func:`atomic_write`: a temporary in the same folder, flushed to disk (fsync), then
  ``os.replace`` onto the target, so a reader, a full disk or a killed process never leaves a
  half-written JSON, markdown or PNG; the previous file stays until the new one is complete.
  A failure is one line naming the path (:class:`fsn_model.checkpoint.FileWriteError`, exit 1).
* :func:`settings_id`: a short stable hash of the settings a results file belongs to.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from fsn_model.checkpoint import atomic_write_bytes


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces; floats as Python's ``repr`` (0.012 and 0.0120000001 differ)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def stable_hash(obj: Any, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


def settings_id(settings: Mapping[str, Any]) -> str:
    """8 hex digits naming a set of shared settings (a results file belongs to one)."""
    return stable_hash(dict(settings), 8)


def atomic_write(path: Union[str, Path], write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` for a temporary beside ``path`` (same suffix, so a plotting library
    picks the same format), fsync it and ``os.replace`` it onto ``path``
    (:func:`fsn_model.checkpoint.atomic_write_bytes`).

    Raises:
        FileWriteError: the write failed (no space left, permission denied, ...): one line
            with the path and the cause; the previous file at ``path`` is kept, the temporary
            removed.
    """
    atomic_write_bytes(path, lambda tmp: write(Path(tmp)), keep_suffix=True)


def write_text(path: Union[str, Path], text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Union[str, Path], obj: Any) -> None:
    """:func:`atomic_write` of strict JSON (``indent=1``; NaN refused: turn it into None first)."""
    write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")
