"""Checks for notebook 07 (diffusion on MNIST): the exercises' functions against the library's answers.

Each ``check_...(fn)`` calls the student's function on a few cases, prints one success line, or raises
``ExerciseError`` naming the likely mistake in words.

- ``time_embedding(t, T, dim)``       [sin(u w_0..w_{h-1}), cos(u w_0..w_{h-1})], u = 1000 t / T, w_k = 10000^(-k/h),
  h = dim / 2: the one embedding of every denoiser in the course (``course_lib.nets.time_embedding``)
- ``min_snr_weights(alpha_bar, kappa)``  lambda_t = min(1, kappa / SNR_t), SNR_t = alpha_bar_t / (1 - alpha_bar_t): the
  min-SNR weights of the U-Net's eps loss (``course_lib.denoisers.loss_weights(..., "eps", "min_snr")``)

(x0_hat from eps_hat and the DDIM step are notebooks 05's and 06's exercises; notebook 07 uses them by reference.)
"""

from __future__ import annotations

import math
from functools import partial

import torch

from ..denoisers import MIN_SNR_KAPPA, loss_weights
from ..nets import time_embedding
from ..schedules import NoiseSchedule
from . import ExerciseError, call_student, diagnose, passed

__all__ = ["check_min_snr_weights", "check_time_embedding"]

# The library's own answers to these exercises: a submission that calls one is flagged in the grader's CSV.
REFERENCES = {
    "time_embedding": ("course_lib.nets.time_embedding", "course_lib.denoisers.time_embedding"),
    "min_snr_weights": ("course_lib.denoisers.loss_weights",),
}

_TOL = {"rtol": 1e-5, "atol": 1e-5}  # float32 rounding passes; every known mistake is off by far more
# sines of arguments up to 1000 computed in float32 are off by ~1e-4; every known mistake is off by O(1)
_EMB_TOL = {"rtol": 1e-4, "atol": 1e-3}

_call = partial(call_student)


# ---------------------------------------------------------------------------------------------- exercise 1
def check_time_embedding(fn) -> bool:
    """Exercise: ``fn(t, T, dim)`` -> (n, dim): sin(u w_k) in the first half, cos(u w_k) in the second half,
    u = 1000 t / T, w_k = 10000^(-k/h), k = 0..h-1, h = dim / 2."""
    t = torch.tensor([1, 2, 10, 77, 250, 500])
    for T, dim in ((500, 8), (1000, 32)):
        h = dim // 2
        what = f"time_embedding(t, T={T}, dim={dim})"
        got = _call(fn, what, t.clone(), T, dim)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (t.shape[0], h):
            raise ExerciseError(f"{what}: wrong shape {tuple(got.shape)} — you returned one half only; "
                                f"concatenate the sines and the cosines along dim=1 to get shape ({t.shape[0]}, {dim})")
        k = torch.arange(h, dtype=torch.float64)
        u = t.to(torch.float64)[:, None] * 1000.0 / T

        def emb(freqs, order="sin-cos", u=u, dim=dim):
            a = u * freqs[None, :]
            if order == "interleaved":
                return torch.stack([a.sin(), a.cos()], dim=-1).reshape(t.shape[0], dim)
            return torch.cat([a.sin(), a.cos()] if order == "sin-cos" else [a.cos(), a.sin()], dim=1)

        w = 10000.0 ** (-k / h)
        raw = t.to(torch.float64)[:, None] * w[None, :]
        diagnose(got, time_embedding(t, T, dim), what=what, **_EMB_TOL, mistakes={
            "the halves are swapped: the sines come first, then the cosines": emb(w, "cos-sin"),
            "you interleaved sin and cos (sin, cos, sin, cos, ...); put all sines first, then all cosines":
                emb(w, "interleaved"),
            "you used t itself; scale it first: u = 1000 t / T (the same features for every chain length T)":
                torch.cat([raw.sin(), raw.cos()], dim=1),
            "the frequencies use k / dim; the exponent is k / h with h = dim / 2 (so the slowest one is "
            "~1/10000)": emb(10000.0 ** (-k / dim)),
            "the frequencies grow with k: the exponent needs a minus sign, w_k = 10000^(-k/h)": emb(10000.0 ** (k / h)),
            "the frequencies use base e instead of 10000: w_k = 10000^(-k/h) = exp(-ln(10000) k / h)":
                emb(torch.exp(-k / h)),
            "you used degrees somewhere: torch.sin and torch.cos take radians": emb(w * math.pi / 180),
        })
    return passed("time_embedding gives each step its own pattern of slow and fast waves (the course's one embedding)")


# ---------------------------------------------------------------------------------------------- exercise 2
def check_min_snr_weights(fn) -> bool:
    """Exercise: ``fn(alpha_bar, kappa)`` -> w (same shape): min(1, kappa / SNR), SNR = alpha_bar / (1 - alpha_bar).

    Checked on the U-Net's cosine schedule (T = 500, t = 1..T, kappa = 5) and on a linear one with kappa = 2.
    """
    for schedule, kappa in ((NoiseSchedule.cosine(500), MIN_SNR_KAPPA), (NoiseSchedule.linear(200), 2.0)):
        ab = schedule.alpha_bars[1:].clone()
        what = f"min_snr_weights(alpha_bar of {schedule!r:.40}, kappa={kappa:g})"
        got = _call(fn, what, ab.clone(), kappa)
        snr = ab / (1 - ab)
        expected = loss_weights(schedule, "eps", "min_snr")[1:] if kappa == MIN_SNR_KAPPA else \
            (kappa / snr).clamp(max=1.0)
        diagnose(got, expected, what=what, **_TOL, mistakes={
            "you returned min(SNR, kappa): that is the weight on the x^0 error; on the eps error it is divided by SNR, "
            "min(SNR, kappa) / SNR = min(1, kappa / SNR)": snr.clamp(max=kappa),
            "you took the maximum: the weight is min(1, kappa / SNR), at most 1": (kappa / snr).clamp(min=1.0),
            "SNR is alpha_bar / (1 - alpha_bar), not (1 - alpha_bar) / alpha_bar": (kappa * snr).clamp(max=1.0),
            "you forgot the cap at 1: min(1, kappa / SNR)": kappa / snr,
            "SNR uses alpha_bar, not sqrt(alpha_bar) (the signal's variance, not its standard deviation)":
                (kappa * (1 - ab).sqrt() / ab.sqrt()).clamp(max=1.0),
        })
    return passed("min_snr_weights: full weight where the image is mostly noise (SNR <= kappa), kappa / SNR where "
                  "it is nearly clean")
