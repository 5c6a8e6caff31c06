"""Diffusion models: the three equivalent prediction targets and the conversions between them.

With x^t = sqrt(alpha_bar) x^0 + sqrt(1 - alpha_bar) eps, a denoiser can predict
  - "x0":    E[x^0 | x^t],
  - "eps":   E[eps | x^t],
  - "score": grad log p(x^t),
and each determines the others given x^t and alpha_bar (Tweedie's formula links x0 and score):
  x0    = (x^t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)
  score = -eps / sqrt(1 - alpha_bar)
  x0    = (x^t + (1 - alpha_bar) score) / sqrt(alpha_bar)

``TARGETS`` are the lecture's three. ``ALL_TARGETS`` adds a fourth, used by the MNIST U-Net: the "velocity"
  - "v":     E[v | x^t] with v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x^0 (Salimans & Ho 2022),
  x0    = sqrt(alpha_bar) x^t - sqrt(1 - alpha_bar) v,
which is eps at small t and -x^0 at large t, so x0_hat stays accurate at the noisiest steps, where x0 from eps
divides by sqrt(alpha_bar) (1e-4 at t = T for the MNIST schedule) and magnifies the network's error.

Shapes: ``x_t`` and predictions are (n, ...) tensors of one shape; ``alpha_bar`` is a number or a
tensor of shape (n,) (one per row), broadcast over the remaining dimensions. The conversions keep the
dtype and device of ``x_t``. They need 0 < alpha_bar < 1 where eps or score is involved (at
alpha_bar = 1 there is no noise to predict); x0 <-> x0 is the identity.
"""

from __future__ import annotations

import torch

from ._checks import as_tensor, check_alpha_bar, check_timestep

__all__ = ["ALL_TARGETS", "TARGETS", "ExactDenoiser", "convert", "eps_from_x0", "score_from_x0", "v_from_x0",
           "x0_from_eps", "x0_from_score", "x0_from_v"]

TARGETS = ("x0", "eps", "score")
ALL_TARGETS = TARGETS + ("v",)


def _coefficients(x_t, alpha_bar, *, need_noise: bool):
    x_t = as_tensor(x_t, "x_t", dtype=None if isinstance(x_t, torch.Tensor) else torch.float64, finite=True)
    if x_t.ndim < 2:
        raise ValueError(f"x_t: expected shape (n, ...) with one row per example, got {tuple(x_t.shape)}")
    ab = check_alpha_bar(alpha_bar, n=x_t.shape[0])
    if need_noise and bool((ab >= 1).any()):
        raise ValueError("alpha_bar: expected values < 1 when converting to or from eps or score "
                         "(at alpha_bar = 1 there is no noise), got 1.0")
    ab = ab.to(device=x_t.device, dtype=x_t.dtype if x_t.is_floating_point() else torch.float64)
    if ab.ndim == 1:
        ab = ab.reshape(-1, *([1] * (x_t.ndim - 1)))
    return x_t, ab


def _pred(pred, x_t, name):
    pred = as_tensor(pred, name, dtype=None if isinstance(pred, torch.Tensor) else x_t.dtype)
    if pred.shape != x_t.shape:
        raise ValueError(f"{name}: expected the shape of x_t {tuple(x_t.shape)}, got {tuple(pred.shape)}")
    # results follow x_t: its dtype and device
    return pred.to(dtype=x_t.dtype, device=x_t.device)


def x0_from_eps(x_t, eps, alpha_bar):
    """x^0 = (x^t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar). Shapes: (n, ...) -> (n, ...)."""
    x_t, ab = _coefficients(x_t, alpha_bar, need_noise=True)
    return (x_t - (1 - ab).sqrt() * _pred(eps, x_t, "eps")) / ab.sqrt()


def eps_from_x0(x_t, x0, alpha_bar):
    """eps = (x^t - sqrt(alpha_bar) x^0) / sqrt(1 - alpha_bar). Shapes: (n, ...) -> (n, ...)."""
    x_t, ab = _coefficients(x_t, alpha_bar, need_noise=True)
    return (x_t - ab.sqrt() * _pred(x0, x_t, "x0")) / (1 - ab).sqrt()


def x0_from_score(x_t, score, alpha_bar):
    """Tweedie: E[x^0 | x^t] = (x^t + (1 - alpha_bar) grad log p(x^t)) / sqrt(alpha_bar)."""
    x_t, ab = _coefficients(x_t, alpha_bar, need_noise=True)
    return (x_t + (1 - ab) * _pred(score, x_t, "score")) / ab.sqrt()


def score_from_x0(x_t, x0, alpha_bar):
    """grad log p(x^t) = (sqrt(alpha_bar) E[x^0 | x^t] - x^t) / (1 - alpha_bar) (Tweedie solved for the score)."""
    x_t, ab = _coefficients(x_t, alpha_bar, need_noise=True)
    return (ab.sqrt() * _pred(x0, x_t, "x0") - x_t) / (1 - ab)


def x0_from_v(x_t, v, alpha_bar):
    """x^0 = sqrt(alpha_bar) x^t - sqrt(1 - alpha_bar) v. Shapes: (n, ...) -> (n, ...)."""
    x_t, ab = _coefficients(x_t, alpha_bar, need_noise=True)
    return ab.sqrt() * x_t - (1 - ab).sqrt() * _pred(v, x_t, "v")


def v_from_x0(x_t, x0, alpha_bar):
    """v = (sqrt(alpha_bar) x^t - x^0) / sqrt(1 - alpha_bar). Shapes: (n, ...) -> (n, ...)."""
    x_t, ab = _coefficients(x_t, alpha_bar, need_noise=True)
    return (ab.sqrt() * x_t - _pred(x0, x_t, "x0")) / (1 - ab).sqrt()


def convert(pred, source: str, target: str, x_t, alpha_bar):
    """Convert a prediction of ``source`` into one of ``target`` (each of "x0", "eps", "score", "v").

    Goes through x0: eps, score and v are all affine in x0 given x^t, so every pair is covered.
    """
    for name, value in (("source", source), ("target", target)):
        if value not in ALL_TARGETS:
            raise ValueError(f"{name}: expected one of {ALL_TARGETS}, got {value!r}")
    if source == target:
        x_t, _ = _coefficients(x_t, alpha_bar, need_noise=False)
        return _pred(pred, x_t, "pred")
    x0 = {"x0": lambda: _pred(pred, _coefficients(x_t, alpha_bar, need_noise=False)[0], "pred"),
          "eps": lambda: x0_from_eps(x_t, pred, alpha_bar),
          "score": lambda: x0_from_score(x_t, pred, alpha_bar),
          "v": lambda: x0_from_v(x_t, pred, alpha_bar)}[source]()
    if target == "x0":
        return x0
    if target == "eps":
        return eps_from_x0(x_t, x0, alpha_bar)
    if target == "v":
        return v_from_x0(x_t, x0, alpha_bar)
    return score_from_x0(x_t, x0, alpha_bar)


class ExactDenoiser:
    """The Bayes-optimal denoiser for data from a ``GaussianMixture``: E[target | x^t], exactly.

    Called like a trained model, ``denoiser(x_t, t)`` with x_t of shape (n, d) and integer time steps
    ``t`` (a number or shape (n,)), it returns the prediction of ``target`` ("x0", "eps" or "score") in
    x_t's dtype. Plug it into a sampler to test the sampler apart from any training error.
    """

    def __init__(self, mixture, schedule, target: str = "eps"):
        if target not in ALL_TARGETS:
            raise ValueError(f"target: expected one of {ALL_TARGETS}, got {target!r}")
        self.mixture, self.schedule, self.target = mixture, schedule, target

    def __call__(self, x_t, t):
        x = as_tensor(x_t, "x_t", dtype=torch.float64, ndim=2).cpu()
        t = check_timestep(t, self.schedule.T).cpu()
        if t.ndim == 1 and t.shape[0] != x.shape[0]:
            raise ValueError(f"t: expected an int or shape ({x.shape[0]},) (one step per row of x_t), "
                             f"got shape {tuple(t.shape)}")
        ab = self.schedule.alpha_bars[t]
        out = convert(self.mixture.posterior_mean(x, ab), "x0", self.target, x, ab)
        # the exact maths runs in float64 on the CPU; hand the answer back like a model would
        return out.to(dtype=x_t.dtype, device=x_t.device) if isinstance(x_t, torch.Tensor) else out
