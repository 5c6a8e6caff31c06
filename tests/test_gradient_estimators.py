"""Tests for the two gradient estimators in course_lib.vae (notebook 02's score function vs pathwise figure).

Target: d/dmu E_{z ~ N(mu, sigma^2)}[f(z)], checked against closed forms:
f(z) = (z - c)^2 gives 2(mu - c), f(z) = sin z gives cos(mu) exp(-sigma^2 / 2).
Statistical checks use |z| < Z = 5 standard errors (false-alarm rate 5.7e-7 per check) with fixed seeds;
variance checks use a relative tolerance several times the standard error of a sample variance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib.vae import (
    gradient_estimator_variance,
    pathwise_grad,
    quadratic_grad_moments,
    score_function_grad,
)

Z = 5.0
ESTIMATORS = {"score_function": score_function_grad, "pathwise": pathwise_grad}
# (mu, log_sigma, c): sigma = 1 and sigma != 1, so a missing 1/sigma^2 in the score would be caught
CASES = [(1.0, 0.0, 0.0), (0.3, -0.5, -1.0), (-0.7, 0.4, 0.5)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("mu, log_sigma, c", CASES)
def test_unbiased_for_the_quadratic(name, mu, log_sigma, c):
    exact = quadratic_grad_moments(mu, log_sigma, c)
    n, repeats = 4, 20_000
    g = ESTIMATORS[name](lambda z: (z - c) ** 2, mu, log_sigma, n, repeats, gen(1))
    assert g.shape == (repeats,) and g.dtype == torch.float64
    se = math.sqrt(exact[name] / n / repeats)
    assert abs(float(g.mean()) - 2 * (mu - c)) < Z * se


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_unbiased_for_a_non_polynomial_f(name):
    mu, log_sigma = 0.4, -0.3
    g = ESTIMATORS[name](torch.sin, mu, log_sigma, 8, 20_000, gen(2))
    truth = math.cos(mu) * math.exp(-math.exp(2 * log_sigma) / 2)
    se = float(g.std()) / math.sqrt(g.numel())
    assert abs(float(g.mean()) - truth) < Z * se


@pytest.mark.parametrize("mu, log_sigma, c", CASES)
def test_closed_form_variances_match_direct_simulation(mu, log_sigma, c):
    # an independent route: numpy draws and the per-draw terms written out by hand
    rng = np.random.default_rng(3)
    sigma = math.exp(log_sigma)
    z = mu + sigma * rng.standard_normal(4_000_000)
    exact = quadratic_grad_moments(mu, log_sigma, c)
    assert exact["true_grad"] == pytest.approx(2 * (mu - c))
    assert np.var(2 * (z - c)) == pytest.approx(exact["pathwise"], rel=0.01)
    assert np.var((z - c) ** 2 * (z - mu) / sigma**2) == pytest.approx(exact["score_function"], rel=0.03)


@pytest.mark.parametrize("mu, log_sigma, c", CASES)
def test_variance_shrinks_like_one_over_n_and_score_function_is_larger(mu, log_sigma, c):
    exact = quadratic_grad_moments(mu, log_sigma, c)
    res = gradient_estimator_variance(mu, log_sigma, n_draws=(1, 8, 64), repeats=20_000, c=c, generator=gen(4))
    assert res["n"] == [1, 8, 64]
    assert res["true_grad"] == pytest.approx(2 * (mu - c))
    for name in ESTIMATORS:
        for n, measured, line in zip(res["n"], res[name], res[f"exact_{name}"], strict=True):
            assert line == pytest.approx(exact[name] / n)
            # the score function's single draws are heavy-tailed (eps^5 terms): its variance estimate is noisier
            assert measured == pytest.approx(line, rel=0.25 if name == "score_function" and n == 1 else 0.1)
        # the variance of the mean of n draws falls by the factor n, not by sqrt(n) or not at all
        assert res[name][0] / res[name][-1] == pytest.approx(64, rel=0.3)
    for sf, pw in zip(res["score_function"], res["pathwise"], strict=True):
        assert sf > 2 * pw
    assert exact["score_function"] > exact["pathwise"]


def test_same_generator_same_estimates_and_pathwise_needs_the_draws():
    f = lambda z: z**2  # noqa: E731
    a = score_function_grad(f, 1.0, 0.0, 5, 3, gen(7))
    b = score_function_grad(f, 1.0, 0.0, 5, 3, gen(7))
    assert torch.equal(a, b)
    # n = 1 pathwise estimates of d/dmu E[z^2] are 2 z = 2 (mu + sigma eps): they vary from repeat to repeat
    p = pathwise_grad(f, 1.0, 0.0, 1, 1000, gen(8))
    assert float(p.std()) == pytest.approx(2.0, rel=0.15)


def test_bad_arguments():
    f = lambda z: z**2  # noqa: E731
    with pytest.raises(ValueError):
        score_function_grad(f, 1.0, 0.0, 0)
    with pytest.raises(TypeError):
        pathwise_grad(f, 1.0, 0.0, 2.5)
    with pytest.raises(ValueError):
        gradient_estimator_variance(n_draws=(1, 0), repeats=10)
