"""The toy denoiser, its loss and the sample-quality metrics, against independent references.

References: the Bayes-optimal error from ``GaussianMixture.mmse`` (exact conditional variances averaged
by Monte Carlo) for the loss of the exact denoiser; the target conversions for the loss weightings; a
closed form of the energy distance between two normals and a brute-force NumPy double loop; scipy's
normal log-density. Monte Carlo comparisons allow 5 standard errors (a false-alarm rate below ~1e-6 had
the seed been free); the seeds are fixed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from course_lib import NoiseSchedule, named_mixture
from course_lib.denoisers import (
    ToyDenoiser,
    bayes_error,
    cached_toy_denoiser,
    denoiser_error,
    diffusion_loss,
    loss_weights,
    target_scale,
    time_embedding,
    toy_data,
    train_toy_denoiser,
)
from course_lib.diffusion import ExactDenoiser, convert
from course_lib.metrics import average_log_prob, energy_distance, energy_test, mixture_fit_test, mmd, sample_quality

SCHED = NoiseSchedule.cosine(1000)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- the network
def test_toy_denoiser_maps_points_and_steps_to_a_prediction():
    net = ToyDenoiser(dim=3, hidden=16, layers=2, target="x0", T=50)
    x = torch.randn(5, 3)
    assert net(x, torch.arange(5)).shape == (5, 3)
    assert torch.equal(net(x, 7), net(x, torch.full((5,), 7)))  # an int is broadcast over the rows
    assert net.config() == {"dim": 3, "hidden": 16, "layers": 2, "target": "x0", "T": 50, "emb_dim": 32}
    assert not torch.allclose(net(x, 1), net(x, 40))  # the time reaches the output


def test_time_embedding_is_sinusoidal_and_scaled_to_1000():
    e = time_embedding(torch.tensor([0, 250]), T=500, dim=8)
    assert e.shape == (2, 8)
    np.testing.assert_allclose(e[0].numpy(), [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)
    np.testing.assert_allclose(e[1, 0].item(), math.sin(500.0), atol=1e-4)  # u = 1000 t / T, first frequency 1


@pytest.mark.parametrize("call,exc,arg", [
    (lambda: ToyDenoiser(target="velocity"), ValueError, "target"),
    (lambda: ToyDenoiser(hidden=0), ValueError, "hidden"),
    (lambda: ToyDenoiser()(torch.randn(4, 3), 1), ValueError, "x_t"),
    (lambda: ToyDenoiser(T=10)(torch.randn(4, 2), 11), ValueError, "t"),
    (lambda: ToyDenoiser()(torch.randn(4, 2), torch.ones(3, dtype=torch.long)), ValueError, "t"),
    (lambda: diffusion_loss(ToyDenoiser(), torch.randn(4, 2), SCHED, "velocity"), ValueError, "target"),
    (lambda: diffusion_loss(ToyDenoiser(), torch.randn(4), SCHED), ValueError, "x0"),
    (lambda: diffusion_loss(ToyDenoiser(), torch.randn(4, 2), SCHED, weighting="snr"), ValueError, "weighting"),
    (lambda: diffusion_loss(lambda x, t: x[:, :1], torch.randn(4, 2), SCHED, "eps"), ValueError, "model"),
    (lambda: toy_data("moons"), ValueError, "name"),
])
def test_bad_input_is_named_in_the_message(call, exc, arg):
    with pytest.raises(exc, match=rf"^{arg}:"):
        call()


# ---------------------------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("target", ["x0", "eps", "score"])
@pytest.mark.parametrize("t", [20, 300, 800])
def test_the_exact_denoisers_loss_is_the_bayes_error(target, t):
    """E[loss | t] for the Bayes-optimal denoiser = w_t E|y - E[y | x^t]|^2 = w_t k_t^2 mmse(alpha_bar_t)."""
    mix = named_mixture("anisotropic_2d")
    x0 = mix.sample(40_000, generator=gen(1))
    per = diffusion_loss(ExactDenoiser(mix, SCHED, target), x0, SCHED, target, gen(2), t=t, reduction="none")
    mmse, mmse_se = mix.mmse(SCHED.alpha_bars[t], n=100_000, generator=gen(3))
    k2w = float(target_scale(target, SCHED.alpha_bars[t]) ** 2 * loss_weights(SCHED, target)[t])
    se = math.hypot(float(per.std()) / math.sqrt(per.numel()), k2w * mmse_se)
    assert abs(float(per.mean()) - k2w * mmse) < 5 * se, (float(per.mean()), k2w * mmse, se)


def test_a_wrong_denoiser_has_a_larger_loss_than_the_bayes_error():
    mix = named_mixture("two_blobs_2d")
    x0 = mix.sample(20_000, generator=gen(4))
    exact = diffusion_loss(ExactDenoiser(mix, SCHED, "eps"), x0, SCHED, "eps", gen(5), t=200)
    wrong = diffusion_loss(lambda x, t: 0.9 * ExactDenoiser(mix, SCHED, "eps")(x, t), x0, SCHED, "eps", gen(5), t=200)
    assert float(wrong) > float(exact) + 0.005


def test_score_loss_weighting_is_the_eps_loss_of_the_implied_eps():
    """weighting "auto" for score: (1 - ab) |s + eps / sigma|^2 = |(-sigma s) - eps|^2, with the same draws."""
    torch.manual_seed(0)
    net = ToyDenoiser(target="score").double()
    x0 = torch.randn(64, 2, dtype=torch.float64)
    t = torch.randint(1, 1001, (64,), generator=gen(6))
    ab = SCHED.alpha_bars

    def as_eps(x, tt):
        return convert(net(x, tt), "score", "eps", x, ab[tt])

    a = diffusion_loss(net, x0, SCHED, generator=gen(7), t=t, reduction="none")
    b = diffusion_loss(as_eps, x0, SCHED, "eps", gen(7), t=t, reduction="none")
    torch.testing.assert_close(a, b)
    # and the x0 loss with weighting "eps" is the eps loss of the implied eps prediction
    net0 = ToyDenoiser(target="x0").double()
    c = diffusion_loss(net0, x0, SCHED, generator=gen(7), t=t, weighting="eps", reduction="none")
    d = diffusion_loss(lambda x, tt: convert(net0(x, tt), "x0", "eps", x, ab[tt]), x0, SCHED, "eps", gen(7), t=t,
                       reduction="none")
    torch.testing.assert_close(c, d)
    torch.testing.assert_close(loss_weights(SCHED, "score")[1:], 1 - ab[1:], rtol=1e-12, atol=0)
    assert torch.equal(loss_weights(SCHED, "eps"), torch.ones(1001, dtype=torch.float64))


@pytest.mark.parametrize(("weighting", "x0_weight"), [
    ("eps", lambda snr: snr),
    ("min_snr", lambda snr: snr.clamp(max=5.0)),
    ("v_min_snr", lambda snr: (1 + snr).clamp(max=5.0)),
])
@pytest.mark.parametrize("target", ["x0", "eps", "score", "v"])
def test_weightings_are_weights_on_the_x0_error_whatever_the_target(weighting, x0_weight, target):
    """Predict x0 + d (converted to ``target``): the weighted loss is x0_weight(SNR_t) |d|^2 for every target."""
    x0 = torch.randn(1, 3, dtype=torch.float64, generator=gen(8))
    noise = torch.randn(1, 3, dtype=torch.float64, generator=gen(9))
    d = torch.tensor([[0.3, -0.1, 0.2]], dtype=torch.float64)
    ab = SCHED.alpha_bars
    for t in (5, 300, 700, 990):
        def wrong(x, tt):
            return convert(x0 + d, "x0", target, x, ab[tt])  # noqa: B023
        got = diffusion_loss(wrong, x0, SCHED, target, t=t, noise=noise, weighting=weighting)
        snr = ab[t] / (1 - ab[t])
        torch.testing.assert_close(got, x0_weight(snr) * d.pow(2).sum(), rtol=1e-8, atol=1e-12)


def test_loss_regresses_the_right_target_given_the_noise():
    x0 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    noise = torch.tensor([[0.5, 0.25]], dtype=torch.float64)
    t = 400
    ab = SCHED.alpha_bars[t]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    zero = lambda x, tt: torch.zeros_like(x)  # noqa: E731
    v = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    for target, y, w in (("x0", x0, 1.0), ("eps", noise, 1.0), ("score", -noise / (1 - ab).sqrt(), 1 - ab),
                         ("v", v, 1.0)):
        got = diffusion_loss(zero, x0, SCHED, target, t=t, noise=noise)
        torch.testing.assert_close(got, w * y.pow(2).sum())
        got = diffusion_loss(lambda x, tt: x * 0 + y, x0, SCHED, target, t=t, noise=noise)  # noqa: B023
        assert float(got) == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(SCHED.q_sample(x0, t, noise=noise), x_t)


# ---------------------------------------------------------------------------------------------- training
def test_a_briefly_trained_model_beats_a_trivial_baseline():
    data = toy_data("two_blobs_2d")
    model, hist = train_toy_denoiser(data, SCHED, "eps", 300, hidden=64, layers=2, progress=False, log_every=50)
    assert hist["step"] == [50, 100, 150, 200, 250, 300] and hist["seconds"] > 0
    x0 = data(4000, gen(8))
    with torch.no_grad():
        learned = float(diffusion_loss(model, x0, SCHED, "eps", gen(9)))
        zero = float(diffusion_loss(lambda x, t: torch.zeros_like(x), x0, SCHED, "eps", gen(9)))
        identity = float(diffusion_loss(lambda x, t: x, x0, SCHED, "eps", gen(9)))
        exact = float(diffusion_loss(ExactDenoiser(data.mixture, SCHED, "eps"), x0.double(), SCHED, "eps", gen(9)))
    assert exact < learned < min(zero, identity) - 0.1, (exact, learned, zero, identity)


def test_training_depends_on_the_seed_only():
    data = toy_data("two_moons")
    kw = {"hidden": 16, "layers": 2, "batch_size": 32, "progress": False}
    torch.manual_seed(123)
    a, _ = train_toy_denoiser(data, SCHED, "eps", 20, seed=5, **kw)
    torch.randn(7)  # a different global RNG state must not matter
    b, _ = train_toy_denoiser(data, SCHED, "eps", 20, seed=5, **kw)
    c, _ = train_toy_denoiser(data, SCHED, "eps", 20, seed=6, **kw)
    x = torch.randn(4, 2)
    assert torch.equal(a(x, 9), b(x, 9)) and not torch.equal(a(x, 9), c(x, 9))


def test_cached_toy_denoiser_trains_once_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    kw = {"steps": 20, "hidden": 16, "layers": 2, "batch_size": 64, "progress": False}
    m1, info1 = cached_toy_denoiser("two_moons", "x0", **kw)
    m2, info2 = cached_toy_denoiser("two_moons", "x0", **kw)
    assert (info1.source, info2.source) == ("trained", "cache")
    assert info2.meta["step"][-1] == 20 and len(info2.meta["loss"]) == 2
    x = torch.randn(5, 2)
    assert torch.equal(m1(x, 3), m2(x, 3)) and m2.target == "x0" and not m2.training


def test_denoiser_error_splits_mse_into_bayes_and_excess():
    mix = named_mixture("two_blobs_2d")
    ts = [50, 500]
    exact = denoiser_error(ExactDenoiser(mix, SCHED, "score"), mix, SCHED, ts, space="eps", n=20_000, generator=gen(10))
    assert float(exact["excess"].max()) < 1e-12  # the exact denoiser has no excess (up to rounding)
    bayes, se = bayes_error(mix, SCHED, ts, "eps", n=100_000, generator=gen(11))
    mse_se = exact["mse"] * math.sqrt(2 / 20_000) * 3  # a generous standard error of a mean of squares
    assert bool(((exact["mse"] - bayes).abs() < 5 * (se + mse_se)).all()), (exact["mse"], bayes)
    torch.testing.assert_close(exact["mse"], exact["bayes"])
    # a shrunk denoiser: excess = E|f - y*|^2 = 0.01 E|y*|^2 > 0, and mse ~ bayes + excess on the same draws
    den = ExactDenoiser(mix, SCHED, "eps")
    off = denoiser_error(lambda x, t: 0.9 * den(x, t), mix, SCHED, ts, space="eps", n=20_000,
                         generator=gen(10), target="eps")
    assert bool((off["excess"] > 5e-4).all()) and bool((off["excess"] > 20 * off["excess_se"]).all())
    torch.testing.assert_close(off["mse"], off["bayes"] + off["excess"], rtol=0.05, atol=0.01)


# ---------------------------------------------------------------------------------------------- metrics
def test_energy_distance_matches_a_brute_force_double_loop():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(30, 2)) + 0.5
    d = lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=-1)  # noqa: E731
    dxx, dyy = d(x, x), d(y, y)
    want = 2 * d(x, y).mean() - dxx.sum() / (40 * 39) - dyy.sum() / (30 * 29)
    assert energy_distance(x, y) == pytest.approx(want, rel=1e-12)


def test_energy_distance_is_zero_for_one_law_and_grows_with_a_shift():
    g = gen(12)
    x, y = torch.randn(3000, 1, generator=g), torch.randn(3000, 1, generator=g)
    same = energy_distance(x, y)
    # standard deviations of the estimate at n = 3000, from 30 repetitions: 0.0004, 0.007, 0.022
    assert abs(same) < 0.002
    for delta, sd in ((0.3, 0.007), (1.0, 0.022)):
        got = energy_distance(x, y + delta)
        # closed form for N(0, 1) vs N(delta, 1): 2 E|N(delta, 2)| - 2 E|N(0, 2)|
        s = math.sqrt(2.0)
        e_abs = s * math.sqrt(2 / math.pi) * math.exp(-(delta**2) / 4) + delta * (1 - 2 * stats.norm.cdf(-delta / s))
        want = 2 * e_abs - 2 * s * math.sqrt(2 / math.pi)
        assert got == pytest.approx(want, abs=5 * sd), (delta, got, want)
        assert got > 10 * abs(same)


def test_energy_test_and_mmd_tell_same_from_shifted():
    g = gen(13)
    x, y = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    _, p_same = energy_test(x, y, generator=gen(14))
    stat, p_shift = energy_test(x, y + 0.4, generator=gen(14))
    assert p_same > 0.01 and p_shift <= 0.005 and stat > 0
    assert abs(mmd(x, y)) < 0.01 < mmd(x, y + 0.4)


def test_average_log_prob_matches_scipy_and_rewards_collapse():
    mix = named_mixture("bimodal_1d")
    x = mix.sample(2000, generator=gen(15))
    w, m, s = mix.weights.numpy(), mix.means[:, 0].numpy(), mix.covs[:, 0, 0].sqrt().numpy()
    want = np.log((w * stats.norm.pdf((x.numpy() - m) / s) / s).sum(-1)).mean()
    mean, se = average_log_prob(mix, x)
    assert mean == pytest.approx(want, rel=1e-12) and 0 < se < 0.1
    collapsed = mix.means[torch.multinomial(mix.weights, 2000, replacement=True, generator=gen(16))]
    q = sample_quality(collapsed, mix.sample(2000, generator=gen(17)), mix)
    # the log density cannot see missing spread (samples on the modes score higher); the energy distance can
    assert q["log_prob"] > q["log_prob_data"] and q["energy"] > 0.02


def test_mixture_fit_test_holds_its_level_and_has_power():
    mix = named_mixture("anisotropic_2d")
    g = gen(18)
    ps = np.array([mixture_fit_test(mix, mix.sample(300, generator=g), generator=g)["all"] for _ in range(200)])
    # level: P(p <= 0.05) <= 0.05 under the null; 20 of 200 has probability < 1e-3 when the rate is 0.05
    assert (ps <= 0.05).mean() < 0.1
    shrunk = mix.mixture_mean() + 0.8 * (mix.sample(300, generator=g) - mix.mixture_mean())
    assert mixture_fit_test(mix, shrunk, generator=g)["all"] < 1e-4
