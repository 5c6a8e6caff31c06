"""Checks for notebook 05 (posterior means and Tweedie): the exercises' functions against the exact answers.

Each ``check_...(fn)`` calls the student's function on a few cases (a linear schedule with T = 1000 at
steps where alpha_t and alpha_bar_t differ a lot), prints one success line, or raises ``ExerciseError``
naming the likely mistake: a dropped 1/sqrt(alpha_bar) (ERRATA 1), a sign error, alpha_t where
alpha_bar_t belongs, a missing square root, a_t and b_t swapped, ...

The student functions take ``schedule`` (a ``NoiseSchedule``) and one integer step ``t``:
- ``x0_from_eps(x_t, eps, schedule, t)``         x^0 = (x^t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
- ``tweedie_x0(x_t, score, schedule, t)``        E[x^0 | x^t] = (x^t + (1 - alpha_bar_t) score) / sqrt(alpha_bar_t)
- ``mean_prev(x_t, x0_hat, schedule, t)``        a_t x0_hat + b_t x^t
- ``kl_step(x0, x_t, mean, schedule, t)``        |a_t x^0 + b_t x^t - mean|^2 / (2 c_t), one value per row
"""

from __future__ import annotations

import torch

from ..densities import named_mixture
from ..schedules import NoiseSchedule
from . import ExerciseError, call_student, diagnose, passed

__all__ = ["check_kl_step", "check_mean_prev", "check_tweedie_x0", "check_x0_from_eps"]

# The library"s own answers to these exercises: a submission that calls one is flagged in the grader"s CSV.
REFERENCES = {
    "kl_step": ("course_lib.diffusion_elbo.kl_term",),
    "x0_from_eps": ("course_lib.diffusion.x0_from_eps", "course_lib.diffusion.convert"),
    "mean_prev": ("course_lib.diffusion_elbo.reverse_mean",),
    "tweedie_x0": ("course_lib.diffusion.x0_from_score", "course_lib.diffusion.convert"),
}

_STEPS = (150, 600)  # alpha_t and alpha_bar_t differ a lot here (not at t = 1, where they are equal)
_TOL = {"rtol": 1e-5, "atol": 1e-6}  # float32 rounding passes; every known mistake is off by far more


def _schedule() -> NoiseSchedule:
    return NoiseSchedule.linear(1000)


_call = call_student


def _data(d: int, n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64))


def check_x0_from_eps(fn) -> bool:
    """Exercise: ``fn(x_t, eps, schedule, t)`` -> x^0 = (x^t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    s = _schedule()
    for t in _STEPS:
        x_t, eps = _data(2, seed=t)
        ab, a = s.alpha_bars[t], s.alphas[t]
        what = f"x0_from_eps at t = {t}"
        got = _call(fn, what, x_t.clone(), eps.clone(), s, t)
        diagnose(got, (x_t - (1 - ab).sqrt() * eps) / ab.sqrt(), what=what, **_TOL, mistakes={
            "you dropped the division by sqrt(alpha_bar_t)": x_t - (1 - ab).sqrt() * eps,
            "sign error on the noise term: x^t = sqrt(alpha_bar) x^0 + sqrt(1 - alpha_bar) eps, so subtract it":
                (x_t + (1 - ab).sqrt() * eps) / ab.sqrt(),
            "you used alpha_t (schedule.alphas[t]) where alpha_bar_t (schedule.alpha_bars[t]) belongs":
                (x_t - (1 - a).sqrt() * eps) / a.sqrt(),
            "you forgot the square root on 1 - alpha_bar_t (the noise's standard deviation, not its variance)":
                (x_t - (1 - ab) * eps) / ab.sqrt(),
            "you forgot the square root on alpha_bar_t in the division": (x_t - (1 - ab).sqrt() * eps) / ab,
            "you multiplied by sqrt(alpha_bar_t) instead of dividing": (x_t - (1 - ab).sqrt() * eps) * ab.sqrt(),
        })
    return passed("x0_from_eps inverts x^t = sqrt(alpha_bar_t) x^0 + sqrt(1 - alpha_bar_t) eps")


def check_tweedie_x0(fn) -> bool:
    """Exercise: ``fn(x_t, score, schedule, t)`` -> E[x^0 | x^t] = (x^t + (1 - alpha_bar_t) score) / sqrt(alpha_bar_t).

    Checked on random inputs and on the exact score of a Gaussian mixture, where the answer must be the
    mixture's posterior mean.
    """
    s = _schedule()
    mix = named_mixture("two_blobs_2d")
    for t in _STEPS:
        ab, a = s.alpha_bars[t], s.alphas[t]
        x_t, _ = _data(2, seed=t)
        x_t = x_t * 1.5
        score = mix.noised(ab).score(x_t)
        what = f"tweedie_x0 at t = {t}"
        got = _call(fn, what, x_t.clone(), score.clone(), s, t)
        diagnose(got, mix.posterior_mean(x_t, ab), what=what, **_TOL, mistakes={
            "you dropped the 1/sqrt(alpha_bar_t) factor — the lecture slide's shorthand (ERRATA 1), exact only "
            "for the variance-exploding x^t = x^0 + sigma eps": x_t + (1 - ab) * score,
            "sign error on the score term: the score points towards the data, so add (1 - alpha_bar_t) score":
                (x_t - (1 - ab) * score) / ab.sqrt(),
            "you used alpha_t (schedule.alphas[t]) where alpha_bar_t (schedule.alpha_bars[t]) belongs":
                (x_t + (1 - a) * score) / a.sqrt(),
            "you used sqrt(1 - alpha_bar_t) where the variance 1 - alpha_bar_t belongs":
                (x_t + (1 - ab).sqrt() * score) / ab.sqrt(),
            "you divided by alpha_bar_t instead of sqrt(alpha_bar_t)": (x_t + (1 - ab) * score) / ab,
        })
    return passed("tweedie_x0 reproduces the exact posterior mean E[x^0 | x^t] of a Gaussian mixture")


def _abc(s: NoiseSchedule, t: int, *, bar_prev=None, alphas=None):
    """(a_t, b_t, c_t) written out, optionally with a wrong alpha_bar_{t-1} or alpha_t (for the mistakes)."""
    ab = s.alpha_bars[t]
    ab_prev = s.alpha_bars[t - 1] if bar_prev is None else bar_prev
    alpha = s.alphas[t] if alphas is None else alphas
    return (ab_prev.sqrt() * (1 - alpha) / (1 - ab), alpha.sqrt() * (1 - ab_prev) / (1 - ab),
            (1 - ab_prev) * (1 - alpha) / (1 - ab))


def check_mean_prev(fn) -> bool:
    """Exercise: ``fn(x_t, x0_hat, schedule, t)`` -> a_t x0_hat + b_t x^t, the mean of x^{t-1} given x0_hat and x^t."""
    s = _schedule()
    for t in _STEPS:
        x_t, x0 = _data(2, seed=t + 1)
        a, b, _ = s.posterior_coefficients(t)
        ab, ab_prev = s.alpha_bars[t], s.alpha_bars[t - 1]
        a_off, b_off, _ = _abc(s, t, bar_prev=ab)
        a_nosqrt = ab_prev * (1 - s.alphas[t]) / (1 - ab)
        b_nosqrt = s.alphas[t] * (1 - ab_prev) / (1 - ab)
        what = f"mean_prev at t = {t}"
        got = _call(fn, what, x_t.clone(), x0.clone(), s, t)
        diagnose(got, a * x0 + b * x_t, what=what, **_TOL, mistakes={
            "you swapped a_t and b_t: a_t multiplies x^0 and b_t multiplies x^t": b * x0 + a * x_t,
            "you used alpha_bar_t where alpha_bar_{t-1} belongs (off by one step)": a_off * x0 + b_off * x_t,
            "you used alpha_bar where alpha_t belongs (a_t has (1 - alpha_t), b_t has sqrt(alpha_t))":
                (ab_prev.sqrt() * (1 - ab) / (1 - ab)) * x0 + (ab.sqrt() * (1 - ab_prev) / (1 - ab)) * x_t,
            "you forgot a square root: a_t has sqrt(alpha_bar_{t-1}) and b_t has sqrt(alpha_t)":
                a_nosqrt * x0 + b_nosqrt * x_t,
            "you forgot the square root in a_t (sqrt(alpha_bar_{t-1}))": a_nosqrt * x0 + b * x_t,
            "you forgot the square root in b_t (sqrt(alpha_t))": a * x0 + b_nosqrt * x_t,
            "you dropped the b_t x^t term": a * x0,
        })
    return passed("mean_prev gives a_t x^0 + b_t x^t, the mean of q(x^{t-1} | x^0, x^t)")


def check_kl_step(fn) -> bool:
    """Exercise: ``fn(x0, x_t, mean, schedule, t)`` -> |a_t x^0 + b_t x^t - mean|^2 / (2 c_t), shape (n,).

    The general KL between two Gaussians (notebook 01, exercise 1, for p = N(0, 1)) with both variances equal to
    c_t: the variance terms cancel and half the squared distance of the means in units of c_t is left.
    """
    s = _schedule()
    for t in _STEPS:
        x0, x_t = _data(2, seed=t + 2)
        mean = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64) * 0.1
        a, b, c = s.posterior_coefficients(t)
        sq = ((a * x0 + b * x_t - mean) ** 2).sum(-1)
        what = f"kl_step at t = {t}"
        got = _call(fn, what, x0.clone(), x_t.clone(), mean.clone(), s, t)
        if isinstance(got, torch.Tensor) and got.shape == x0.shape:
            raise ExerciseError(f"{what}: wrong shape {tuple(got.shape)} — sum the squares over the coordinates "
                                f"(dim=-1) to get one KL per row, shape ({x0.shape[0]},)")
        diagnose(got, sq / (2 * c), what=what, **_TOL, mistakes={
            "you forgot the 1/2: KL = |difference|^2 / (2 c_t)": sq / c,
            "you divided by the standard deviation sqrt(c_t); c_t is the variance": sq / (2 * c.sqrt()),
            "you used beta_t = 1 - alpha_t as the variance; the variance of q(x^{t-1} | x^0, x^t) is c_t":
                sq / (2 * s.betas[t]),
            "you forgot to square the difference": (a * x0 + b * x_t - mean).abs().sum(-1) / (2 * c),
            "you took the norm, not the squared norm": sq.sqrt() / (2 * c),
            "you used notebook 01's KL against N(0, I): here the second Gaussian is the model's step "
            "N(mean, c_t I), so the KL depends on the distance between the two means":
                0.5 * ((a * x0 + b * x_t) ** 2 + c - 1 - torch.log(c)).sum(-1),
            "you gave the model the variance 1 instead of c_t: with equal variances c_t the terms "
            "c_t / c_t - 1 + log(c_t / c_t) cancel, leaving |difference|^2 / (2 c_t)":
                0.5 * (c + (a * x0 + b * x_t - mean) ** 2 - 1 - torch.log(c)).sum(-1),
        })
    return passed("kl_step gives KL(q(x^{t-1} | x^0, x^t) || p_theta(x^{t-1} | x^t)) for equal variances c_t")
