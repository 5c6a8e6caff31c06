"""Checks for notebook 07 (diffusion on MNIST): the exercises' functions against the library's answers.

Each ``check_...(fn)`` calls the student's function on a few cases, prints one success line, or raises
``ExerciseError`` naming the likely mistake in words.

- ``time_embedding(t, dim)``            [cos(t w_0..w_{h-1}), sin(t w_0..w_{h-1})], w_k = 10000^(-k/h), h = dim/2
- ``predict_x0(x_t, eps_hat, t, schedule)``  x0_hat = (x^t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t),
  for a batch of images (n, 1, 28, 28) with one step per image, t of shape (n,)
- ``ddim_step(x_t, x0_hat, t, s, schedule)``  deterministic DDIM (eta = 0) from step t to s < t:
  eps_hat = (x^t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t),
  x^s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s) eps_hat
"""

from __future__ import annotations

import math
from functools import partial

import torch

from ..schedules import NoiseSchedule
from ..unet import timestep_embedding
from . import ExerciseError, call_student, diagnose, misshaped_alpha_bar, passed

__all__ = ["check_ddim_step", "check_predict_x0", "check_time_embedding"]

# The library"s own answers to these exercises: a submission that calls one is flagged in the grader"s CSV.
REFERENCES = {
    "time_embedding": ("course_lib.unet.timestep_embedding", "course_lib.denoisers.time_embedding"),
    "predict_x0": ("course_lib.diffusion.x0_from_eps", "course_lib.diffusion.convert"),
    "ddim_step": ("course_lib.samplers.step_coefficients", "course_lib.samplers.sample"),
}

_TOL = {"rtol": 1e-5, "atol": 1e-5}  # float32 rounding passes; every known mistake is off by far more


def _schedule() -> NoiseSchedule:
    return NoiseSchedule.cosine(500)  # the schedule of the notebook's U-Net


_call = partial(
    call_student,
    on_broadcast_error="alpha_bar_t of shape (n,) does not broadcast against images (n, 1, 28, 28): reshape it to "
    "(n, 1, 1, 1), e.g. with .view(-1, 1, 1, 1)")


# ---------------------------------------------------------------------------------------------- exercise 1
def check_time_embedding(fn) -> bool:
    """Exercise: ``fn(t, dim)`` -> (n, dim): cos(t w_k) in the first half, sin(t w_k) in the second half,
    w_k = 10000^(-k/h), k = 0..h-1, h = dim / 2."""
    t = torch.tensor([1, 2, 10, 77, 250, 500])
    for dim in (8, 32):
        h = dim // 2
        what = f"time_embedding(t, dim={dim})"
        got = _call(fn, what, t.clone(), dim)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (t.shape[0], h):
            raise ExerciseError(f"{what}: wrong shape {tuple(got.shape)} — you returned one half only; "
                                f"concatenate the cosines and the sines along dim=1 to get shape ({t.shape[0]}, {dim})")
        k = torch.arange(h, dtype=torch.float64)
        tf = t.to(torch.float64)[:, None]

        def emb(freqs, order="cos-sin", tf=tf, dim=dim):
            a = tf * freqs[None, :]
            if order == "interleaved":
                return torch.stack([a.cos(), a.sin()], dim=-1).reshape(t.shape[0], dim)
            return torch.cat([a.cos(), a.sin()] if order == "cos-sin" else [a.sin(), a.cos()], dim=1)

        w = 10000.0 ** (-k / h)
        diagnose(got, timestep_embedding(t, dim), what=what, **_TOL, mistakes={
            "the halves are swapped: the cosines come first, then the sines": emb(w, "sin-cos"),
            "you interleaved cos and sin (cos, sin, cos, sin, ...); put all cosines first, then all sines":
                emb(w, "interleaved"),
            "the frequencies use k / dim; the exponent is k / h with h = dim / 2 (so the slowest one is "
            "~1/10000)": emb(10000.0 ** (-k / dim)),
            "the frequencies grow with k: the exponent needs a minus sign, w_k = 10000^(-k/h)": emb(10000.0 ** (k / h)),
            "the frequencies use base e instead of 10000: w_k = 10000^(-k/h) = exp(-ln(10000) k / h)":
                emb(torch.exp(-k / h)),
            "you used degrees somewhere: torch.cos and torch.sin take radians": emb(w * math.pi / 180),
        })
    return passed("time_embedding gives each step its own pattern of slow and fast waves (as the U-Net's)")


# ---------------------------------------------------------------------------------------------- exercise 2
def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(n, 1, 28, 28, generator=g, dtype=torch.float64)
    eps = torch.randn(n, 1, 28, 28, generator=g, dtype=torch.float64)
    t = torch.randint(1, 501, (n,), generator=g)
    return x_t, eps, t


def check_predict_x0(fn) -> bool:
    """Exercise: ``fn(x_t, eps_hat, t, schedule)`` -> (x^t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t), per image.

    Checked with n = 28 images, where a forgotten reshape of alpha_bar_t (shape (n,)) silently broadcasts
    along the image width instead of raising, and with n = 5.
    """
    s = _schedule()
    for n, seed in ((28, 0), (5, 1)):
        x_t, eps, t = _images(n, seed)
        what = f"predict_x0 on {n} images"
        got = _call(fn, what, x_t.clone(), eps.clone(), t.clone(), s)
        ab = s.alpha_bars[t].view(-1, 1, 1, 1)
        a = s.alphas[t].view(-1, 1, 1, 1)
        first = s.alpha_bars[t[0]]
        mistakes = misshaped_alpha_bar(s.alpha_bars[t],
                                       lambda ab_, x=x_t, e=eps: (x - (1 - ab_).sqrt() * e) / ab_.sqrt())
        mistakes.update({
            "you used one step t[0] for every image; each image has its own t (index alpha_bars with the whole t)":
                (x_t - (1 - first).sqrt() * eps) / first.sqrt(),
            "you used alpha_t (schedule.alphas) where alpha_bar_t (schedule.alpha_bars) belongs":
                (x_t - (1 - a).sqrt() * eps) / a.sqrt(),
            "sign error on the noise term: x^t = sqrt(alpha_bar) x^0 + sqrt(1 - alpha_bar) eps, so subtract it":
                (x_t + (1 - ab).sqrt() * eps) / ab.sqrt(),
            "you forgot the square root on 1 - alpha_bar_t (the noise's standard deviation, not its variance)":
                (x_t - (1 - ab) * eps) / ab.sqrt(),
            "you forgot the square root on alpha_bar_t in the division": (x_t - (1 - ab).sqrt() * eps) / ab,
            "you dropped the division by sqrt(alpha_bar_t)": x_t - (1 - ab).sqrt() * eps,
            "you returned eps_hat rescaled, not x0_hat: solve x^t = sqrt(ab) x^0 + sqrt(1 - ab) eps for x^0":
                (x_t - ab.sqrt() * eps) / (1 - ab).sqrt(),
        })
        if isinstance(got, torch.Tensor) and n == 5 and got.shape != x_t.shape and got.ndim == 4:
            raise ExerciseError(f"{what}: wrong shape {tuple(got.shape)}, expected {tuple(x_t.shape)} — check how "
                                "alpha_bar_t (shape (n,)) broadcasts: reshape it to (n, 1, 1, 1)")
        diagnose(got, (x_t - (1 - ab).sqrt() * eps) / ab.sqrt(), what=what, **_TOL, mistakes=mistakes)
    return passed("predict_x0 turns the U-Net's eps_hat into x0_hat = E[x^0 | x^t], one step per image")


# ---------------------------------------------------------------------------------------------- exercise 3
def check_ddim_step(fn) -> bool:
    """Exercise: ``fn(x_t, x0_hat, t, s, schedule)`` -> DDIM's deterministic step (eta = 0) from t to s < t:

    eps_hat = (x^t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t),   x^s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s) eps_hat.
    """
    S = _schedule()
    for t, s, seed in ((400, 350, 2), (120, 20, 3), (30, 0, 4)):
        x_t, x0, _ = _images(4, seed)
        x0 = x0.clamp(-1, 1)
        ab_t, ab_s = S.alpha_bars[t], S.alpha_bars[s]
        a_t, a_s = S.alphas[t], S.alphas[s]

        def step(x0=x0, x_t=x_t, bt=ab_t, bs=ab_s, noise_sd=None):
            eps = (x_t - bt.sqrt() * x0) / (1 - bt).sqrt()
            return bs.sqrt() * x0 + ((1 - bs).sqrt() if noise_sd is None else noise_sd) * eps

        eps = (x_t - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
        what = f"ddim_step from t = {t} to s = {s}"
        got = _call(fn, what, x_t.clone(), x0.clone(), t, s, S)
        again = _call(fn, what, x_t.clone(), x0.clone(), t, s, S)
        if isinstance(got, torch.Tensor) and isinstance(again, torch.Tensor) and got.shape == again.shape \
                and not torch.allclose(got.double(), again.double()):
            raise ExerciseError(f"{what}: two calls with the same inputs gave different results — DDIM with eta = 0 "
                                "adds no noise: x^s is a deterministic function of x^t")
        mistakes = {
            "the re-noising uses sqrt(1 - alpha_bar_t); x^s carries the noise level of step s: "
            "+ sqrt(1 - alpha_bar_s) eps_hat": step(noise_sd=(1 - ab_t).sqrt()),
            "you forgot the square roots: sqrt(alpha_bar) scales the signal, sqrt(1 - alpha_bar) the noise":
                ab_s * x0 + (1 - ab_s) * (x_t - ab_t * x0) / (1 - ab_t),
            "you used alpha_t and alpha_s (schedule.alphas) where alpha_bar (schedule.alpha_bars) belongs":
                step(bt=a_t, bs=a_s),
            "you swapped t and s: eps_hat comes from x^t at step t, and the output is at step s":
                step(bt=ab_s, bs=ab_t),
            "you returned x0_hat; the step must add back noise of level s (+ sqrt(1 - alpha_bar_s) eps_hat)": x0,
            "you dropped the noise term: x^s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s) eps_hat":
                ab_s.sqrt() * x0,
            "the noise direction is eps_hat = (x^t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t), not x^t itself":
                ab_s.sqrt() * x0 + (1 - ab_s).sqrt() * x_t,
            "sign error in eps_hat: x^t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, so eps_hat = "
            "(x^t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t)": ab_s.sqrt() * x0 - (1 - ab_s).sqrt() * eps,
        }
        diagnose(got, step(), what=what, **_TOL, mistakes=mistakes)
    return passed("ddim_step moves x^t to x^s along DDIM's deterministic path (and lands on x0_hat at s = 0)")
