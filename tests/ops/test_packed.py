"""Packed variable-length sequences (cu_seqlens): the op on a packed batch equals the op
on each sequence separately (Triton: bit for bit, delay path and boundaries included;
torch: the float64 reference), and bad boundaries are refused before anything runs."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fsn_kernels import frustrated_attention
from fsn_kernels.frustrated_attention.backward import attention_bwd
from fsn_kernels.frustrated_attention.forward import attention_fwd
from fsn_kernels.testing import (
    TOLERANCES,
    assert_grads_close,
    backend_params,
    make_inputs,
    nan_poisoned_allocations,
    needs_triton,
    output_and_grads,
    reference_output_and_grads,
)


def _cu(lengths):
    return torch.tensor([0] + torch.tensor(lengths, dtype=torch.int64).cumsum(0).tolist(), dtype=torch.int32)


def _launch(theta, gate, coupling, omega, grad_out, cu=None, max_len=None):
    """Forward and backward launchers with 16-row tiles: [out, d theta, d gate, d coupling real]."""
    c_real = torch.view_as_real(coupling).contiguous()
    kw = dict(block_m=16, block_n=16, cu_seqlens=cu, max_seqlen=max_len)
    with nan_poisoned_allocations():
        out, lse, order = attention_fwd(theta, gate, c_real, omega, 0.4, **kw)
        grads = attention_bwd(grad_out, theta, gate, c_real, omega, out, lse, order, 0.4, **kw)
    return [out, *grads]


lengths_strategy = st.lists(st.integers(0, 40), min_size=1, max_size=5).filter(lambda ls: sum(ls) > 0)


@needs_triton()
@given(lengths=lengths_strategy, omega=st.sampled_from(["random", None]), seed=st.integers(0, 2**16))
def test_packed_equals_separate_sequences_bit_for_bit(lengths, omega, seed):
    """Boundaries fall anywhere in a 16-row tile; length-0 and length-1 sequences."""
    theta, gate, coupling, om = make_inputs(1, sum(lengths), 2, 5, 3, omega=omega, seed=seed)
    grad_out = torch.randn(theta.shape, generator=torch.Generator().manual_seed(seed))
    cu = _cu(lengths)
    packed = _launch(theta, gate, coupling, om, grad_out, cu, max(lengths))
    d_coupling = torch.zeros_like(packed[3])
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if a == b:
            continue
        alone = _launch(theta[:, a:b], gate[:, a:b], coupling, om, grad_out[:, a:b])
        for name, x, y in zip(("out", "dtheta", "dgate"), packed[:3], alone[:3]):
            assert torch.equal(x[:, a:b], y), f"{name} of sequence [{a}, {b}) differs from its own run"
        d_coupling += alone[3]
    # coupling partials are summed over token blocks that now span sequences: rounding only
    torch.testing.assert_close(packed[3], d_coupling, atol=TOLERANCES["packing"].atol, rtol=TOLERANCES["packing"].rtol)


@pytest.mark.parametrize("backend", backend_params())
def test_public_api_packed_matches_float64_reference_per_sequence(backend):
    lengths = [7, 0, 1, 33, 18]
    theta, gate, coupling, omega = make_inputs(1, sum(lengths), 2, 6, 2, omega="rope")
    grad_out = torch.randn_like(theta)
    cu = _cu(lengths)
    got = output_and_grads(lambda *a: frustrated_attention(*a, cu_seqlens=cu, backend=backend),
                           theta, gate, coupling, omega, grad_out)
    want = [torch.zeros_like(x, dtype=torch.complex128 if x.is_complex() else torch.float64) for x in got]
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if a == b:
            continue
        ref = reference_output_and_grads(theta[:, a:b], gate[:, a:b], coupling, omega, grad_out[:, a:b])
        for i in range(3):
            want[i][:, a:b] = ref[i]
        want[3] += ref[3]
    assert_grads_close(got, want, *TOLERANCES["backward"])


@pytest.mark.parametrize("backend", backend_params())
def test_delay_never_crosses_a_sequence_end(backend):
    """Changing the first token of sequence 2 must not move any output of sequence 1 (whose
    last token has no successor), bit for bit."""
    theta, gate, coupling, omega = make_inputs(1, 30, 2, 4, 2)
    coupling[..., 0] = 0  # the delay path alone
    cu = _cu([13, 17])
    out = frustrated_attention(theta, gate, coupling, omega, cu_seqlens=cu, backend=backend)
    theta2 = theta.clone()
    theta2[:, 13] += 1.0
    out2 = frustrated_attention(theta2, gate, coupling, omega, cu_seqlens=cu, backend=backend)
    assert torch.equal(out[:, :13], out2[:, :13])
    assert not torch.equal(out[:, 13:], out2[:, 13:])


def _good():
    theta, gate, coupling, omega = make_inputs(1, 10, 2, 4, 2)
    return dict(theta=theta, gate=gate, coupling=coupling, omega=omega)


@pytest.mark.parametrize("cu,word", [
    (torch.tensor([0, 4, 10], dtype=torch.int64), "int32"),
    ([0, 4, 10], "int32 torch.Tensor"),
    (torch.tensor([1, 4, 10], dtype=torch.int32), "start at 0"),
    (torch.tensor([0, 6, 4, 10], dtype=torch.int32), "non-decreasing"),
    (torch.tensor([0, 4, 9], dtype=torch.int32), "end at T = 10"),
    (torch.tensor([[0, 10]], dtype=torch.int32), "shape"),
])
@pytest.mark.parametrize("backend", backend_params())
def test_bad_cu_seqlens_is_refused(cu, word, backend):
    with pytest.raises((ValueError, TypeError), match=word):
        frustrated_attention(**_good(), cu_seqlens=cu, backend=backend)


def test_packed_batch_must_have_one_row():
    theta, gate, coupling, omega = make_inputs(2, 10, 2, 4, 2)
    with pytest.raises(ValueError, match="B must be 1"):
        frustrated_attention(theta, gate, coupling, omega, cu_seqlens=torch.tensor([0, 10], dtype=torch.int32))
