"""Training: ``fsn-train`` / ``python -m fsn_model.train`` and the programmatic ``train``.

    from fsn_model.train import TrainConfig, train
    log = train(TrainConfig(model="transformer", params="1M", steps=2000, seed=1, out="runs/t"))

``train(config) -> dict`` returns the run log (also written to ``OUT/log.json``): the
configs, parameter count, corpus (name, path, sha256), per-step ``train`` records
``{step, loss, lr}``, ``val`` records ``{step, bpb}``, ``final_val_bpb``, ``wall_time_s``.
Two runs with the same config (model, params, seed, data, batch, seq_len, lr, steps) see
the same init and the same batches, which is what a fair comparison needs.

AdamW (betas 0.9/0.95, weight decay on 2-D weights but not embeddings), linear warmup
then cosine decay to ``min_lr_ratio * lr``, grad-norm clipping, bf16 autocast on CUDA.
``OUT/checkpoint.pt`` is written atomically at every evaluation and at the end.
``resume=True`` continues the run in ``out`` from its checkpoint: model, optimizer, data
and hyper-parameters come from the checkpoint (only ``steps``, ``stop_at``, ``progress``,
``eval_every``, ``out`` and ``device`` of the new config apply); the next step's loss equals the one of an
uninterrupted run. With no checkpoint there it starts fresh.

Under ``torchrun --nproc_per_node N`` it trains with DDP (gloo on CPU, nccl on CUDA):
each rank draws its own windows (seeded by rank), logged losses are averaged over
ranks, rank 0 evaluates, writes files and shows progress.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .build import build_model, model_from_config, parse_params
from .checkpoint import load_checkpoint, resolve_device, save_checkpoint
from .cli import OneLineParser, run_cli
from .data import eval_windows, get_batch, load_corpus
from .evaluate import bits_per_byte


@dataclass
class TrainConfig:
    """Everything a run depends on. Defaults are the CPU quickstart (~2-3 min on 2 cores, ~200k-param FSN, 1000 steps)."""

    model: str = "fsn"
    params: Union[int, str] = "200k"
    data: Optional[str] = None  # None: the default corpus (Python stdlib sources)
    steps: int = 1000
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 1.2e-2  # FSN's best at 250k (tuning study); the transformer's was 6e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    out: str = "runs/fsn-quickstart"
    resume: bool = False
    eval_every: int = 250
    eval_windows: int = 64
    stop_at: Optional[int] = None  # stop (and checkpoint) after this many steps, as if interrupted
    progress: bool = True
    model_overrides: Dict[str, Any] = field(default_factory=dict)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from lr to ``min_lr_ratio * lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def _dist_setup(device: torch.device):
    """(rank, world, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return rank, world, device


def _validate(cfg: TrainConfig) -> None:
    parse_params(cfg.params)
    for name in ("steps", "batch_size", "seq_len", "eval_every", "eval_windows"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if not cfg.lr > 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if cfg.stop_at is not None and cfg.stop_at < 1:
        raise ValueError(f"stop_at must be >= 1 when set, got {cfg.stop_at}")


def train(config: TrainConfig) -> Dict[str, Any]:
    """Train (or resume) one run; returns its log dict (see module docstring)."""
    cfg = dataclasses.replace(config)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    ckpt = load_checkpoint(str(ckpt_path)) if cfg.resume and ckpt_path.exists() else None
    if ckpt is not None:
        keep = {k: getattr(cfg, k) for k in ("steps", "stop_at", "progress", "eval_every", "out", "device")}
        cfg = dataclasses.replace(TrainConfig(**ckpt["train_config"]), **keep, resume=True)
    _validate(cfg)
    rank, world, device = _dist_setup(resolve_device(cfg.device))
    corpus = load_corpus(cfg.data)
    train_data, val = corpus.split("train"), eval_windows(corpus.split("val"), cfg.seq_len, cfg.eval_windows)

    torch.manual_seed(cfg.seed)
    if ckpt is None:
        model = build_model(cfg.model, cfg.params, **cfg.model_overrides)
        model_config = model.config
    else:
        model_config = ckpt["model_config"]
        model = model_from_config(model_config)
        model.load_state_dict(ckpt["model"])
    model.to(device).train()
    opt = _optimizer(model, cfg)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
    step = ckpt["step"] if ckpt else 0
    log = ckpt["log"] if ckpt else {
        "train_config": dataclasses.asdict(cfg), "model_config": model_config,
        "params": model_config["params"], "corpus": corpus.describe(), "world_size": world,
        "train": [], "val": [], "wall_time_s": 0.0,
    }
    log["train_config"]["steps"] = cfg.steps
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    stop = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)

    def save() -> None:
        if rank == 0:
            save_checkpoint(str(ckpt_path), {
                "model_config": model_config, "train_config": dataclasses.asdict(cfg),
                "model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "log": log, "corpus": {k: log["corpus"][k] for k in ("name", "path", "sha256")},
            })
            (out / "log.json").write_text(json.dumps(log, indent=1))

    def evaluate() -> None:
        if rank == 0:
            log["val"].append({"step": step, "bpb": bits_per_byte(model, val)})
            log["final_val_bpb"] = log["val"][-1]["bpb"]
            bar.write(f"step {step}: val {log['val'][-1]['bpb']:.4f} bits/byte")

    tokens = cfg.batch_size * cfg.seq_len * world
    bar = tqdm(total=stop, initial=step, disable=rank != 0 or not cfg.progress, desc=f"{cfg.model} {cfg.params}",
               unit="step", dynamic_ncols=True)
    t0, t_last = time.time(), time.time()
    while step < stop:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x, y = (t.to(device) for t in get_batch(train_data, cfg.batch_size, cfg.seq_len, cfg.seed, step, rank))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = ddp(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        loss_val = loss.detach()
        if world > 1:
            dist.all_reduce(loss_val)
            loss_val /= world
        log["train"].append({"step": step, "loss": loss_val.item(), "lr": lr_at(step, cfg)})
        step += 1
        now = time.time()
        bar.set_postfix(loss=f"{log['train'][-1]['loss']:.3f}", tok_s=f"{tokens / max(now - t_last, 1e-9):,.0f}")
        t_last = now
        bar.update(1)
        if step % cfg.eval_every == 0 or step == stop:
            evaluate()
            log["wall_time_s"] += time.time() - t0
            t0 = time.time()
            save()
    bar.close()
    if world > 1:
        dist.barrier()
    return log


def _parser() -> OneLineParser:
    d = TrainConfig()
    p = OneLineParser(prog="fsn-train", description="Train an FSN (or baseline) byte-level LM. "
                      "With no arguments: the CPU quickstart on the Python stdlib corpus.")
    p.add_argument("--model", default=d.model, choices=["fsn", "fsn-meanfield", "transformer"])
    p.add_argument("--params", default=d.params, help="target size, e.g. 250k, 1M (default %(default)s)")
    p.add_argument("--data", default=None, help="byte corpus file (enwik8 gets its standard split); "
                   "default: Python stdlib sources")
    for name, typ in (("steps", int), ("batch_size", int), ("seq_len", int), ("lr", float), ("seed", int),
                      ("eval_every", int), ("eval_windows", int), ("warmup", int), ("stop_at", int)):
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=getattr(d, name))
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--out", default=d.out, help="run directory (checkpoint.pt, log.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--sample", type=int, default=200, help="bytes to sample at the end (0: none)")
    return p


def _main(argv: Sequence[str]) -> int:
    a = vars(_parser().parse_args(argv))
    sample_len, no_progress = a.pop("sample"), a.pop("no_progress")
    cfg = TrainConfig(**a, progress=not no_progress)
    t0 = time.time()
    log = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"final val bits/byte: {log['final_val_bpb']:.4f}  ({log['params']:,} params, "
              f"corpus {log['corpus']['name']} sha256 {log['corpus']['sha256'][:12]}, {time.time() - t0:.0f}s)")
        if sample_len > 0:
            from .checkpoint import load_model
            from .generate import sample

            model, _ = load_model(str(Path(cfg.out) / "checkpoint.pt"))
            prompt = b"def "
            text = bytes(list(prompt) + sample(model, list(prompt), sample_len, 0.8, 0, cfg.seed, cfg.seq_len))
            print("sample:\n" + text.decode("utf-8", errors="replace"))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-train``."""
    return run_cli("fsn-train", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
