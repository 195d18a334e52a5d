"""Evaluation: bits per byte on fixed windows; ``fsn-eval CHECKPOINT --data FILE``."""
from __future__ import annotations

import argparse
import json
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import load_checkpoint, model_from_checkpoint, resolve_device
from .cli import OneLineParser, run_cli
from .data import check_same_corpus, eval_windows, load_corpus
from .threads import add_threads_flag, apply_threads


@torch.no_grad()
def per_position_loss(model: nn.Module, windows: Tensor, batch_size: int = 32) -> Tensor:
    """Cross-entropy (nats) of each predicted byte. windows (N, T+1) int64 -> (N, T) float32."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(windows), batch_size):
        w = windows[i: i + batch_size].to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(w[:, :-1])
        out.append(F.cross_entropy(logits.float().transpose(1, 2), w[:, 1:], reduction="none").cpu())
    model.train(was_training)
    return torch.cat(out)


def bits_per_byte(model: nn.Module, windows: Tensor, batch_size: int = 32) -> float:
    """Mean loss over every predicted byte of ``windows`` (N, T+1), in bits."""
    return per_position_loss(model, windows, batch_size).mean().item() / math.log(2)


def recorded_corpus_path(ckpt: dict) -> Optional[str]:
    """The corpus file a checkpoint's run trained on (None: the default corpus)."""
    corpus = ckpt.get("corpus") or {}
    return None if corpus.get("name") == "pystdlib" else corpus.get("path")


def _main(argv: Sequence[str]) -> int:
    p = OneLineParser(prog="fsn-eval", description="Validation and test bits per byte of a checkpoint.",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint.pt written by fsn-train")
    p.add_argument("--data", default=None, help="corpus file (None: the checkpoint's corpus); a file whose sha256 "
                   "differs from the one the run recorded is refused")
    p.add_argument("--allow-different-data", action="store_true", help="evaluate on a corpus other than the one "
                   "the checkpoint was trained on")
    p.add_argument("--seq-len", type=int, default=None, help="window length (None: training's)")
    p.add_argument("--windows", type=int, default=256, help="evaluation windows per split (training "
                   "validates on --eval-windows, 64 by default, so its figure can differ)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    add_threads_flag(p)
    a = p.parse_args(argv)
    apply_threads(a.threads)
    for name in ("seq_len", "windows", "batch_size"):
        value = getattr(a, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    device = resolve_device(a.device)
    ckpt = load_checkpoint(a.checkpoint)
    corpus = load_corpus(a.data if a.data is not None else recorded_corpus_path(ckpt))
    check_same_corpus(corpus, ckpt.get("corpus"), a.checkpoint, a.allow_different_data)
    model = model_from_checkpoint(ckpt, a.checkpoint, device)
    seq_len = a.seq_len or ckpt["train_config"]["seq_len"]
    result = {"checkpoint": a.checkpoint, "corpus": corpus.name, "seq_len": seq_len}
    for split in ("val", "test"):
        windows = eval_windows(corpus.split(split), seq_len, a.windows)
        result[f"{split}_bpb"] = bits_per_byte(model, windows, a.batch_size)
        result[f"{split}_windows"] = int(len(windows))
    print(json.dumps(result, indent=1))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-eval``."""
    return run_cli("fsn-eval", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
