"""Where a result came from: the device name and the git commit, as recorded in the
result files of ``fsn-compare`` and ``benchmarks/``."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Optional

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def device_name(device: Optional[torch.device] = None) -> str:
    """The CUDA device's name (``device``, or the current one when None and CUDA is up),
    else ``cpu-<machine>-<N>cores``."""
    if device is None and torch.cuda.is_available():
        device = torch.device("cuda")
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu-{platform.machine()}-{os.cpu_count()}cores"


def git_commit() -> Optional[str]:
    """HEAD of the checkout this package runs from, ``-dirty`` if tracked files changed;
    None outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:
        return None
