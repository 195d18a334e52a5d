"""The CUDA launch path through ``triton.autotune`` (grid from the chosen config, no
meta-parameter passed twice), run under the interpreter with a stand-in benchmark that
makes the last candidate win, so a non-default tile is what computes the result."""
import itertools

import torch
import triton

from fsn_kernels.frustrated_attention import launch_policy
from fsn_kernels.frustrated_attention.backward import attention_bwd
from fsn_kernels.frustrated_attention.constants import DOT_FP16
from fsn_kernels.frustrated_attention.forward import attention_fwd
from fsn_kernels.testing import TOLERANCES, assert_grads_close, make_inputs, needs_triton, reference_output_and_grads

pytestmark = needs_triton()


def test_autotuned_launch_picks_a_candidate_and_stays_exact(monkeypatch):
    clock = itertools.count()
    real_autotune = triton.autotune

    def autotune_with_fake_bench(*args, **kwargs):
        # every timing is faster than the one before: the last candidate wins
        return real_autotune(*args, **kwargs, do_bench=lambda call, quantiles: (call(), [1e6 - next(clock)] * 3)[1])

    monkeypatch.setattr(launch_policy, "autotuning", lambda: True)
    monkeypatch.setattr(triton, "autotune", autotune_with_fake_bench)
    monkeypatch.setattr(launch_policy, "_AUTOTUNED", {})
    theta, gate, coupling, omega = make_inputs(1, 150, 1, 16, 2)  # value width 64: several candidates each
    grad_out = torch.randn_like(theta)
    c_real = torch.view_as_real(coupling).contiguous()
    fp16 = DOT_FP16.value  # the interpreter's fp16 matmuls are right (its bf16 ones are not)
    out, lse, order = attention_fwd(theta, gate, c_real, omega, 0.25, dot=fp16)
    d_theta, d_gate, d_cpl = attention_bwd(grad_out, theta, gate, c_real, omega, out, lse, order, 0.25, dot=fp16)
    want = reference_output_and_grads(theta, gate, coupling, omega, grad_out, scale=0.25)
    assert_grads_close([out, d_theta, d_gate, torch.view_as_complex(d_cpl)], want, *TOLERANCES["backward-fp16"])
    tuned = list(launch_policy._AUTOTUNED.values())
    assert len(tuned) == 3, "forward, key-major and query-major kernels each autotuned"
    for tuner in tuned:
        assert len(tuner.configs) > 1
        (best,) = tuner.cache.values()
        assert best is tuner.configs[-1]
