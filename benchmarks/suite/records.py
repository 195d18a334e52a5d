"""The GPU suite's result records: one JSON object per line, flushed as written, and the
reader that keeps every whole line of a file a kill cut short."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict


class Recorder:
    """Appends one JSON object per line to ``path`` and flushes it at once."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")

    def write(self, record: Dict) -> None:
        self._f.write(json.dumps(record, default=str) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def read_records(path: Path):
    """The records of a JSONL result file; a line cut short by a kill is ignored."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out
