"""Non-finite inputs: one NaN or inf in theta, gate or omega makes exactly the outputs
non-finite that the float64 reference makes non-finite on the stock path, for sequences of
1 to 8 tokens (where PyTorch's CPU attention kernel alone would drop a NaN score row). The
Triton kernels never make an output non-finite that the reference keeps finite, and always
make some non-finite; they compute the diagonal score in closed form, so a NaN phase
does not reach the other oscillators of its own row through it (and omega, which enters
only the differences omega * (t - u) with u < t, reaches no output of a single token,
where the reference's NaN comes from NaN * 0), and they saturate +-inf phases to a point
of the circle (README), so only NaN phases are drawn for them."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fsn_kernels import frustrated_attention
from fsn_kernels.testing import backend_params, make_inputs, to_double

VALUES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _poisoned(B, T, H, D, where, value, b, t, h, d, seed):
    theta, gate, coupling, omega = make_inputs(B, T, H, D, 2, omega="random", seed=seed, device="cpu")
    x = {"theta": theta, "gate": gate, "omega": omega}[where]
    if where == "omega":
        x[h, d] = value
    else:
        x[b, t, h, d] = value
    return theta, gate, coupling, omega


@pytest.mark.parametrize("backend", backend_params())
@settings(max_examples=8)
@given(T=st.integers(1, 8), where=st.sampled_from(["theta", "gate", "omega"]), value=st.sampled_from(list(VALUES)),
       data=st.data())
def test_non_finite_input_poisons_exactly_the_reference_outputs(backend, T, where, value, data):
    if backend == "triton" and where == "theta" and value != "nan":
        value = "nan"  # the kernels' sincos saturates +-inf phases to a point of the circle (README), by design
    B, H, D = 2, 2, 3
    b, t, h, d = (data.draw(st.integers(0, n - 1)) for n in (B, T, H, D))
    theta, gate, coupling, omega = _poisoned(B, T, H, D, where, VALUES[value], b, t, h, d, seed=T)
    out, lse = frustrated_attention(theta, gate, coupling, omega, return_lse=True, backend=backend)
    ref, ref_lse = frustrated_attention(*to_double(theta, gate, coupling, omega), return_lse=True,
                                        backend="reference")
    bad, want = ~torch.isfinite(out), ~torch.isfinite(ref)
    assert want.any(), "the reference must see the non-finite input"
    where_ = f"non-finite outputs at {bad.nonzero().tolist()}, the reference's at {want.nonzero().tolist()}"
    if backend == "triton":
        assert not (bad & ~want).any(), where_
        assert bad.any() or (where == "omega" and T == 1), where_
        return
    assert torch.equal(bad, want), where_
    assert torch.equal(~torch.isfinite(lse), ~torch.isfinite(ref_lse)), "lse rows"


@pytest.mark.parametrize("T", [3, 40])
def test_stock_nan_in_theta_matches_the_reference_pattern_packed(T):
    """Packed sequences: the poison stays inside the token's own sequence."""
    theta, gate, coupling, omega = make_inputs(1, T, 2, 3, 2, omega="random", seed=1, device="cpu")
    theta[0, 1, 1, 2] = math.nan
    cu = torch.tensor([0, 2, T], dtype=torch.int32)
    out = frustrated_attention(theta, gate, coupling, omega, cu_seqlens=cu, backend="stock")
    ref = frustrated_attention(*to_double(theta, gate, coupling, omega), cu_seqlens=cu, backend="reference")
    assert torch.equal(~torch.isfinite(out), ~torch.isfinite(ref))
    assert torch.isfinite(out[0, 2:]).all()
