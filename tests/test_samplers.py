"""The samplers, tested apart from any training: with the exact Bayes-optimal denoiser plugged in, they must
reproduce the data distribution (a Gaussian mixture).

References: a NumPy transcription of the lecture's ancestral step (ERRATA 4) and of Song et al.'s DDIM
update (their eq. 12, written with sigma_t and eps_hat, not with our (a, b, c)), fed the same noise;
scipy's KS test against the mixture's exact CDF (1-D); and ``metrics.mixture_fit_test`` (2-D), an exact
test whose own calibration is checked in test_denoisers.py. Every goodness-of-fit test below rejects
at p < P_MIN = 1e-4, which is its false-alarm rate had the seed been free (the seeds are fixed, so the
tests are deterministic). The same tests reject deliberately broken samplers (the power checks).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from course_lib import NoiseSchedule, named_mixture
from course_lib.diffusion import ExactDenoiser
from course_lib.metrics import mixture_fit_test
from course_lib.samplers import SamplerPath, ancestral_sample, ddim_sample, sample, step_coefficients, timesteps

P_MIN = 1e-4
SCHED = NoiseSchedule.cosine(1000)
SHORT = NoiseSchedule.cosine(250)  # a shorter chain keeps the many-sample tests fast


def ks_p(mixture, x) -> float:
    """KS test p-value of 1-D samples x (n, 1) against the mixture's exact CDF (scipy's normal CDF)."""
    w, m, s = mixture.weights.numpy(), mixture.means[:, 0].numpy(), mixture.covs[:, 0, 0].sqrt().numpy()
    x = np.asarray(x, dtype=np.float64)[:, 0]
    return float(stats.kstest(x, lambda v: (w * stats.norm.cdf((np.asarray(v)[:, None] - m) / s)).sum(-1)).pvalue)


def reference_sampler(mixture, schedule, n, generator, *, steps=None, eta=1.0, mistake=None):
    """The sampler written from the papers, in NumPy, drawing noise in the library's order (x^T, then one z
    per step that adds noise). DDPM for s = t - 1 with eta = 1 (the lecture's a_t, b_t, c_t), else DDIM's
    x^s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps_hat + sigma z. ``eta``: a number or a function of the
    step's t. ``mistake`` breaks it on purpose."""
    T, d = schedule.T, mixture.d
    ab, al = schedule.alpha_bars.numpy(), schedule.alphas.numpy()
    steps = steps or T
    ts = [int(round(T - k * T / steps)) for k in range(steps + 1)]
    x = torch.randn(n, d, generator=generator, dtype=torch.float64).numpy()
    eta_of = eta if callable(eta) else (lambda t: eta)
    for t, s in zip(ts[:-1], ts[1:], strict=True):
        x0 = mixture.posterior_mean(x, ab[t]).numpy()
        e = eta_of(t)
        if s == t - 1 and e == 1.0:
            a = math.sqrt(ab[t - 1]) * (1 - al[t]) / (1 - ab[t])
            b = math.sqrt(al[t]) * (1 - ab[t - 1]) / (1 - ab[t])
            c = (1 - ab[t - 1]) * (1 - al[t]) / (1 - ab[t])
            if mistake == "alpha_for_alpha_bar":  # alpha_t where alpha_bar_t belongs
                a = math.sqrt(al[t - 1]) * (1 - al[t]) / (1 - al[t])
                b = math.sqrt(al[t]) * (1 - al[t - 1]) / (1 - al[t])
            mean = a * x0 + b * x
        else:
            sigma2 = e**2 * (1 - ab[s]) / (1 - ab[t]) * (1 - ab[t] / ab[s])
            eps_hat = (x - math.sqrt(ab[t]) * x0) / math.sqrt(1 - ab[t])
            mean = math.sqrt(ab[s]) * x0 + math.sqrt(max(1 - ab[s] - sigma2, 0.0)) * eps_hat
            c = sigma2
            if mistake == "ddim_sign":  # x0_hat = (x + sqrt(1 - ab) eps) / sqrt(ab)
                x0_wrong = (x + math.sqrt(1 - ab[t]) * eps_hat) / math.sqrt(ab[t])
                mean = math.sqrt(ab[s]) * x0_wrong + math.sqrt(max(1 - ab[s] - sigma2, 0.0)) * eps_hat
        if c > 0:
            z = torch.randn(n, d, generator=generator, dtype=torch.float64).numpy()
            if mistake == "no_noise":
                z = 0 * z
            if mistake == "variance_for_sd":  # c_t z instead of sqrt(c_t) z
                c = c**2
            mean = mean + math.sqrt(c) * z
        x = mean
    return x


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- coefficients
def test_timesteps_run_from_T_to_0_evenly():
    assert timesteps(10).tolist() == list(range(10, -1, -1))
    ts = timesteps(1000, 7)
    assert ts[0] == 1000 and ts[-1] == 0 and len(ts) == 8 and bool((ts[:-1] > ts[1:]).all())
    assert timesteps(1000, 999).unique().numel() == 1000


@pytest.mark.parametrize("t", [1, 2, 50, 500, 999, 1000])
def test_ddim_with_eta_1_and_one_step_is_the_lecture_posterior(t):
    want = [float(v) for v in SCHED.posterior_coefficients(t)]
    # DDIM's formula (Song et al.) with eta = 1 and s = t - 1, typed here, gives the lecture's a_t, b_t, c_t
    ab = SCHED.alpha_bars.numpy()
    c = (1 - ab[t - 1]) / (1 - ab[t]) * (1 - ab[t] / ab[t - 1])
    b = math.sqrt((1 - ab[t - 1] - c) / (1 - ab[t]))
    np.testing.assert_allclose([math.sqrt(ab[t - 1]) - b * math.sqrt(ab[t]), b, c], want, rtol=1e-9, atol=1e-15)
    # the sampler uses posterior_coefficients itself for single ancestral steps
    np.testing.assert_allclose(step_coefficients(SCHED, t, t - 1), want, rtol=0, atol=0)
    # and the grid version agrees with the one-step version
    from course_lib.samplers import _coefficient_table

    np.testing.assert_allclose(np.array(_coefficient_table(SCHED, torch.tensor([t, t - 1]), 1.0))[:, 0], want,
                               rtol=0, atol=0)


@pytest.mark.parametrize("t,s,eta", [(1000, 950, 0.0), (600, 100, 0.3), (37, 0, 1.0), (5, 4, 0.0)])
def test_step_coefficients_match_song_et_al(t, s, eta):
    ab = SCHED.alpha_bars.numpy()
    sigma2 = eta**2 * (1 - ab[s]) / (1 - ab[t]) * (1 - ab[t] / ab[s])
    # x^s = sqrt(ab_s) x0 + sqrt(1 - ab_s - sigma^2) (x^t - sqrt(ab_t) x0) / sqrt(1 - ab_t) + sigma z
    b = math.sqrt(1 - ab[s] - sigma2) / math.sqrt(1 - ab[t])
    want = (math.sqrt(ab[s]) - b * math.sqrt(ab[t]), b, sigma2)
    np.testing.assert_allclose(step_coefficients(SCHED, t, s, eta), want, rtol=1e-10, atol=1e-14)


def test_last_step_returns_the_prediction_without_noise():
    assert step_coefficients(SCHED, 1, 0) == pytest.approx((1.0, 0.0, 0.0), abs=1e-15)
    assert step_coefficients(SCHED, 300, 0, eta=0.7) == pytest.approx((1.0, 0.0, 0.0), abs=1e-15)


# ---------------------------------------------------------------------------------------------- against the reference
def _stochastic_early(t):
    return 1.0 if t > 120 else 0.0


def _deterministic_early(t):
    return 0.0 if t > 120 else 0.5


@pytest.mark.parametrize("steps,eta", [(None, 1.0), (50, 0.0), (50, 0.5), (50, 1.0), (50, _stochastic_early),
                                       (None, _stochastic_early), (50, _deterministic_early)])
def test_sampler_equals_the_numpy_reference_given_the_same_noise(steps, eta):
    mix = named_mixture("anisotropic_2d")
    den = ExactDenoiser(mix, SHORT, "eps")
    got = sample(den, SHORT, 300, steps=steps, eta=eta, generator=gen(3))
    want = reference_sampler(mix, SHORT, 300, gen(3), steps=steps, eta=eta)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-9)


def test_ddim_with_eta_1_on_every_step_is_ancestral_sampling():
    den = ExactDenoiser(named_mixture("bimodal_1d"), SHORT, "x0")
    a = ancestral_sample(den, SHORT, 200, generator=gen(1))
    b = ddim_sample(den, SHORT, 200, steps=SHORT.T, eta=1.0, generator=gen(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_the_three_targets_give_the_same_samples_with_the_exact_denoiser(sampler):
    mix = named_mixture("trimodal_1d")
    kw = {"steps": 30, "eta": 0.0} if sampler == "ddim" else {}
    out = {target: sample(ExactDenoiser(mix, SHORT, target), SHORT, 500, generator=gen(2), **kw)
           for target in ("x0", "eps", "score")}
    # the conversions are exact, so only rounding separates them
    torch.testing.assert_close(out["eps"], out["x0"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out["score"], out["x0"], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------- distribution
@pytest.mark.parametrize("name", ["bimodal_1d", "trimodal_1d"])
def test_ancestral_sampling_reproduces_a_1d_mixture(name):
    mix = named_mixture(name)
    x = ancestral_sample(ExactDenoiser(mix, SCHED, "eps"), SCHED, 3000, generator=gen(10))
    assert ks_p(mix, x) > P_MIN


@pytest.mark.parametrize("name", ["bimodal_1d", "trimodal_1d"])
def test_ddim_reproduces_a_1d_mixture(name):
    # eta = 0 with 100 steps: the discretisation error is below what 4000 samples can detect
    mix = named_mixture(name)
    x = ddim_sample(ExactDenoiser(mix, SCHED, "score"), SCHED, 4000, steps=100, generator=gen(11))
    assert ks_p(mix, x) > P_MIN


@pytest.mark.parametrize("name", ["anisotropic_2d", "eight_gaussians_2d"])
@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_samplers_reproduce_a_2d_mixture(name, sampler):
    mix = named_mixture(name)
    den = ExactDenoiser(mix, SHORT if sampler == "ancestral" else SCHED, "x0")
    if sampler == "ancestral":
        x = ancestral_sample(den, SHORT, 3000, generator=gen(12))
    else:
        x = ddim_sample(den, SCHED, 3000, steps=100, generator=gen(12))
    p = mixture_fit_test(mix, x, generator=gen(13))
    assert p["all"] > P_MIN, p


def test_few_step_ddim_is_visibly_off_even_with_the_exact_denoiser():
    # not a bug: 5 deterministic steps are a coarse ODE solver; the tests above use enough steps
    mix = named_mixture("bimodal_1d")
    x = ddim_sample(ExactDenoiser(mix, SCHED, "eps"), SCHED, 4000, steps=5, generator=gen(14))
    assert ks_p(mix, x) < P_MIN


# ---------------------------------------------------------------------------------------------- power
@pytest.mark.parametrize("mistake", ["no_noise", "variance_for_sd", "alpha_for_alpha_bar"])
def test_the_1d_test_rejects_a_broken_ancestral_sampler(mistake):
    mix = named_mixture("bimodal_1d")
    good = reference_sampler(mix, SHORT, 3000, gen(20))
    bad = reference_sampler(mix, SHORT, 3000, gen(20), mistake=mistake)
    assert ks_p(mix, good) > P_MIN
    assert ks_p(mix, bad) < P_MIN


@pytest.mark.parametrize("mistake", ["no_noise", "variance_for_sd", "alpha_for_alpha_bar"])
def test_the_2d_test_rejects_a_broken_ancestral_sampler(mistake):
    mix = named_mixture("anisotropic_2d")
    bad = reference_sampler(mix, SHORT, 3000, gen(21), mistake=mistake)
    assert mixture_fit_test(mix, bad, generator=gen(22))["all"] < P_MIN


def test_the_tests_reject_a_ddim_sign_error():
    mix = named_mixture("trimodal_1d")
    bad = reference_sampler(mix, SCHED, 3000, gen(23), steps=100, eta=0.0, mistake="ddim_sign")
    assert ks_p(mix, bad) < P_MIN


# ---------------------------------------------------------------------------------------------- behaviour
def test_ddim_with_eta_0_is_deterministic_given_x_T():
    mix = named_mixture("two_blobs_2d")
    den = ExactDenoiser(mix, SCHED, "eps")
    x_T = torch.randn(100, 2, generator=gen(30), dtype=torch.float64)
    a = ddim_sample(den, SCHED, steps=20, x_T=x_T, generator=gen(31))
    b = ddim_sample(den, SCHED, steps=20, x_T=x_T, generator=gen(32))
    c = ddim_sample(den, SCHED, steps=20, x_T=x_T, eta=0.5, generator=gen(32))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_return_path_shapes_and_contents():
    den = ExactDenoiser(named_mixture("two_blobs_2d"), SCHED, "eps")
    x_T = torch.randn(50, 2, generator=gen(40), dtype=torch.float64)
    out = ddim_sample(den, SCHED, 50, steps=10, x_T=x_T, return_path=True)
    assert isinstance(out, SamplerPath)
    x, path, x0_pred, ts = out
    assert path.shape == (11, 50, 2) and x0_pred.shape == (10, 50, 2) and ts.shape == (11,)
    assert torch.equal(path[0], x_T) and torch.equal(path[-1], x) and torch.equal(ts, timesteps(1000, 10))
    # the prediction at step k is the exact posterior mean at x^{tau_k}
    k = 4
    want = den.mixture.posterior_mean(path[k], SCHED.alpha_bars[ts[k]])
    torch.testing.assert_close(x0_pred[k], want)
    # the last step returns the last prediction (no noise at the end)
    torch.testing.assert_close(x, x0_pred[-1])
    full = ancestral_sample(den, SHORT, 5, return_path=True, generator=gen(1))
    assert full.path.shape == (SHORT.T + 1, 5, 2)


class _Float32Net(torch.nn.Module):
    """A stand-in learned model: a float32 module that predicts x0 = 0 (so samples collapse to 0)."""

    target = "x0"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))

    def forward(self, x_t, t):
        assert x_t.dtype == torch.float32 and t.dtype == torch.long and t.shape == (x_t.shape[0],)
        return x_t * self.w[0]


def test_the_sampler_works_in_the_model_dtype_and_reads_its_target():
    x = ddim_sample(_Float32Net(), SCHED, (7, 3), steps=5)
    assert x.dtype == torch.float32 and x.shape == (7, 3)
    torch.testing.assert_close(x, torch.zeros(7, 3))
    img = sample(_Float32Net(), SCHED, (2, 1, 4, 4), steps=3)  # image-shaped batches work too
    assert img.shape == (2, 1, 4, 4)
    # a float64 x_T is cast to the model's dtype; a plain function runs in x_T's dtype
    assert sample(_Float32Net(), SCHED, x_T=torch.zeros(3, 3, dtype=torch.float64), steps=2).dtype == torch.float32
    half = sample(lambda x, t: 0 * x, SCHED, x_T=torch.zeros(3, 2, dtype=torch.float32), target="x0", steps=2)
    assert half.dtype == torch.float32


def test_the_same_seed_gives_the_same_samples():
    den = ExactDenoiser(named_mixture("two_blobs_2d"), SCHED, "eps")
    assert torch.equal(ddim_sample(den, SCHED, 20, steps=10, eta=1.0, generator=gen(5)),
                       ddim_sample(den, SCHED, 20, steps=10, eta=1.0, generator=gen(5)))


def test_clip_x0_bounds_the_prediction():
    den = ExactDenoiser(named_mixture("bimodal_1d"), SCHED, "eps")
    out = ddim_sample(den, SCHED, 200, steps=10, clip_x0=0.5, generator=gen(6), return_path=True)
    assert float(out.x0_pred.abs().max()) <= 0.5


# ---------------------------------------------------------------------------------------------- bad input
def _bad_calls():
    den = ExactDenoiser(named_mixture("two_blobs_2d"), SCHED, "eps")

    def wrong_shape(x, t):
        return x[:, :1]

    return [
        (lambda: sample(lambda x, t: x, SCHED, (4, 2)), ValueError, "target"),
        (lambda: sample(den, SCHED, 4, target="noise"), ValueError, "target"),
        (lambda: sample(den, SCHED, 4, eta=1.5), ValueError, "eta"),
        (lambda: sample(den, SCHED, 4, eta="big"), TypeError, "eta"),
        (lambda: sample(den, SCHED, 4, steps=5, eta=lambda t: 2.0), ValueError, "eta"),
        (lambda: sample(den, SCHED, 4, steps=2000), ValueError, "steps"),
        (lambda: sample(den, SCHED, 4, steps=0), ValueError, "steps"),
        (lambda: sample(lambda x, t: x, SCHED, 4, target="eps"), ValueError, "shape_or_n"),
        (lambda: sample(den, SCHED, -3), ValueError, "shape_or_n"),
        (lambda: sample(den, SCHED), ValueError, "shape_or_n"),
        (lambda: sample(wrong_shape, SCHED, (4, 2), target="eps"), ValueError, "denoiser"),
        (lambda: sample("model", SCHED, 4), TypeError, "denoiser"),
        (lambda: sample(den, "cosine", 4), TypeError, "schedule"),
        (lambda: sample(den, SCHED, 4, generator=0), TypeError, "generator"),
        (lambda: sample(den, SCHED, 4, x_T=torch.zeros(5, 2)), ValueError, "x_T"),
        (lambda: sample(den, SCHED, 4, clip_x0=-1), ValueError, "clip_x0"),
        (lambda: step_coefficients(SCHED, 10, 10), ValueError, "s"),
    ]


@pytest.mark.parametrize("call,exc,arg", _bad_calls())
def test_bad_input_is_named_in_the_message(call, exc, arg):
    with pytest.raises(exc, match=rf"^{arg}:"):
        call()
