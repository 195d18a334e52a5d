"""Console entry points of the ``fsn`` package (``fsn-train``, ``fsn-eval``, ...).

This module imports only the standard library: the tool's own module (and torch with
it, seconds of start-up) is imported inside :func:`run`, so Ctrl-C at any moment,
the imports included, ends the tool with one line on stderr and exit status 130,
never a traceback. Each tool's ``main`` reports its own errors in one line
(:func:`fsn_model.cli.run_cli`).
"""
from __future__ import annotations

import importlib
import sys


def run(module: str, prog: str, extra: str = "") -> int:
    """Import ``module`` and return its ``main()``; Ctrl-C at any point -> one line, 130.

    ``extra``: the optional extra ``module`` needs (e.g. "hf"): an ImportError while importing
    it is then one line naming the extra, exit status 2."""
    try:
        try:
            loaded = importlib.import_module(module)
        except ImportError as e:
            if not extra:
                raise
            print(f"{prog}: error: {e} (pip install -e \".[{extra}]\")", file=sys.stderr)
            return 2
        return loaded.main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def train() -> int:
    return run("fsn_model.train", "fsn-train")


def evaluate() -> int:
    return run("fsn_model.evaluate", "fsn-eval")


def generate() -> int:
    return run("fsn_model.generate", "fsn-generate")


def copy_depth() -> int:
    return run("fsn_model.copy_depth", "fsn-copy-depth")


def compare() -> int:
    return run("fsn_studies.compare", "fsn-compare")


def sweep() -> int:
    return run("fsn_studies.sweep", "fsn-sweep")


def export() -> int:
    return run("fsn_model.hf.export", "fsn-export", extra="hf")
