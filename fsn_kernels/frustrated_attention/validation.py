"""Input checks of :func:`frustrated_attention` and :func:`frustrated_attention_decode`,
built from one set of pieces: every bad input gets a ValueError or TypeError that names
the argument, what was expected and what came."""
from __future__ import annotations

import math
import numbers
import warnings

import torch

from .geometry import padded_harmonics, padded_head_dim
from .launch_policy import interpreter_active, interpreting

MAX_HEAD_DIM = 128
MAX_HARMONICS = 8
MAX_GRID_DIM = 65535
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
BACKENDS = ("auto", "triton", "stock", "reference")
RENAMED_BACKENDS = {"torch": "'reference' (the T x T reference it meant) or 'stock' (the memory-linear stock-PyTorch "
                             "path that 'auto' now uses off the kernels)"}
DEPRECATED_BACKENDS = {"sdpa": "stock"}  # old name -> new name: still runs, with a DeprecationWarning
MIN_TRITON_CAPABILITY = (7, 0)


# ------------------------------------------------------------------------ shared pieces
def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)} on {x.device}"
    return f"{type(x).__name__} {x!r}"


def _check_real_tensor(name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {_describe(x)}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(
            f"{name} must be a real floating-point tensor (float32, bfloat16, float16 or "
            f"float64), got {_describe(x)}"
        )


def _check_gate(gate, theta, gate_name: str, theta_name: str) -> None:
    _check_real_tensor(gate_name, gate)
    if gate.shape != theta.shape:
        raise ValueError(f"{gate_name} must have {theta_name}'s shape {tuple(theta.shape)}, got {tuple(gate.shape)}")


def _check_coupling(coupling, H: int, D: int) -> None:
    if not isinstance(coupling, torch.Tensor):
        raise TypeError(f"coupling must be a complex torch.Tensor, got {_describe(coupling)}")
    if not coupling.is_complex():
        raise TypeError(
            "coupling must be a complex tensor (H, D, NH, 2) (K_n at [..., n-1, 0], L_n at "
            f"[..., n-1, 1]), got {_describe(coupling)}"
        )
    if coupling.dim() != 4 or coupling.shape[0] != H or coupling.shape[1] != D or coupling.shape[3] != 2:
        raise ValueError(
            f"coupling must have shape (H, D, NH, 2) = ({H}, {D}, NH, 2), got {tuple(coupling.shape)}"
        )
    NH = coupling.shape[2]
    if not 1 <= NH <= MAX_HARMONICS:
        raise ValueError(f"coupling's NH (dim 2) must be in [1, {MAX_HARMONICS}], got {NH}")


def _check_omega(omega, H: int, D: int) -> None:
    if omega is not None:
        _check_real_tensor("omega", omega)
        if omega.shape != (H, D):
            raise ValueError(f"omega must have shape (H, D) = ({H}, {D}) or be None, got {tuple(omega.shape)}")


def _check_one_device(anchor_name: str, anchor, others) -> None:
    """``others``: (name, tensor or None) pairs that must be on ``anchor``'s device."""
    for name, x in others:
        if x is not None and x.device != anchor.device:
            raise ValueError(
                f"{name} is on {x.device} but {anchor_name} is on {anchor.device}; all tensors must "
                "be on one device"
            )


def _check_backend(backend, theta, gate, theta_name: str, gate_name: str) -> None:
    """The backend's name, and what the Triton kernels cannot take: float64, a batch or
    head count past one grid axis, D past MAX_HEAD_DIM. theta: (B, ..., H, D)."""
    B, H, D = theta.shape[0], theta.shape[2], theta.shape[3]
    wide = torch.float64 in (theta.dtype, gate.dtype)
    uses_kernels = resolve_backend(backend, theta.device, wide) == "triton"
    if backend == "triton" and wide:
        raise ValueError(
            f"the Triton backend computes in float32 and would silently lose float64's precision; got {theta_name} "
            f"{theta.dtype} and {gate_name} {gate.dtype}: use backend='stock' or 'reference' (or 'auto', which "
            "routes float64 to 'stock') for float64, or cast the inputs to float32"
        )
    if uses_kernels and max(B, H) > MAX_GRID_DIM:
        raise ValueError(
            f"the Triton kernels launch one grid row per batch and head: B and H must be <= "
            f"{MAX_GRID_DIM}, got B={B}, H={H}; split the batch"
        )
    if uses_kernels and D > MAX_HEAD_DIM:
        raise ValueError(
            f"the Triton backend supports D (oscillators per head) from 1 to {MAX_HEAD_DIM}, "
            f"got D={D}; use backend='stock' for larger D"
        )


def check_scale(scale, D: int) -> float:
    """The resolved score scale: ``D ** -0.5`` for None, else a finite positive real
    number (Python or NumPy) as a float."""
    if scale is None:
        return D ** -0.5
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {_describe(scale)}")
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be finite and positive, got {scale}")
    return scale


def check_backend(backend) -> str:
    """A known backend name, returned in its current spelling: a deprecated name (``"sdpa"``,
    now ``"stock"``) warns (DeprecationWarning) and gives the new one; a renamed one whose
    meaning split gets an error naming its replacements."""
    if isinstance(backend, str) and backend in RENAMED_BACKENDS:
        raise ValueError(f"backend={backend!r} was renamed: use {RENAMED_BACKENDS[backend]}")
    if isinstance(backend, str) and backend in DEPRECATED_BACKENDS:
        new = DEPRECATED_BACKENDS[backend]
        warnings.warn(f"backend={backend!r} is deprecated: it is now called {new!r} (the stock-PyTorch path)",
                      DeprecationWarning, stacklevel=3)
        return new
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


_TRITON_USABLE = {}


def triton_usable(device: torch.device) -> bool:
    """Whether the Triton kernels can run on a CUDA ``device``: triton imports and the GPU
    has compute capability >= 7.0 (cached per device)."""
    if device.type != "cuda":
        return False
    key = device.index if device.index is not None else torch.cuda.current_device()
    if key not in _TRITON_USABLE:
        try:
            import triton  # noqa: F401

            _TRITON_USABLE[key] = torch.cuda.get_device_capability(key) >= MIN_TRITON_CAPABILITY
        except ImportError:
            _TRITON_USABLE[key] = False
    return _TRITON_USABLE[key]


def resolve_backend(backend: str, device: torch.device, wide: bool) -> str:
    """The implementation a backend name runs: "triton", "stock" or "reference". "auto" is
    the kernels on a CUDA device where Triton is usable, for non-float64 inputs (``wide``
    False), and the stock-PyTorch "stock" path everywhere else."""
    backend = check_backend(backend)
    if backend != "auto":
        return backend
    return "triton" if not wide and triton_usable(device) else "stock"


def check_triton_runnable(device: torch.device) -> None:
    """The kernels can run on ``device``: CUDA, or the CPU with Triton's interpreter active."""
    if device.type != "cuda" and not interpreting():
        raise ValueError(
            f"backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before triton "
            f"is imported to run the kernels on the CPU; got tensors on {device}"
        )
    if device.type != "cuda" and not interpreter_active():
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after triton was imported, so its kernels were built for a GPU and "
            "cannot run on the CPU: set TRITON_INTERPRET=1 before importing torch, triton or fsn_kernels, "
            "or use backend='auto'"
        )


# ------------------------------------------------------------------------- the full op
def check_inputs(theta, gate, coupling, omega, scale, backend) -> float:
    """Validate the op's inputs; returns the resolved scale (``D ** -0.5`` for None)."""
    _check_real_tensor("theta", theta)
    if theta.dim() != 4:
        raise ValueError(f"theta must have shape (B, T, H, D) (4 dims), got {_describe(theta)}")
    B, T, H, D = theta.shape
    if D < 1 or H < 1:
        raise ValueError(f"theta must have H >= 1 heads and D >= 1 oscillators, got {_describe(theta)}")
    _check_gate(gate, theta, "gate", "theta")
    _check_coupling(coupling, H, D)
    _check_omega(omega, H, D)
    if omega is not None and omega.requires_grad:
        raise ValueError(
            "omega takes no gradient (it is a fixed rotary drift); pass omega.detach() "
            "or a tensor with requires_grad=False"
        )
    _check_one_device("theta", theta, (("gate", gate), ("coupling", coupling), ("omega", omega)))
    _check_backend(backend, theta, gate, "theta", "gate")
    return check_scale(scale, D)


def check_cu_seqlens(cu_seqlens, theta):
    """Validate packed-sequence boundaries; returns the longest sequence's length (None
    without packing). Reads cu_seqlens on the host once."""
    if cu_seqlens is None:
        return None
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"cu_seqlens must be an int32 torch.Tensor or None, got {_describe(cu_seqlens)}")
    if cu_seqlens.dtype != torch.int32:
        raise ValueError(f"cu_seqlens must be int32 (like flash-attn's), got {_describe(cu_seqlens)}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(f"cu_seqlens must have shape (S + 1,) for S sequences, got {_describe(cu_seqlens)}")
    if cu_seqlens.device != theta.device:
        raise ValueError(f"cu_seqlens is on {cu_seqlens.device} but theta is on {theta.device}")
    if theta.shape[0] != 1:
        raise ValueError(
            f"with cu_seqlens, theta and gate hold the packed sequences end to end as (1, T, H, D): "
            f"B must be 1, got theta of shape {tuple(theta.shape)}"
        )
    bounds = cu_seqlens.tolist()
    T = theta.shape[1]
    if bounds[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got cu_seqlens[0] = {bounds[0]}")
    steps = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    if any(s < 0 for s in steps):
        i = next(i for i, s in enumerate(steps) if s < 0)
        raise ValueError(f"cu_seqlens must be non-decreasing, got cu_seqlens[{i}] = {bounds[i]} > "
                         f"cu_seqlens[{i + 1}] = {bounds[i + 1]}")
    if bounds[-1] != T:
        raise ValueError(f"cu_seqlens must end at T = {T} (theta's length), got cu_seqlens[-1] = {bounds[-1]}")
    return max(steps, default=0)


MAX_FP32_VALUE_WIDTH = 512


def check_kernel_limits(D: int, NH: int, fp32_matmuls: bool, on_gpu: bool) -> None:
    """Shapes too wide for fp32 matmul operands on a GPU.

    fp32 operands have no wgmma path and stage fp32 tiles: at NH_P * D_P = 512 (NH and D
    padded to powers of two, D_P >= 16) the smallest tiles already need 144-161 KiB of
    shared memory and spill 7.8-13 KB of stack per thread (sm_90 compile report,
    PERF_LOG.md); wider ones are refused. bf16/fp16 operands fit everywhere. The
    interpreter has no limit.
    """
    nh_p, d_p = padded_harmonics(NH)[0], padded_head_dim(D)
    if on_gpu and fp32_matmuls and nh_p * d_p > MAX_FP32_VALUE_WIDTH:
        raise ValueError(
            f"the Triton backend with float32 matmuls supports NH_P * D_P <= {MAX_FP32_VALUE_WIDTH} "
            f"(NH and D padded to powers of two), got NH={NH}, D={D} -> {nh_p} * {d_p} = {nh_p * d_p}; "
            "use bfloat16/float16 inputs or torch.autocast, fewer harmonics, or backend='stock'"
        )


# ------------------------------------------------------------------------ the decode step
def _check_phase_cache(phase_cache, theta_new) -> None:
    B, _, H, D = theta_new.shape
    if not isinstance(phase_cache, torch.Tensor):
        raise TypeError(f"phase_cache must be a torch.Tensor, got {_describe(phase_cache)}")
    if phase_cache.dtype != theta_new.dtype:
        raise TypeError(f"phase_cache must have theta_new's dtype {theta_new.dtype} (theta_new is written into it), "
                        f"got {_describe(phase_cache)}")
    if phase_cache.dim() != 4 or phase_cache.shape[0] != B or phase_cache.shape[2:] != (H, D):
        raise ValueError(f"phase_cache must have shape (B, T_max, H, D) = ({B}, T_max, {H}, {D}), "
                         f"got {_describe(phase_cache)}")
    if phase_cache.shape[1] < 1:
        raise ValueError(f"phase_cache must hold T_max >= 1 positions, got {_describe(phase_cache)}")
    if not phase_cache.is_contiguous():
        raise ValueError("phase_cache must be contiguous (it is written in place; a copy would lose the write), "
                         f"got strides {phase_cache.stride()}")


def _check_cache_seqlens(cache_seqlens, B: int) -> None:
    if not isinstance(cache_seqlens, torch.Tensor):
        raise TypeError(f"cache_seqlens must be an int32 torch.Tensor of shape (B,), got {_describe(cache_seqlens)}")
    if cache_seqlens.dtype != torch.int32:
        raise TypeError(f"cache_seqlens must be int32, got {_describe(cache_seqlens)}")
    if cache_seqlens.shape != (B,):
        raise ValueError(f"cache_seqlens must have shape (B,) = ({B},), got {_describe(cache_seqlens)}")


def _check_cache_seqlens_range(cache_seqlens, t_max: int) -> None:
    """Values in [0, T_max - 1]: one device sync; nothing to read on meta tensors."""
    if cache_seqlens.numel() and cache_seqlens.device.type != "meta":
        lo, hi = int(cache_seqlens.min()), int(cache_seqlens.max())
        if lo < 0 or hi >= t_max:
            raise ValueError(f"cache_seqlens must be in [0, T_max - 1] = [0, {t_max - 1}] (the new token is written "
                             f"at position cache_seqlens[b] of phase_cache), got values in [{lo}, {hi}]")


def check_decode_inputs(theta_new, gate_new, coupling, omega, scale, phase_cache, cache_seqlens, backend,
                        num_splits, check_seqlens) -> float:
    """Validate the decode step's inputs; returns the resolved scale (``D ** -0.5`` for None)."""
    _check_real_tensor("theta_new", theta_new)
    if theta_new.dim() != 4 or theta_new.shape[1] != 1:
        raise ValueError(f"theta_new must have shape (B, 1, H, D), got {_describe(theta_new)}")
    B, _, H, D = theta_new.shape
    if min(B, H, D) < 1:
        raise ValueError(f"theta_new must have B, H, D >= 1, got {_describe(theta_new)}")
    _check_gate(gate_new, theta_new, "gate_new", "theta_new")
    _check_coupling(coupling, H, D)
    _check_omega(omega, H, D)
    _check_phase_cache(phase_cache, theta_new)
    _check_cache_seqlens(cache_seqlens, B)
    _check_one_device("theta_new", theta_new, (("gate_new", gate_new), ("coupling", coupling), ("omega", omega),
                                               ("phase_cache", phase_cache), ("cache_seqlens", cache_seqlens)))
    _check_backend(backend, theta_new, gate_new, "theta_new", "gate_new")
    if check_seqlens:
        _check_cache_seqlens_range(cache_seqlens, phase_cache.shape[1])
    scale = check_scale(scale, D)
    if num_splits is not None and (isinstance(num_splits, bool) or not isinstance(num_splits, int)
                                   or num_splits < 1):
        raise ValueError(f"num_splits must be an int >= 1 or None, got {num_splits!r}")
    return scale
