"""The three prediction targets (x0, eps, score), their conversions, the exact denoiser and the ELBO's KL terms.

Independent references: the forward relation x^t = sqrt(ab) x^0 + sqrt(1 - ab) eps itself (known x^0 and
eps), autograd of Gaussian log densities, numerical quadrature with scipy (posterior mean, E[eps | x^t]
and the score of p(x^t) in 1-D), block conditioning of the joint Gaussian of (x^{t-1}, x^t) built from
the forward chain, torch.distributions' Gaussian KL, and closed forms of the expected KL when the data
are one Gaussian (E[x^0 | x^t] is then linear). Monte Carlo comparisons use fixed seeds and a tolerance
of 5 standard errors (false-alarm rate about 6e-7 per comparison had the seed been free).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from course_lib import GaussianMixture, NoiseSchedule, named_mixture
from course_lib.diffusion import (
    ALL_TARGETS,
    TARGETS,
    ExactDenoiser,
    convert,
    eps_from_x0,
    score_from_x0,
    x0_from_eps,
    x0_from_score,
    x0_from_v,
)
from course_lib.diffusion_elbo import KLPerStep, kl_term, per_timestep_kl, reverse_mean

SCHEDULE = NoiseSchedule.linear(1000)
PAIRS = list(itertools.permutations(ALL_TARGETS, 2))  # the lecture's three and v


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _batch(shape, dtype=torch.float64, seed=0):
    g = _gen(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    ab = (0.02 + 0.96 * torch.rand(shape[0], generator=g, dtype=torch.float64))
    return x, ab


# ---------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize(("source", "target"), PAIRS)
@pytest.mark.parametrize("shape", [(64, 2), (16, 1, 4, 4)])
@pytest.mark.parametrize("per_row", [True, False])
def test_round_trip_every_pair(source, target, shape, per_row):
    x_t, ab = _batch(shape, seed=1)
    pred, _ = _batch(shape, seed=2)
    ab = ab if per_row else 0.37
    there = convert(pred, source, target, x_t, ab)
    back = convert(there, target, source, x_t, ab)
    torch.testing.assert_close(back, pred, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(there, pred)  # a conversion that did nothing would pass the round trip


def test_round_trips_of_the_named_functions():
    x_t, ab = _batch((50, 3), seed=3)
    x0, _ = _batch((50, 3), seed=4)
    torch.testing.assert_close(x0_from_eps(x_t, eps_from_x0(x_t, x0, ab), ab), x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x0_from_score(x_t, score_from_x0(x_t, x0, ab), ab), x0, rtol=1e-10, atol=1e-10)
    eps = eps_from_x0(x_t, x0, ab)
    score = convert(eps, "eps", "score", x_t, ab)
    torch.testing.assert_close(convert(score, "score", "eps", x_t, ab), eps, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_float32_is_preserved(source, target):
    x_t, ab = _batch((32, 2), dtype=torch.float32, seed=5)
    pred, _ = _batch((32, 2), dtype=torch.float32, seed=6)
    out = convert(pred, source, target, x_t, ab)
    assert out.dtype == torch.float32
    back = convert(out, target, source, x_t, ab)
    assert back.dtype == torch.float32
    ref = convert(pred.double(), source, target, x_t.double(), ab)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(back, pred, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------- the forward relation
def test_conversions_recover_the_x0_and_eps_that_made_x_t():
    g = _gen(7)
    x0 = torch.randn(40, 2, generator=g, dtype=torch.float64)
    t = torch.randint(1, SCHEDULE.T + 1, (40,), generator=g)
    x_t, eps = SCHEDULE.q_sample(x0, t, generator=g, return_noise=True)
    ab = SCHEDULE.alpha_bars[t]
    torch.testing.assert_close(x0_from_eps(x_t, eps, ab), x0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(eps_from_x0(x_t, x0, ab), eps, rtol=1e-7, atol=1e-7)
    # v is defined by x0 and eps (Salimans & Ho 2022), not by x^t: build it from them and go back
    abr = ab.reshape(-1, 1)
    v = abr.sqrt() * eps - (1 - abr).sqrt() * x0
    torch.testing.assert_close(x0_from_v(x_t, v, ab), x0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(convert(x0, "x0", "v", x_t, ab), v, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(convert(v, "v", "eps", x_t, ab), eps, rtol=1e-7, atol=1e-7)


def test_x0_from_v_stays_accurate_where_x0_from_eps_amplifies():
    """At ab = 1e-8 (t = T of the MNIST schedule) an error d in eps becomes d / 1e-4 in x0, one in v at most d."""
    x_t = torch.zeros(1, 4, dtype=torch.float64)
    x0 = torch.full((1, 4), 0.5, dtype=torch.float64)
    ab, d = 1e-8, 1e-3
    eps, v = convert(x0, "x0", "eps", x_t, ab), convert(x0, "x0", "v", x_t, ab)
    err_eps = (x0_from_eps(x_t, eps + d, ab) - x0).abs().max()
    err_v = (x0_from_v(x_t, v + d, ab) - x0).abs().max()
    assert float(err_eps) == pytest.approx(d / 1e-4, rel=1e-6)
    assert float(err_v) <= d


def test_score_from_x0_given_one_x0_is_the_gradient_of_log_q_xt_given_x0():
    # With x^0 known, grad log q(x^t | x^0) = (sqrt(ab) x^0 - x^t) / (1 - ab): the same map as score_from_x0.
    x_t, ab = _batch((20, 2), seed=8)
    x0, _ = _batch((20, 2), seed=9)
    x = x_t.clone().requires_grad_(True)
    sd = (1 - ab).sqrt()[:, None]
    logq = torch.distributions.Normal(ab.sqrt()[:, None] * x0, sd).log_prob(x).sum()
    (grad,) = torch.autograd.grad(logq, x)
    torch.testing.assert_close(score_from_x0(x_t, x0, ab), grad, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------- against the mixture
@pytest.mark.parametrize("name", ["eight_gaussians_2d", "anisotropic_2d", "trimodal_1d"])
@pytest.mark.parametrize("ab", [0.05, 0.5, 0.97])
def test_posterior_mean_converts_to_the_score_of_the_noised_mixture(name, ab):
    mix = named_mixture(name)
    x = mix.noised(ab).sample(100, generator=_gen(10))
    pm = mix.posterior_mean(x, ab)
    score = convert(pm, "x0", "score", x, ab)
    torch.testing.assert_close(score, mix.noised(ab).score(x), rtol=1e-8, atol=1e-10)
    # and the score is the gradient of log p(x^t), by autograd
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.noised(ab).log_prob(xr).sum(), xr)
    torch.testing.assert_close(score, grad, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(convert(pm, "x0", "eps", x, ab), -math.sqrt(1 - ab) * grad, rtol=1e-8, atol=1e-10)


def test_per_row_alpha_bar_against_the_mixture_row_by_row():
    mix = named_mixture("two_blobs_2d")
    x, ab = _batch((12, 2), seed=11)
    pm = mix.posterior_mean(x, ab)
    score = convert(pm, "x0", "score", x, ab)
    for i in range(12):
        torch.testing.assert_close(score[i], mix.noised(float(ab[i])).score(x[i:i + 1])[0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("ab", [0.1, 0.6, 0.95])
@pytest.mark.parametrize("x_t", [-1.7, 0.2, 1.4])
def test_three_targets_by_quadrature_in_1d(ab, x_t):
    """E[x^0 | x^t], E[eps | x^t] and d/dx log p(x^t) by scipy quadrature, against the exact core + convert."""
    mix = named_mixture("bimodal_1d")
    w, mu, sd = mix.weights.numpy(), mix.means[:, 0].numpy(), mix.covs[:, 0, 0].sqrt().numpy()
    sab, s1 = math.sqrt(ab), math.sqrt(1 - ab)

    def joint(x0, x):
        return sum(w[k] * stats.norm.pdf(x0, mu[k], sd[k]) for k in range(2)) * stats.norm.pdf(x, sab * x0, s1)

    def moment(f, x):
        return integrate.quad(lambda x0: f(x0) * joint(x0, x), -8, 8, points=list(mu), limit=200)[0]

    z = moment(lambda x0: 1.0, x_t)
    e_x0 = moment(lambda x0: x0, x_t) / z
    e_eps = moment(lambda x0: (x_t - sab * x0) / s1, x_t) / z
    h = 1e-4
    score = (math.log(moment(lambda x0: 1.0, x_t + h)) - math.log(moment(lambda x0: 1.0, x_t - h))) / (2 * h)
    x = torch.tensor([[x_t]], dtype=torch.float64)
    pm = mix.posterior_mean(x, ab)
    assert pm.item() == pytest.approx(e_x0, rel=1e-7, abs=1e-9)
    assert convert(pm, "x0", "eps", x, ab).item() == pytest.approx(e_eps, rel=1e-6, abs=1e-8)
    assert convert(pm, "x0", "score", x, ab).item() == pytest.approx(score, rel=1e-6, abs=1e-7)


# ---------------------------------------------------------------------------------------------- the exact denoiser
@pytest.mark.parametrize("target", TARGETS)
def test_exact_denoiser_is_the_posterior_mean_in_each_target(target):
    mix = named_mixture("anisotropic_2d")
    den = ExactDenoiser(mix, SCHEDULE, target)
    g = _gen(12)
    x = torch.randn(30, 2, generator=g, dtype=torch.float64) * 1.3
    for t in (1, 250, torch.randint(1, 1001, (30,), generator=g)):
        ab = SCHEDULE.alpha_bars[t]
        pm = mix.posterior_mean(x, ab)
        out = den(x, t)
        torch.testing.assert_close(convert(out, target, "x0", x, ab), pm, rtol=1e-9, atol=1e-10)
        if target == "eps":
            sc = torch.stack([mix.noised(float(a)).score(x[i:i + 1])[0] for i, a in enumerate(ab.expand(30))])
            torch.testing.assert_close(out, -(1 - ab.expand(30)).sqrt()[:, None] * sc, rtol=1e-8, atol=1e-9)


def test_exact_denoiser_keeps_float32_and_takes_arrays():
    mix = named_mixture("two_blobs_2d")
    den = ExactDenoiser(mix, SCHEDULE, "score")
    x = torch.randn(8, 2, generator=_gen(13))
    out = den(x, 40)
    assert out.dtype == torch.float32 and out.shape == (8, 2)
    torch.testing.assert_close(out.double(), mix.noised(float(SCHEDULE.alpha_bars[40])).score(x.double()),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(den(x.double().numpy(), 40), out.double(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_alpha_bar_one_when_noise_is_involved():
    x = torch.randn(4, 2)
    for source, target in PAIRS:
        with pytest.raises(ValueError, match="^alpha_bar:.*< 1"):
            convert(x, source, target, x, 1.0)
    with pytest.raises(ValueError, match="^alpha_bar:"):
        x0_from_eps(x, x, torch.tensor([0.5, 1.0, 0.5, 0.5]))
    torch.testing.assert_close(convert(x, "x0", "x0", x, 1.0), x)  # nothing to convert: fine at alpha_bar = 1


@pytest.mark.parametrize("ab", [0.0, -0.2, 1.5, float("nan")])
def test_bad_alpha_bar_out_of_range(ab):
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="^alpha_bar:"):
        convert(x, "eps", "x0", x, ab)


def test_bad_shapes_name_the_argument():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="^eps:.*shape"):
        x0_from_eps(x, x[:3], 0.5)
    with pytest.raises(ValueError, match="^score:.*shape"):
        x0_from_score(x, x[:, :1], 0.5)
    with pytest.raises(ValueError, match="^x0:.*shape"):
        eps_from_x0(x, x.T, 0.5)
    with pytest.raises(ValueError, match="^pred:.*shape"):
        convert(x[:2], "x0", "eps", x, 0.5)
    with pytest.raises(ValueError, match="^alpha_bar:.*shape \\(4,\\)"):
        convert(x, "x0", "eps", x, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="^x_t:"):
        x0_from_eps(torch.randn(4), torch.randn(4), 0.5)


def test_bad_target_names():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="^target:.*'velocity'"):
        convert(x, "x0", "velocity", x, 0.5)
    with pytest.raises(ValueError, match="^source:.*'noise'"):
        convert(x, "noise", "x0", x, 0.5)
    with pytest.raises(ValueError, match="^target:"):
        ExactDenoiser(named_mixture("two_blobs_2d"), SCHEDULE, "velocity")


@pytest.mark.parametrize("t", [0, 1001, -3])
def test_bad_time_step_for_the_exact_denoiser(t):
    den = ExactDenoiser(named_mixture("two_blobs_2d"), SCHEDULE, "eps")
    with pytest.raises(ValueError, match="^t:.*1\\.\\.1000"):
        den(torch.randn(3, 2), t)


def test_bad_time_step_type_for_the_exact_denoiser():
    den = ExactDenoiser(named_mixture("two_blobs_2d"), SCHEDULE, "eps")
    with pytest.raises(TypeError, match="^t:"):
        den(torch.randn(3, 2), 2.0)


# ---------------------------------------------------------------------------------------------- the ELBO's KL terms
def _one_gaussian(mu=(0.5, -0.3), s=0.8) -> GaussianMixture:
    return GaussianMixture([1.0], [list(mu)], s**2)


def test_kl_term_is_the_kl_between_two_gaussians():
    g = _gen(14)
    x0, x_t, mean = (torch.randn(10, 3, generator=g, dtype=torch.float64) for _ in range(3))
    for t in (2, 30, 900):
        a, b, c = SCHEDULE.posterior_coefficients(t)
        cov = c * torch.eye(3, dtype=torch.float64)
        q = torch.distributions.MultivariateNormal(a * x0 + b * x_t, cov)
        p = torch.distributions.MultivariateNormal(mean, cov)
        torch.testing.assert_close(kl_term(SCHEDULE, t, x0, x_t, mean), torch.distributions.kl_divergence(q, p),
                                   rtol=1e-8, atol=1e-10)


def test_reverse_mean_is_e_x_prev_given_x_t_by_block_conditioning():
    """For Gaussian data, E[x^{t-1} | x^t] from the joint Gaussian of the forward chain, without a_t, b_t, c_t."""
    mu, s = 0.4, 0.7
    mix = GaussianMixture([1.0], [[mu]], s**2)
    x = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64)[:, None]
    for t in (2, 10, 300, 1000):
        ab_prev, alpha = float(SCHEDULE.alpha_bars[t - 1]), float(SCHEDULE.alphas[t])
        var_prev = ab_prev * s**2 + 1 - ab_prev
        cov = math.sqrt(alpha) * var_prev
        var_t = alpha * var_prev + 1 - alpha
        want = math.sqrt(ab_prev) * mu + cov / var_t * (x - math.sqrt(ab_prev * alpha) * mu)
        for target in TARGETS:
            pred = ExactDenoiser(mix, SCHEDULE, target)(x, t)
            torch.testing.assert_close(reverse_mean(SCHEDULE, x, t, pred, target), want, rtol=1e-8, atol=1e-9)


def test_the_three_targets_give_the_same_reverse_mean_on_a_mixture():
    mix = named_mixture("eight_gaussians_2d")
    g = _gen(15)
    x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    t = torch.randint(1, 1001, (200,), generator=g)
    means = [reverse_mean(SCHEDULE, x, t, ExactDenoiser(mix, SCHEDULE, tg)(x, t), tg) for tg in TARGETS]
    for m in means[1:]:
        torch.testing.assert_close(m, means[0], rtol=1e-9, atol=1e-10)


def _closed_forms(mix_mu, s, d, steps):
    ab = SCHEDULE.alpha_bars[steps]
    a, _, c = SCHEDULE.posterior_coefficients(steps)
    weight = a**2 / (2 * c)
    return {
        "bayes": weight * d * s**2 * (1 - ab) / (ab * s**2 + 1 - ab),  # d times the posterior variance
        "zero": weight * (d * s**2 + float((torch.tensor(mix_mu) ** 2).sum())),  # E|x^0|^2
        "rescale": weight * d * (1 - ab) / ab,  # x^0 - x^t / sqrt(ab) = -sqrt((1 - ab) / ab) eps
    }


def test_per_timestep_kl_matches_the_closed_form_for_gaussian_data():
    mu, s, d = (0.5, -0.3), 0.8, 2
    mix = _one_gaussian(mu, s)
    steps = torch.tensor([2, 5, 40, 200, 600, 1000])
    want = _closed_forms(mu, s, d, steps)
    predictors = {
        "bayes": ExactDenoiser(mix, SCHEDULE, "eps"),  # target read from .target, then converted
        "zero": lambda x_t, t: torch.zeros_like(x_t),
        "rescale": lambda x_t, t: x_t / SCHEDULE.alpha_bars[t].sqrt(),
    }
    for name, predict in predictors.items():
        res = per_timestep_kl(mix, SCHEDULE, predict, n=20_000, timesteps=steps, generator=_gen(16))
        assert isinstance(res, KLPerStep) and torch.equal(res.t, steps)
        assert res.kl.shape == res.se.shape == (6,) and bool((res.se > 0).all())
        bad = (res.kl - want[name]).abs() > 5 * res.se
        assert not bad.any(), f"{name}: {res.kl} vs closed form {want[name]} (se {res.se})"
    # the Bayes-optimal mean beats both naive ones at every step
    bayes = per_timestep_kl(mix, SCHEDULE, predictors["bayes"], n=2000, timesteps=steps, generator=_gen(17)).kl
    for name in ("zero", "rescale"):
        naive = per_timestep_kl(mix, SCHEDULE, predictors[name], n=2000, timesteps=steps, generator=_gen(17)).kl
        assert bool((bayes < naive).all())


def test_per_timestep_kl_defaults_and_targets():
    mix = named_mixture("bimodal_1d")
    small = NoiseSchedule.linear(50)
    res = per_timestep_kl(mix, small, ExactDenoiser(mix, small, "score"), n=500, generator=_gen(18))
    assert torch.equal(res.t, torch.arange(2, 51)) and res.kl.shape == (49,)
    # the same predictor in its three targets gives the same terms (same draws)
    for target in ("x0", "eps"):
        other = per_timestep_kl(mix, small, ExactDenoiser(mix, small, target), n=500, generator=_gen(18))
        torch.testing.assert_close(other.kl, res.kl, rtol=1e-8, atol=1e-12)
    explicit = per_timestep_kl(mix, small, lambda x, t: mix.posterior_mean(x, small.alpha_bars[t]), target="x0",
                               n=500, generator=_gen(18))
    torch.testing.assert_close(explicit.kl, res.kl, rtol=1e-8, atol=1e-12)


def test_per_timestep_kl_bad_input():
    mix = named_mixture("bimodal_1d")
    den = ExactDenoiser(mix, SCHEDULE, "x0")
    with pytest.raises(ValueError, match="^timesteps:.*reconstruction"):
        per_timestep_kl(mix, SCHEDULE, den, timesteps=[1, 2])
    with pytest.raises(ValueError, match="^timesteps:"):
        per_timestep_kl(mix, SCHEDULE, den, timesteps=[1001])
    with pytest.raises(ValueError, match="^target:"):
        per_timestep_kl(mix, SCHEDULE, den, target="velocity")
    with pytest.raises(ValueError, match="^n:"):
        per_timestep_kl(mix, SCHEDULE, den, n=1)
    with pytest.raises(ValueError, match="^predict:.*shape"):
        per_timestep_kl(mix, SCHEDULE, lambda x, t: x[:, 0], timesteps=[5], n=10)
    with pytest.raises(ValueError, match="^t:.*reconstruction"):
        kl_term(SCHEDULE, 1, torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="^mean:.*shape"):
        kl_term(SCHEDULE, 3, torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="^t:"):
        reverse_mean(SCHEDULE, torch.zeros(4, 1), torch.tensor([2, 3]), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="^prediction:.*shape"):
        reverse_mean(SCHEDULE, torch.zeros(4, 1), 5, torch.zeros(4, 2))


class _Float32Model(torch.nn.Module):
    """A float32 network (like a trained one) that predicts eps; it refuses float64 input."""

    target = "eps"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(1, 1)

    def forward(self, x_t, t):
        assert x_t.dtype == torch.float32, "the model got float64 input"
        return self.lin(x_t)


def test_per_timestep_kl_takes_a_float32_network():
    mix, model = named_mixture("bimodal_1d"), _Float32Model()
    w, b = model.lin.weight.item(), model.lin.bias.item()

    def same_in_float64(x_t, t):
        return w * x_t + b

    steps = [3, 100, 700]
    got = per_timestep_kl(mix, SCHEDULE, model, n=400, timesteps=steps, generator=_gen(19))
    want = per_timestep_kl(mix, SCHEDULE, same_in_float64, target="eps", n=400, timesteps=steps, generator=_gen(19))
    torch.testing.assert_close(got.kl, want.kl, rtol=1e-4, atol=0)


def test_np_float_inputs_are_accepted_by_reverse_mean():
    x = np.linspace(-1, 1, 6)[:, None]
    out = reverse_mean(SCHEDULE, x, 10, np.zeros_like(x))
    assert out.dtype == torch.float64 and out.shape == (6, 1)
