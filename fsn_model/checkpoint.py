"""Self-describing checkpoints, written atomically and loaded without running code.

A checkpoint is a dict saved by torch.save holding only tensors and plain Python values
(dicts, lists, tuples, str, int, float, bool, None), with keys ``model_config`` (the dict of
:func:`fsn_model.config.config_to_dict`; :func:`fsn_model.build.model_from_config` rebuilds
the model from it), ``train_config`` (dict), ``model`` (state dict), ``optimizer`` (state
dict), ``step`` (the next step to run), ``log``, ``corpus`` (name, path, sha256) and
``checksum``: the sha256 of everything else in it (every tensor's dtype, shape and bytes and
every plain value, in a fixed order), checked on every load, so a damaged file (a flipped
bit) is refused instead of loading changed weights. Checkpoints written before the checksum
existed load with one line on stderr saying they are unchecked.

It is loaded with ``torch.load(..., weights_only=True)``: a file that would need any other
Python object to unpickle (a file crafted to run code on load, for example) is refused
with a ValueError before any of it runs.
"""
from __future__ import annotations

import errno
import hashlib
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from .build import model_from_config
from .cli import ReportedOSError, describe_os_error
from .config import config_from_dict
from .run_lock import pid_alive

REQUIRED_KEYS = ("model_config", "train_config", "model")
CHECKSUM_KEY = "checksum"


def checkpoint_checksum(obj: Any) -> str:
    """sha256 (hex) of a checkpoint's content without its ``checksum`` key: tensors by dtype,
    shape and bytes, dicts in key order, lists and tuples in order, other values by type and
    repr. Equal for a dict and its save/load round trip."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            keys = sorted((k for k in value if not (value is obj and k == CHECKSUM_KEY)), key=repr)
            digest.update(f"D{len(keys)}".encode())
            for key in keys:
                feed(key)
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"{type(value).__name__[0]}{len(value)}".encode())
            for item in value:
                feed(item)
        else:
            digest.update(f"{type(value).__name__}:{value!r};".encode())

    feed(obj)
    return digest.hexdigest()


def atomic_write_bytes(path: Union[str, Path], write, keep_suffix: bool = False) -> None:
    """Call ``write(tmp_path)``, flush it to disk (fsync) and ``os.replace`` it onto ``path``: a
    reader, a full disk or a run killed mid-write never leaves a partial file. The temporary is
    ``<name>.tmp<PID>`` beside ``path`` (``keep_suffix``: ``<name>.tmp<PID><suffix>``, for
    writers that pick the format from the file name, such as matplotlib).

    Raises:
        FileWriteError: the write failed (no space left, permission denied, ...); the
            message names the cause and the path, the previous file at ``path`` is kept and
            the temporary removed.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}{path.suffix if keep_suffix else ''}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as e:
        raise FileWriteError.of(path, describe_os_error(e), e.errno) from None
    except RuntimeError as e:  # torch's zip writer reports a short write (a full disk) this way
        if not any(mark in str(e) for mark in _SHORT_WRITE_MARKS):
            raise
        free = _free_bytes(path.parent)
        cause = (f"no space left on device ({free:,} bytes free)" if free is not None and free < _NEARLY_FULL
                 else f"the write stopped short ({_first_line(e)})")
        raise FileWriteError.of(path, cause, errno.ENOSPC if "no space" in cause else None) from None
    finally:
        try:
            if tmp.exists():
                tmp.unlink()
        except OSError:
            pass


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_SHORT_WRITE_MARKS = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")
_NEARLY_FULL = 1 << 20


class FileWriteError(ReportedOSError):
    """A run file could not be written; ``str()`` is one line: path, cause, what was kept."""

    @classmethod
    def of(cls, path: Path, cause: str, code: Optional[int]) -> "FileWriteError":
        kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written there"
        err = cls(f"cannot write {path}: {cause}; {kept}")
        err.errno = code
        err.filename = None  # already in the message
        return err


def _free_bytes(directory: Path) -> Optional[int]:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def remove_stale_temporaries(directory: Union[str, Path]) -> list:
    """Delete the temporaries of :func:`atomic_write_bytes` (``*.tmp<PID>``, with or without
    the target's suffix) left in ``directory`` by writers that died (their PID is not
    running). Returns the removed paths."""
    removed = []
    for f in Path(directory).glob("*.tmp*"):
        base, rest = f.name.rsplit(".tmp", 1)
        pid = rest[: len(rest) - len(Path(base).suffix)] if rest.endswith(Path(base).suffix) else rest
        if pid.isdigit() and not _pid_running(int(pid)) and f.is_file():
            f.unlink()
            removed.append(f)
    return removed


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, and we are not writing it now
    return pid_alive(pid)


def save_checkpoint(path: str, obj: Dict[str, Any]) -> None:
    """torch.save ``obj`` with its ``checksum`` (:func:`checkpoint_checksum`) to
    ``path.tmp<PID>``, then os.replace: a reader never sees a partial file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stamped = {**obj, CHECKSUM_KEY: checkpoint_checksum(obj)}
    atomic_write_bytes(path, lambda tmp: torch.save(stamped, tmp))


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load a checkpoint dict onto the CPU, allowing only tensors and plain values.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a torch file, a file that needs other Python objects to load (it
            could run code; it is refused and nothing in it runs), missing keys, or content
            that does not match its checksum (a damaged file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if p.stat().st_size == 0:
        raise ValueError(f"cannot read checkpoint {path}: the file is empty (0 bytes; a write that never finished?)")
    _check_torch_file(p, path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), None)
        if detail is None:  # damaged, or not a torch file
            raise ValueError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
        raise ValueError(f"refusing to load {path}: it holds Python objects other than tensors and plain values, "
                         f"and loading those could run code ({detail})") from None
    except OSError as e:
        raise ValueError(f"cannot read checkpoint {path}: {describe_os_error(e)}") from None
    except Exception as e:  # damaged, or not a torch file
        raise ValueError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not an fsn_model checkpoint (a {type(ckpt).__name__}, expected a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not an fsn_model checkpoint: missing keys {missing}")
    if CHECKSUM_KEY not in ckpt:
        print(f"{path}: written before checkpoints carried a checksum; loaded unchecked", file=sys.stderr)
    elif ckpt[CHECKSUM_KEY] != checkpoint_checksum(ckpt):
        raise ValueError(f"cannot read checkpoint {path}: its content does not match its checksum (the file is "
                         f"damaged; use an earlier copy or retrain)")
    return ckpt


def _check_torch_file(p: Path, path: str) -> None:
    """ValueError unless the file starts as torch.save writes: a zip archive, or (the legacy
    format) a pickle. A readable file only; read errors are reported by the load."""
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError:
        return
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise ValueError(f"cannot read checkpoint {path}: not a file written by torch.save (it starts with "
                         f"{head!r}; a text file?)")


def load_model(path: str, device: Union[str, torch.device] = "cpu", backend: str = "auto"
               ) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the model of a checkpoint, in eval mode on ``device``; returns (model, ckpt).

    ``backend`` is the FSN attention's compute backend (a runtime choice, not saved).
    Raises FileNotFoundError, or ValueError when the file is refused (see
    :func:`load_checkpoint`), its model_config is invalid, or its weights do not fit it.
    """
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt, path, device, backend), ckpt


def model_from_checkpoint(ckpt: Dict[str, Any], path: str, device: Union[str, torch.device] = "cpu",
                          backend: str = "auto") -> nn.Module:
    """The model of a checkpoint dict already loaded from ``path`` (see :func:`load_model`)."""
    try:
        config = config_from_dict(ckpt["model_config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: invalid model_config: {e}") from None
    model = model_from_config(config, backend=backend)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"checkpoint {path}: its weights do not match its model_config ({first})") from None
    return model.to(device).eval()


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """"auto" -> cuda if available else cpu; anything else must name a device this machine
    has. Raises ValueError (naming ``--device``) otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N; got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N; got {device!r}")
    return dev
