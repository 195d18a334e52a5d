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
The loop reads the loss back from the device only every ``log_every`` steps (and at each
evaluation), so the GPU never waits on the host in between.

Settings: :class:`fsn_model.train_config.TrainConfig`, every one checked before any work
(:func:`validate`); the data file is read before the run directory is created. The run
directory (one run at a time, its atomic checkpoint and log, resuming it with its saved
settings): :mod:`fsn_model.run_dir`. The next step's loss of a resumed run equals an
uninterrupted run's. A resume with no step left to run says so and returns the log.

The corpus: ``data`` is stored resolved (absolute) with the file's sha256; a resume
refuses a file whose sha256 differs from the recorded one (naming both) unless
``allow_different_data=True`` (the change is then kept in ``log["corpus_history"]``).

Stops: SIGINT (Ctrl-C) finishes the current step, saves a checkpoint and raises
:class:`TrainingInterrupted`; a non-finite loss raises :class:`NonFiniteLossError` and
leaves the last good checkpoint in place. ``fsn-train`` reports either as one line
(exit 130 and 1).

Under ``torchrun --nproc_per_node N`` it trains with DDP (gloo on CPU, nccl on CUDA):
each rank draws its own windows (seeded by rank), logged losses are averaged over
ranks, rank 0 evaluates, writes files and shows progress.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .build import build_model, count_params, model_from_config
from .checkpoint import resolve_device
from .cli import OneLineParser, add_dataclass_flags, explicit_args, run_cli
from .config import config_to_dict
from .data import check_same_corpus, document_boundaries, eval_windows, get_batch, load_corpus, separator_bytes
from .evaluate import bits_per_byte
from .run_dir import (
    CHECKPOINT_NAME,
    LOG_NAME,
    RunDirectory,
    already_done,
    checkpoint_to_resume,
    resolved_data,
    resume_config,
    resume_overrides,
    save_run,
)
from .threads import add_threads_flag, apply_threads, choose_threads
from .train_config import FIXED_ON_RESUME, MAX_SEED, RUNTIME_FIELDS, TrainConfig, model_config_of, validate

__all__ = ["TrainConfig", "train", "validate", "resume_config", "model_config_of", "lr_at", "main",
           "TrainingInterrupted", "NonFiniteLossError", "CHECKPOINT_NAME", "LOG_NAME", "RUNTIME_FIELDS",
           "FIXED_ON_RESUME", "MAX_SEED"]


class TrainingInterrupted(Exception):
    """SIGINT stopped training; a checkpoint of the last finished step was saved."""


class NonFiniteLossError(RuntimeError):
    """The loss (or validation figure) became NaN or inf; the last good checkpoint is kept."""


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


def _dist_setup(device: torch.device) -> Tuple[int, int, torch.device]:
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


class _DeferredSigint:
    """While active (main thread only), the first SIGINT only sets ``requested``, so the
    current step finishes before the loop stops; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_DeferredSigint":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _progress_bar(total: int, initial: int, desc: str, enabled: bool, file=None) -> tqdm:
    """A tqdm bar on ``file`` (stderr). A terminal that reports 0 columns (as under
    ``script``) would make tqdm print nothing at all, so the bar gets 100 columns there."""
    file = sys.stderr if file is None else file
    try:
        columns = os.get_terminal_size(file.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = None  # not a terminal: tqdm writes plain updates
    sizing = dict(ncols=100) if columns == 0 else dict(dynamic_ncols=True)
    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step", file=file, **sizing)


def _flush_losses(pending: List[Tuple[int, float, torch.Tensor]], log: Dict[str, Any], world: int) -> None:
    """Move the losses still on the device into ``log["train"]``: one host sync (and one
    all-reduce under DDP) for the whole interval. Raises NonFiniteLossError on NaN/inf."""
    if not pending:
        return
    losses = torch.stack([loss for _, _, loss in pending])
    if world > 1:
        dist.all_reduce(losses)
        losses /= world
    for (step, lr, _), loss in zip(pending, losses.tolist()):
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"step {step}: training loss is {loss}")
        log["train"].append({"step": step, "loss": loss, "lr": lr})
    pending.clear()


@dataclass(frozen=True)
class _Process:
    """Where this process trains: its DDP rank, the world size and its device."""

    rank: int
    world: int
    device: torch.device


def train(config: TrainConfig) -> Dict[str, Any]:
    """Train (or resume) one run; returns its log dict (see module docstring).

    Raises:
        ValueError: a bad config, an unusable run directory, or a resume that cannot be.
        TrainingInterrupted: SIGINT (after saving a checkpoint).
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint stays).
    """
    # settings: validate; a resume starts from its checkpoint's config
    cfg = dataclasses.replace(config, data=resolved_data(config.data))
    validate(cfg)
    ckpt = checkpoint_to_resume(Path(cfg.out)) if cfg.resume else None
    overridden = resume_overrides(cfg, ckpt) if ckpt is not None else []
    proc = _Process(*_dist_setup(resolve_device(cfg.device)))
    if ckpt is not None:
        done = already_done(cfg, ckpt)
        if done is not None:
            if proc.rank == 0:
                print(f"fsn-train: {done}", flush=True)
            return ckpt["log"]

    # data: read (and, on resume, checked against the recorded sha256) before out is touched
    corpus = load_corpus(cfg.data)
    if ckpt is not None:
        check_same_corpus(corpus, ckpt.get("corpus"), f"the run in {cfg.out}", cfg.allow_different_data)

    # the run directory: created only now, and held for the whole run
    if proc.rank != 0:
        return _train_in(cfg, ckpt, overridden, corpus, proc, Path(cfg.out))
    with RunDirectory(cfg) as out:
        if ckpt is not None and (out / CHECKPOINT_NAME).stat().st_mtime_ns != ckpt["_read_mtime_ns"]:
            raise ValueError(f"resume: another run wrote {out / CHECKPOINT_NAME} while this one started; "
                             "run the resume again")
        return _train_in(cfg, ckpt, overridden, corpus, proc, out)


def _start(cfg: TrainConfig, ckpt: Optional[Dict[str, Any]], corpus, proc: _Process
           ) -> Tuple[torch.nn.Module, torch.optim.Optimizer, int, Dict[str, Any]]:
    """(model, optimizer, next step, log): fresh from the seed, or restored from ``ckpt``."""
    torch.manual_seed(cfg.seed)
    if ckpt is None:
        model = build_model(cfg.model, cfg.params, **cfg.model_overrides)
    else:
        model = model_from_config(ckpt["model_config"])
        model.load_state_dict(ckpt["model"])
    model.to(proc.device).train()
    opt = _optimizer(model, cfg)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
    step = ckpt["step"] if ckpt else 0
    log = ckpt["log"] if ckpt else {
        "model_config": config_to_dict(model.config), "params": count_params(model),
        "corpus": corpus.describe(), "world_size": proc.world, "train": [], "val": [], "wall_time_s": 0.0,
    }
    if ckpt is not None and log["corpus"].get("sha256") != corpus.sha256:  # allowed by allow_different_data
        log.setdefault("corpus_history", []).append(dict(log["corpus"], until_step=step))
        log["corpus"] = corpus.describe()
    log["train_config"] = dataclasses.asdict(cfg)
    return model, opt, step, log


def _train_in(cfg: TrainConfig, ckpt: Optional[Dict[str, Any]], overridden: List[str], corpus, proc: _Process,
              out: Path) -> Dict[str, Any]:
    """The run itself, in the locked run directory ``out`` (see :func:`train`)."""
    rank, world, device = proc.rank, proc.world, proc.device
    # data: the train split and fixed validation windows
    train_data, val = corpus.split("train"), eval_windows(corpus.split("val"), cfg.seq_len, cfg.eval_windows)
    # model, optimizer, step and log: fresh from the seed, or restored from the checkpoint
    model, opt, step, log = _start(cfg, ckpt, corpus, proc)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if cfg.compile:  # the checkpoint keeps saving `model`; only the calls go through the compiled wrapper
        ddp = torch.compile(ddp)
    stop = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
    if rank == 0:
        what = f"resuming {out} at step {step}" if ckpt else f"training {cfg.model} ({log['params']:,} params) in {out}"
        print(f"fsn-train: {what}, {stop} steps" + (f" (overridden: {', '.join(overridden)})" if overridden else ""),
              flush=True)

    # the loop: one optimizer step per iteration; losses stay on the device until logged
    separator = None if cfg.pack_documents is None else separator_bytes(cfg.pack_documents)
    tokens_per_step = cfg.batch_size * cfg.seq_len * world
    bar = _progress_bar(stop, step, f"{cfg.model} {cfg.params}", rank == 0 and cfg.progress)
    pending: List[Tuple[int, float, torch.Tensor]] = []
    t_start, t_log, last_log_step = time.time(), time.time(), step
    try:
        with _DeferredSigint() as sigint:
            while step < stop:
                # learning rate of this step
                lr = lr_at(step, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                # batch: a pure function of (seed, step, rank), so resume sees the same data
                x, y = (t.to(device) for t in get_batch(train_data, cfg.batch_size, cfg.seq_len, cfg.seed, step,
                                                         rank))
                # forward, backward, clip, update
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    if separator is None:
                        logits = ddp(x)
                    else:  # documents packed in one row; a target across a boundary is ignored
                        cu_seqlens, crosses = document_boundaries(x, separator)
                        logits = ddp(x.reshape(1, -1), cu_seqlens=cu_seqlens).view(*x.shape, -1)
                        y = y.masked_fill(crosses, -100)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                pending.append((step, lr, loss.detach()))
                step += 1
                bar.update(1)
                is_eval = step % cfg.eval_every == 0 or step == stop
                # log: the one host-device sync between evaluations
                if step % cfg.log_every == 0 or is_eval or sigint.requested:
                    _flush_losses(pending, log, world)
                    now = time.time()
                    bar.set_postfix(loss=f"{log['train'][-1]['loss']:.3f}",
                                    tok_s=f"{tokens_per_step * (step - last_log_step) / max(now - t_log, 1e-9):,.0f}")
                    t_log, last_log_step = now, step
                # evaluate and checkpoint (rank 0)
                if is_eval and rank == 0:
                    bpb = bits_per_byte(model, val)
                    if not math.isfinite(bpb):
                        raise NonFiniteLossError(f"step {step}: validation bits per byte is {bpb}")
                    log["val"].append({"step": step, "bpb": bpb})
                    log["final_val_bpb"] = bpb
                    bar.write(f"step {step}: val {bpb:.4f} bits/byte")
                    log["wall_time_s"] += time.time() - t_start
                    t_start = time.time()
                    save_run(out, model, opt, cfg, step, log)
                # stop on Ctrl-C after a finished step, with a checkpoint of it
                if sigint.requested:
                    if rank == 0 and not is_eval:
                        log["wall_time_s"] += time.time() - t_start
                        save_run(out, model, opt, cfg, step, log)
                    raise TrainingInterrupted(f"interrupted at step {step}; saved {out / CHECKPOINT_NAME} "
                                              "(continue with --resume)")
    except NonFiniteLossError as e:
        kept = f"the last good checkpoint ({out / CHECKPOINT_NAME}) is kept" if (out / CHECKPOINT_NAME).exists() \
            else "no checkpoint was written"
        raise NonFiniteLossError(f"{e}; stopped, {kept}") from None
    finally:
        bar.close()
    if world > 1:
        dist.barrier()
    return log


CLI_ONLY = ("threads", "sample")  # fsn-train flags that are not settings of the run


def _parser() -> OneLineParser:
    """fsn-train's flags: one per TrainConfig field, plus :data:`CLI_ONLY`."""
    p = OneLineParser(prog="fsn-train", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                      description="Train an FSN (or baseline) byte-level LM. With no arguments: the CPU quickstart "
                      "on the Python stdlib corpus.")
    add_dataclass_flags(p, TrainConfig)
    add_threads_flag(p)
    p.add_argument("--sample", type=int, default=200, help="bytes to sample at the end (0: none)")
    return p


def _config_from_args(argv: Sequence[str]) -> Tuple[TrainConfig, Dict[str, Any]]:
    """(TrainConfig, CLI-only options {sample, threads}) from the command line. A resume
    takes the saved config and only the flags given explicitly."""
    args = vars(_parser().parse_args(argv))
    cli_only = {name: args.pop(name) for name in CLI_ONLY}
    choose_threads(cli_only["threads"])  # a bad --threads fails before anything runs
    if cli_only["sample"] < 0:
        raise ValueError(f"--sample must be >= 0, got {cli_only['sample']}")
    if not args["resume"]:
        return TrainConfig(**args), cli_only
    given = explicit_args(_parser(), argv)
    for name in CLI_ONLY + ("resume", "out"):
        given.pop(name, None)
    return resume_config(args["out"], **given), cli_only


def _main(argv: Sequence[str]) -> int:
    cfg, cli_only = _config_from_args(argv)
    apply_threads(cli_only["threads"])
    t0 = time.time()
    try:
        log = train(cfg)
    except TrainingInterrupted as e:
        print(f"fsn-train: {e}", file=sys.stderr)
        return 130
    except NonFiniteLossError as e:
        print(f"fsn-train: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fsn-train: interrupted; nothing was saved after the last checkpoint", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0 and "final_val_bpb" in log:
        print(f"final val bits/byte: {log['final_val_bpb']:.4f}  ({log['params']:,} params, "
              f"corpus {log['corpus']['name']} sha256 {log['corpus']['sha256'][:12]}, {time.time() - t0:.0f}s)")
        if cli_only["sample"] > 0:
            from .checkpoint import load_model
            from .generate import sample

            model, _ = load_model(str(Path(cfg.out) / CHECKPOINT_NAME))
            prompt = b"def "
            text = bytes(list(prompt) + sample(model, list(prompt), cli_only["sample"], 0.8, 0, cfg.seed,
                                               cfg.seq_len))
            print("sample:\n" + text.decode("utf-8", errors="replace"))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-train``."""
    return run_cli("fsn-train", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
