"""Guidance on a labelled Gaussian mixture, where everything is exact (course_lib.guidance).

References are built from the mixture's raw parameters (weights, means, covariances) with scipy or by hand,
never from the code under test: the conditional score of component y under q(x^t | x^0) is
-(ab Sigma_y + (1 - ab) I)^{-1} (x - sqrt(ab) mu_y).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from course_lib.densities import named_mixture
from course_lib.diffusion import ExactDenoiser, convert
from course_lib.guidance import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    ExactClassifier,
    ExactConditionalDenoiser,
    classifier_log_prob_grad,
    component_mixture,
    exact_guided_score,
    gamma_from_w,
    tilted_density_grid,
    tilted_log_density,
    w_from_gamma,
)
from course_lib.samplers import ancestral_sample
from course_lib.schedules import NoiseSchedule

T_CHECK = (1, 10, 100, 400, 700, 999)


@pytest.fixture(scope="module")
def mix():
    return named_mixture("three_classes_2d")


@pytest.fixture(scope="module")
def sched():
    return NoiseSchedule.cosine(1000)


def _points(n=64, seed=0):
    return 1.5 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _component_score(mix, y, x, ab):
    """Score of N(sqrt(ab) mu_y, ab Sigma_y + (1 - ab) I) at x, by hand from the raw parameters."""
    mu = math.sqrt(ab) * mix.means[y].numpy()
    cov = ab * mix.covs[y].numpy() + (1 - ab) * np.eye(2)
    return torch.from_numpy(-np.linalg.solve(cov, (x.numpy() - mu).T).T)


def _mixture_score(mix, x, ab):
    """Score of the noised mixture: sum_k r_k s_k with responsibilities from scipy densities."""
    dens = np.stack([mix.weights[k].item() * stats.multivariate_normal(
        math.sqrt(ab) * mix.means[k].numpy(), ab * mix.covs[k].numpy() + (1 - ab) * np.eye(2)).pdf(x.numpy())
        for k in range(mix.K)], 1)
    r = dens / dens.sum(1, keepdims=True)
    return sum(torch.from_numpy(r[:, k:k + 1]) * _component_score(mix, k, x, ab) for k in range(mix.K))


# ---------------------------------------------------------------------------------------------- gamma = 1 is p(x | y)
@pytest.mark.parametrize("t", T_CHECK)
@pytest.mark.parametrize("y", [0, 1, 2])
def test_guided_score_at_gamma_1_is_the_conditional_score(mix, sched, t, y):
    x = _points()
    ab = float(sched.alpha_bars[t])
    want = _component_score(mix, y, x, ab)
    # closed form
    torch.testing.assert_close(exact_guided_score(mix, x, ab, y, 1.0), want, rtol=1e-10, atol=1e-10)
    # the general path: unconditional exact denoiser + autograd of the exact classifier, as the samplers use it
    eps = ClassifierGuidance(ExactDenoiser(mix, sched), ExactClassifier(mix, sched), sched, y, 1.0)(x, t)
    score = convert(eps, "eps", "score", x, ab)
    torch.testing.assert_close(score, want, rtol=1e-9, atol=1e-9 / math.sqrt(1 - ab))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_guided_score_is_score_plus_gamma_times_classifier_gradient(mix, sched, gamma):
    x = _points(seed=1)
    for t in (5, 300, 900):
        ab = float(sched.alpha_bars[t])
        s, s_y = _mixture_score(mix, x, ab), _component_score(mix, 1, x, ab)
        want = s + gamma * (s_y - s)  # grad log p(y | x^t) = s_y - s (Bayes)
        torch.testing.assert_close(exact_guided_score(mix, x, ab, 1, gamma), want, rtol=1e-9, atol=1e-9)
        eps = ClassifierGuidance(ExactDenoiser(mix, sched), ExactClassifier(mix, sched), sched, 1, gamma)(x, t)
        torch.testing.assert_close(convert(eps, "eps", "score", x, ab), want, rtol=1e-8, atol=1e-8 / math.sqrt(1 - ab))


def test_classifier_gradient_matches_finite_differences(mix, sched):
    clf = ExactClassifier(mix, sched)
    x = _points(8, seed=2)
    t = torch.full((8,), 250)
    logp, grad = classifier_log_prob_grad(clf, x, t, 2)
    h = 1e-6
    for j in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[j] = h
        up = clf(x + e, t)[:, 2]
        down = clf(x - e, t)[:, 2]
        torch.testing.assert_close(grad[:, j], (up - down) / (2 * h), rtol=1e-6, atol=1e-7)
    ab = float(sched.alpha_bars[250])
    dens = np.stack([mix.weights[k].item() * stats.multivariate_normal(
        math.sqrt(ab) * mix.means[k].numpy(), ab * mix.covs[k].numpy() + (1 - ab) * np.eye(2)).pdf(x.numpy())
        for k in range(3)], 1)
    torch.testing.assert_close(logp, torch.from_numpy(np.log(dens[:, 2] / dens.sum(1))), rtol=1e-10, atol=1e-10)


def test_classifier_gradient_of_a_learned_style_classifier_uses_log_softmax():
    # logits that are not normalised: log p(y|x) = logit_y - logsumexp(logits)
    w = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.7, -1.0]], dtype=torch.float64)

    def clf(x, t):
        return x @ w + 3.0  # an offset changes the logits but not the probabilities

    x = _points(5, seed=3)
    _, grad = classifier_log_prob_grad(clf, x, 0, 0)
    p = torch.softmax(x @ w, -1)
    torch.testing.assert_close(grad, (w[:, 0][None, :] - p @ w.T))


# ---------------------------------------------------------------------------------------------- classifier-free
@pytest.mark.parametrize("w", [0.0, 1.0, 4.0])
def test_exact_classifier_free_guidance_is_classifier_guidance_with_gamma_1_plus_w(mix, sched, w):
    x = _points(seed=4)
    cond = ExactConditionalDenoiser(mix, sched)
    for t in (3, 200, 800):
        cfg = ClassifierFreeGuidance(cond, 0, w)(x, t)
        cg = ClassifierGuidance(ExactDenoiser(mix, sched), ExactClassifier(mix, sched), sched, 0, gamma_from_w(w))(x, t)
        torch.testing.assert_close(cfg, cg, rtol=1e-8, atol=1e-8)
    assert gamma_from_w(w) == 1 + w and w_from_gamma(1 + w) == w


def test_exact_conditional_denoiser_is_each_component_alone(mix, sched):
    x = _points(30, seed=5)
    y = torch.tensor([0, 1, 2, 3] * 7 + [1, 3])  # 3 = the null label
    cond = ExactConditionalDenoiser(mix, sched, "x0")
    out = cond(x, 150, y)
    for k in range(4):
        rows = y == k
        ref = ExactDenoiser(mix if k == 3 else component_mixture(mix, k), sched, "x0")(x[rows], 150)
        torch.testing.assert_close(out[rows], ref)
    torch.testing.assert_close(cond(x, 150, None), ExactDenoiser(mix, sched, "x0")(x, 150))


def test_classifier_free_batches_cond_and_null_in_one_call():
    calls = []

    class Den:
        target, num_classes, null_label = "eps", 3, 3

        def __call__(self, x, t, y):
            calls.append(y.clone())
            return x * 0 + y[:, None].to(x.dtype)

    x = torch.zeros(4, 2, dtype=torch.float64)
    out = ClassifierFreeGuidance(Den(), 1, w=2.0)(x, 10)
    assert len(calls) == 1 and calls[0].tolist() == [1, 1, 1, 1, 3, 3, 3, 3]
    torch.testing.assert_close(out, torch.full((4, 2), 3.0 * 1 - 2.0 * 3, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- statistical test
_SHARES = (0.5, 0.9, 0.99)  # probability ellipses of a Gaussian: Mahalanobis^2 <= chi2_2 quantile
ALPHA = 1e-3  # false-alarm rate of each class's test: a correct sampler fails it one time in a thousand seeds


def _ellipse_pvalue(mix, y, x):
    diff = (x - mix.means[y]).numpy()
    d2 = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(mix.covs[y].numpy()), diff)
    edges = np.concatenate([[0.0], stats.chi2(2).ppf(_SHARES), [np.inf]])
    observed = np.histogram(d2, edges)[0]
    expected = np.diff(np.concatenate([[0.0], _SHARES, [1.0]])) * len(d2)
    return stats.chisquare(observed, expected).pvalue, observed / len(d2)


def _guided_samples(mix, sched, y, gamma, n=3000, seed=0):
    guided = ClassifierGuidance(ExactDenoiser(mix, sched), ExactClassifier(mix, sched), sched, y, gamma)
    return ancestral_sample(guided, sched, n, generator=torch.Generator().manual_seed(100 + seed))


@pytest.mark.parametrize("y", [0, 1, 2])
def test_guided_sampling_at_gamma_1_fills_the_components_ellipses(mix, sched, y):
    """Shares of samples inside the 50 / 90 / 99 % ellipses of component y follow chi2(2): multinomial
    goodness-of-fit over the four rings, rejected at ALPHA = 0.001 (one false alarm per 1000 seeds per class)."""
    x = _guided_samples(mix, sched, y, 1.0, seed=y)
    p, shares = _ellipse_pvalue(mix, y, x)
    assert p > ALPHA, f"class {y}: ring shares {shares} vs 0.5 / 0.4 / 0.09 / 0.01 (p = {p:.2e})"


def test_the_ellipse_test_has_power_against_gamma_3(mix, sched):
    # the same test on over-guided samples (gamma = 3) must reject: they crowd where the classifier is sure
    x = _guided_samples(mix, sched, 1, 3.0, seed=7)
    p, _ = _ellipse_pvalue(mix, 1, x)
    assert p < ALPHA


# ---------------------------------------------------------------------------------------------- the tilted density
def test_tilted_density_at_gamma_1_is_the_component_and_at_0_the_mixture(mix):
    xs, ys, dens = tilted_density_grid(mix, 2, 1.0, n=90)
    gx, gy = np.meshgrid(xs.numpy(), ys.numpy())
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    ref = stats.multivariate_normal(mix.means[2].numpy(), mix.covs[2].numpy()).pdf(pts).reshape(90, 90)
    cell = float((xs[1] - xs[0]) * (ys[1] - ys[0]))
    np.testing.assert_allclose(dens.numpy(), ref / (ref.sum() * cell), rtol=1e-8, atol=1e-12)
    _, _, d0 = tilted_density_grid(mix, 2, 0.0, n=90)
    ref0 = sum(mix.weights[k].item() * stats.multivariate_normal(mix.means[k].numpy(), mix.covs[k].numpy()).pdf(pts)
               for k in range(3)).reshape(90, 90)
    np.testing.assert_allclose(d0.numpy(), ref0 / (ref0.sum() * cell), rtol=1e-8, atol=1e-12)


def test_larger_gamma_puts_more_tilted_mass_where_the_classifier_is_sure(mix):
    x = _points(400, seed=6)
    post = mix.class_posterior(x, 1.0)[:, 0]
    confidences = []
    for gamma in (1.0, 3.0, 10.0):
        w = torch.softmax(tilted_log_density(mix, x, 0, gamma), 0)
        confidences.append(float((w * post).sum()))
    assert confidences[0] < confidences[1] < confidences[2]


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("call", "name"), [
    (lambda m, s: exact_guided_score(m, _points(3), 0.5, 0, -1.0), "gamma"),
    (lambda m, s: exact_guided_score(m, _points(3), 0.5, 3, 1.0), "y"),
    (lambda m, s: exact_guided_score(m, _points(3), 0.5, torch.tensor([0, 1]), 1.0), "y"),
    (lambda m, s: ClassifierGuidance(ExactDenoiser(m, s), ExactClassifier(m, s), s, 0, float("nan")), "gamma"),
    (lambda m, s: ClassifierFreeGuidance(ExactConditionalDenoiser(m, s), 0, -0.5), "w"),
    (lambda m, s: w_from_gamma(0.5), "gamma"),
    (lambda m, s: component_mixture(m, 5), "y"),
    (lambda m, s: classifier_log_prob_grad(ExactClassifier(m, s), _points(3), 10, 1.5), "y"),
    (lambda m, s: tilted_density_grid(named_mixture("bimodal_1d"), 0, 1.0), "mixture"),
])
def test_bad_input_names_the_argument(mix, sched, call, name):
    with pytest.raises((TypeError, ValueError)) as info:
        call(mix, sched)
    assert str(info.value).startswith(f"{name}:"), str(info.value)
