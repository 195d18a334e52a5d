"""fsn_model: FSN layers, models, byte data, training and tools (the math: fsn_model/README.md).

Public API:
    FrustratedAttention, MeanFieldCoupling, PhaseSwiGLU, FSNBlock, FSNLM, TransformerLM,
    PhaseCache, KVCache (the preallocated decode caches),
    FSNConfig, TransformerConfig (the model shapes), build_model, model_from_config,
    parse_params, load_model, TrainConfig.
    Training: ``fsn_model.train.train(TrainConfig(...)) -> log dict`` (``fsn_model.train`` is
    the module, imported lazily so that ``python -m fsn_model.train`` runs cleanly).
"""
from .attention import FrustratedAttention
from .build import MODEL_NAMES, build_model, count_params, model_from_config, parse_params
from .checkpoint import load_model
from .config import FSNConfig, TransformerConfig
from .fsn import FSNLM, FSNBlock, PhaseCache
from .mixers import MeanFieldCoupling, PhaseSwiGLU
from .transformer import KVCache, TransformerLM

__all__ = [
    "FrustratedAttention", "MeanFieldCoupling", "PhaseSwiGLU", "FSNBlock", "FSNLM", "TransformerLM",
    "FSNConfig", "TransformerConfig", "MODEL_NAMES", "build_model", "count_params", "model_from_config", "parse_params",
    "TrainConfig", "load_model", "PhaseCache", "KVCache",
]


def __getattr__(name):
    if name == "TrainConfig":
        import importlib

        return importlib.import_module(".train", __name__).TrainConfig
    raise AttributeError(f"module 'fsn_model' has no attribute {name!r}")
