"""Where a result came from: the device name and the git commit, as recorded in the
result files of ``fsn-compare``, ``fsn-sweep`` and ``benchmarks/``.

Nothing here assumes the package runs from a source checkout: an installed package has none,
so the commit is that of the checkout the current working directory is in (the one a study
is run from), or None."""
from __future__ import annotations

import os
import platform
import subprocess
from typing import Optional

import torch


def device_name(device: Optional[torch.device] = None) -> str:
    """The CUDA device's name (``device``, or the current one when None and CUDA is up),
    else ``cpu-<machine>-<N>cores``."""
    if device is None and torch.cuda.is_available():
        device = torch.device("cuda")
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu-{platform.machine()}-{os.cpu_count()}cores"


def git_commit() -> Optional[str]:
    """HEAD of the git checkout the current working directory is in, ``-dirty`` if tracked
    files changed; None outside a checkout (or without git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        sha = head.stdout.strip()
        if head.returncode != 0 or not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:
        return None
