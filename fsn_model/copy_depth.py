"""Copy depth (fsn_model/README.md, "Copy depth"): which bytes a model could copy, and its loss on each kind.

For position t of a window x, the copy depth is the largest k <= 32 such that the
(k+1)-gram x[t-k..t] also ends at some earlier position of the same window; a byte never
seen before in the window is "new". Positions pool into bins 0-1, 2-3, 4-7, 8-15, 16-23,
24-32 and "new". ``fsn-copy-depth CKPT... --data FILE`` prints each model's mean loss per
bin side by side and saves a bar chart (PNG); a bin without positions says "no data"
(null in the JSON).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

MAX_DEPTH = 32
BINS = [("0-1", 0, 1), ("2-3", 2, 3), ("4-7", 4, 7), ("8-15", 8, 15), ("16-23", 16, 23), ("24-32", 24, 32)]
BIN_NAMES = [b[0] for b in BINS] + ["new"]
NEW = -1


def copy_depths(x: Sequence[int], max_depth: int = MAX_DEPTH) -> np.ndarray:
    """Copy depth of every position of one window (bytes or ints): (T,) int64, ``NEW`` (-1) for new bytes.

    ``L[s]`` is the length of the common suffix of x[..t] and x[..s] (s < t), updated per t
    from the previous row; depth = min(max_s L[s], max_depth + 1) - 1.
    """
    x = np.frombuffer(x, dtype=np.uint8) if isinstance(x, (bytes, bytearray)) else np.asarray(x)
    T = len(x)
    out = np.full(T, NEW, dtype=np.int64)
    prev = np.zeros(0, dtype=np.int64)  # L for t-1 over s < t-1
    for t in range(T):
        eq = x[:t] == x[t]
        cur = np.zeros(t, dtype=np.int64)
        if t:
            cur[0] = eq[0]
            cur[1:] = np.where(eq[1:], np.minimum(prev + 1, max_depth + 1), 0)
            if cur.max() > 0:
                out[t] = cur.max() - 1
        prev = cur
    return out


def bin_index(depth: np.ndarray) -> np.ndarray:
    """Depths -> index into ``BIN_NAMES`` (the last one, 6, is "new")."""
    idx = np.full(depth.shape, len(BINS), dtype=np.int64)
    for i, (_, lo, hi) in enumerate(BINS):
        idx[(depth >= lo) & (depth <= hi)] = i
    return idx


def loss_by_bin(losses: np.ndarray, depths: np.ndarray) -> Dict[str, Dict[str, float]]:
    """Mean loss (bits) and count per bin. losses, depths: same shape. An empty bin has
    ``bits`` None (no data), which JSON writes as null and :func:`format_table` as "no data"."""
    idx = bin_index(depths)
    out = {}
    for i, name in enumerate(BIN_NAMES):
        m = idx == i
        out[name] = {"count": int(m.sum()), "bits": float(losses[m].mean()) if m.any() else None}
    return out


def window_depths(windows: torch.Tensor) -> np.ndarray:
    """Depths of the predicted bytes of windows (N, T+1): (N, T), computed on the whole
    window and dropping position 0 (never predicted)."""
    return np.stack([copy_depths(w.tolist())[1:] for w in windows])


def plot(results: Dict[str, Dict[str, Dict[str, float]]], path: str) -> None:
    """Grouped bar chart: bins on x, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(results))
    for j, (name, res) in enumerate(results.items()):
        heights = [np.nan if res[b]["bits"] is None else res[b]["bits"] for b in BIN_NAMES]  # no bar: no data
        ax.bar(np.arange(len(BIN_NAMES)) + j * width, heights, width, label=name)
    ax.set_xticks(np.arange(len(BIN_NAMES)) + 0.4 - width / 2, BIN_NAMES)
    ax.set_xlabel("copy depth")
    ax.set_ylabel("mean loss (bits/byte)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cell(bits: Optional[float]) -> str:
    return "no data" if bits is None or bits != bits else f"{bits:.4f}"  # None (or NaN): an empty bin


def format_table(results: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    """Markdown table: one row per bin (its count), one column per model; "no data" for an empty bin."""
    names = list(results)
    first = next(iter(results.values()))
    rows = ["| bin | count | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for b in BIN_NAMES:
        cells = " | ".join(_cell(results[n][b]["bits"]) for n in names)
        rows.append(f"| {b} | {first[b]['count']} | {cells} |")
    return "\n".join(rows)


def _main(argv: Sequence[str]) -> int:
    from .checkpoint import load_checkpoint, model_from_checkpoint, resolve_device
    from .cli import OneLineParser
    from .data import check_same_corpus, eval_windows, load_corpus
    from .evaluate import per_position_loss, recorded_corpus_path
    from .threads import add_threads_flag, apply_threads

    p = OneLineParser(prog="fsn-copy-depth", description="Mean loss per copy-depth bin, side by side.",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoint.pt files written by fsn-train")
    p.add_argument("--data", default=None, help="corpus file (None: the first checkpoint's corpus); a file whose "
                   "sha256 differs from the one a checkpoint's run recorded is refused")
    p.add_argument("--allow-different-data", action="store_true", help="measure on a corpus other than the one "
                   "each checkpoint was trained on")
    p.add_argument("--split", default="val", choices=["val", "test"], help="which split's windows")
    p.add_argument("--seq-len", type=int, default=None, help="window length (None: the first checkpoint's)")
    p.add_argument("--windows", type=int, default=64, help="windows to evaluate")
    p.add_argument("--out", default="copy_depth.png", help="bar chart path (a .json with numbers beside it)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    add_threads_flag(p)
    a = p.parse_args(argv)
    apply_threads(a.threads)
    for name in ("seq_len", "windows"):
        value = getattr(a, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    device = resolve_device(a.device)
    ckpts = [load_checkpoint(c) for c in a.checkpoints]
    corpus = load_corpus(a.data if a.data is not None else recorded_corpus_path(ckpts[0]))
    for path, ckpt in zip(a.checkpoints, ckpts):
        check_same_corpus(corpus, ckpt.get("corpus"), path, a.allow_different_data)
    models = [(model_from_checkpoint(ckpt, c, device), ckpt) for c, ckpt in zip(a.checkpoints, ckpts)]
    seq_len = a.seq_len or models[0][1]["train_config"]["seq_len"]
    windows = eval_windows(corpus.split(a.split), seq_len, a.windows)
    depths = window_depths(windows)
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    for path, (model, _) in zip(a.checkpoints, models):
        name = f"{model.config.name} {Path(path).parent.name}"
        while name in results:
            name += "'"
        results[name] = loss_by_bin(per_position_loss(model, windows).numpy() / np.log(2), depths)
    print(format_table(results))
    plot(results, a.out)
    Path(a.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(f"chart: {a.out}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-copy-depth``."""
    from .cli import run_cli

    return run_cli("fsn-copy-depth", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
