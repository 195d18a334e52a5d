"""Input checks of :func:`frustrated_attention`: every bad input gets a ValueError or
TypeError that names the argument, what was expected and what came."""
from __future__ import annotations

import math
import numbers

import torch

MAX_HEAD_DIM = 128
MAX_HARMONICS = 8
MAX_GRID_DIM = 65535
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
BACKENDS = ("auto", "triton", "sdpa", "reference")
RENAMED_BACKENDS = {"torch": "'reference' (the T x T reference it meant) or 'sdpa' (the memory-linear stock-PyTorch "
                              "path that 'auto' now uses off the kernels)"}
MIN_TRITON_CAPABILITY = (7, 0)


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


def check_inputs(theta, gate, coupling, omega, scale, backend) -> float:
    """Validate the op's inputs; returns the resolved scale (``D ** -0.5`` for None)."""
    _check_real_tensor("theta", theta)
    if theta.dim() != 4:
        raise ValueError(f"theta must have shape (B, T, H, D) (4 dims), got {_describe(theta)}")
    B, T, H, D = theta.shape
    if D < 1 or H < 1:
        raise ValueError(f"theta must have H >= 1 heads and D >= 1 oscillators, got {_describe(theta)}")
    _check_real_tensor("gate", gate)
    if gate.shape != theta.shape:
        raise ValueError(
            f"gate must have theta's shape {tuple(theta.shape)}, got {tuple(gate.shape)}"
        )
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
    if omega is not None:
        _check_real_tensor("omega", omega)
        if omega.shape != (H, D):
            raise ValueError(f"omega must have shape (H, D) = ({H}, {D}) or be None, got {tuple(omega.shape)}")
        if omega.requires_grad:
            raise ValueError(
                "omega takes no gradient (it is a fixed rotary drift); pass omega.detach() "
                "or a tensor with requires_grad=False"
            )
    for name, x in (("gate", gate), ("coupling", coupling), ("omega", omega)):
        if x is not None and x.device != theta.device:
            raise ValueError(
                f"{name} is on {x.device} but theta is on {theta.device}; all tensors must "
                "be on one device"
            )
    wide = torch.float64 in (theta.dtype, gate.dtype)
    uses_kernels = resolve_backend(backend, theta.device, wide) == "triton"
    if backend == "triton" and wide:
        raise ValueError(
            f"the Triton backend computes in float32 and would silently lose float64's precision; got theta "
            f"{theta.dtype} and gate {gate.dtype}: use backend='sdpa' or 'reference' (or 'auto', which routes "
            "float64 to 'sdpa') for float64, or cast the inputs to float32"
        )
    if uses_kernels and max(B, H) > MAX_GRID_DIM:
        raise ValueError(
            f"the Triton kernels launch one grid row per batch and head: B and H must be <= "
            f"{MAX_GRID_DIM}, got B={B}, H={H}; split the batch"
        )
    if uses_kernels and D > MAX_HEAD_DIM:
        raise ValueError(
            f"the Triton backend supports D (oscillators per head) from 1 to {MAX_HEAD_DIM}, "
            f"got D={D}; use backend='sdpa' for larger D"
        )
    if scale is None:
        return D ** -0.5
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {_describe(scale)}")
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be finite and positive, got {scale}")
    return scale


def check_backend(backend) -> None:
    """A known backend name; a renamed one gets an error naming its replacement."""
    if isinstance(backend, str) and backend in RENAMED_BACKENDS:
        raise ValueError(f"backend={backend!r} was renamed: use {RENAMED_BACKENDS[backend]}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


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
    """The implementation a (checked) backend name runs: "triton", "sdpa" or "reference".
    "auto" is the kernels on a CUDA device where Triton is usable, for non-float64 inputs
    (``wide`` False), and the stock-PyTorch "sdpa" path everywhere else."""
    check_backend(backend)
    if backend != "auto":
        return backend
    return "triton" if not wide and triton_usable(device) else "sdpa"


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
    from .common import padded_harmonics, padded_head_dim

    nh_p, d_p = padded_harmonics(NH)[0], padded_head_dim(D)
    if on_gpu and fp32_matmuls and nh_p * d_p > MAX_FP32_VALUE_WIDTH:
        raise ValueError(
            f"the Triton backend with float32 matmuls supports NH_P * D_P <= {MAX_FP32_VALUE_WIDTH} "
            f"(NH and D padded to powers of two), got NH={NH}, D={D} -> {nh_p} * {d_p} = {nh_p * d_p}; "
            "use bfloat16/float16 inputs or torch.autocast, fewer harmonics, or backend='sdpa'"
        )
