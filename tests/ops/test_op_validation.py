"""Every bad input raises its documented ValueError/TypeError, naming the argument."""
import math
import os
import subprocess
import sys

import pytest
import torch

from fsn_kernels import frustrated_attention
from fsn_model import build_model

B, T, H, D, NH = 2, 5, 2, 4, 2


def good():
    return dict(
        theta=torch.randn(B, T, H, D),
        gate=torch.rand(B, T, H, D),
        coupling=torch.randn(H, D, NH, 2, dtype=torch.complex64),
        omega=torch.randn(H, D),
    )


CASES = [
    ("theta rank", dict(theta=torch.randn(B, T, H * D)), ValueError, "theta"),
    ("theta int", dict(theta=torch.zeros(B, T, H, D, dtype=torch.int64)), TypeError, "theta"),
    ("theta complex", dict(theta=torch.zeros(B, T, H, D, dtype=torch.complex64)), TypeError, "theta"),
    ("theta not a tensor", dict(theta=[[1.0]]), TypeError, "theta"),
    ("gate shape", dict(gate=torch.rand(B, T, H, D + 1)), ValueError, "gate"),
    ("gate int", dict(gate=torch.ones(B, T, H, D, dtype=torch.int32)), TypeError, "gate"),
    ("gate complex", dict(gate=torch.ones(B, T, H, D, dtype=torch.complex64)), TypeError, "gate"),
    ("coupling real", dict(coupling=torch.randn(H, D, NH, 2)), TypeError, "coupling"),
    ("coupling shape", dict(coupling=torch.randn(H, D, NH, 3, dtype=torch.complex64)), ValueError, "coupling"),
    ("coupling heads", dict(coupling=torch.randn(H + 1, D, NH, 2, dtype=torch.complex64)), ValueError, "coupling"),
    ("NH too large", dict(coupling=torch.randn(H, D, 9, 2, dtype=torch.complex64)), ValueError, "NH"),
    ("NH zero", dict(coupling=torch.randn(H, D, 0, 2, dtype=torch.complex64)), ValueError, "NH"),
    ("omega shape", dict(omega=torch.randn(H, D + 1)), ValueError, "omega"),
    ("omega int", dict(omega=torch.ones(H, D, dtype=torch.int64)), TypeError, "omega"),
    ("omega requires grad", dict(omega=torch.randn(H, D, requires_grad=True)), ValueError, "omega"),
    ("scale zero", dict(scale=0.0), ValueError, "scale"),
    ("scale negative", dict(scale=-1.0), ValueError, "scale"),
    ("scale nan", dict(scale=math.nan), ValueError, "scale"),
    ("scale inf", dict(scale=math.inf), ValueError, "scale"),
    ("scale str", dict(scale="0.5"), TypeError, "scale"),
    ("scale bool", dict(scale=True), TypeError, "scale"),
    ("backend", dict(backend="cuda"), ValueError, "backend"),
    ("D zero", dict(theta=torch.randn(B, T, H, 0), gate=torch.rand(B, T, H, 0),
                    coupling=torch.randn(H, 0, NH, 2, dtype=torch.complex64), omega=None), ValueError, "theta"),
]


@pytest.mark.parametrize("name,override,error,word", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises(name, override, error, word):
    kwargs = {**good(), **override}
    with pytest.raises(error, match=word):
        frustrated_attention(**kwargs)


def test_triton_backend_rejects_unsupported_head_dim():
    kwargs = good()
    kwargs.update(theta=torch.randn(1, 3, 1, 129), gate=torch.rand(1, 3, 1, 129),
                  coupling=torch.randn(1, 129, 1, 2, dtype=torch.complex64), omega=None)
    with pytest.raises(ValueError, match="D"):
        frustrated_attention(**kwargs, backend="triton")


def test_devices_must_agree():
    meta = torch.randn(H, D, device="meta")
    with pytest.raises(ValueError, match="omega is on meta"):
        frustrated_attention(**{**good(), "omega": meta})


def test_error_message_says_what_came():
    with pytest.raises(ValueError, match=r"got \(3, 4, 2, 2\)"):
        frustrated_attention(**{**good(), "coupling": torch.randn(3, 4, 2, 2, dtype=torch.complex64)})


def test_triton_backend_rejects_batch_beyond_one_grid_axis():
    n = 65536
    with pytest.raises(ValueError, match="B and H must be <= 65535"):
        frustrated_attention(torch.randn(n, 1, 1, 1), torch.rand(n, 1, 1, 1),
                             torch.randn(1, 1, 1, 2, dtype=torch.complex64), backend="triton")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path without the interpreter")
def test_triton_backend_on_cpu_without_interpreter_says_how_to_enable_it(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        frustrated_attention(**good(), backend="triton")


LATE_INTERPRETER = """
import os
import torch, triton
import fsn_kernels
os.environ["TRITON_INTERPRET"] = "1"  # too late: triton is imported
x = torch.ones(1, 1, 1, 4)
c = torch.ones(1, 4, 1, 2, dtype=torch.complex64)
calls = [lambda: fsn_kernels.frustrated_attention(x, x, c, backend="triton"),
         lambda: fsn_kernels.frustrated_attention_decode(x, x, c, phase_cache=torch.zeros(1, 2, 1, 4),
                                                         cache_seqlens=torch.zeros(1, dtype=torch.int32),
                                                         backend="triton")]
for call in calls:
    try:
        call()
        print("no error")
    except Exception as exc:
        print(type(exc).__name__, exc)
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path without the interpreter")
def test_interpreter_enabled_after_triton_import_names_the_fix():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", LATE_INTERPRETER], capture_output=True, text=True, env=env,
                         timeout=300)
    lines = res.stdout.splitlines()
    assert res.returncode == 0 and len(lines) == 2, res.stdout + res.stderr
    for line in lines:
        assert line.startswith("RuntimeError TRITON_INTERPRET=1 was set after triton was imported"), line
        assert "before importing torch, triton or fsn_kernels" in line and "backend='auto'" in line, line


def test_fp32_matmul_width_limit_names_the_fix():
    from fsn_kernels.frustrated_attention.validation import check_kernel_limits

    with pytest.raises(ValueError, match="NH=8, D=128 -> 8 \\* 128 = 1024.*bfloat16"):
        check_kernel_limits(128, 8, fp32_matmuls=True, on_gpu=True)
    check_kernel_limits(128, 8, fp32_matmuls=False, on_gpu=True)  # bf16 operands fit
    check_kernel_limits(128, 8, fp32_matmuls=True, on_gpu=False)  # the interpreter has no limit
    check_kernel_limits(64, 8, fp32_matmuls=True, on_gpu=True)  # 8 * 64 = 512 fits


def test_triton_backend_refuses_float64_and_auto_routes_it_to_stock():
    kwargs = {k: (v.double() if isinstance(v, torch.Tensor) and not v.is_complex() else v) for k, v in good().items()}
    with pytest.raises(ValueError, match="float64.*backend=.stock."):
        frustrated_attention(**kwargs, backend="triton")
    out = frustrated_attention(**kwargs, backend="auto")
    assert out.dtype == torch.float64
    assert torch.equal(out, frustrated_attention(**kwargs, backend="stock"))


def test_the_old_backend_name_torch_is_refused_naming_its_replacements():
    for call in (lambda: frustrated_attention(**good(), backend="torch"),
                 lambda: build_model("fsn", "30k", n_layers=1, backend="torch")):
        with pytest.raises(ValueError, match="backend='torch' was renamed: use 'reference'.*'stock'"):
            call()
