"""The hierarchical ELBO rearranged into per-step terms (course_lib.hierarchical_elbo), on a 1-D Gaussian chain.

References used here, none of which shares the module's algebra:
- the ELBO as E_q[log p_theta(x^{0:T})] + H[q(x^{1:T} | x^0)], with both chains written as multivariate Gaussians
  (built step by step from their definitions) and the expectation of a Gaussian log density in closed form;
- simulation of the chain (Monte Carlo with a standard error);
- Gaussian conditioning of the joint law of (x^{t-1}, x^t), written out from the forward recursion.
Statistical tests use fixed seeds and a 4.5-standard-error band (false-alarm rate about 7e-6 each).
"""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.hierarchical_elbo import GaussianChain, LinearGaussianReverse, perturb
from course_lib.schedules import NoiseSchedule

F64 = torch.float64


def _chain(T: int) -> GaussianChain:
    return GaussianChain(NoiseSchedule.cosine(T), 0.8, 0.3)


def _random_reverse(T: int, seed: int) -> LinearGaussianReverse:
    g = torch.Generator().manual_seed(seed)
    nan = torch.full((1,), float("nan"), dtype=F64)
    slope = torch.cat([nan, 0.5 + torch.rand(T, generator=g, dtype=F64)])
    offset = torch.cat([nan, 0.4 * torch.randn(T, generator=g, dtype=F64)])
    var = torch.cat([nan, 0.05 + 0.3 * torch.rand(T, generator=g, dtype=F64)])
    return LinearGaussianReverse(slope, offset, var, 0.1, 1.3)


def _forward_gaussian(chain: GaussianChain, x0: float):
    """q(x^{1:T}|x^0) as N(mean, cov): x^t = sqrt(alpha_t) x^{t-1} + sqrt(1 - alpha_t) xi_t, written as mean + A xi."""
    T, alpha = chain.T, chain.schedule.alphas
    A = torch.zeros(T, T, dtype=F64)
    mean = torch.zeros(T, dtype=F64)
    prev_row, prev_mean = torch.zeros(T, dtype=F64), torch.tensor(x0, dtype=F64)
    for t in range(1, T + 1):
        row = alpha[t].sqrt() * prev_row
        row[t - 1] = (1 - alpha[t]).sqrt()
        A[t - 1], mean[t - 1] = row, alpha[t].sqrt() * prev_mean
        prev_row, prev_mean = row, mean[t - 1]
    return mean, A @ A.T


def _decoder_gaussian(model: LinearGaussianReverse):
    """p_theta(x^{0:T}) as N(mean, cov) of x^{0:T}: x^T = prior + noise, x^{t-1} = slope x^t + offset + noise."""
    T = model.T
    B = torch.zeros(T + 1, T + 1, dtype=F64)  # row s: x^s = mean_s + B[s] @ zeta
    mean = torch.zeros(T + 1, dtype=F64)
    B[T, T], mean[T] = math.sqrt(model.prior_var), model.prior_mean
    for t in range(T, 0, -1):
        B[t - 1] = model.slope[t] * B[t]
        B[t - 1, t - 1] = model.var[t].sqrt()
        mean[t - 1] = model.slope[t] * mean[t] + model.offset[t]
    return mean, B @ B.T


def _elbo_by_joint_gaussians(chain: GaussianChain, model: LinearGaussianReverse, x0: float) -> float:
    """E_{q(x^{1:T}|x^0)}[log p_theta(x^{0:T})] + entropy of q(x^{1:T}|x^0), by multivariate-Gaussian identities."""
    T = chain.T
    mq, Sq = _forward_gaussian(chain, x0)
    mp, Sp = _decoder_gaussian(model)
    mz = torch.cat([torch.tensor([x0], dtype=F64), mq])  # z = (x^0, x^{1:T}), x^0 fixed
    Sz = torch.zeros(T + 1, T + 1, dtype=F64)
    Sz[1:, 1:] = Sq
    P = torch.linalg.inv(Sp)
    d = mz - mp
    expected_log_p = -0.5 * ((T + 1) * math.log(2 * math.pi) + torch.logdet(Sp) + d @ P @ d + torch.trace(P @ Sz))
    entropy = 0.5 * (T * math.log(2 * math.pi * math.e) + torch.logdet(Sq))
    return float(expected_log_p + entropy)


@pytest.mark.parametrize("T", [1, 2, 4, 7])
def test_rearranged_terms_equal_the_elbo_of_the_joint_gaussians(T):
    chain = _chain(T)
    for seed, x0 in ((0, 1.3), (1, -0.7), (2, 0.0)):
        model = _random_reverse(T, seed)
        got = float(chain.elbo_terms(x0, model)["elbo"][0])
        assert got == pytest.approx(_elbo_by_joint_gaussians(chain, model, x0), abs=1e-9)


def test_exact_reverse_elbo_by_joint_gaussians_is_log_p():
    chain = _chain(6)
    for x0 in (1.3, -2.0):
        assert _elbo_by_joint_gaussians(chain, chain.exact_reverse(), x0) == pytest.approx(
            float(chain.log_prob(x0)[0]), abs=1e-9)


def test_terms_have_the_documented_shapes_and_sum():
    chain = _chain(5)
    terms = chain.elbo_terms(torch.tensor([0.3, 1.0, -1.0]), _random_reverse(5, 3))
    assert terms["L_T"].shape == (3,) and terms["L"].shape == (3, 4) and terms["L_0"].shape == (3,)
    assert torch.allclose(terms["elbo"], -(terms["L_T"] + terms["L"].sum(1) + terms["L_0"]))
    assert bool((terms["L"] >= 0).all()) and bool((terms["L_T"] >= 0).all())  # KL divergences


@pytest.mark.parametrize("T", [3, 5, 10])
def test_monte_carlo_of_the_definition_matches_the_closed_form(T):
    chain = _chain(T)
    for seed, model in ((0, _random_reverse(T, 10 + T)), (1, perturb(chain.exact_reverse(), 2, shift=0.3,
                                                                      var_factor=1.5))):
        mc = chain.elbo_monte_carlo(1.1, model, n=20_000, generator=torch.Generator().manual_seed(seed))
        closed = float(chain.elbo_terms(1.1, model)["elbo"][0])
        assert mc.se > 0
        assert abs(mc.mean - closed) < 4.5 * mc.se, (mc, closed)


def test_monte_carlo_catches_a_wrong_term():
    """The comparison can fail: dropping L_0 from the closed form puts it many standard errors away."""
    chain = _chain(5)
    model = perturb(chain.exact_reverse(), 3, shift=0.2, var_factor=1.3)
    mc = chain.elbo_monte_carlo(1.1, model, n=20_000, generator=torch.Generator().manual_seed(0))
    terms = chain.elbo_terms(1.1, model)
    assert abs(mc.mean - float(terms["elbo"][0])) < 4.5 * mc.se
    for wrong in (terms["L_0"][0], terms["L"][0, 1]):  # L_0 dropped; the KL term L_2 dropped
        assert abs(mc.mean - float(terms["elbo"][0] + wrong)) > 8 * mc.se


def test_exact_reverse_is_gaussian_conditioning():
    """slope, offset, var of step t against Cov(x^{t-1}, x^t) written out from the forward recursion."""
    chain = _chain(6)
    rev = chain.exact_reverse()
    ab, alpha = chain.schedule.alpha_bars, chain.schedule.alphas
    m, s2 = 0.8, 0.3
    for t in range(1, 7):
        var_prev, var_t = ab[t - 1] * s2 + 1 - ab[t - 1], ab[t] * s2 + 1 - ab[t]
        cov = alpha[t].sqrt() * var_prev  # x^t = sqrt(alpha_t) x^{t-1} + independent noise
        assert float(rev.slope[t]) == pytest.approx(float(cov / var_t), rel=1e-12)
        assert float(rev.offset[t]) == pytest.approx(float(ab[t - 1].sqrt() * m - cov / var_t * ab[t].sqrt() * m),
                                                     abs=1e-12)
        assert float(rev.var[t]) == pytest.approx(float(var_prev - cov**2 / var_t), rel=1e-12)
    assert rev.prior_mean == pytest.approx(float(ab[-1].sqrt() * m)) and rev.prior_var == pytest.approx(
        float(ab[-1] * s2 + 1 - ab[-1]))


def test_exact_reverse_makes_the_bound_tight_for_every_path():
    chain = _chain(8)
    rev = chain.exact_reverse()
    for x0 in (1.3, -0.4, 3.0):
        assert float(chain.elbo_terms(x0, rev)["elbo"][0]) == pytest.approx(float(chain.log_prob(x0)[0]), abs=1e-10)
        paths = chain.sample_paths(x0, 500, generator=torch.Generator().manual_seed(1))
        ratio = chain.log_ratio(paths, rev)  # log q(x^{0:T}) - log q(x^{1:T}|x^0) = log p(x^0) on every path
        assert torch.allclose(ratio, chain.log_prob(x0).expand(500), atol=1e-9)


def test_log_prob_is_the_gaussian_density():
    chain = _chain(3)
    x = torch.tensor([-1.0, 0.8, 2.5], dtype=F64)
    want = torch.distributions.Normal(0.8, math.sqrt(0.3)).log_prob(x)
    assert torch.allclose(chain.log_prob(x), want, atol=1e-12)


def test_a_perturbed_step_lowers_the_average_elbo_by_its_kl():
    """Averaged over x^0 ~ data the drop is E_{q(x^t)} KL(q(x^{t-1}|x^t) || perturbed step) > 0, and the exact
    reverse chain's average ELBO is E[log p(x^0)] = -entropy of N(data_mean, data_var)."""
    chain = _chain(5)
    rev = chain.exact_reverse()
    assert chain.average_elbo(rev) == pytest.approx(-0.5 * math.log(2 * math.pi * math.e * 0.3), abs=1e-10)
    assert chain.average_log_prob() == pytest.approx(-0.5 * math.log(2 * math.pi * math.e * 0.3), abs=1e-12)
    for t, shift, factor in ((2, 0.3, 1.0), (4, 0.0, 2.0), (1, -0.2, 0.7)):
        bad = perturb(rev, t, shift=shift, var_factor=factor)
        drop = chain.average_elbo(rev) - chain.average_elbo(bad)
        # KL(N(m, v) || N(m + shift, factor v)) does not depend on x^t
        v = float(rev.var[t])
        kl = 0.5 * (1 / factor + shift**2 / (factor * v) - 1 + math.log(factor))
        assert drop > 0
        assert drop == pytest.approx(kl, rel=1e-9)


def test_average_elbo_is_the_mean_over_data_points():
    chain = _chain(4)
    model = _random_reverse(4, 5)
    x0 = 0.8 + math.sqrt(0.3) * torch.randn(200_000, generator=torch.Generator().manual_seed(3), dtype=F64)
    draws = chain.elbo_terms(x0, model)["elbo"]
    se = float(draws.std()) / math.sqrt(draws.numel())
    assert abs(float(draws.mean()) - chain.average_elbo(model)) < 4.5 * se


def test_perturb_changes_only_its_step():
    rev = _chain(4).exact_reverse()
    bad = perturb(rev, 3, shift=0.5, var_factor=2.0)
    assert float(bad.offset[3] - rev.offset[3]) == pytest.approx(0.5)
    assert float(bad.var[3] / rev.var[3]) == pytest.approx(2.0)
    keep = torch.tensor([1, 2, 4])
    assert torch.equal(bad.offset[keep], rev.offset[keep]) and torch.equal(bad.var[keep], rev.var[keep])
    assert torch.isfinite(rev.offset[3])


def test_arguments_are_validated():
    chain = _chain(4)
    with pytest.raises(ValueError, match="data_var"):
        GaussianChain(NoiseSchedule.cosine(4), 0.0, -1.0)
    with pytest.raises(ValueError, match="T = 4"):
        chain.elbo_terms(0.0, _chain(3).exact_reverse())
    with pytest.raises(ValueError, match="t"):
        perturb(chain.exact_reverse(), 5, shift=1.0)
    with pytest.raises(ValueError, match="paths"):
        chain.log_ratio(torch.zeros(3, 4), chain.exact_reverse())
    with pytest.raises(ValueError, match="one starting point"):
        chain.sample_paths(torch.zeros(2), 10)
