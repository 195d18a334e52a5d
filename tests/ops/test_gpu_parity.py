"""GPU parity in fp32 and bf16 (bf16 cannot be tested under the CPU interpreter).

The checks are ``fsn_kernels.testing.parity_check`` (also run, with a raw result file,
by the GPU parity benchmark): output and every gradient against a float64 reference, by
flash-attention's rule that the kernel's error is at most 2x (plus a small floor) the
error of plain PyTorch computing the same math in the same precision."""
import pytest
import torch

from fsn_kernels.testing import PARITY_SHAPES, parity_check

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU parity needs a CUDA device; "
                       "CPU runs cover fp32 under TRITON_INTERPRET=1"),
]

SHAPES = PARITY_SHAPES + ["2,17,2,4,1", "1,257,2,100,4", "2,130,2,128,3", "1,300,2,16,8"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_gpu_parity(shape, dtype):
    result = parity_check(tuple(int(x) for x in shape.split(",")), dtype, "cuda")
    failed = [c for c in result["checks"] if not c["ok"]]
    assert not failed, f"{shape} {dtype}: {failed}"
