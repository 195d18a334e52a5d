"""Does ``replace_attention`` with the projections train closer to the unmodified Llama than without?

Trains three models from the same seed on the same batches of the default corpus
(``fsn_model.data``: the Python standard library sources, bytes, no download):

* ``llama``: a small HF ``LlamaForCausalLM`` (vocab 256 bytes), unmodified;
* ``swap``: the same Llama after ``replace_attention(model, n_harmonics, projections=False)``;
* ``swap-projections``: after ``replace_attention(model, n_harmonics, projections=True)``;

for each seed, and writes the final validation loss (nats per byte, and bits per byte) of
each run to a JSON file (rewritten after every run, so a partial study is kept).

    OMP_NUM_THREADS=1 python -m fsn_studies.hf_swap --steps 200 --batch-size 8 --seeds 0 1 \
        --out fsn_studies/results/hf-swap/hf-swap-200steps.json
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import List

import torch

from fsn_model.cli import OneLineParser, run_cli

from .files import write_json

MODELS = ("llama", "swap", "swap-projections")


@dataclass
class TrialConfig:
    steps: int = 300
    seeds: List[int] = field(default_factory=lambda: [0, 1])
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 2e-3
    warmup: int = 20
    dim: int = 64
    n_layers: int = 4
    n_heads: int = 4
    hidden: int = 176
    n_harmonics: int = 2
    eval_windows: int = 64
    threads: int = 1
    out: str = "runs/hf-swap/hf-swap.json"


def build(kind: str, cfg: TrialConfig, seed: int):
    import transformers

    from fsn_model.hf import replace_attention

    torch.manual_seed(seed)
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=256, hidden_size=cfg.dim, intermediate_size=cfg.hidden, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads, max_position_embeddings=cfg.seq_len,
        bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False))
    if kind == "llama":
        return llama
    return replace_attention(llama, n_harmonics=cfg.n_harmonics, projections=kind == "swap-projections")


def lr_at(step: int, cfg: TrialConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def val_loss(model, windows: torch.Tensor, batch: int = 16) -> float:
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(windows), batch):
        w = windows[i: i + batch]
        logits = model(w[:, :-1], use_cache=False).logits
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, 256), w[:, 1:].reshape(-1),
                                                   reduction="sum").item()
        n += w[:, 1:].numel()
    model.train()
    return total / n


def run_one(kind: str, seed: int, cfg: TrialConfig, corpus) -> dict:
    from fsn_model.data import eval_windows, get_batch

    model = build(kind, cfg, seed).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    train, windows = corpus.split("train"), eval_windows(corpus.split("val"), cfg.seq_len, cfg.eval_windows)
    t0, losses = time.time(), []
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x, y = get_batch(train, cfg.batch_size, cfg.seq_len, seed, step)
        logits = model(x, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    val = val_loss(model, windows)
    return {"model": kind, "seed": seed, "params": sum(p.numel() for p in model.parameters()),
            "val_loss_nats": val, "val_bpb": val / math.log(2), "train_loss_last20": sum(losses[-20:]) / 20,
            "seconds": time.time() - t0}


def main(argv=None) -> int:
    """``python -m fsn_studies.hf_swap``: one line on bad input (exit 2) or Ctrl-C (130)."""
    return run_cli("python -m fsn_studies.hf_swap", _main, argv)


def _main(argv) -> int:
    d = TrialConfig()
    p = OneLineParser(prog="python -m fsn_studies.hf_swap", description=__doc__.splitlines()[0])
    for name, default in asdict(d).items():
        if isinstance(default, list):
            p.add_argument(f"--{name.replace('_', '-')}", type=int, nargs="+", default=default)
        else:
            p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    cfg = TrialConfig(**vars(p.parse_args(argv)))
    if cfg.steps < 1 or not cfg.seeds or min(cfg.seeds) < 0 or cfg.threads < 1:
        raise ValueError(f"--steps and --threads must be >= 1 and --seeds integers >= 0, got {cfg.steps}, "
                         f"{cfg.threads}, {cfg.seeds}")
    torch.set_num_threads(cfg.threads)
    import transformers

    from fsn_model.data import load_corpus

    corpus = load_corpus(None)
    result = {"config": asdict(cfg), "corpus": {k: v for k, v in corpus.describe().items() if k != "path"},
              "torch": torch.__version__, "transformers": transformers.__version__,
              "python": platform.python_version(), "runs": []}
    for seed in cfg.seeds:
        for kind in MODELS:
            result["runs"].append(run_one(kind, seed, cfg, corpus))
            r = result["runs"][-1]
            print(f"{kind:17s} seed {seed}: val {r['val_loss_nats']:.4f} nats ({r['val_bpb']:.4f} bpb), "
                  f"{r['params']} params, {r['seconds']:.0f} s", flush=True)
            summary = {}
            for k in MODELS:
                vals = [x["val_loss_nats"] for x in result["runs"] if x["model"] == k]
                if vals:
                    summary[k] = {"mean_val_loss_nats": sum(vals) / len(vals), "seeds": len(vals)}
            result["summary"] = summary
            write_json(cfg.out, result)  # after every run: a stopped trial keeps what it measured
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
