"""Tests for course_lib.schedules.NoiseSchedule.

Every closed form is checked against something derived differently: a step-by-step simulation of the
forward chain x^t = sqrt(alpha_t) x^{t-1} + sqrt(1 - alpha_t) eps, a least-squares regression on simulated
triples, generic Gaussian conditioning on a covariance built numerically, or the paper's formula in numpy.

Statistical checks use |z| < Z = 5 (two-sided false-alarm rate 5.7e-7 per check, under 1e-4 for the whole
file) and fixed seeds, so they are deterministic; a wrong formula moves the z-scores into the tens or hundreds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from course_lib.schedules import NoiseSchedule

Z = 5.0
KINDS = ["linear", "cosine"]


def make(kind: str, T: int) -> NoiseSchedule:
    return getattr(NoiseSchedule, kind)(T)


def simulate_chain(schedule: NoiseSchedule, x0: torch.Tensor, keep, seed: int) -> dict[int, torch.Tensor]:
    """Run x^t = sqrt(alpha_t) x^{t-1} + sqrt(1 - alpha_t) eps one step at a time; keep x^t for t in ``keep``."""
    gen = torch.Generator().manual_seed(seed)
    alphas = schedule.alphas.tolist()
    x = x0.clone()
    out = {0: x0.clone()} if 0 in keep else {}
    for t in range(1, max(keep) + 1):
        x = math.sqrt(alphas[t]) * x + math.sqrt(1 - alphas[t]) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        if t in keep:
            out[t] = x.clone()
    return out


# ====================================================================== alpha_bar against the simulated chain
@pytest.mark.parametrize("kind", KINDS)
def test_alpha_bar_matches_simulated_chain(kind):
    """Mean and variance of the simulated x^t equal sqrt(alpha_bar_t) m and alpha_bar_t s^2 + 1 - alpha_bar_t."""
    T, N = 100, 100_000
    s = make(kind, T)
    gen = torch.Generator().manual_seed(1)
    # column 0: x^0 = 2 (a point mass); column 1: x^0 ~ N(1.5, 0.7^2)
    m = torch.tensor([2.0, 1.5], dtype=torch.float64)
    sd0 = torch.tensor([0.0, 0.7], dtype=torch.float64)
    x0 = m + sd0 * torch.randn(N, 2, generator=gen, dtype=torch.float64)
    ts = [1, 2, 10, 25, 50, 75, 100]
    chain = simulate_chain(s, x0, ts, seed=2)
    for t in ts:
        ab = s.alpha_bars[t]
        want_mean = ab.sqrt() * m
        want_var = ab * sd0**2 + 1 - ab
        got_mean, got_var = chain[t].mean(0), chain[t].var(0)
        z_mean = (got_mean - want_mean) / (want_var / N).sqrt()
        z_var = (got_var - want_var) / (want_var * math.sqrt(2 / (N - 1)))
        assert z_mean.abs().max() < Z, f"t={t}: mean z-scores {z_mean.tolist()}"
        assert z_var.abs().max() < Z, f"t={t}: variance z-scores {z_var.tolist()}"


@pytest.mark.parametrize("kind", KINDS)
def test_q_sample_matches_simulated_chain(kind):
    """q_sample (one call, a different t per row) has the law of the chain at each t (two-sample KS, p > 1e-6)."""
    T, N = 100, 20_000
    s = make(kind, T)
    ts = [1, 10, 50, 100]
    gen = torch.Generator().manual_seed(3)
    x0_chain = 1.5 + 0.7 * torch.randn(N, 1, generator=gen, dtype=torch.float64)
    chain = simulate_chain(s, x0_chain, ts, seed=4)
    x0 = 1.5 + 0.7 * torch.randn(len(ts) * N, 1, generator=gen, dtype=torch.float64)
    t_rows = torch.tensor(ts).repeat_interleave(N)
    xt = s.q_sample(x0, t_rows, generator=gen)
    for i, t in enumerate(ts):
        mine = xt[i * N : (i + 1) * N, 0].numpy()
        p = scipy.stats.ks_2samp(mine, chain[t][:, 0].numpy()).pvalue
        assert p > 1e-6, f"t={t}: KS p-value {p:.2e}"
    # the same with an int t (the broadcast path)
    p = scipy.stats.ks_2samp(s.q_sample(x0[:N], 50, generator=gen)[:, 0].numpy(), chain[50][:, 0].numpy()).pvalue
    assert p > 1e-6


# ====================================================================== a_t, b_t, c_t
@pytest.mark.parametrize("kind", KINDS)
def test_posterior_coefficients_match_regression_on_simulated_triples(kind):
    """Regress simulated x^{t-1} on (1, x^0, x^t): slopes ~ (a_t, b_t), intercept ~ 0, residual variance ~ c_t."""
    T, N = 100, 200_000
    s = make(kind, T)
    gen = torch.Generator().manual_seed(5)
    x0 = 0.5 + 1.2 * torch.randn(N, generator=gen, dtype=torch.float64)
    ts = [2, 10, 50, 100]
    chain = simulate_chain(s, x0, sorted({0} | set(ts) | {t - 1 for t in ts}), seed=6)
    for t in ts:
        X = np.column_stack([np.ones(N), x0.numpy(), chain[t].numpy()])
        y = chain[t - 1].numpy()
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        resid = y - X @ coef
        c_hat = resid @ resid / (N - 3)
        se = np.sqrt(np.diag(c_hat * np.linalg.inv(X.T @ X)))
        a, b, c = (v.item() for v in s.posterior_coefficients(t))
        z = (coef - np.array([0.0, a, b])) / se
        assert np.abs(z).max() < Z, f"t={t}: z-scores of (intercept, a, b) {z}"
        z_c = (c_hat - c) / (c * math.sqrt(2 / (N - 3)))
        assert abs(z_c) < Z, f"t={t}: residual variance {c_hat:.6g} vs c_t {c:.6g} (z={z_c:.1f})"


@pytest.mark.parametrize("kind", KINDS)
def test_posterior_coefficients_match_generic_gaussian_conditioning(kind):
    """Build Cov(x^0, x^{t-1}, x^t) from the chain's linear map and condition numerically, for every t."""
    T = 1000
    s = make(kind, T)
    alphas = s.alphas.numpy()
    # row t: x^t as a linear combination of (x^0, eps_1, ..., eps_T)
    A = np.zeros((T + 1, T + 1))
    A[0, 0] = 1.0
    for t in range(1, T + 1):
        A[t] = np.sqrt(alphas[t]) * A[t - 1]
        A[t, t] = np.sqrt(1 - alphas[t])
    D = np.ones(T + 1)
    D[0] = 1.7**2  # any positive variance of x^0: the conditional law given x^0 does not depend on it
    a, b, c = (v.numpy() for v in s.posterior_coefficients(torch.arange(1, T + 1)))
    for t in range(1, T + 1):
        rows = A[[t - 1, 0, t]]
        cov = (rows * D) @ rows.T
        beta = np.linalg.solve(cov[1:, 1:], cov[1:, 0])  # regression of x^{t-1} on (x^0, x^t)
        resid_var = cov[0, 0] - cov[0, 1:] @ beta
        # atol: the generic solve loses ~1e-11 at t = 1, where x^1 and x^0 are nearly collinear
        np.testing.assert_allclose([a[t - 1], b[t - 1]], beta, rtol=1e-8, atol=1e-9, err_msg=f"t={t}")
        np.testing.assert_allclose(c[t - 1], resid_var, rtol=1e-8, atol=1e-12, err_msg=f"t={t}")


def test_posterior_coefficients_shapes_and_first_step():
    s = NoiseSchedule.linear(50)
    a, b, c = s.posterior_coefficients(1)
    assert a.shape == b.shape == c.shape == ()
    assert all(v.dtype == torch.float64 for v in (a, b, c))
    # alpha_bar_0 = 1: x^0 is known, so x^{t-1} = x^0 exactly
    assert (a.item(), b.item(), c.item()) == (1.0, 0.0, 0.0)
    t = torch.tensor([3, 1, 50])
    a, b, c = s.posterior_coefficients(t)
    assert a.shape == b.shape == c.shape == (3,)
    for i, ti in enumerate(t.tolist()):
        assert torch.equal(torch.stack(s.posterior_coefficients(ti)), torch.stack([a[i], b[i], c[i]]))
    # the posterior is narrower than the forward step's noise
    all_c = s.posterior_coefficients(torch.arange(1, 51))[2]
    assert bool((all_c <= s.betas[1:]).all())


# ====================================================================== the named schedules
def test_linear_is_ddpm_at_T_1000():
    s = NoiseSchedule.linear(1000)
    assert s.T == 1000 and s.name == "linear"
    assert s.betas.shape == s.alphas.shape == s.alpha_bars.shape == (1001,)
    assert s.betas.dtype == torch.float64
    assert (s.betas[0].item(), s.alphas[0].item(), s.alpha_bars[0].item()) == (0.0, 1.0, 1.0)
    assert s.betas[1].item() == pytest.approx(1e-4, rel=1e-12)
    assert s.betas[1000].item() == pytest.approx(0.02, rel=1e-12)
    np.testing.assert_allclose(s.betas[1:].numpy(), np.linspace(1e-4, 0.02, 1000), rtol=1e-12)
    np.testing.assert_allclose(s.alphas.numpy(), 1 - s.betas.numpy(), rtol=0, atol=1e-15)
    # DDPM's well-known terminal value, from the product of (1 - beta) in numpy
    assert s.alpha_bars[-1].item() == pytest.approx(np.prod(1 - np.linspace(1e-4, 0.02, 1000)), rel=1e-10)
    assert s.alpha_bars[-1].item() == pytest.approx(4.04e-5, rel=1e-2)


@pytest.mark.parametrize("T", [25, 50, 200])
def test_linear_scales_default_betas_with_T(T):
    s = NoiseSchedule.linear(T)
    np.testing.assert_allclose(s.betas[1:].numpy(), np.linspace(0.1 / T, 20 / T, T), rtol=1e-12)
    assert 0 < s.alpha_bars[-1].item() < 4.1e-5
    custom = NoiseSchedule.linear(T, beta_start=1e-3, beta_end=0.05)
    np.testing.assert_allclose(custom.betas[1:].numpy(), np.linspace(1e-3, 0.05, T), rtol=1e-12)


@pytest.mark.parametrize("T", [10, 100, 1000])
def test_cosine_matches_the_paper(T):
    """Nichol & Dhariwal (2021), eq. 17 and the clipping at 0.999, evaluated independently in numpy."""
    s = NoiseSchedule.cosine(T)
    assert s.name == "cosine" and s.T == T
    steps = np.arange(T + 1) / T
    f = np.cos((steps + 0.008) / 1.008 * np.pi / 2) ** 2
    alpha_bar_paper = f / f[0]
    betas = np.minimum(1 - alpha_bar_paper[1:] / alpha_bar_paper[:-1], 0.999)
    np.testing.assert_allclose(s.betas[1:].numpy(), betas, rtol=1e-10, atol=1e-15)
    # unclipped steps: alpha_bars is the paper's f(t) / f(0) itself
    np.testing.assert_allclose(s.alpha_bars[:T].numpy(), alpha_bar_paper[:T], rtol=1e-10)
    np.testing.assert_allclose(s.alpha_bars.numpy(), np.cumprod(np.r_[1.0, 1 - betas]), rtol=1e-10)
    assert bool((torch.diff(s.alpha_bars) < 0).all()), "alpha_bars must decrease strictly"
    assert s.alpha_bars[-1].item() < 1e-4  # 2.4e-5 at T = 10, 2.4e-9 at T = 1000
    assert s.betas[-1].item() == pytest.approx(0.999)


def test_custom_betas_and_snr():
    s = NoiseSchedule([0.1, 0.2, 0.5])
    assert s.T == 3 and s.name == "custom"
    np.testing.assert_allclose(s.alpha_bars.numpy(), [1.0, 0.9, 0.72, 0.36], rtol=1e-15)
    snr = s.snr
    assert snr.shape == (4,) and math.isinf(snr[0].item())
    np.testing.assert_allclose(snr[1:].numpy(), [9.0, 0.72 / 0.28, 0.36 / 0.64], rtol=1e-12)
    assert "custom" in repr(s) and "T=3" in repr(s)
    # the schedule keeps its own copy
    betas = torch.tensor([0.1, 0.2], dtype=torch.float64)
    s2 = NoiseSchedule(betas)
    betas[0] = 0.9
    assert s2.betas[1].item() == pytest.approx(0.1)


# ====================================================================== q_sample mechanics
def test_q_sample_keeps_dtype_and_shape():
    s = NoiseSchedule.linear(50)
    gen = torch.Generator().manual_seed(0)
    x32 = torch.randn(8, 1, 4, 4, generator=gen)
    t = torch.randint(0, 51, (8,), generator=gen)
    out = s.q_sample(x32, t, generator=gen)
    assert out.dtype == torch.float32 and out.shape == x32.shape and out.device == x32.device
    out64, noise = s.q_sample(x32.double(), 7, generator=gen, return_noise=True)
    assert out64.dtype == torch.float64 and noise.dtype == torch.float64 and noise.shape == x32.shape
    # non-tensor input becomes float64
    assert s.q_sample(np.ones((3, 2)), 5).dtype == torch.float64
    assert s.q_sample([[1, 2]], 5).dtype == torch.float64


def test_q_sample_t0_returns_x0_and_t_T_is_nearly_noise():
    s = NoiseSchedule.linear(50)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, generator=gen)
    assert torch.equal(s.q_sample(x0, 0, generator=gen), x0)
    rows = s.q_sample(x0, torch.tensor([0, 3, 0, 3, 0, 3]), generator=gen)
    assert torch.equal(rows[::2], x0[::2]) and not torch.equal(rows[1::2], x0[1::2])
    noise = torch.randn(6, 3, generator=gen)
    # sqrt(alpha_bar_T) = 0.0028: almost nothing of x^0 is left
    assert torch.allclose(s.q_sample(x0, 50, noise=noise), noise, atol=0.01)


def test_q_sample_uses_the_given_noise():
    """With noise given, x^t is r_eps * noise + r_x * x0 with r_x^2 = alpha_bar_t (checked by simulation above)
    and r_x^2 + r_eps^2 = 1 (variance preserving)."""
    s = NoiseSchedule.cosine(100)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    noise = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    t = 40
    pure_noise = s.q_sample(torch.zeros_like(x0), t, noise=noise)
    pure_signal = s.q_sample(x0, t, noise=torch.zeros_like(x0))
    r_eps, r_x = pure_noise / noise, pure_signal / x0
    assert torch.allclose(r_eps, r_eps.flatten()[0]) and torch.allclose(r_x, r_x.flatten()[0])
    r_eps, r_x = r_eps.flatten()[0].item(), r_x.flatten()[0].item()
    assert r_x**2 == pytest.approx(s.alpha_bars[t].item(), rel=1e-12)
    assert r_x**2 + r_eps**2 == pytest.approx(1.0, rel=1e-12)
    xt, returned = s.q_sample(x0, t, noise=noise, return_noise=True)
    assert torch.equal(returned, noise)
    assert torch.allclose(xt, pure_noise + pure_signal, rtol=1e-12, atol=1e-12)
    # float32 noise for float64 data is cast to the data's dtype
    assert s.q_sample(x0, t, noise=noise.float()).dtype == torch.float64


def test_q_sample_generator_reproducible():
    s = NoiseSchedule.linear(50)
    x0 = torch.ones(4, 3)
    a = s.q_sample(x0, 10, generator=torch.Generator().manual_seed(7))
    b = s.q_sample(x0, 10, generator=torch.Generator().manual_seed(7))
    c = s.q_sample(x0, 10, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_q_sample_keeps_gradient_to_x0():
    s = NoiseSchedule.linear(50)
    x0 = torch.randn(3, 2, requires_grad=True)
    s.q_sample(x0, 20).sum().backward()
    assert torch.allclose(x0.grad, s.alpha_bars[20].sqrt().float().expand(3, 2))


# ====================================================================== bad input
@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: NoiseSchedule.linear(0), ValueError, r"^T: .*positive integer"),
        (lambda: NoiseSchedule.linear(2.5), TypeError, r"^T: .*positive integer.*float"),
        (lambda: NoiseSchedule.cosine("10"), TypeError, r"^T: "),
        (lambda: NoiseSchedule.linear(10), ValueError, r"^beta_end: .*\(0, 1\).*got 2"),
        (lambda: NoiseSchedule.linear(100, beta_start=-0.1), ValueError, r"^beta_start: .*> 0"),
        (lambda: NoiseSchedule.cosine(100, max_beta=1.0), ValueError, r"^max_beta: "),
        (lambda: NoiseSchedule([0.1, 1.0]), ValueError, r"^betas: .*\(0, 1\).*1\.0 at index 1"),
        (lambda: NoiseSchedule([0.0, 0.1]), ValueError, r"^betas: .*beta_0 = 0 is added"),
        (lambda: NoiseSchedule([0.1, -0.2]), ValueError, r"^betas: .*\(0, 1\)"),
        (lambda: NoiseSchedule([0.1, float("nan")]), ValueError, r"^betas: .*finite"),
        (lambda: NoiseSchedule([[0.1, 0.2]]), ValueError, r"^betas: .*1 dimension"),
        (lambda: NoiseSchedule([]), ValueError, r"^betas: "),
        (lambda: NoiseSchedule("0.1"), TypeError, r"^betas: "),
    ],
    ids=[
        "T=0",
        "T-float",
        "T-str",
        "small-T-scaled-default",
        "beta_start-negative",
        "max_beta-1",
        "beta-1",
        "beta0-included",
        "beta-negative",
        "beta-nan",
        "betas-2d",
        "betas-empty",
        "betas-str",
    ],
)
def test_bad_schedule_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


S50 = NoiseSchedule.linear(50)
X = torch.zeros(4, 2)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: S50.posterior_coefficients(0), ValueError, r"^t: .*1\.\.50.*got 0"),
        (lambda: S50.posterior_coefficients(51), ValueError, r"^t: .*1\.\.50.*got 51"),
        (lambda: S50.posterior_coefficients(3.0), TypeError, r"^t: .*float"),
        (lambda: S50.posterior_coefficients(torch.tensor([1.0, 2.0])), TypeError, r"^t: .*integer"),
        (lambda: S50.posterior_coefficients(torch.tensor([1, 0])), ValueError, r"^t: .*got 0"),
        (lambda: S50.posterior_coefficients(True), TypeError, r"^t: "),
        (lambda: S50.q_sample(X, 51), ValueError, r"^t: .*0\.\.50.*got 51"),
        (lambda: S50.q_sample(X, -1), ValueError, r"^t: .*0\.\.50"),
        (lambda: S50.q_sample(X, 2.0), TypeError, r"^t: .*float"),
        (lambda: S50.q_sample(X, torch.tensor([1, 2, 3])), ValueError, r"^t: .*shape \(4,\).*got shape \(3,\)"),
        (lambda: S50.q_sample(X, torch.ones(4, 1, dtype=torch.long)), ValueError, r"^t: .*shape \(4,\)"),
        (lambda: S50.q_sample(X, 3, noise=torch.zeros(4, 3)), ValueError, r"^noise: .*\(4, 2\).*\(4, 3\)"),
        (lambda: S50.q_sample(X, 3, noise=torch.full((4, 2), float("inf"))), ValueError, r"^noise: .*finite"),
        (lambda: S50.q_sample(torch.tensor([[0.0, float("nan")]]), 3), ValueError, r"^x0: .*finite"),
        (lambda: S50.q_sample(torch.tensor(1.0), 3), ValueError, r"^x0: .*\(n, \.\.\.\)"),
        (lambda: S50.q_sample("x", 3), TypeError, r"^x0: "),
    ],
    ids=[
        "coef-t=0",
        "coef-t=T+1",
        "coef-float-t",
        "coef-float-tensor-t",
        "coef-tensor-with-0",
        "coef-bool-t",
        "q-t=T+1",
        "q-t-negative",
        "q-float-t",
        "q-t-wrong-length",
        "q-t-2d",
        "q-noise-shape",
        "q-noise-inf",
        "q-x0-nan",
        "q-x0-0d",
        "q-x0-str",
    ],
)
def test_bad_timestep_and_sample_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
