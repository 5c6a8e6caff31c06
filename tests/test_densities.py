"""Tests for course_lib.densities against independent references.

References used instead of re-typing the library's formulas: scipy's normal densities, torch autograd,
numerical quadrature (scipy.integrate.quad), generic block conditioning of the joint Gaussian of
(x^0, x^t) built from its definition as a linear map, and Monte Carlo simulation of the forward process
written here with NumPy. Random tests use fixed seeds; their tolerances are 5 standard errors (a
false-alarm rate below about 1e-6 per comparison had the seed been free), or the stated p-value.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.special import logsumexp

from course_lib.densities import MIXTURE_NAMES, GaussianMixture, named_mixture, rings, swiss_roll, two_moons

P_MIN = 1e-6  # p-value threshold of the goodness-of-fit tests: the false-alarm rate of each


# ---------------------------------------------------------------------------------------------- helpers
def random_mixture(K: int, d: int, seed: int) -> GaussianMixture:
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(K) * 2.0)
    means = rng.normal(size=(K, d)) * 1.5
    A = rng.normal(size=(K, d, d)) * 0.5
    covs = A @ A.transpose(0, 2, 1) + 0.05 * np.eye(d)
    return GaussianMixture(w, means, covs)


def params(g: GaussianMixture):
    return g.weights.numpy(), g.means.numpy(), g.covs.numpy()


def scipy_log_prob(w, means, covs, x):
    """log sum_k w_k N(x; m_k, C_k) with scipy, x of shape (n, d)."""
    comps = np.stack(
        [np.reshape(stats.multivariate_normal(means[k], covs[k]).logpdf(x), -1) for k in range(len(w))], axis=-1
    )
    with np.errstate(divide="ignore"):
        return logsumexp(comps + np.log(w), axis=-1), comps


def simulate(g: GaussianMixture, n: int, alpha_bar: float, seed: int):
    """(x^0, label, x^t) drawn with NumPy from the mixture's parameters and the forward process by hand."""
    w, means, covs = params(g)
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(w), size=n, p=w)
    L = np.linalg.cholesky(covs)
    x0 = means[labels] + np.einsum("nij,nj->ni", L[labels], rng.normal(size=(n, g.d)))
    eps = rng.normal(size=(n, g.d))
    xt = math.sqrt(alpha_bar) * x0 + math.sqrt(1.0 - alpha_bar) * eps
    return x0, labels, xt


def mixture_pdf_1d(g: GaussianMixture):
    w, means, covs = params(g)
    sds = np.sqrt(covs[:, 0, 0])
    return lambda x0: float(sum(w[k] * stats.norm.pdf(x0, means[k, 0], sds[k]) for k in range(len(w))))


def assert_close_se(estimate, truth, se, what: str, z: float = 5.0):
    estimate, truth, se = np.asarray(estimate), np.asarray(truth), np.asarray(se)
    bad = np.abs(estimate - truth) > z * se + 1e-12
    assert not bad.any(), f"{what}: estimate {estimate} vs truth {truth}, standard error {se}"


# ---------------------------------------------------------------------------------------------- density
@pytest.mark.parametrize("g", [named_mixture("anisotropic_2d"), named_mixture("grid_2d"), random_mixture(4, 3, 1)])
def test_log_prob_matches_scipy_multivariate_normal(g):
    x = np.random.default_rng(0).normal(size=(200, g.d)) * 2.0
    expected, comps = scipy_log_prob(*params(g), x)
    np.testing.assert_allclose(g.log_prob(torch.from_numpy(x)).numpy(), expected, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(g.component_log_prob(x).numpy(), comps, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(g.prob(x).numpy(), np.exp(expected), rtol=1e-10, atol=0)


def test_log_prob_1d_matches_scipy_norm_and_integrates_to_one():
    g = named_mixture("trimodal_1d")
    w, means, covs = params(g)
    x = np.linspace(-4, 4, 101)
    expected = np.log(sum(w[k] * stats.norm.pdf(x, means[k, 0], math.sqrt(covs[k, 0, 0])) for k in range(3)))
    np.testing.assert_allclose(g.log_prob(x[:, None]).numpy(), expected, rtol=1e-12, atol=1e-12)
    total, _ = integrate.quad(lambda t: float(g.prob([[t]])[0]), -np.inf, np.inf, points=None, limit=200)
    assert total == pytest.approx(1.0, abs=1e-8)


def test_log_prob_stable_far_from_the_data():
    g = named_mixture("eight_gaussians_2d")
    x = torch.tensor([[300.0, -200.0], [1e4, 0.0]], dtype=torch.float64)
    lp, s = g.log_prob(x), g.score(x)
    assert torch.isfinite(lp).all() and torch.isfinite(s).all()
    expected, _ = scipy_log_prob(*params(g), x.numpy())
    np.testing.assert_allclose(lp.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("g", [named_mixture("bimodal_1d"), named_mixture("anisotropic_2d"), random_mixture(3, 3, 2)])
def test_score_matches_autograd_of_log_prob(g):
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(100, g.d)) * 2.5)
    x = torch.cat([x, torch.full((1, g.d), 25.0, dtype=torch.float64)])  # where one component dominates totally
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(g.log_prob(xg).sum(), xg)
    np.testing.assert_allclose(g.score(x).numpy(), grad.numpy(), rtol=1e-9, atol=1e-10)


def test_covs_shorthands_mean_variances():
    mu = [[0.0, 0.0], [1.0, 2.0]]
    iso = GaussianMixture([0.5, 0.5], mu, 0.25)
    per = GaussianMixture([0.5, 0.5], mu, [0.25, 4.0])
    diag = GaussianMixture([0.5, 0.5], mu, [[0.25, 1.0], [4.0, 9.0]])
    np.testing.assert_array_equal(iso.covs.numpy(), [np.eye(2) * 0.25] * 2)
    np.testing.assert_array_equal(per.covs.numpy(), [np.eye(2) * 0.25, np.eye(2) * 4.0])
    np.testing.assert_array_equal(diag.covs.numpy(), [np.diag([0.25, 1.0]), np.diag([4.0, 9.0])])
    assert (iso.K, iso.d) == (2, 2) and iso.covs.dtype == torch.float64


def test_mixture_moments_match_samples():
    g = named_mixture("anisotropic_2d")
    x = g.sample(200_000, generator=torch.Generator().manual_seed(3)).numpy()
    n = len(x)
    assert_close_se(x.mean(0), g.mixture_mean().numpy(), x.std(0) / math.sqrt(n), "mixture_mean")
    S = np.cov(x.T)
    se = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S**2) / n) * 2.0  # mixture kurtosis: 2x the Gaussian SE
    assert_close_se(S, g.mixture_cov().numpy(), se, "mixture_cov")


# ---------------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("name", ["trimodal_1d", "anisotropic_2d"])
def test_sample_component_frequencies_chi_square(name):
    g = named_mixture(name)
    n = 200_000
    _, labels = g.sample(n, generator=torch.Generator().manual_seed(4), return_labels=True)
    counts = np.bincount(labels.numpy(), minlength=g.K)
    p = stats.chisquare(counts, g.weights.numpy() * n).pvalue
    assert p > P_MIN, f"component counts {counts} do not match weights {g.weights.tolist()} (p = {p:.2g})"


def test_sample_per_component_mean_and_cov():
    g = named_mixture("anisotropic_2d")
    x, labels = g.sample(150_000, generator=torch.Generator().manual_seed(5), return_labels=True)
    x, labels = x.numpy(), labels.numpy()
    for k in range(g.K):
        xk = x[labels == k]
        nk = len(xk)
        mu, S = g.means[k].numpy(), g.covs[k].numpy()
        assert_close_se(xk.mean(0), mu, np.sqrt(np.diag(S) / nk), f"mean of component {k}")
        se = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S**2) / nk)  # Gaussian sample covariance SE
        assert_close_se(np.cov(xk.T), S, se, f"covariance of component {k}")


def test_sample_labels_consistent_shapes_and_reproducible():
    g = named_mixture("grid_2d")  # components 8 standard deviations apart
    x, labels = g.sample(5000, generator=torch.Generator().manual_seed(6), return_labels=True)
    assert x.shape == (5000, 2) and x.dtype == torch.float64
    assert labels.shape == (5000,) and labels.dtype == torch.long
    assert int(labels.min()) >= 0 and int(labels.max()) < g.K
    _, comps = scipy_log_prob(*params(g), x.numpy())
    agree = (comps.argmax(-1) == labels.numpy()).mean()
    assert agree > 0.999, f"only {agree:.4f} of the points lie nearest (in density) to their labelled component"
    again = g.sample(5000, generator=torch.Generator().manual_seed(6))
    assert torch.equal(x, again)
    assert not torch.equal(x, g.sample(5000, generator=torch.Generator().manual_seed(7)))


# ---------------------------------------------------------------------------------------------- noising
def test_noised_1d_matches_simulated_forward_process_ks():
    g, ab = named_mixture("bimodal_1d"), 0.3
    _, _, xt = simulate(g, 20_000, ab, seed=8)
    gn = g.noised(ab)
    w, means, covs = params(gn)

    def cdf(v):
        return sum(w[k] * stats.norm.cdf(v, means[k, 0], math.sqrt(covs[k, 0, 0])) for k in range(len(w)))

    p = stats.kstest(xt[:, 0], cdf).pvalue
    assert p > P_MIN, f"x^t simulated by hand does not follow noised({ab}) (KS p = {p:.2g})"
    # the test has power: the law at a clearly different alpha_bar is rejected
    wrong = g.noised(0.6)
    w2, m2, c2 = params(wrong)
    p_wrong = stats.kstest(
        xt[:, 0], lambda v: sum(w2[k] * stats.norm.cdf(v, m2[k, 0], math.sqrt(c2[k, 0, 0])) for k in range(2))
    ).pvalue
    assert p_wrong < P_MIN


def test_noised_2d_per_component_moments_and_cross_entropy():
    g, ab = named_mixture("anisotropic_2d"), 0.4
    _, labels, xt = simulate(g, 90_000, ab, seed=9)
    gn = g.noised(ab)
    assert gn.K == g.K and torch.equal(gn.weights, g.weights)
    for k in range(g.K):
        xk = xt[labels == k]
        nk = len(xk)
        mu, S = gn.means[k].numpy(), gn.covs[k].numpy()
        assert_close_se(xk.mean(0), mu, np.sqrt(np.diag(S) / nk), f"noised mean of component {k}")
        se = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S**2) / nk)
        assert_close_se(np.cov(xk.T), S, se, f"noised covariance of component {k}")
    # E[log p(x^t)] over simulated points equals the same average over the mixture's own samples
    lp_sim = gn.log_prob(xt).numpy()
    lp_own = gn.log_prob(gn.sample(90_000, generator=torch.Generator().manual_seed(10))).numpy()
    se = math.sqrt(lp_sim.var() / len(lp_sim) + lp_own.var() / len(lp_own))
    assert_close_se(lp_sim.mean(), lp_own.mean(), se, "average log density of noised points")


def test_noised_limits():
    g = named_mixture("two_blobs_2d")
    same = g.noised(1.0)
    np.testing.assert_allclose(same.covs.numpy(), g.covs.numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(same.means.numpy(), g.means.numpy(), rtol=0, atol=1e-15)
    gone = g.noised(1e-8)  # x^t is (almost) pure noise N(0, I)
    x = np.random.default_rng(11).normal(size=(10, 2))
    np.testing.assert_allclose(gone.log_prob(x).numpy(), stats.multivariate_normal(np.zeros(2)).logpdf(x), atol=1e-6)


# ---------------------------------------------------------------------------------------- posterior mean / Tweedie
@pytest.mark.parametrize("g", [named_mixture("trimodal_1d"), named_mixture("anisotropic_2d"), random_mixture(3, 3, 12)])
@pytest.mark.parametrize("ab", [0.999, 0.9, 0.5, 0.1, 0.01])
def test_tweedie_identity(g, ab):
    gn = g.noised(ab)
    x = gn.sample(50, generator=torch.Generator().manual_seed(13))
    tweedie = (x + (1.0 - ab) * gn.score(x)) / math.sqrt(ab)
    np.testing.assert_allclose(g.posterior_mean(x, ab).numpy(), tweedie.numpy(), rtol=1e-9, atol=1e-9)


def test_slide_shorthand_misses_the_one_over_sqrt_alpha_bar_factor():
    """ERRATA 1: the slide's x^t + (1 - ab) score is E[sqrt(ab) x^0 | x^t], not E[x^0 | x^t], when ab < 1."""
    g, ab = named_mixture("bimodal_1d"), 0.5
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)[:, None]
    shorthand = x + (1.0 - ab) * g.noised(ab).score(x)
    exact = g.posterior_mean(x, ab)
    assert (shorthand - exact).abs().max() > 0.1
    np.testing.assert_allclose(shorthand.numpy(), math.sqrt(ab) * exact.numpy(), rtol=1e-10, atol=1e-12)


def joint_conditioning(mu, Sigma, ab, xt):
    """E and Cov of x^0 given x^t from the joint Gaussian of (x^0, x^t) = M (x^0, eps), generic block formulas."""
    d = len(mu)
    eye, zero = np.eye(d), np.zeros((d, d))
    M = np.block([[eye, zero], [math.sqrt(ab) * eye, math.sqrt(1 - ab) * eye]])
    J = M @ np.block([[Sigma, zero], [zero, eye]]) @ M.T
    m = M @ np.concatenate([mu, np.zeros(d)])
    J11, J12, J22 = J[:d, :d], J[:d, d:], J[d:, d:]
    mean = m[:d] + J12 @ np.linalg.solve(J22, xt - m[d:])
    cov = J11 - J12 @ np.linalg.solve(J22, J12.T)
    return mean, cov


@pytest.mark.parametrize("ab", [0.95, 0.5, 0.05])
def test_single_gaussian_posterior_matches_block_conditioning(ab):
    rng = np.random.default_rng(14)
    A = rng.normal(size=(3, 3))
    mu, Sigma = rng.normal(size=3), A @ A.T + 0.1 * np.eye(3)
    g = GaussianMixture([1.0], mu[None], Sigma[None])
    xt = rng.normal(size=(5, 3)) * 2
    pm, pc = g.posterior_mean(xt, ab).numpy(), g.posterior_cov(xt, ab).numpy()
    for i in range(5):
        mean, cov = joint_conditioning(mu, Sigma, ab, xt[i])
        np.testing.assert_allclose(pm[i], mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(pc[i], cov, rtol=1e-9, atol=1e-11)
        post = g.posterior(xt[i], ab)
        np.testing.assert_allclose(post.covs[0].numpy(), cov, rtol=1e-9, atol=1e-11)
    est, se = g.mmse(ab, n=1000, generator=torch.Generator().manual_seed(0))
    assert est == pytest.approx(np.trace(cov), rel=1e-10) and se < 1e-12  # one component: tr Cov is constant


@pytest.mark.parametrize("ab", [0.8, 0.3, 0.05])
def test_posterior_mean_and_cov_1d_match_quadrature(ab):
    g = named_mixture("trimodal_1d")
    prior = mixture_pdf_1d(g)
    x_ts = [-1.5, -0.2, 0.7, 2.5]
    pm = g.posterior_mean(np.array(x_ts)[:, None], ab).numpy()[:, 0]
    pv = g.posterior_cov(np.array(x_ts)[:, None], ab).numpy()[:, 0, 0]
    for i, xt in enumerate(x_ts):

        def unnorm(x0, xt=xt):
            return prior(x0) * stats.norm.pdf(xt, math.sqrt(ab) * x0, math.sqrt(1 - ab))

        kw = dict(points=g.means[:, 0].tolist(), limit=200, epsabs=1e-14, epsrel=1e-12)
        z = integrate.quad(unnorm, -5, 5, **kw)[0]
        m1 = integrate.quad(lambda x0: x0 * unnorm(x0), -5, 5, **kw)[0] / z
        m2 = integrate.quad(lambda x0, m1=m1: (x0 - m1) ** 2 * unnorm(x0), -5, 5, **kw)[0] / z
        assert pm[i] == pytest.approx(m1, abs=1e-8), f"E[x0 | x_t = {xt}] at alpha_bar = {ab}"
        assert pv[i] == pytest.approx(m2, abs=1e-8), f"Var[x0 | x_t = {xt}] at alpha_bar = {ab}"


def test_posterior_mean_and_class_posterior_2d_match_importance_sampling():
    g, ab = named_mixture("anisotropic_2d"), 0.3
    x0, labels, _ = simulate(g, 400_000, 1.0, seed=15)  # alpha_bar = 1: plain draws of (x^0, y)
    x_ts = np.array([[0.0, 0.0], [-0.8, -0.5], [0.5, 0.9]])
    pm, cp = g.posterior_mean(x_ts, ab).numpy(), g.class_posterior(x_ts, ab).numpy()
    for i, xt in enumerate(x_ts):
        logw = -((xt - math.sqrt(ab) * x0) ** 2).sum(-1) / (2 * (1 - ab))  # likelihood N(x^t; sqrt(ab) x^0, 1 - ab)
        w = np.exp(logw - logw.max())
        w /= w.sum()
        est = w @ x0
        se = np.sqrt((w[:, None] ** 2 * (x0 - est) ** 2).sum(0))  # delta method for self-normalised weights
        assert_close_se(pm[i], est, se, f"posterior mean at x_t = {xt}")
        for k in range(g.K):
            hit = (labels == k).astype(float)
            p = w @ hit
            se_k = math.sqrt((w**2 * (hit - p) ** 2).sum())
            assert_close_se(cp[i, k], p, se_k, f"p(y = {k} | x_t = {xt})")


def test_posterior_mean_at_alpha_bar_one_is_identity():
    g = named_mixture("grid_2d")
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(16))
    assert torch.equal(g.posterior_mean(x, 1.0), x)
    assert torch.equal(g.posterior_cov(x, 1.0), torch.zeros(7, 2, 2, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- class posterior
@pytest.mark.parametrize("ab", [1.0, 0.6, 0.1])
def test_class_posterior_is_bayes_rule_with_scipy_densities(ab):
    g = named_mixture("anisotropic_2d")
    w, means, covs = params(g)
    x = np.random.default_rng(17).normal(size=(100, 2)) * 1.5
    # the law of x^t given y = k, from its definition: N(sqrt(ab) mu_k, ab Sigma_k + (1 - ab) I)
    laws = [stats.multivariate_normal(math.sqrt(ab) * means[k], ab * covs[k] + (1 - ab) * np.eye(2)) for k in range(3)]
    lik = np.stack([law.pdf(x) for law in laws], axis=-1)
    expected = w * lik / (w * lik).sum(-1, keepdims=True)
    cp = g.class_posterior(x, ab).numpy()
    np.testing.assert_allclose(cp.sum(-1), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(cp, expected, rtol=1e-10, atol=1e-12)


def test_class_posterior_is_calibrated_on_simulated_labels():
    g, ab = named_mixture("two_blobs_2d"), 0.15  # strong overlap: the probabilities cover (0, 1)
    _, labels, xt = simulate(g, 100_000, ab, seed=18)
    r = g.class_posterior(xt, ab).numpy()[:, 0]
    bins = np.digitize(r, np.linspace(0, 1, 11)[1:-1])
    used = 0
    for b in range(10):
        sel = bins == b
        if sel.sum() < 1000:
            continue
        used += 1
        freq, pred = (labels[sel] == 0).mean(), r[sel].mean()
        assert_close_se(freq, pred, math.sqrt(pred * (1 - pred) / sel.sum()), f"label frequency in bin {b}")
    assert used >= 8


# ---------------------------------------------------------------------------------------------- full posterior
def test_posterior_1d_density_matches_quadrature():
    g, ab, xt = named_mixture("trimodal_1d"), 0.5, 0.4
    post = g.posterior(torch.tensor([xt], dtype=torch.float64), ab)
    assert isinstance(post, GaussianMixture) and (post.K, post.d) == (3, 1)
    prior = mixture_pdf_1d(g)

    def unnorm(x0):
        return prior(x0) * stats.norm.pdf(xt, math.sqrt(ab) * x0, math.sqrt(1 - ab))

    z = integrate.quad(unnorm, -5, 5, points=g.means[:, 0].tolist(), limit=200, epsabs=1e-14)[0]
    grid = np.linspace(-2.5, 2.5, 41)
    expected = np.array([unnorm(v) for v in grid]) / z
    np.testing.assert_allclose(post.prob(grid[:, None]).numpy(), expected, rtol=1e-8, atol=1e-12)
    assert float(post.mixture_mean()[0]) == pytest.approx(float(g.posterior_mean([[xt]], ab)[0, 0]), abs=1e-12)
    np.testing.assert_allclose(post.weights.numpy(), g.class_posterior([[xt]], ab).numpy()[0], atol=1e-14)


def test_posterior_2d_moments_equal_posterior_mean_and_cov():
    g, ab = named_mixture("eight_gaussians_2d"), 0.2
    xt = torch.tensor([[0.3, -0.4]], dtype=torch.float64)
    post = g.posterior(xt, ab)
    np.testing.assert_allclose(post.mixture_mean().numpy(), g.posterior_mean(xt, ab)[0].numpy(), atol=1e-13)
    np.testing.assert_allclose(post.mixture_cov().numpy(), g.posterior_cov(xt, ab)[0].numpy(), atol=1e-13)


# ---------------------------------------------------------------------------------------------- per-row alpha_bar
def test_per_row_alpha_bar_equals_looping_over_rows():
    g = named_mixture("anisotropic_2d")
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(19)) * 1.5
    ab = torch.tensor([1.0, 0.99, 0.7, 0.3, 0.05, 1e-4], dtype=torch.float64)
    for method in ("class_posterior", "posterior_mean", "posterior_cov"):
        batched = getattr(g, method)(x, ab)
        looped = torch.cat([getattr(g, method)(x[i : i + 1], float(ab[i])) for i in range(6)])
        np.testing.assert_allclose(batched.numpy(), looped.numpy(), rtol=1e-13, atol=1e-14, err_msg=method)
    assert torch.equal(g.posterior_mean(x, ab)[0], x[0])  # the alpha_bar = 1 row is x itself


# ---------------------------------------------------------------------------------------------- Bayes error
def test_mmse_matches_direct_squared_error():
    g, ab = named_mixture("two_blobs_2d"), 0.3
    est, se = g.mmse(ab, n=50_000, generator=torch.Generator().manual_seed(20))
    x0, _, xt = simulate(g, 50_000, ab, seed=21)
    err = ((x0 - g.posterior_mean(xt, ab).numpy()) ** 2).sum(-1)
    se_direct = err.std() / math.sqrt(len(err))
    assert 0 < se < se_direct  # averaging tr Cov[x^0 | x^t] has less variance than the squared error
    assert_close_se(est, err.mean(), math.sqrt(se**2 + se_direct**2), "mmse")
    assert g.mmse(1.0, n=10)[0] == 0.0
    assert g.mmse(0.9, n=20_000)[0] < g.mmse(0.1, n=20_000)[0]


# ---------------------------------------------------------------------------------------------- named mixtures
@pytest.mark.parametrize("name", MIXTURE_NAMES)
def test_named_mixtures_roughly_standardised(name):
    g = named_mixture(name)
    assert g.d == (1 if name.endswith("_1d") else 2)
    x = g.sample(20_000, generator=torch.Generator().manual_seed(22)).numpy()
    assert np.all(np.abs(x.mean(0)) < 0.15), f"{name}: mean {x.mean(0)}"
    assert np.all((x.var(0) > 0.7) & (x.var(0) < 1.3)), f"{name}: variances {x.var(0)}"
    assert named_mixture(name) is not g  # a fresh object each call


def test_required_named_mixtures_exist_and_repr():
    required = {"bimodal_1d", "trimodal_1d", "two_blobs_2d", "eight_gaussians_2d", "anisotropic_2d", "grid_2d"}
    assert required <= set(MIXTURE_NAMES)
    assert named_mixture("eight_gaussians_2d").K == 8
    r = repr(named_mixture("bimodal_1d"))
    assert r.startswith("GaussianMixture(") and "K=2" in r and "d=1" in r


# ---------------------------------------------------------------------------------------------- toy data sets
TOYS = [two_moons, swiss_roll, rings]


@pytest.mark.parametrize("make", TOYS, ids=lambda f: f.__name__)
def test_toy_shapes_scale_position_and_reproducibility(make):
    x, pos = make(20_000, generator=torch.Generator().manual_seed(23), return_position=True)
    assert x.shape == (20_000, 2) and x.dtype == torch.float64 and torch.isfinite(x).all()
    assert pos.shape == (20_000,) and pos.dtype == torch.float64
    assert float(pos.min()) >= 0.0 and float(pos.max()) <= 1.0
    xn = x.numpy()
    assert np.all(np.abs(xn.mean(0)) < 0.1), f"mean {xn.mean(0)}"
    assert 0.85 < xn.var(0).mean() < 1.2 and np.all(xn.var(0) > 0.3), f"variances {xn.var(0)}"
    again = make(20_000, generator=torch.Generator().manual_seed(23))
    assert torch.equal(again, x)
    assert not torch.equal(make(100, generator=torch.Generator().manual_seed(24)), x[:100])


def test_toy_position_follows_the_curve_without_noise():
    x, pos = two_moons(2000, noise=0.0, generator=torch.Generator().manual_seed(25), return_position=True)
    # in each moon, neighbouring positions are neighbouring points: the curve is traversed continuously
    for sel in (pos < 0.5, pos >= 0.5):
        order = torch.argsort(pos[sel])
        steps = (x[sel][order][1:] - x[sel][order][:-1]).norm(dim=-1)
        assert float(steps.max()) < 0.1
    x, pos = swiss_roll(2000, noise=0.0, generator=torch.Generator().manual_seed(26), return_position=True)
    order = torch.argsort(pos)
    assert float((x[order][1:] - x[order][:-1]).norm(dim=-1).max()) < 0.2


def test_rings_labels_radii_and_angle():
    x, pos, labels = rings(6000, n_rings=3, noise=0.0, generator=torch.Generator().manual_seed(27),
                           return_position=True, return_labels=True)
    assert labels.dtype == torch.long and set(labels.tolist()) == {0, 1, 2}
    radius = x.norm(dim=-1)
    r = [radius[labels == j] for j in range(3)]
    for j in range(3):
        assert float(r[j].max() - r[j].min()) < 1e-12  # one radius per ring
        assert float(r[j][0] / r[0][0]) == pytest.approx(j + 1)
    angle = torch.atan2(x[:, 1], x[:, 0]) % (2 * math.pi)
    np.testing.assert_allclose(angle.numpy(), (2 * math.pi * pos.numpy()) % (2 * math.pi), atol=1e-9)
    only_labels = rings(10, return_labels=True)
    assert len(only_labels) == 2 and only_labels[1].shape == (10,)


# ---------------------------------------------------------------------------------------------- bad input
G1 = named_mixture("bimodal_1d")
G2 = named_mixture("two_blobs_2d")


def test_bad_weights_not_summing_to_one():
    with pytest.raises(ValueError, match=r"^weights:.*sum to 1"):
        GaussianMixture([0.5, 0.6], [[0.0], [1.0]], 1.0)


def test_bad_weights_negative():
    with pytest.raises(ValueError, match=r"^weights:.*non-negative"):
        GaussianMixture([1.2, -0.2], [[0.0], [1.0]], 1.0)


def test_bad_means_wrong_K():
    with pytest.raises(ValueError, match=r"^means:.*K = 2"):
        GaussianMixture([0.5, 0.5], [[0.0], [1.0], [2.0]], 1.0)


def test_bad_means_one_dimensional_gets_a_hint():
    with pytest.raises(ValueError, match=r"^means:.*\(K, 1\)"):
        GaussianMixture([0.5, 0.5], [0.0, 1.0], 1.0)


def test_bad_covs_wrong_K():
    with pytest.raises(ValueError, match=r"^covs:.*\(2, 1, 1\)"):
        GaussianMixture([0.5, 0.5], [[0.0], [1.0]], np.ones((3, 1, 1)))


def test_bad_covs_wrong_d():
    with pytest.raises(ValueError, match=r"^covs:.*\(2, 1, 1\)"):
        GaussianMixture([0.5, 0.5], [[0.0], [1.0]], np.stack([np.eye(2)] * 2))


def test_bad_covs_not_symmetric():
    with pytest.raises(ValueError, match=r"^covs:.*symmetric"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]])


def test_bad_covs_not_positive_definite():
    with pytest.raises(ValueError, match=r"^covs:.*positive definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])


def test_bad_covs_negative_variance():
    with pytest.raises(ValueError, match=r"^covs:"):
        GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [1.0, -1.0])


def test_bad_x_wrong_dimension():
    with pytest.raises(ValueError, match=r"^x:.*\(n, 2\)"):
        G2.log_prob(np.zeros((4, 3)))


def test_bad_x_one_dimensional():
    with pytest.raises(ValueError, match=r"^x: expected shape \(n, 1\).*x\[:, None\]"):
        G1.log_prob(np.zeros(5))
    with pytest.raises(ValueError, match=r"^x_t:.*x_t\[:, None\]"):
        G1.posterior_mean(np.zeros(5), 0.5)


def test_bad_x_not_finite():
    with pytest.raises(ValueError, match=r"^x:.*finite"):
        G2.score([[0.0, float("nan")]])
    with pytest.raises(ValueError, match=r"^x_t:.*finite"):
        G2.class_posterior([[float("inf"), 0.0]], 0.5)


@pytest.mark.parametrize("ab", [0.0, 1.5, -0.1, float("nan")])
def test_bad_alpha_bar_out_of_range(ab):
    x = [[0.0, 0.0]]
    for call in (lambda: G2.noised(ab), lambda: G2.posterior_mean(x, ab), lambda: G2.class_posterior(x, ab)):
        with pytest.raises(ValueError, match=r"^alpha_bar:"):
            call()


def test_bad_alpha_bar_shape():
    with pytest.raises(ValueError, match=r"^alpha_bar:.*\(3,\)"):
        G2.posterior_mean(np.zeros((3, 2)), torch.full((4,), 0.5))
    with pytest.raises(ValueError, match=r"^alpha_bar:.*single number"):
        G2.noised(torch.full((2,), 0.5))


def test_bad_posterior_at_alpha_bar_one_and_many_points():
    with pytest.raises(ValueError, match=r"^alpha_bar:.*point mass"):
        G2.posterior([0.0, 0.0], 1.0)
    with pytest.raises(ValueError, match=r"^x_t:.*one point"):
        G2.posterior(np.zeros((2, 2)), 0.5)


def test_bad_unknown_mixture_name():
    with pytest.raises(ValueError, match=r"^name:.*'moons'") as info:
        named_mixture("moons")
    assert all(n in str(info.value) for n in MIXTURE_NAMES)
    with pytest.raises(TypeError, match=r"^name:"):
        named_mixture(3)


@pytest.mark.parametrize("n", [0, -5])
def test_bad_n_not_positive(n):
    calls = (lambda: G2.sample(n), lambda: two_moons(n), lambda: swiss_roll(n), lambda: rings(n),
             lambda: G2.mmse(0.5, n=n))
    for call in calls:
        with pytest.raises(ValueError, match=r"^n:.*positive"):
            call()


def test_bad_n_not_an_integer():
    with pytest.raises(TypeError, match=r"^n:.*integer"):
        G2.sample(10.0)


def test_bad_toy_arguments():
    with pytest.raises(ValueError, match=r"^noise:"):
        two_moons(10, noise=-0.1)
    with pytest.raises(ValueError, match=r"^n_rings:"):
        rings(10, n_rings=0)
    with pytest.raises(TypeError, match=r"^generator:"):
        swiss_roll(10, generator=0)
