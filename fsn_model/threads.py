"""How many CPU threads the fsn tools give torch, and how those threads wait.

The tools (fsn-train, fsn-eval, fsn-generate, fsn-copy-depth, fsn-compare, fsn-sweep) run
many small operations per step. With torch's defaults (one thread per core, OpenMP threads
that spin while they wait for each other) a machine whose cores other processes keep busy
made training many times slower than one thread: a spinning thread holds a core the
descheduled one needs. Two rules keep the default from collapsing:

* **Passive waiting** (:func:`configure_wait_policy`): ``OMP_WAIT_POLICY=PASSIVE``, so
  an OpenMP thread that waits sleeps instead of spinning. It must be set before torch
  (and its OpenMP runtime) loads, so ``fsn_model/__init__.py`` calls it first, before
  importing torch; a wait policy the user set (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``,
  ``KMP_BLOCKTIME``) is kept, and nothing is set when torch is already loaded.
* **Only the idle cores** (:func:`default_threads`): without ``--threads`` and without
  ``OMP_NUM_THREADS``, the tools use the cores that other processes do not keep busy,
  judged from the one-minute load average at start-up: ``cores - int(load + 0.25)``, at
  least 1, at most the cores this process may run on. An idle machine keeps one thread
  per core, as before; a machine with a busy process per core gets one thread.

``--threads N`` (every tool) or ``OMP_NUM_THREADS`` overrides the count.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping, MutableMapping, Optional

WAIT_POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
BUSY_SHARE = 0.75  # a core counts as busy once other processes' load on it reaches this


def configure_wait_policy(environ: MutableMapping[str, str] = os.environ, modules: Mapping = sys.modules) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` in ``environ`` unless the user chose a wait policy
    or torch is already imported (too late to matter). Returns whether it set it."""
    if "torch" in modules or any(v in environ for v in WAIT_POLICY_VARS):
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float:
    """The one-minute load average, 0.0 where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def default_threads(cores: int, load: float) -> int:
    """Threads for ``cores`` cores of which other processes keep ``load`` busy: the idle
    ones, ``cores - int(load + 1 - BUSY_SHARE)``, clipped to ``[1, cores]``."""
    busy = int(max(load, 0.0) + 1.0 - BUSY_SHARE)
    return max(1, min(cores, cores - busy))


def choose_threads(requested: Optional[int], environ: Mapping[str, str] = os.environ,
                   cores: Optional[int] = None, load: Optional[float] = None) -> Optional[int]:
    """The thread count to set: ``requested`` (``--threads``) when given; None (leave
    torch's, which follows it) when ``OMP_NUM_THREADS`` is set; else :func:`default_threads`
    of the available cores and the load average."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"--threads must be an integer >= 1, got {requested!r}")
        return requested
    if environ.get("OMP_NUM_THREADS"):
        return None
    return default_threads(available_cores() if cores is None else cores, load_average() if load is None else load)


def apply_threads(requested: Optional[int]) -> int:
    """Set torch's thread count by :func:`choose_threads`; returns the count in use."""
    import torch

    n = choose_threads(requested)
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    """The tools' ``--threads`` flag."""
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: OMP_NUM_THREADS when set, else the cores other "
                        "processes leave idle by the load average, at least 1; fsn_model/threads.py)")
