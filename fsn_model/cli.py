"""Shared CLI plumbing: bad input prints ONE line to stderr and exits with code 2."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn, Optional, Sequence


class UsageError(Exception):
    """Bad command-line input (reported as one line, exit status 2)."""


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def run_cli(prog: str, body: Callable[[Sequence[str]], Optional[int]], argv: Optional[Sequence[str]]) -> int:
    """Run ``body(argv)``; map UsageError/ValueError/TypeError/FileNotFoundError to one stderr
    line and exit 2 (set FSN_DEBUG=1 to see the traceback instead)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return body(argv) or 0
    except (UsageError, ValueError, TypeError, FileNotFoundError, IsADirectoryError) as e:
        if os.environ.get("FSN_DEBUG"):
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        raise SystemExit(2)
