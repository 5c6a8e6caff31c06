"""The whole diffusion ELBO on 1-D Gaussian mixtures (course_lib.diffusion_elbo.diffusion_elbo and friends).

Independent references:
- a one-component mixture is a linear-Gaussian chain: ``hierarchical_elbo.GaussianChain`` computes its ELBO in
  closed form, with the reverse model written out here from Gaussian conditioning;
- E[log p(x^0) - ELBO] equals KL(q(x^T) || N(0, 1)) + sum_t E_{q(x^t)} KL(q(x^{t-1}|x^t) || p_theta(x^{t-1}|x^t)),
  computed here from the true reverse conditionals (Gaussian mixtures, ``GaussianMixture.posterior``) by quadrature;
- Monte Carlo of each KL from Gaussian log densities (``torch.distributions.Normal``).
Statistical tests use fixed seeds and a 4.5-standard-error band (false-alarm rate about 7e-6 each).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from course_lib import GaussianMixture, NoiseSchedule, named_mixture
from course_lib.diffusion import ExactDenoiser
from course_lib.diffusion_elbo import (
    RetimedDenoiser,
    diffusion_elbo,
    elbo_gap_vs_T,
    first_step_variance,
    log_snr_schedule,
    plot_gap_vs_T,
)
from course_lib.hierarchical_elbo import GaussianChain, LinearGaussianReverse
from course_lib.vae import mean_stderr

F64 = torch.float64


def _gh(n: int):
    e, w = np.polynomial.hermite_e.hermegauss(n)
    return torch.as_tensor(e, dtype=F64), torch.as_tensor(w / w.sum(), dtype=F64)


def _mixture_nodes(mix: GaussianMixture, n: int):
    """Quadrature over x ~ mix: nodes (K n, 1) and weights (K n,), Gauss-Hermite within each component."""
    e, w = _gh(n)
    sd = mix.covs[:, 0, 0].sqrt()
    x = (mix.means[:, 0, None] + sd[:, None] * e[None]).reshape(-1, 1)
    return x, (mix.weights[:, None] * w[None]).reshape(-1)


# ---------------------------------------------------------------------------------------------- one Gaussian
def _bayes_linear_reverse(schedule, m: float, s2: float) -> LinearGaussianReverse:
    """The diffusion decoder with x0_hat = E[x^0 | x^t] = m + k_t (x^t - sqrt(ab_t) m), k_t = sqrt(ab_t) s2 / V_t."""
    T, ab = schedule.T, schedule.alpha_bars
    slope = torch.full((T + 1,), float("nan"), dtype=F64)
    offset, var = slope.clone(), slope.clone()
    for t in range(1, T + 1):
        k = ab[t].sqrt() * s2 / (ab[t] * s2 + 1 - ab[t])
        a, b, c = schedule.posterior_coefficients(t)
        slope[t] = a * k + b
        offset[t] = a * (m - k * ab[t].sqrt() * m)
        var[t] = c if t > 1 else (1 - ab[1]) / ab[1]
    return LinearGaussianReverse(slope, offset, var, 0.0, 1.0)


@pytest.mark.parametrize("schedule", [NoiseSchedule.cosine(7), log_snr_schedule(12), NoiseSchedule.linear(30)])
def test_one_gaussian_matches_the_linear_gaussian_chain_term_by_term(schedule):
    m, s2 = 0.4, 0.5
    mix = GaussianMixture([1.0], [[m]], [s2])
    x0 = torch.tensor([[-1.0], [0.3], [2.2]], dtype=F64)
    got = diffusion_elbo(mix, schedule, ExactDenoiser(mix, schedule, "eps"), x0, nodes=6)
    want = GaussianChain(schedule, m, s2).elbo_terms(x0[:, 0], _bayes_linear_reverse(schedule, m, s2))
    assert torch.allclose(got.L, want["L"], rtol=1e-8, atol=1e-10)
    assert torch.allclose(got.L_0, want["L_0"], rtol=1e-10, atol=1e-10)
    assert torch.allclose(got.L_T, want["L_T"], rtol=1e-10, atol=1e-12)
    assert torch.allclose(got.elbo, want["elbo"], rtol=1e-8, atol=1e-9)
    assert torch.allclose(got.log_p, Normal(m, math.sqrt(s2)).log_prob(x0[:, 0]), atol=1e-12)


def test_first_step_variance_is_the_flat_data_limit_of_the_posterior_variance():
    s = NoiseSchedule.cosine(100)
    wide = GaussianMixture([1.0], [[0.0]], [1e8])  # flat on the scale of one step's noise
    post_var = float(wide.posterior_cov(torch.zeros(1, 1), s.alpha_bars[1])[0, 0, 0])
    assert first_step_variance(s) == pytest.approx(post_var, rel=1e-6)
    assert first_step_variance(s) == pytest.approx(float(s.betas[1] / s.alphas[1]), rel=1e-12)


# ---------------------------------------------------------------------------------------------- the gap
def _kl_mixture_normal(post: GaussianMixture, mean: float, var: float, nodes: int) -> float:
    """KL(post || N(mean, var)) for a 1-D mixture, Gauss-Hermite within each component."""
    y, w = _mixture_nodes(post, nodes)
    return float(w @ (post.log_prob(y) - Normal(mean, math.sqrt(var)).log_prob(y[:, 0])))


def _gap_from_reverse_kls(mix: GaussianMixture, schedule, nodes: int = 40) -> float:
    """KL(q(x^T) || N(0, 1)) + sum_t E_{q(x^t)} KL(q(x^{t-1} | x^t) || N(mu_theta(x^t), var_t)), Bayes-optimal means."""
    T, ab, alpha = schedule.T, schedule.alpha_bars, schedule.alphas
    qT = mix.noised(ab[T])
    total = _kl_mixture_normal(qT, 0.0, 1.0, nodes)
    for t in range(1, T + 1):
        prev = mix if t == 1 else mix.noised(ab[t - 1])  # q(x^{t-1}); x^t = sqrt(alpha_t) x^{t-1} + noise
        xt, wt = _mixture_nodes(mix.noised(ab[t]), nodes)
        x0_hat = mix.posterior_mean(xt, ab[t])[:, 0]
        a, b, c = schedule.posterior_coefficients(t)
        mean = a * x0_hat + b * xt[:, 0]
        var = float(c) if t > 1 else first_step_variance(schedule)
        kls = torch.tensor([_kl_mixture_normal(prev.posterior(xt[i], alpha[t]), float(mean[i]), var, nodes)
                            for i in range(xt.shape[0])], dtype=F64)
        total += float(wt @ kls)
    return total


@pytest.mark.parametrize("schedule", [log_snr_schedule(5, log_snr_max=4.0, log_snr_min=-4.0), NoiseSchedule.cosine(6)],
                         ids=["log-snr", "cosine"])
def test_bayes_gap_is_the_sum_of_the_reverse_step_kls(schedule):
    """Both sides by quadrature (no Monte Carlo): they agree to 2e-3 (relative) with 24 nodes and to 3e-5 with 60, as
    the reference's nested quadrature converges (measured)."""
    mix = named_mixture("bimodal_1d")
    x0, w0 = _mixture_nodes(mix, 24)
    res = diffusion_elbo(mix, schedule, ExactDenoiser(mix, schedule, "x0"), x0, nodes=24)
    gap = float(w0 @ res.gap)
    assert gap > 0.5  # large steps: a visible gap
    assert gap == pytest.approx(_gap_from_reverse_kls(mix, schedule, nodes=24), rel=2.5e-3)
    # the reference sees the decoder's variance: four times beta_1 / alpha_1 gives another gap
    wrong = diffusion_elbo(mix, schedule, ExactDenoiser(mix, schedule, "x0"), x0, nodes=24,
                           decoder_var=4 * first_step_variance(schedule))
    assert abs(float(w0 @ wrong.gap) - gap) > 0.1


def test_bayes_gap_shrinks_like_1_over_T_when_the_log_snr_range_is_refined():
    g1 = GaussianMixture([1.0], [[0.5]], [0.3])
    x0, w0 = _mixture_nodes(g1, 6)
    gaps = {}
    for T in (50, 200, 800):
        s = log_snr_schedule(T)
        gaps[T] = float(w0 @ diffusion_elbo(g1, s, ExactDenoiser(g1, s, "x0"), x0, nodes=6).gap)
    assert gaps[50] > gaps[200] > gaps[800] > 0
    assert gaps[800] < 0.03
    for small, big in ((50, 200), (200, 800)):
        assert gaps[small] / gaps[big] == pytest.approx(4.0, rel=0.15)


def test_cosine_schedule_gap_does_not_vanish():
    """With the cosine (or DDPM's linear) schedule the first steps keep multiplying the noise variance by about
    t / (t - 1) however large T is: c_t stays far from the true reverse variance there, and the gap levels off."""
    g1 = GaussianMixture([1.0], [[0.5]], [0.3])
    x0, w0 = _mixture_nodes(g1, 6)
    gaps = [float(w0 @ diffusion_elbo(g1, s, ExactDenoiser(g1, s, "x0"), x0, nodes=6).gap)
            for s in (NoiseSchedule.cosine(100), NoiseSchedule.cosine(800))]
    assert gaps[1] > 0.3 and gaps[1] > 0.5 * gaps[0]


def test_gap_is_nonnegative_within_monte_carlo_error_for_good_and_bad_predictors():
    mix = named_mixture("bimodal_1d")
    s = log_snr_schedule(30)
    fit = GaussianMixture([1.0], mix.mixture_mean()[None], mix.mixture_cov()[None])
    x0 = mix.sample(400, generator=torch.Generator().manual_seed(0))
    bayes = diffusion_elbo(mix, s, ExactDenoiser(mix, s, "x0"), x0, nodes=16)
    linear = diffusion_elbo(mix, s, ExactDenoiser(fit, s, "eps"), x0, nodes=16)
    for res in (bayes, linear):
        mean, se = mean_stderr(res.gap)
        assert mean > -4.5 * se
    # the best linear predictor pays more, for these very points (paired difference)
    diff, se = mean_stderr(linear.gap - bayes.gap)
    assert diff > 4.5 * se


def test_control_variate_keeps_the_mean_and_only_adds_nonnegative_excess():
    mix = named_mixture("bimodal_1d")
    s = log_snr_schedule(20)
    fit = GaussianMixture([1.0], mix.mixture_mean()[None], mix.mixture_cov()[None])

    def nearly_optimal(x_t, t):  # E[x^0 | x^t] plus a small smooth error: a well-trained denoiser
        return mix.posterior_mean(x_t, s.alpha_bars[t]) + 0.03 * torch.tanh(2 * x_t)

    x0 = mix.sample(2000, generator=torch.Generator().manual_seed(1))
    bayes = diffusion_elbo(mix, s, ExactDenoiser(mix, s, "x0"), x0, nodes=16)
    for predict, lower_se in ((ExactDenoiser(fit, s, "eps"), False), (nearly_optimal, True)):
        direct = diffusion_elbo(mix, s, predict, x0, nodes=16)
        cv = diffusion_elbo(mix, s, predict, x0, nodes=16, control_variate=True)
        diff, se = mean_stderr(direct.elbo - cv.elbo)  # the dropped cross terms: mean 0 over the data
        assert abs(diff) < 4.5 * se
        assert bool((cv.gap >= bayes.gap - 1e-12).all())
        if lower_se:  # ... and, near the optimum, the excess is measured far more precisely
            assert mean_stderr(cv.gap - bayes.gap)[1] < 0.7 * mean_stderr(direct.gap - bayes.gap)[1]
    # for the Bayes-optimal predictor the cross term is exactly 0
    same = diffusion_elbo(mix, s, ExactDenoiser(mix, s, "x0"), x0[:50], nodes=16, control_variate=True)
    assert torch.allclose(same.elbo, bayes.elbo[:50], atol=1e-10)


# ------------------------------------------------------------------------------------- Monte Carlo of each term
def test_each_term_matches_a_monte_carlo_of_its_definition():
    """L_{t-1}(x^0) = E KL(q(x^{t-1}|x^0,x^t) || p_theta(x^{t-1}|x^t)) by drawing x^t, then x^{t-1}, and averaging the
    log-density ratio; L_0 by drawing x^1 and averaging -log p_theta(x^0 | x^1)."""
    mix = named_mixture("bimodal_1d")
    s = log_snr_schedule(10)
    fit = GaussianMixture([1.0], mix.mixture_mean()[None], mix.mixture_cov()[None])
    for predict in (ExactDenoiser(mix, s, "x0"), ExactDenoiser(fit, s, "score")):
        x0 = torch.tensor([[-1.4], [0.9]], dtype=F64)
        res = diffusion_elbo(mix, s, predict, x0, nodes=24)
        g = torch.Generator().manual_seed(5)
        n = 20_000
        for i in range(2):
            for t in (1, 2, 5, 10):
                ab = s.alpha_bars[t]
                x_t = ab.sqrt() * x0[i] + (1 - ab).sqrt() * torch.randn(n, 1, generator=g, dtype=F64)
                x0_hat = predict.mixture.posterior_mean(x_t, ab)  # both predictors are exact for their mixture
                if t == 1:
                    draws = -Normal(x0_hat[:, 0], math.sqrt(first_step_variance(s))).log_prob(x0[i, 0].expand(n))
                    want = res.L_0[i]
                else:
                    a, b, c = s.posterior_coefficients(t)
                    q = Normal(a * x0[i, 0] + b * x_t[:, 0], c.sqrt())
                    p = Normal(a * x0_hat[:, 0] + b * x_t[:, 0], c.sqrt())
                    prev = q.mean + q.stddev * torch.randn(n, generator=g, dtype=F64)  # x^{t-1} ~ q(. | x^0, x^t)
                    draws = q.log_prob(prev) - p.log_prob(prev)
                    want = res.L[i, t - 2]
                mean, se = mean_stderr(draws)
                assert abs(mean - float(want)) < 4.5 * se + 1e-9, (i, t, mean, float(want), se)


# ---------------------------------------------------------------------------------------------- helpers
def test_log_snr_schedule_has_fixed_ends_and_even_log_snr_steps():
    for T in (2, 10, 300):
        s = log_snr_schedule(T, log_snr_max=6.0, log_snr_min=-5.0)
        lam = torch.log(s.alpha_bars[1:] / (1 - s.alpha_bars[1:]))
        assert float(lam[0]) == pytest.approx(6.0, abs=1e-9) and float(lam[-1]) == pytest.approx(-5.0, abs=1e-9)
        assert torch.allclose(lam.diff(), torch.full((T - 1,), -11.0 / (T - 1), dtype=F64), atol=1e-9)
    with pytest.raises(ValueError, match="log_snr_max"):
        log_snr_schedule(10, log_snr_max=-1.0, log_snr_min=1.0)


def test_retimed_denoiser_calls_the_model_at_the_matching_step():
    mix = named_mixture("bimodal_1d")
    trained_on, s = NoiseSchedule.cosine(1000), NoiseSchedule.cosine(50)
    retimed = RetimedDenoiser(ExactDenoiser(mix, trained_on, "eps"), trained_on, s)
    assert retimed.target == "eps"
    assert torch.equal(retimed.steps[1:-1], 20 * torch.arange(1, 50))  # same alpha_bar, except the clipped last step
    x = torch.linspace(-2, 2, 7, dtype=F64)[:, None]
    for t in (1, 17, 49):
        assert torch.allclose(retimed(x, t), ExactDenoiser(mix, s, "eps")(x, t), atol=1e-12)
    assert retimed.max_log_snr_gap < 1.0


def test_elbo_gap_vs_T_pairs_the_data_points():
    mix = named_mixture("bimodal_1d")
    tab = elbo_gap_vs_T(mix, [5, 10], lambda s: ExactDenoiser(mix, s, "x0"), n=50, nodes=8,
                        generator=torch.Generator().manual_seed(0), make_schedule=log_snr_schedule)
    x0 = mix.sample(50, generator=torch.Generator().manual_seed(0))
    s = log_snr_schedule(10)
    res = diffusion_elbo(mix, s, ExactDenoiser(mix, s, "x0"), x0, nodes=8)
    assert float(tab.gap[1]) == pytest.approx(float(res.gap.mean()), abs=1e-12)
    assert tab.log_p == pytest.approx(float(res.log_p.mean()), abs=1e-12)
    assert float(tab.gap[0]) > float(tab.gap[1]) > 0
    assert "T * gap" in tab.rows() and "baseline" not in tab.rows() and bool(tab.excess.isnan().all())
    # the excess over a baseline is the paired difference of the gaps
    fit = GaussianMixture([1.0], mix.mixture_mean()[None], mix.mixture_cov()[None])
    tab2 = elbo_gap_vs_T(mix, [10], lambda s: ExactDenoiser(fit, s, "x0"), n=50, nodes=8,
                         generator=torch.Generator().manual_seed(0), make_schedule=log_snr_schedule,
                         make_baseline=lambda s: ExactDenoiser(mix, s, "x0"), control_variate=True)
    lin = diffusion_elbo(mix, s, ExactDenoiser(fit, s, "x0"), x0, nodes=8, control_variate=True)
    assert float(tab2.excess[0]) == pytest.approx(float((lin.gap - res.gap).mean()), abs=1e-12)
    assert float(tab2.excess[0]) > 4.5 * float(tab2.excess_se[0]) > 0
    assert "baseline" in tab2.rows()


def test_plot_gap_vs_T_draws_one_line_per_table_and_the_excess():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mix = named_mixture("bimodal_1d")
    kw = dict(n=20, nodes=6, generator=torch.Generator().manual_seed(0), make_schedule=log_snr_schedule)
    bayes = elbo_gap_vs_T(mix, [5, 10], lambda s: ExactDenoiser(mix, s, "x0"), **kw)
    fit = GaussianMixture([1.0], mix.mixture_mean()[None], mix.mixture_cov()[None])
    kw["generator"] = torch.Generator().manual_seed(0)
    lin = elbo_gap_vs_T(mix, [5, 10], lambda s: ExactDenoiser(fit, s, "x0"), control_variate=True,
                        make_baseline=lambda s: ExactDenoiser(mix, s, "x0"), **kw)
    ax = plot_gap_vs_T({"Bayes": bayes, "linear": lin}, excess_label="excess")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == sorted(["$\\propto 1/T$", "Bayes", "linear", "excess"])
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and ax.get_xlabel() and ax.get_ylabel()
    plt.close(ax.figure)


def test_arguments_are_validated():
    mix2d = named_mixture("two_blobs_2d")
    s = log_snr_schedule(5)
    with pytest.raises(ValueError, match="1-D"):
        diffusion_elbo(mix2d, s, ExactDenoiser(mix2d, s, "x0"), torch.zeros(3, 2))
    mix = named_mixture("bimodal_1d")
    with pytest.raises(ValueError, match="x0"):
        diffusion_elbo(mix, s, ExactDenoiser(mix, s, "x0"), torch.zeros(3))
    with pytest.raises(ValueError, match="decoder_var"):
        diffusion_elbo(mix, s, ExactDenoiser(mix, s, "x0"), torch.zeros(3, 1), decoder_var=-1.0)
    with pytest.raises(TypeError, match="predict"):
        diffusion_elbo(mix, s, "not a function", torch.zeros(3, 1))
