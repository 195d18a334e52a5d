"""fsn_model: FSN layers, models, byte data, training and tools (the math: fsn_model/README.md).

Modules, by concern:
    the model      config (FSNConfig, TransformerConfig), checks (argument checks),
                   attention (FrustratedAttention, PhaseProjection), mixers (PhaseSwiGLU,
                   MeanFieldCoupling), fsn (FSNBlock, FSNLM, PhaseCache), transformer
                   (TransformerLM, KVCache), build (build_model: the named models sized to a
                   parameter target)
    training       data (byte corpora, batches), train_config (TrainConfig, validate),
                   run_dir (the run directory: lock, checkpoint and log, resume), run_lock,
                   checkpoint (checksummed atomic checkpoints), train (the loop, fsn-train),
                   threads (the CPU thread policy of the tools)
    tools          evaluate (fsn-eval), generate (fsn-generate), copy_depth (fsn-copy-depth),
                   cli (one-line errors, flags from dataclasses), provenance (device, commit)
    hf/            Hugging Face: configuration, cache, modeling, decoder swap, tokenizer, export

Public API:
    FrustratedAttention, MeanFieldCoupling, PhaseSwiGLU, FSNBlock, FSNLM, TransformerLM,
    PhaseCache, KVCache (the preallocated decode caches),
    FSNConfig, TransformerConfig (the model shapes), build_model, model_from_config,
    parse_params, load_model, TrainConfig.
    Training: ``fsn_model.train.train(TrainConfig(...)) -> log dict`` (``fsn_model.train`` is
    the module, imported lazily so that ``python -m fsn_model.train`` runs cleanly).

Importing it before torch sets OpenMP's passive wait policy (``fsn_model/threads.py``).
"""
from . import threads as _threads  # first: OpenMP's wait policy must be set before torch loads

_threads.configure_wait_policy()

from .attention import FrustratedAttention  # noqa: E402
from .build import MODEL_NAMES, build_model, count_params, model_from_config, parse_params  # noqa: E402
from .checkpoint import load_model  # noqa: E402
from .config import FSNConfig, TransformerConfig  # noqa: E402
from .fsn import FSNLM, FSNBlock, PhaseCache  # noqa: E402
from .mixers import MeanFieldCoupling, PhaseSwiGLU  # noqa: E402
from .transformer import KVCache, TransformerLM  # noqa: E402

__all__ = [
    "FrustratedAttention", "MeanFieldCoupling", "PhaseSwiGLU", "FSNBlock", "FSNLM", "TransformerLM",
    "FSNConfig", "TransformerConfig", "MODEL_NAMES", "build_model", "count_params", "model_from_config", "parse_params",
    "TrainConfig", "load_model", "PhaseCache", "KVCache",
]


def __getattr__(name):
    if name == "TrainConfig":
        import importlib

        return importlib.import_module(".train_config", __name__).TrainConfig
    raise AttributeError(f"module 'fsn_model' has no attribute {name!r}")
