"""Sampling: temperature + top-k. Both models decode through preallocated caches, one
token per step: FSN through its phase cache (``dim`` floats per token per layer), the
transformer through its KV cache (``2 * dim``). ``fsn-generate CHECKPOINT --prompt TEXT``."""
from __future__ import annotations

import argparse
import math
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from .checkpoint import load_model, resolve_device
from .cli import OneLineParser, run_cli


def check_sampling(temperature: float, top_k: int) -> None:
    """Raise ValueError unless temperature is finite and >= 0 (0 = greedy) and top_k >= 0 (0 = no cut)."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"--top-k must be an int >= 0 (0 = no cut), got {top_k!r}")


def _pick(logits: Tensor, temperature: float, top_k: int, gen: torch.Generator) -> int:
    logits = logits.float().cpu()
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))


@torch.no_grad()
def sample(model: nn.Module, prompt: Sequence[int], max_new: int, temperature: float = 0.8,
           top_k: int = 0, seed: int = 0, context: int = 256) -> List[int]:
    """Continue ``prompt`` (token ids, may be empty) by ``max_new`` tokens.

    temperature 0 means greedy; top_k = 0 means no top-k cut. ``context`` bounds the
    prompt (its last ``context`` tokens are prefilled); the caches are preallocated for the
    prompt plus ``max_new`` tokens, and generation attends to all of them. Raises
    ValueError for a negative or non-finite temperature or a negative top_k.
    """
    check_sampling(temperature, top_k)
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    ids = (list(prompt) or [10])[-context:]  # an empty prompt starts from a newline byte
    out: List[int] = []
    logits, cache = model.prefill(torch.tensor([ids], device=device), capacity=len(ids) + max_new)
    nxt = logits[0, -1]
    for i in range(max_new):
        out.append(_pick(nxt, temperature, top_k, gen))
        if i + 1 < max_new:
            nxt, cache = model.decode(torch.tensor([out[-1]], device=device), cache)
            nxt = nxt[0]
    return out


def _main(argv: Sequence[str]) -> int:
    p = OneLineParser(prog="fsn-generate", description="Sample bytes from a checkpoint.",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint.pt written by fsn-train")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--length", type=int, default=200, help="new bytes to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely bytes; 0 = all")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    a = p.parse_args(argv)
    check_sampling(a.temperature, a.top_k)
    if a.length < 0:
        raise ValueError(f"--length must be >= 0, got {a.length}")
    model, ckpt = load_model(a.checkpoint, resolve_device(a.device))
    out = sample(model, list(a.prompt.encode("utf-8")), a.length, a.temperature, a.top_k, a.seed,
                 context=ckpt["train_config"]["seq_len"])
    print(a.prompt + bytes(out).decode("utf-8", errors="replace"))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-generate``."""
    return run_cli("fsn-generate", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
