"""Tests for the exact linear-Gaussian VAE in course_lib.vae (and the Gaussian KL helpers).

Each closed form is checked against an independent route: scipy's multivariate normal, numerical
quadrature over z, conditioning on the stacked (z, x) covariance, torch.distributions' KL, or Monte Carlo.
Statistical checks use |z| < Z = 5 (false-alarm rate 5.7e-7 per check) with fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from course_lib.vae import LinearGaussianModel, gaussian_kl, gaussian_kl_diag

Z = 5.0
KEYS = {"log_px", "elbo", "reconstruction", "kl_prior", "kl_posterior"}


def random_model(d: int, k: int, seed: int, sigma: float = 0.7) -> LinearGaussianModel:
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(d, k, generator=gen, dtype=torch.float64)
    b = torch.randn(d, generator=gen, dtype=torch.float64)
    return LinearGaussianModel(W, b, sigma)


def random_spd(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    A = torch.randn(n, k, k, generator=gen, dtype=torch.float64)
    return 0.3 * A @ A.transpose(-1, -2) + 0.1 * torch.eye(k, dtype=torch.float64)


def random_q(model: LinearGaussianModel, x: torch.Tensor, seed: int):
    """A q(z|x) that is deliberately not the posterior: shifted mean, random full covariance per row."""
    gen = torch.Generator().manual_seed(seed)
    mean, _ = model.posterior(x)
    q_mean = mean + 0.8 * torch.randn(mean.shape, generator=gen, dtype=torch.float64)
    return q_mean, random_spd(x.shape[0], model.k, gen)


@pytest.fixture
def model():
    return random_model(d=3, k=2, seed=0)


@pytest.fixture
def x(model):
    xs = model.sample(6, generator=torch.Generator().manual_seed(1))
    return torch.cat([xs, torch.tensor([[4.0, -5.0, 6.0]], dtype=torch.float64)])  # plus an outlier


# ====================================================================== exact densities
def test_log_marginal_matches_scipy(model, x):
    W, b, sigma = model.W.numpy(), model.b.numpy(), model.sigma
    want = scipy.stats.multivariate_normal(b, W @ W.T + sigma**2 * np.eye(3)).logpdf(x.numpy())
    got = model.log_marginal(x)
    assert got.shape == (7,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-11)


def test_log_marginal_matches_scipy_larger():
    m = random_model(d=8, k=3, seed=2, sigma=0.3)
    x = m.sample(20, generator=torch.Generator().manual_seed(3))
    W = m.W.numpy()
    want = scipy.stats.multivariate_normal(m.b.numpy(), W @ W.T + 0.09 * np.eye(8)).logpdf(x.numpy())
    np.testing.assert_allclose(m.log_marginal(x).numpy(), want, rtol=1e-11)


def _quadrature(model: LinearGaussianModel, x: np.ndarray):
    """p(x), E[z|x], Var[z|x] for k = 1 by integrating p(z) p(x|z) over z (scipy.integrate.quad)."""
    w, b, s = model.W.numpy()[:, 0], model.b.numpy(), model.sigma

    def log_joint(z):
        return scipy.stats.norm.logpdf(z) + scipy.stats.norm.logpdf(x, w * z + b, s).sum()

    # factor out the peak so quad works with O(1) numbers even for outliers
    z_hat = scipy.optimize.minimize_scalar(lambda z: -log_joint(z)).x
    peak = log_joint(z_hat)

    def integral(g):
        val, _ = scipy.integrate.quad(
            lambda z: g(z) * math.exp(log_joint(z) - peak),
            z_hat - 30,
            z_hat + 30,
            points=[z_hat],
            limit=200,
            epsabs=0,
            epsrel=1e-12,
        )
        return val

    mass = integral(lambda z: 1.0)
    mean = integral(lambda z: z) / mass
    var = integral(lambda z: (z - mean) ** 2) / mass
    return peak + math.log(mass), mean, var


@pytest.mark.parametrize("d", [1, 2])
def test_log_marginal_and_posterior_match_quadrature(d):
    m = random_model(d=d, k=1, seed=10 + d, sigma=0.6)
    x = torch.cat([m.sample(3, generator=torch.Generator().manual_seed(4)), torch.full((1, d), 3.5)])
    log_px = m.log_marginal(x)
    mean, cov = m.posterior(x)
    assert mean.shape == (4, 1) and cov.shape == (1, 1)
    for i in range(4):
        q_log_px, q_mean, q_var = _quadrature(m, x[i].numpy())
        assert log_px[i].item() == pytest.approx(q_log_px, rel=1e-9, abs=1e-9)
        assert mean[i, 0].item() == pytest.approx(q_mean, rel=1e-8, abs=1e-9)
        assert cov[0, 0].item() == pytest.approx(q_var, rel=1e-8)


def test_posterior_matches_joint_gaussian_conditioning(model, x):
    """Condition the stacked (z, x) Gaussian: mean = C_zx C_xx^-1 (x - b), cov = I - C_zx C_xx^-1 C_xz."""
    W, b, s2 = model.W.numpy(), model.b.numpy(), model.sigma**2
    C_zx = W.T  # Cov(z, x) = Cov(z, W z) = W'
    C_xx = W @ W.T + s2 * np.eye(3)
    gain = np.linalg.solve(C_xx, C_zx.T).T
    want_mean = (x.numpy() - b) @ gain.T
    want_cov = np.eye(2) - gain @ C_zx.T
    mean, cov = model.posterior(x)
    np.testing.assert_allclose(mean.numpy(), want_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), want_cov, rtol=1e-10, atol=1e-12)
    assert torch.equal(cov, cov.T)


def test_decoder_log_prob_matches_scipy(model, x):
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(7, 2, generator=gen, dtype=torch.float64)
    W, b = model.W.numpy(), model.b.numpy()
    cov = model.sigma**2 * np.eye(3)
    want = [scipy.stats.multivariate_normal(W @ z[i].numpy() + b, cov).logpdf(x[i].numpy()) for i in range(7)]
    got = model.decoder_log_prob(x, z)
    assert got.shape == (7,)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    zm = torch.randn(7, 4, 2, generator=gen, dtype=torch.float64)
    got = model.decoder_log_prob(x, zm)
    assert got.shape == (7, 4)
    for j in range(4):
        np.testing.assert_allclose(got[:, j].numpy(), model.decoder_log_prob(x, zm[:, j]).numpy(), rtol=1e-14)
    assert got[2, 3].item() == pytest.approx(
        scipy.stats.multivariate_normal(W @ zm[2, 3].numpy() + b, cov).logpdf(x[2].numpy()), rel=1e-12
    )


def test_sample_has_the_model_law(model):
    N = 200_000
    x, z = model.sample(N, generator=torch.Generator().manual_seed(6), return_z=True)
    assert x.shape == (N, 3) and z.shape == (N, 2) and x.dtype == torch.float64
    C = (model.W @ model.W.T + model.sigma**2 * torch.eye(3, dtype=torch.float64)).numpy()
    z_mean = (x.mean(0).numpy() - model.b.numpy()) / np.sqrt(np.diag(C) / N)
    emp = np.cov(x.numpy().T)
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C**2) / N)  # sd of a Gaussian sample covariance entry
    assert np.abs(z_mean).max() < Z
    assert np.abs((emp - C) / se).max() < Z
    # the returned z are the latents that produced x: the residual is N(0, sigma^2 I) and independent of z
    resid = (x - z @ model.W.T - model.b).numpy()
    assert np.abs(resid.mean(0) / (model.sigma / math.sqrt(N))).max() < Z
    assert np.abs((resid.var(0) - model.sigma**2) / (model.sigma**2 * math.sqrt(2 / N))).max() < Z
    cross = resid.T @ z.numpy() / N  # sd of each entry: sigma / sqrt(N)
    assert np.abs(cross / (model.sigma / math.sqrt(N))).max() < Z
    # a generator makes it reproducible
    a = model.sample(3, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, model.sample(3, generator=torch.Generator().manual_seed(9)))


# ====================================================================== ELBO terms
def test_elbo_identities_for_an_arbitrary_q(model, x):
    q_mean, q_cov = random_q(model, x, seed=7)
    terms = model.elbo_terms(x, q_mean, q_cov)
    assert set(terms) == KEYS
    for key, v in terms.items():
        assert v.shape == (7,) and v.dtype == torch.float64, key
    torch.testing.assert_close(terms["log_px"], terms["elbo"] + terms["kl_posterior"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(terms["elbo"], terms["reconstruction"] - terms["kl_prior"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms["log_px"], model.log_marginal(x))
    assert bool((terms["kl_prior"] > 0).all()) and bool((terms["kl_posterior"] > 0).all())
    assert bool((terms["elbo"] < terms["log_px"]).all())


def test_elbo_is_tight_at_the_exact_posterior(model, x):
    mean, cov = model.posterior(x)
    terms = model.elbo_terms(x, mean, cov)
    torch.testing.assert_close(terms["kl_posterior"], torch.zeros(7, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(terms["elbo"], terms["log_px"], rtol=1e-12, atol=1e-10)
    # the same cov given per row, and a single mean broadcast to every row
    per_row = model.elbo_terms(x, mean, cov.expand(7, 2, 2))
    torch.testing.assert_close(per_row["elbo"], terms["elbo"])
    one = model.elbo_terms(x, mean[0], cov)
    torch.testing.assert_close(one["elbo"][0], terms["elbo"][0])
    assert bool((one["kl_posterior"][1:] > 0).all())


def test_kl_terms_match_torch_distributions(model, x):
    q_mean, q_cov = random_q(model, x, seed=8)
    terms = model.elbo_terms(x, q_mean, q_cov)
    q = MultivariateNormal(q_mean, covariance_matrix=q_cov)
    prior = MultivariateNormal(torch.zeros(2, dtype=torch.float64), covariance_matrix=torch.eye(2, dtype=torch.float64))
    mean, cov = model.posterior(x)
    post = MultivariateNormal(mean, covariance_matrix=cov)
    torch.testing.assert_close(terms["kl_prior"], kl_divergence(q, prior), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(terms["kl_posterior"], kl_divergence(q, post), rtol=1e-10, atol=1e-12)


def test_reconstruction_matches_monte_carlo(model, x):
    q_mean, q_cov = random_q(model, x, seed=9)
    M = 50_000
    torch.manual_seed(10)  # MultivariateNormal.sample takes no generator
    z = MultivariateNormal(q_mean, covariance_matrix=q_cov).sample((M,)).transpose(0, 1)  # (n, M, k)
    values = model.decoder_log_prob(x, z)
    mc, se = values.mean(1), values.std(1) / math.sqrt(M)
    exact = model.elbo_terms(x, q_mean, q_cov)["reconstruction"]
    assert ((mc - exact) / se).abs().max() < Z


def test_elbo_monte_carlo_agrees_with_the_exact_elbo(model, x):
    q_mean, q_cov = random_q(model, x, seed=11)
    est, se = model.elbo_monte_carlo(x, q_mean, q_cov, n_samples=4000, generator=torch.Generator().manual_seed(12))
    assert est.shape == se.shape == (7,)
    exact = model.elbo_terms(x, q_mean, q_cov)["elbo"]
    assert bool((se > 0).all())
    assert ((est - exact) / se).abs().max() < Z
    # q_cov shared by all rows
    est, se = model.elbo_monte_carlo(x, q_mean, q_cov[0], 4000, generator=torch.Generator().manual_seed(13))
    exact = model.elbo_terms(x, q_mean, q_cov[0])["elbo"]
    assert ((est - exact) / se).abs().max() < Z


def test_elbo_monte_carlo_has_zero_variance_at_the_exact_posterior(model, x):
    """With q = p(z|x), log p(x|z) + log p(z) - log q(z|x) = log p(x) for every z."""
    mean, cov = model.posterior(x)
    est, se = model.elbo_monte_carlo(x, mean, cov, n_samples=10, generator=torch.Generator().manual_seed(14))
    torch.testing.assert_close(est, model.log_marginal(x), rtol=1e-10, atol=1e-10)
    assert se.max() < 1e-10


def test_elbo_monte_carlo_gradient_matches_finite_differences_of_the_exact_elbo(model, x):
    """Reparameterisation: the autograd gradient of the estimate (mean over R independent runs) equals the
    finite-difference gradient of the exact ELBO in q_mean and along symmetric directions of q_cov."""
    q_mean, q_cov = random_q(model, x, seed=15)
    gen = torch.Generator().manual_seed(16)
    R = 40
    grads_m, grads_S = [], []
    for _ in range(R):
        m = q_mean.clone().requires_grad_(True)
        S = q_cov.clone().requires_grad_(True)
        est, _ = model.elbo_monte_carlo(x, m, S, n_samples=200, generator=gen)
        est.sum().backward()
        grads_m.append(m.grad)
        grads_S.append(S.grad)
    gm, gS = torch.stack(grads_m), torch.stack(grads_S)

    def exact(m, S):
        return model.elbo_terms(x, m, S)["elbo"].sum().item()

    h = 1e-5
    k = model.k
    for j in range(k):
        fd = []
        for i in range(7):
            step = torch.zeros_like(q_mean)
            step[i, j] = h
            fd.append((exact(q_mean + step, q_cov) - exact(q_mean - step, q_cov)) / (2 * h))
        mc, se = gm[:, :, j].mean(0), gm[:, :, j].std(0) / math.sqrt(R)
        assert ((mc - torch.tensor(fd, dtype=torch.float64)) / (se + 1e-12)).abs().max() < Z, f"q_mean[:, {j}]"
    for a in range(k):
        for c in range(a, k):
            D = torch.zeros(k, k, dtype=torch.float64)
            D[a, c] = D[c, a] = 1.0
            fd = []
            for i in range(7):
                step = torch.zeros_like(q_cov)
                step[i] = h * D
                fd.append((exact(q_mean, q_cov + step) - exact(q_mean, q_cov - step)) / (2 * h))
            directional = (gS * D).sum((-2, -1))  # (R, n)
            mc, se = directional.mean(0), directional.std(0) / math.sqrt(R)
            assert ((mc - torch.tensor(fd, dtype=torch.float64)) / (se + 1e-12)).abs().max() < Z, f"q_cov[{a},{c}]"


def test_elbo_terms_are_differentiable(model, x):
    q_mean, q_cov = random_q(model, x, seed=17)
    m = q_mean.clone().requires_grad_(True)
    model.elbo_terms(x, m, q_cov)["elbo"].sum().backward()
    assert m.grad is not None and bool(torch.isfinite(m.grad).all())


# ====================================================================== the KL helpers
def test_gaussian_kl_matches_torch_and_is_zero_on_equal_arguments():
    gen = torch.Generator().manual_seed(18)
    mq, mp = (torch.randn(5, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    Sq, Sp = random_spd(5, 3, gen), random_spd(5, 3, gen)
    got = gaussian_kl(mq, Sq, mp, Sp)
    want = kl_divergence(MultivariateNormal(mq, Sq), MultivariateNormal(mp, Sp))
    assert got.shape == (5,)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert bool((got > 0).all())
    torch.testing.assert_close(gaussian_kl(mq, Sq, mq, Sq), torch.zeros(5, dtype=torch.float64), atol=1e-12, rtol=0)
    # broadcasting: one p for every q; a single pair gives a 0-d result
    torch.testing.assert_close(gaussian_kl(mq, Sq, mp[0], Sp[0]), gaussian_kl(mq, Sq, mp[:1].expand(5, 3), Sp[:1]))
    assert gaussian_kl(mq[0], Sq[0], mp[0], Sp[0]).shape == ()


def test_gaussian_kl_diag():
    gen = torch.Generator().manual_seed(19)
    mu = torch.randn(4, 3, generator=gen)
    log_sigma = 0.5 * torch.randn(4, 3, generator=gen)
    got = gaussian_kl_diag(mu, log_sigma)
    assert got.shape == (4,) and got.dtype == torch.float32
    want = kl_divergence(Normal(mu, log_sigma.exp()), Normal(torch.zeros(()), torch.ones(()))).sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    full = gaussian_kl(mu.double(), torch.diag_embed(torch.exp(2 * log_sigma.double())), torch.zeros(3), torch.eye(3))
    torch.testing.assert_close(got.double(), full, rtol=1e-5, atol=1e-6)
    assert gaussian_kl_diag(torch.zeros(2, 5), torch.zeros(2, 5)).abs().max() == 0
    # gradients reach both encoder outputs
    mu.requires_grad_(True)
    log_sigma.requires_grad_(True)
    gaussian_kl_diag(mu, log_sigma).sum().backward()
    torch.testing.assert_close(mu.grad, mu.detach())  # d/dmu (mu^2 / 2) = mu
    torch.testing.assert_close(log_sigma.grad, torch.exp(2 * log_sigma.detach()) - 1)


# ====================================================================== bad input
M = random_model(d=3, k=2, seed=0)
X = torch.zeros(4, 3, dtype=torch.float64)
QM = torch.zeros(4, 2, dtype=torch.float64)
QS = torch.eye(2, dtype=torch.float64)
NAN_X = torch.tensor([[0.0, float("nan"), 0.0]])


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: LinearGaussianModel(torch.ones(3), torch.zeros(3), 1.0), ValueError, r"^W: .*2 dimension"),
        (lambda: LinearGaussianModel(torch.ones(3, 2, 1), torch.zeros(3), 1.0), ValueError, r"^W: .*2 dimension"),
        (lambda: LinearGaussianModel(torch.ones(3, 0), torch.zeros(3), 1.0), ValueError, r"^W: .*d, k >= 1"),
        (lambda: LinearGaussianModel([[1.0, float("inf")]], [0.0], 1.0), ValueError, r"^W: .*finite"),
        (lambda: LinearGaussianModel(torch.ones(3, 2), torch.zeros(2), 1.0), ValueError, r"^b: .*\(3,\).*\(2,\)"),
        (lambda: LinearGaussianModel(torch.ones(3, 2), torch.zeros(3), 0.0), ValueError, r"^sigma: .*> 0"),
        (lambda: LinearGaussianModel(torch.ones(3, 2), torch.zeros(3), -1.0), ValueError, r"^sigma: .*> 0"),
        (lambda: LinearGaussianModel(torch.ones(3, 2), torch.zeros(3), float("nan")), ValueError, r"^sigma: "),
        (lambda: LinearGaussianModel(torch.ones(3, 2), torch.zeros(3), "1"), TypeError, r"^sigma: "),
        (lambda: M.log_marginal(torch.zeros(4, 2)), ValueError, r"^x: .*\(n, 3\).*\(4, 2\)"),
        (lambda: M.log_marginal(torch.zeros(3)), ValueError, r"^x: .*\(n, 3\)"),
        (lambda: M.log_marginal(NAN_X), ValueError, r"^x: .*finite"),
        (lambda: M.posterior(torch.full((1, 3), float("inf"))), ValueError, r"^x: .*finite"),
        (lambda: M.sample(0), ValueError, r"^n: .*>= 1"),
        (lambda: M.sample(2.0), TypeError, r"^n: "),
        (lambda: M.decoder_log_prob(X, torch.zeros(4, 3)), ValueError, r"^z: .*\(4, 2\)"),
        (lambda: M.decoder_log_prob(X, torch.zeros(5, 2)), ValueError, r"^z: .*\(4, 2\)"),
        (lambda: M.decoder_log_prob(X, torch.zeros(2)), ValueError, r"^z: "),
        (lambda: M.elbo_terms(X, torch.zeros(4, 3), QS), ValueError, r"^q_mean: .*\(4, 2\) or \(2,\)"),
        (lambda: M.elbo_terms(X, torch.zeros(5, 2), QS), ValueError, r"^q_mean: "),
        (lambda: M.elbo_terms(X, QM, torch.eye(3)), ValueError, r"^q_cov: .*\(2, 2\)"),
        (lambda: M.elbo_terms(X, QM, torch.eye(2).expand(5, 2, 2)), ValueError, r"^q_cov: .*\(4, 2, 2\)"),
        (lambda: M.elbo_terms(X, QM, torch.ones(2)), ValueError, r"^q_cov: .*square"),
        (lambda: M.elbo_terms(X, QM, torch.diag(torch.tensor([1.0, -1.0]))), ValueError, r"^q_cov: .*positive"),
        (lambda: M.elbo_terms(X, QM, torch.zeros(2, 2)), ValueError, r"^q_cov: .*positive"),
        (lambda: M.elbo_terms(X, QM, torch.tensor([[1.0, 0.5], [0.0, 1.0]])), ValueError, r"^q_cov: .*symmetric"),
        (lambda: M.elbo_terms(X, QM, torch.tensor([[1.0, float("nan")], [0, 1]])), ValueError, r"^q_cov: .*finite"),
        (lambda: M.elbo_terms(X, torch.full((4, 2), float("nan")), QS), ValueError, r"^q_mean: .*finite"),
        (lambda: M.elbo_terms(NAN_X, QM[:1], QS), ValueError, r"^x: .*finite"),
        (lambda: M.elbo_monte_carlo(X, QM, QS, 1), ValueError, r"^n_samples: .*>= 2"),
        (lambda: M.elbo_monte_carlo(X, QM, QS, 10.0), TypeError, r"^n_samples: "),
        (lambda: M.elbo_monte_carlo(X, QM, -QS, 10), ValueError, r"^q_cov: .*positive"),
        (lambda: gaussian_kl(torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(3)), ValueError, r"^mean_p: "),
        (lambda: gaussian_kl(torch.zeros(2), -torch.eye(2), torch.zeros(2), torch.eye(2)), ValueError, r"^cov_q: "),
        (lambda: gaussian_kl_diag(torch.zeros(2, 3), torch.zeros(2, 4)), ValueError, r"^log_sigma: .*\(2, 3\)"),
        (lambda: gaussian_kl_diag(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3)), TypeError, r"^mu: "),
    ],
    ids=[
        "W-1d",
        "W-3d",
        "W-empty",
        "W-inf",
        "b-shape",
        "sigma-0",
        "sigma-negative",
        "sigma-nan",
        "sigma-str",
        "x-wrong-d",
        "x-1d",
        "x-nan",
        "x-inf",
        "n-0",
        "n-float",
        "z-wrong-k",
        "z-wrong-n",
        "z-1d",
        "q_mean-wrong-k",
        "q_mean-wrong-n",
        "q_cov-wrong-k",
        "q_cov-wrong-n",
        "q_cov-not-square",
        "q_cov-negative-eigenvalue",
        "q_cov-singular",
        "q_cov-asymmetric",
        "q_cov-nan",
        "q_mean-nan",
        "elbo-x-nan",
        "n_samples-1",
        "n_samples-float",
        "mc-q_cov-not-spd",
        "kl-dim-mismatch",
        "kl-cov-not-spd",
        "kl_diag-shape",
        "kl_diag-int",
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
