"""Sampling: temperature + top-k. Both models decode through preallocated caches, one
token per step: FSN through its phase cache (``dim`` floats per token per layer), the
transformer through its KV cache (``2 * dim``). ``fsn-generate CHECKPOINT --prompt TEXT``.

Temperature: any finite number >= 0. 0 is greedy; a positive temperature T samples from
softmax((logits - max) / T), exact for every T > 0: as T -> 0 it samples among the
most likely bytes only (1e-40 is greedy up to ties), never NaN. The prompt is taken as
bytes: text that is not valid UTF-8 (bytes from the command line) reaches the model as
given. ``--length`` is refused up front when its caches would not fit in the memory the
device has free; running out of memory while generating is reported in one line.
"""
from __future__ import annotations

import argparse
import math
import os
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from .checkpoint import load_model, resolve_device
from .cli import OneLineParser, run_cli
from .threads import add_threads_flag, apply_threads


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
    # float64 (a float32 temperature of 1e-300 would be 0): <= 0, max 0, finite or -inf for any T > 0
    logits = (logits.double() - logits.max().double()) / temperature
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


def cache_bytes(model: nn.Module, tokens: int) -> int:
    """Upper bound of the decode caches' size for ``tokens`` tokens: 2 * dim float32 values
    per token per layer (the transformer's K and V; FSN's phase cache holds half)."""
    cfg = getattr(model, "config", None)
    return tokens * 2 * getattr(cfg, "dim", 0) * getattr(cfg, "n_layers", 0) * 4


def free_memory(device: torch.device) -> Optional[int]:
    """Bytes free on ``device`` (CUDA: the allocator's view; CPU: available RAM), None if unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError, RuntimeError):
        return None


def _is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and any(
        mark in str(e) for mark in ("out of memory", "can't allocate memory", "not enough memory")))


def _main(argv: Sequence[str]) -> int:
    p = OneLineParser(prog="fsn-generate", description="Sample bytes from a checkpoint.",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint.pt written by fsn-train")
    p.add_argument("--prompt", default="", help="text to continue (its bytes as given, UTF-8 or not)")
    p.add_argument("--length", type=int, default=200, help="new bytes to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 = greedy (any finite "
                   "value >= 0; tiny ones approach greedy)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely bytes; 0 = all")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (>= 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    add_threads_flag(p)
    a = p.parse_args(argv)
    apply_threads(a.threads)
    check_sampling(a.temperature, a.top_k)
    if a.length < 0:
        raise ValueError(f"--length must be >= 0, got {a.length}")
    if a.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {a.seed}")
    prompt = os.fsencode(a.prompt)  # the bytes given on the command line, valid UTF-8 or not
    device = resolve_device(a.device)
    model, ckpt = load_model(a.checkpoint, device)
    context = ckpt["train_config"]["seq_len"]
    need, free = cache_bytes(model, min(len(prompt), context) + a.length), free_memory(device)
    if free is not None and need > free:
        raise ValueError(f"--length {a.length}: its decode caches would need about {need / 2**30:,.1f} GiB, more "
                         f"than the {free / 2**30:,.1f} GiB free on {device}; ask for fewer bytes")
    try:
        out = sample(model, list(prompt), a.length, a.temperature, a.top_k, a.seed, context=context)
    except (MemoryError, RuntimeError) as e:
        if not _is_out_of_memory(e):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MemoryError(f"generating {a.length} bytes on {device}: {first}; try a smaller --length") from None
    print((prompt + bytes(out)).decode("utf-8", errors="replace"))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-generate``."""
    return run_cli("fsn-generate", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
