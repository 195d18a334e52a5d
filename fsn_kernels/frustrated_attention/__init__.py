"""The frustrated-synchronization attention op. The math is in README.md beside this file.

Modules, one job each, from the public functions down:

* ``op`` -- the public functions ``frustrated_attention`` and
  ``frustrated_attention_decode``: check the inputs and dispatch to a backend.
* ``validation`` -- every input check of both functions (ValueError / TypeError naming
  the argument), and the backend resolution.

The "triton" backend, binding -> launchers and kernels -> launch setup -> device helpers:

* ``triton_function`` -- the registered custom ops (``fsn::frustrated_attention_fwd`` /
  ``_bwd``) and the autograd Function over them; the matmul operand mode of a call.
* ``features`` -- the per-token feature pass (all trigonometry, once per token).
* ``forward`` -- the flash forward and the per-token demodulation, and their launcher.
* ``backward`` -- the flash backward (key-major and query-major) and the per-token chain
  rule, and their launcher.
* ``decoding`` -- the decode step's split and combine kernels (flash-decoding) and their
  launcher.
* ``geometry`` -- ``LaunchGeometry``: shapes, padding, operand mode and packing, resolved
  once per call.
* ``packing`` -- where packed sequences lie in the token rows.
* ``tile_configs`` -- every tile configuration (``TileConfig``): per-token passes, flash
  passes (autotune candidates), decode.
* ``launch_policy`` -- the interpreter or a GPU, autotuning or the fixed config.
* ``constants`` -- named constants and the matmul operand modes.
* ``device_math`` -- device math: matmuls in an operand mode, sin/cos, harmonic powers,
  complex products.
* ``layout`` -- where a program's data lies: rows, offsets, feature tiles, the coupling.

The other backends:

* ``stock`` -- the "stock" backend's math: stock PyTorch, per-token features and one causal
  SDPA call per sequence.
* ``stock_function`` -- its custom ops and autograd Function (the written-out backward).
* ``stock_decode`` -- its decode step over the phase cache.
* ``precision`` -- the compute dtype of the stock and reference paths.
* ``naive`` -- the "reference" backend: the T x T float64-capable reference, the tests'
  ground truth (the op and its decode step).

Tools: ``aot_check`` -- compile every kernel for sm_90 without a GPU and report its
resources (PERF_LOG.md records what was tried for speed).
"""
from .naive import naive_frustrated_attention
from .op import frustrated_attention, frustrated_attention_decode
from .triton_function import FrustratedAttentionFunction

__all__ = ["frustrated_attention", "frustrated_attention_decode", "naive_frustrated_attention",
           "FrustratedAttentionFunction"]
