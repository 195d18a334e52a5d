"""The result files of ``fsn-compare`` and ``fsn-sweep``: one file per set of shared settings.

A results file (``<stem>.json`` + ``.md``, ``.png``, ``-copy-depth.png``) belongs to one set of
shared settings (corpus sha256, size, steps, batch, window length, evaluation, defaults, ...):
its ``settings_id`` (8 hex digits, :func:`fsn_studies.files.settings_id`) is in the default
stem and in the file. Writing again into the same stem:

* with the same settings adds this invocation's runs to the file's (merged by run identity;
  a run of the same trial and seed replaces the old record, so no seed counts twice) and
  rebuilds the summaries and tables from all of them;
* with other settings (or into a file without ``settings_id``, written before it existed) is
  refused before any training: pass another ``--name`` or ``--out``.

Every file is written atomically (:func:`fsn_studies.files.atomic_write`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from fsn_model.run_dir import writable_directory

from .files import atomic_write, settings_id, stable_hash, write_json, write_text
from .runs import IDENTITY_NAME, finished


def slug(text: str) -> str:
    """``text`` with every character but letters, digits, ``-`` and ``_`` turned into ``-``."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)


def prepare(out_dir: Path, stem: str, settings: Mapping[str, Any], flag: str = "--out") -> List[Dict[str, Any]]:
    """Check, before any training, that ``out_dir`` takes the files and that ``<stem>.json``
    (if there) belongs to ``settings``; return its runs (to merge with), else [].

    Raises:
        ValueError: ``out_dir`` is not a writable directory, or ``<stem>.json`` holds results
            of other settings, or is not a results file.
    """
    writable_directory(out_dir, flag)  # --out is refused before hours of runs, not after
    path = out_dir / f"{stem}.json"
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ValueError(f"{path} exists and is not valid JSON; pass another --name or --out") from None
    if not isinstance(doc, dict) or doc.get("settings_id") != settings_id(settings):
        theirs = doc.get("settings_id") if isinstance(doc, dict) else None
        raise ValueError(f"{path} holds results of other settings (settings_id {theirs}, this run's "
                         f"{settings_id(settings)}); pass another --name or --out")
    return list(doc.get("runs", []))


def merge(old: List[Dict[str, Any]], new: List[Dict[str, Any]], key: Callable[[Dict[str, Any]], Any]
          ) -> List[Dict[str, Any]]:
    """``old`` runs then ``new`` ones; a new run replaces an old one of the same ``run_id`` or the
    same ``key`` (label and seed), so each run and each seed of a label counts once."""
    fresh_ids = {r.get("run_id") for r in new}
    fresh_keys = {key(r) for r in new}
    kept = [r for r in old if r.get("run_id") not in fresh_ids and key(r) not in fresh_keys]
    return kept + list(new)


def run_still_there(record: Mapping[str, Any]) -> bool:
    """Whether ``record["run_dir"]`` still holds the finished run of ``record["run_id"]``
    (its checkpoint can feed the copy-depth table)."""
    run_dir = Path(record.get("run_dir", ""))
    try:
        identity = json.loads((run_dir / IDENTITY_NAME).read_text(encoding="utf-8"))
        log = json.loads((run_dir / "log.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (stable_hash(identity, 16) == record.get("run_id") and finished(log)
            and (run_dir / "checkpoint.pt").exists())


def no_nan(obj):
    """NaN (an empty copy-depth bin) -> None, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [no_nan(v) for v in obj]
    return obj


def plot_curves(runs: List[Dict[str, Any]], path: Path, title: str) -> None:
    """Validation curves (bits/byte vs tokens), one colour per ``run["model"]``, to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    labels = sorted({r["model"] for r in runs})
    colors = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    seen = set()
    for r in runs:
        lab = r["model"]
        pts = np.asarray(r["curve"], dtype=float).reshape(-1, 2)
        ax.plot(pts[:, 0], pts[:, 1], "-o", ms=2, lw=1, color=colors[lab], label=None if lab in seen else lab)
        seen.add(lab)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation bits per byte")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    finally:
        plt.close(fig)


def write_quality_files(out_dir: Path, stem: str, doc: Dict[str, Any], curves: List[Dict[str, Any]], title: str,
                        table: str, say: Optional[Callable[[str], None]] = print) -> Path:
    """Write ``<stem>.json`` (``doc``), the learning curves ``<stem>.png`` (one line per
    ``curves[i]["model"]``), the copy-depth chart (when ``doc["copy_depth"]``) and ``<stem>.md``
    (``table`` plus the copy-depth table), each atomically; print the tables. Returns the JSON's path."""
    json_path = out_dir / f"{stem}.json"
    write_json(json_path, no_nan(doc))
    plot_curves(curves, out_dir / f"{stem}.png", title)
    copy = doc.get("copy_depth")
    if copy is not None:
        from fsn_model.copy_depth import plot

        atomic_write(out_dir / f"{stem}-copy-depth.png", lambda tmp: plot(copy["bins"], str(tmp)))
        table += "\n\nCopy depth (mean bits/byte per bin on test windows, best run of each model):\n\n" + copy["table"]
    write_text(out_dir / f"{stem}.md", table + "\n")
    if say is not None:
        say(table)
        say(f"wrote {json_path} (+ .png, .md{', -copy-depth.png' if copy else ''})")
    return json_path
