"""Where does a trained run lose bits? ``python -m fsn_studies.diagnose_runs RUN_DIR... --out FILE.json``.

For each run directory (holding ``checkpoint.pt`` from ``fsn-train`` / ``fsn-sweep``) on
``--windows`` fixed validation windows of the run's corpus:

* ``val_bpb``: mean bits per byte;
* ``by_position``: mean bits by position in the window (bins 1-4, 5-16, 17-64, 65-T, each
  cut at the window length T): how much the model gains from context;
* ``by_copy_depth``: mean bits per copy-depth bin (``fsn_model.copy_depth``);
* ``embedding``: how far the input embedding moved from its init (the init is rebuilt from
  the run's seed, as ``fsn_model.train`` does): for FSN the rms change of the input phases
  ``s * E`` in radians and that over the init's rms, for the transformer the rms change of
  ``E`` and that over the init's rms;
* ``train_bpb_last``: the last logged training loss in bits (train/val gap).

Prints a markdown table and writes the JSON.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from fsn_model.build import model_from_config
from fsn_model.checkpoint import load_model
from fsn_model.copy_depth import BIN_NAMES, loss_by_bin, window_depths
from fsn_model.data import eval_windows, load_corpus
from fsn_model.evaluate import per_position_loss

POSITION_BINS = ((1, 4), (5, 16), (17, 64), (65, 10**9))


def _embedding_movement(model: torch.nn.Module, ckpt: dict) -> Dict[str, float]:
    torch.manual_seed(ckpt["train_config"]["seed"])
    init = model_from_config(ckpt["model_config"])  # the run's own model (its name may mean another one now)
    scale = float(getattr(model, "embed_scale", 1.0))
    final_w, init_w = model.embed.weight.detach(), init.embed.weight.detach()
    delta = (final_w - init_w) * scale
    init_rms = (init_w * scale).pow(2).mean().sqrt().item()
    moved = delta.pow(2).mean().sqrt().item()
    return {"scale": scale, "moved_rms": moved, "init_rms": init_rms, "moved_over_init": moved / init_rms}


def diagnose(run_dir: str, n_windows: int) -> Dict[str, object]:
    """The diagnostics of one run directory (see the module docstring)."""
    model, ckpt = load_model(str(Path(run_dir) / "checkpoint.pt"))
    corpus = load_corpus(ckpt["corpus"]["path"] if ckpt["corpus"]["name"] != "pystdlib" else None)
    windows = eval_windows(corpus.split("val"), ckpt["train_config"]["seq_len"], n_windows)
    bits = per_position_loss(model, windows).numpy() / math.log(2)  # (N, T)
    pos = np.arange(1, bits.shape[1] + 1)
    by_position = {f"{lo}-{min(hi, bits.shape[1])}": float(bits[:, (pos >= lo) & (pos <= hi)].mean())
                   for lo, hi in POSITION_BINS if lo <= bits.shape[1]}  # bins past the window: none
    train = ckpt["log"]["train"]
    last = train[-1] if train else None
    last_loss = last[1] if isinstance(last, (list, tuple)) else (last or {}).get("loss")
    return {
        "run_dir": run_dir, "model": ckpt["model_config"]["name"], "seed": ckpt["train_config"]["seed"],
        "lr": ckpt["train_config"]["lr"], "overrides": ckpt["train_config"].get("model_overrides", {}),
        "windows": int(len(windows)), "val_bpb": float(bits.mean()), "by_position": by_position,
        "by_copy_depth": loss_by_bin(bits, window_depths(windows)),
        "embedding": _embedding_movement(model, ckpt),
        "train_bpb_last": None if last_loss is None else float(last_loss) / math.log(2),
    }


def format_table(results: List[Dict[str, object]]) -> str:
    """One markdown row per run: val bits, position bins, copy-depth bins, embedding movement."""
    pos_names = list(results[0]["by_position"])
    head = (["run", "val bpb"] + [f"pos {p}" for p in pos_names] + [f"depth {b}" for b in BIN_NAMES]
            + ["emb moved (rad or abs)", "moved/init"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cd = r["by_copy_depth"]
        cells = ([Path(r["run_dir"]).name, f"{r['val_bpb']:.4f}"] + [f"{r['by_position'][p]:.4f}" for p in pos_names]
                 + [f"{cd[b]['bits']:.4f}" if cd[b]["count"] else "no data" for b in BIN_NAMES]
                 + [f"{r['embedding']['moved_rms']:.3f}", f"{r['embedding']['moved_over_init']:.3f}"])
        lines.append("| " + " | ".join(cells) + " |")
    counts = results[0]["by_copy_depth"]
    lines.append("")
    lines.append("copy-depth counts: " + ", ".join(f"{b} {counts[b]['count']}" for b in BIN_NAMES))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fsn_studies.diagnose_runs", description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--windows", type=int, default=256)
    p.add_argument("--out", required=True, help="JSON file to write")
    a = p.parse_args(argv)
    results = [diagnose(d, a.windows) for d in a.run_dirs]
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
