"""The op's special cases (README, "Special cases") against closed forms, on both backends, and the delay identity."""
import math

import pytest
import torch

from fsn_kernels import frustrated_attention
from fsn_kernels.frustrated_attention.naive import _attention_weights, kuramoto_closed_form
from fsn_kernels.testing import TOLERANCES, assert_close, backend_params, make_inputs

BACKENDS = backend_params()
ATOL, RTOL = TOLERANCES["closed-forms"]
B, T, H, D = 2, 37, 2, 5


def _coupling(NH, **entries):
    """Coupling with the given entries, e.g. K1=1, L1=1, K2=-0.5; everything else 0."""
    c = torch.zeros(H, D, NH, 2, dtype=torch.complex64)
    for key, value in entries.items():
        which, n = (0 if key[0] == "K" else 1), int(key[1:])
        c[:, :, n - 1, which] = value
    return c


def _delayed_sum(attn, theta, fn):
    """sum_{u < t} A[t,u] fn(theta, t, u), (B, T, H, D)."""
    th = theta.double().permute(0, 2, 1, 3)  # (B, H, T, D)
    out = torch.zeros_like(th)
    for t in range(th.shape[2]):
        for u in range(t):
            out[:, :, t] += attn[:, :, t, u, None] * fn(th, t, u)
    return out.permute(0, 2, 1, 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("omega_kind", [None, "random"])
def test_kuramoto(backend, omega_kind):
    theta, gate, _, omega = make_inputs(B, T, H, D, 1, omega=omega_kind)
    out = frustrated_attention(theta, gate, _coupling(1, K1=1.0), omega, backend=backend)
    assert_close(out, kuramoto_closed_form(theta.double(), gate.double(), omega), ATOL, RTOL, "kuramoto")


@pytest.mark.parametrize("backend", BACKENDS)
def test_kuramoto_sakaguchi(backend):
    alpha = 0.7
    theta, gate, _, omega = make_inputs(B, T, H, D, 1)
    coupling = _coupling(1, K1=complex(math.cos(alpha), -math.sin(alpha)))
    out = frustrated_attention(theta, gate, coupling, omega, backend=backend)
    assert_close(out, kuramoto_closed_form(theta.double(), gate.double(), omega, alpha=alpha), ATOL, RTOL, "sakaguchi")


@pytest.mark.parametrize("backend", BACKENDS)
def test_repulsive_daido_second_harmonic(backend):
    theta, gate, _, omega = make_inputs(B, T, H, D, 2)
    out = frustrated_attention(theta, gate, _coupling(2, K2=-0.6), omega, backend=backend)
    attn = _attention_weights(theta.double(), gate.double(), omega)
    th = theta.double().permute(0, 2, 1, 3)
    diff = th[:, :, None, :, :] - th[:, :, :, None, :]  # [t, u] = theta_u - theta_t
    expected = -0.6 * torch.einsum("bhtu,bhtud->bhtd", attn, torch.sin(2 * diff)).permute(0, 2, 1, 3)
    assert_close(out, expected, ATOL, RTOL, "daido")


@pytest.mark.parametrize("backend", BACKENDS)
def test_delay_only_and_its_sakaguchi_identity(backend):
    """L_1 = 1 alone gives sum_{u<t} A sin(theta_{u+1} - theta_t), which equals Sakaguchi
    coupling sin(theta_u - theta_t - alpha_u) with alpha_u = -(theta_{u+1} - theta_u)."""
    theta, gate, _, omega = make_inputs(B, T, H, D, 1)
    out = frustrated_attention(theta, gate, _coupling(1, L1=1.0), omega, backend=backend)
    attn = _attention_weights(theta.double(), gate.double(), omega)
    successor = _delayed_sum(attn, theta, lambda th, t, u: torch.sin(th[:, :, u + 1] - th[:, :, t]))
    alpha = lambda th, u: -(th[:, :, u + 1] - th[:, :, u])  # noqa: E731
    sakaguchi = _delayed_sum(attn, theta, lambda th, t, u: torch.sin(th[:, :, u] - th[:, :, t] - alpha(th, u)))
    assert_close(out, successor, ATOL, RTOL, "delay only")
    assert_close(successor, sakaguchi, 1e-12, 1e-12, "delay identity")
    assert torch.equal(out[:, 0], torch.zeros_like(out[:, 0])), "token 0 has no predecessor to couple through"
