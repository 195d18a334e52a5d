"""Byte-level data (fsn_model/README.md, "Data"): corpora, train/val/test splits, deterministic batches.

Corpora:
  * enwik8 (a file named ``enwik8`` or of exactly 100,000,000 bytes): the standard split,
    first 90M bytes train, next 5M validation, last 5M test.
  * any other file: 90% / 5% / 5% in order.
  * default (no file given): the Python standard library's own sources, ``pystdlib``: every
    ``*.py`` under ``sysconfig.get_paths()["stdlib"]`` in sorted relative-path order,
    skipping ``test``/``tests``/``idle_test`` directories and ``site-packages``, each file's
    bytes followed by a newline, capped at 16 MiB (about 12 MB on CPython 3.11). It is on
    every machine with no download and is deterministic for a given Python build; its
    sha256 is recorded in training logs. It is written once to
    ``$FSN_CACHE`` (default ``~/.cache/fsn``) and memory-mapped.

Batches are random windows of ``seq_len + 1`` bytes, drawn by a numpy Generator seeded
from (seed, step, rank): the batch of a step never depends on history, so resume is exact.
"""
from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

ENWIK8_SIZE = 100_000_000
DEFAULT_CAP = 16 * 2**20
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def default_corpus_path(cap: int = DEFAULT_CAP) -> Path:
    """Cache path of the default corpus for this interpreter version."""
    root = Path(os.environ.get("FSN_CACHE", Path.home() / ".cache" / "fsn"))
    v = sys.version_info
    return root / f"pystdlib-{sys.implementation.name}{v.major}.{v.minor}.{v.micro}-{cap}.bin"


def build_default_corpus(path: Optional[Path] = None, cap: int = DEFAULT_CAP) -> Path:
    """Write the concatenated stdlib sources to ``path`` (atomically) unless it exists."""
    path = Path(path or default_corpus_path(cap))
    if path.exists():
        return path
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        (f for f in stdlib.rglob("*.py") if not _SKIP_DIRS & set(f.relative_to(stdlib).parts[:-1])),
        key=lambda f: f.relative_to(stdlib).as_posix(),
    )
    chunks, size = [], 0
    for f in files:
        b = f.read_bytes() + b"\n"
        chunks.append(b[: cap - size])
        size += len(chunks[-1])
        if size >= cap:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(b"".join(chunks))
    os.replace(tmp, path)
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Corpus:
    """A memory-mapped byte corpus and its split ranges ``{"train"|"val"|"test": (start, end)}``."""

    name: str
    path: str
    data: np.ndarray  # uint8 memmap
    splits: Dict[str, Tuple[int, int]]
    sha256: str

    def split(self, name: str) -> np.ndarray:
        a, b = self.splits[name]
        return self.data[a:b]

    def describe(self) -> Dict[str, object]:
        return {"name": self.name, "path": self.path, "bytes": int(len(self.data)), "sha256": self.sha256,
                "splits": {k: list(v) for k, v in self.splits.items()}}


def load_corpus(path: Optional[str] = None) -> Corpus:
    """Open ``path`` (or the default corpus) as a :class:`Corpus`; its ``path`` is resolved
    (absolute, symlinks followed), so a run records which file it read.

    Raises:
        FileNotFoundError: missing file. ValueError: a directory, an unreadable file
        (permission denied) or a file too small to split.
    """
    if path is None:
        p, name = build_default_corpus(), "pystdlib"
    else:
        p = Path(path)
        if p.is_dir():
            raise ValueError(f"data must be a file of bytes, got the directory {path}")
        if not p.is_file():
            raise FileNotFoundError(f"data file not found: {path}")
        name = p.name
    given, p = p, p.resolve()
    try:
        with open(p, "rb") as f:
            head = f.read(len(b"<mediawiki"))
        n = p.stat().st_size
        if n < 1000:
            raise ValueError(f"data file {p} has {n} bytes; need at least 1000 to split 90/5/5")
        if given.name == "enwik8" or (n == ENWIK8_SIZE and head == b"<mediawiki"):
            cuts = (90_000_000, 95_000_000) if n == ENWIK8_SIZE else (int(n * 0.9), int(n * 0.95))
            name = "enwik8"
        else:
            cuts = (int(n * 0.9), int(n * 0.95))
        splits = {"train": (0, cuts[0]), "val": (cuts[0], cuts[1]), "test": (cuts[1], n)}
        data = np.memmap(p, dtype=np.uint8, mode="r")
        return Corpus(name, str(p), data, splits, sha256_file(p))
    except PermissionError:
        raise ValueError(f"data file {path if path is not None else p} is not readable (permission denied)") from None


def check_same_corpus(corpus: Corpus, recorded: Optional[Dict[str, object]], what: str, allow: bool) -> None:
    """Refuse ``corpus`` when its sha256 differs from the one ``what`` recorded.

    ``recorded`` is the ``corpus`` dict a run saved (name, path, sha256; None or without a
    sha256: nothing to check). Raises ValueError naming both hashes unless ``allow``
    (the ``--allow-different-data`` flag).
    """
    old = (recorded or {}).get("sha256")
    if allow or not old or old == corpus.sha256:
        return
    raise ValueError(f"data {corpus.path} (sha256 {corpus.sha256}) is not the corpus {what} trained on "
                     f"({(recorded or {}).get('path')}, sha256 {old}); pass --allow-different-data to use it anyway")


def get_batch(data: np.ndarray, batch_size: int, seq_len: int, seed: int, step: int,
              rank: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random windows of one split, a pure function of (seed, step, rank).

    Returns:
        x, y: (batch_size, seq_len) int64; y is x shifted by one byte.
    """
    if len(data) < seq_len + 1:
        raise ValueError(f"split of {len(data)} bytes is shorter than seq_len + 1 = {seq_len + 1}")
    rng = np.random.default_rng([seed, step, rank])
    starts = rng.integers(0, len(data) - seq_len, size=batch_size)  # last start: len - seq_len - 1
    w = torch.from_numpy(np.stack([np.asarray(data[s: s + seq_len + 1]) for s in starts]).astype(np.int64))
    return w[:, :-1], w[:, 1:]


def eval_windows(data: np.ndarray, seq_len: int, n_windows: int) -> torch.Tensor:
    """``n_windows`` windows of ``seq_len + 1`` bytes evenly spaced over a split (fixed,
    so every evaluation of every model sees the same bytes). Returns (N, seq_len+1) int64."""
    if n_windows < 1:
        raise ValueError(f"eval_windows must be >= 1, got {n_windows}")
    n_max = len(data) - seq_len - 1  # the last valid start
    if n_max + 1 < n_windows:
        raise ValueError(f"a split of {len(data)} bytes holds {max(n_max + 1, 0)} distinct windows of "
                         f"seq_len + 1 = {seq_len + 1} bytes, fewer than eval_windows = {n_windows}")
    starts = np.unique(np.linspace(0, n_max, num=n_windows).astype(np.int64))
    return torch.from_numpy(np.stack([np.asarray(data[s: s + seq_len + 1]) for s in starts]).astype(np.int64))


def separator_bytes(text: str) -> bytes:
    """A document separator from the command line: backslash escapes (``\\n``, ``\\x00``)
    are understood, then the text is UTF-8 encoded. Raises ValueError when empty."""
    import codecs

    try:
        sep = codecs.decode(text, "unicode_escape").encode("utf-8") if "\\" in text else text.encode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"pack_documents: cannot read the separator {text!r}: {e}") from None
    if not sep:
        raise ValueError("pack_documents must be a non-empty separator, e.g. '\\n\\n' or '\\x00'")
    return sep


def document_boundaries(x: torch.Tensor, separator: bytes):
    """Pack a (B, T) batch of byte windows into one row of B*T tokens, split into documents.

    A document ends with ``separator`` (which belongs to it; matches are found left to
    right without overlap) and at every window's end. Returns ``(cu_seqlens, crosses)``:
    int32 (S + 1,) boundaries of the S documents in the flattened batch, and a (B, T)
    bool mask of the tokens whose next byte starts another document (their targets cannot
    be predicted from their document and are ignored)."""
    B, T = x.shape
    crosses = torch.zeros(B, T, dtype=torch.bool)
    starts = [0]
    for b, row in enumerate(x.tolist()):
        text, at = bytes(row), 0
        while (hit := text.find(separator, at)) >= 0:
            end = hit + len(separator)  # the document is text[.. end)
            crosses[b, end - 1] = True
            if end < T:
                starts.append(b * T + end)
            at = end
        starts.append((b + 1) * T)
    return torch.tensor(starts, dtype=torch.int32, device=x.device), crosses.to(x.device)
