"""The diffusion ELBO's leading terms, one per time step: what a denoiser is trained to predict.

The terms are L_{t-1} = E_{x^0, x^t} KL( q(x^{t-1} | x^0, x^t) || p_theta(x^{t-1} | x^t) ), t = 2..T, with
q(x^{t-1} | x^0, x^t) = N(a_t x^0 + b_t x^t, c_t I) (``NoiseSchedule.posterior_coefficients``). With the
model's variance fixed at c_t, p_theta(x^{t-1} | x^t) = N(mu_theta(x^t), c_t I), and the KL between two
Gaussians of equal covariance is

    KL = |a_t x^0 + b_t x^t - mu_theta(x^t)|^2 / (2 c_t),

so minimising it means predicting the mean a_t x^0 + b_t x^t from x^t alone: the best mu_theta is
a_t E[x^0 | x^t] + b_t x^t. Writing mu_theta = a_t x0_hat(x^t) + b_t x^t turns the term into
a_t^2 / (2 c_t) |x^0 - x0_hat(x^t)|^2: a weighted denoising error. (At t = 1, c_1 = 0 because
alpha_bar_0 = 1: that step is the reconstruction term, not a KL between Gaussians, so it is left out.)

A predictor may output any of the three targets ("x0", "eps", "score", see ``course_lib.diffusion``);
it is converted to x0 first, which is why all three give the same mean.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

from ._checks import as_tensor, check_timestep, describe
from .diffusion import ALL_TARGETS, convert

__all__ = ["KLPerStep", "call_denoiser", "kl_term", "per_timestep_kl", "predictor_target", "reverse_mean"]


def predictor_target(predict, target: str | None = None) -> str:
    """The target ("x0", "eps" or "score") a predictor outputs: ``target`` if given, else its ``.target``, else "x0"."""
    if target is None:
        target = getattr(predict, "target", "x0")
    if target not in ALL_TARGETS:
        raise ValueError(f"target: expected one of {ALL_TARGETS}, got {target!r}")
    return target


def call_denoiser(denoiser, x_t, t, name: str = "denoiser") -> torch.Tensor:
    """``denoiser(x_t, t)`` without gradients, as a float64 CPU tensor of x_t's shape (n, ...).

    A ``torch.nn.Module`` gets x_t on the device and in the dtype of its parameters (a float32 model on a
    GPU works); any other callable gets x_t as given. ``name`` is used in error messages.
    """
    if not callable(denoiser):
        raise TypeError(f"{name}: expected a callable {name}(x_t, t), got {describe(denoiser)}")
    x_in = x_t
    if isinstance(denoiser, torch.nn.Module):
        p = next(iter(list(denoiser.parameters()) + list(denoiser.buffers())), None)
        if p is not None:
            x_in = x_t.to(device=p.device, dtype=p.dtype if p.is_floating_point() else x_t.dtype)
    with torch.no_grad():
        out = denoiser(x_in, t)
    if isinstance(out, torch.Tensor):
        out = out.detach().to("cpu", torch.float64)
    else:
        out = as_tensor(out, f"{name}(x_t, t)", dtype=torch.float64)
    if out.shape != x_t.shape:
        raise ValueError(f"{name}: expected a prediction of the shape of x_t {tuple(x_t.shape)}, "
                         f"got {tuple(out.shape)}")
    return out


def _steps(schedule, t, name: str = "t") -> torch.Tensor:
    """Time steps in 2..T (the KL terms; t = 1 is the reconstruction term)."""
    tt = check_timestep(t, schedule.T, name)
    if tt.numel() and int(tt.min()) < 2:
        raise ValueError(f"{name}: expected time steps in 2..{schedule.T} for a KL term, got 1 "
                         "(at t = 1, c_1 = 0: that step is the reconstruction term, not a KL between Gaussians)")
    return tt


def _row_shape(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A coefficient of shape () or (n,), cast to x's dtype/device and shaped to broadcast over x (n, ...)."""
    c = c.to(dtype=x.dtype, device=x.device)
    return c.reshape(-1, *([1] * (x.ndim - 1))) if c.ndim == 1 else c


def _rows(x, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    t = as_tensor(x, name, dtype=None if isinstance(x, torch.Tensor) else torch.float64)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.ndim < 2:
        raise ValueError(f"{name}: expected shape (n, ...) with one row per example, got {tuple(t.shape)}")
    if like is not None and t.shape != like.shape:
        raise ValueError(f"{name}: expected the shape of x_t {tuple(like.shape)}, got {tuple(t.shape)}")
    return t


def reverse_mean(schedule, x_t, t, prediction, target: str = "x0") -> torch.Tensor:
    """mu_theta(x^t) = a_t x0_hat + b_t x^t, x0_hat = ``convert(prediction, target, "x0", x_t, alpha_bar_t)``.

    The mean of the model's step p_theta(x^{t-1} | x^t); with the exact E[target | x^t] as ``prediction``
    it is E[x^{t-1} | x^t]. ``x_t``, ``prediction``: shape (n, ...). ``t``: an int in 1..T or shape (n,).
    Returns shape (n, ...), in x_t's dtype (float64 for non-tensor input).
    """
    x = _rows(x_t, "x_t")
    tt = check_timestep(t, schedule.T, "t")
    if tt.ndim > 1 or (tt.ndim == 1 and tt.shape[0] != x.shape[0]):
        raise ValueError(f"t: expected an int or shape ({x.shape[0]},) (one step per row of x_t), "
                         f"got {tuple(tt.shape)}")
    if target not in ALL_TARGETS:
        raise ValueError(f"target: expected one of {ALL_TARGETS}, got {target!r}")
    pred = _rows(prediction, "prediction", like=x).to(dtype=x.dtype, device=x.device)
    x0_hat = convert(pred, target, "x0", x, schedule.alpha_bars[tt])
    a, b, _ = schedule.posterior_coefficients(tt)
    return _row_shape(a, x) * x0_hat + _row_shape(b, x) * x


def kl_term(schedule, t, x0, x_t, mean) -> torch.Tensor:
    """KL( N(a_t x^0 + b_t x^t, c_t I) || N(mean, c_t I) ) = |a_t x^0 + b_t x^t - mean|^2 / (2 c_t), per row.

    ``x0``, ``x_t``, ``mean``: shape (n, ...); ``t``: an int in 2..T or shape (n,). Returns shape (n,)
    (summed over all but the first dimension), float64.
    """
    x = _rows(x_t, "x_t").to(torch.float64)
    x0 = _rows(x0, "x0", like=x).to(dtype=torch.float64, device=x.device)
    mean = _rows(mean, "mean", like=x).to(dtype=torch.float64, device=x.device)
    tt = _steps(schedule, t)
    if tt.ndim > 1 or (tt.ndim == 1 and tt.shape[0] != x.shape[0]):
        raise ValueError(f"t: expected an int or shape ({x.shape[0]},) (one step per row of x_t), "
                         f"got {tuple(tt.shape)}")
    a, b, c = (_row_shape(v, x) for v in schedule.posterior_coefficients(tt))
    diff = a * x0 + b * x - mean
    return (diff**2).flatten(1).sum(-1) / (2.0 * c.reshape(-1))


class KLPerStep(NamedTuple):
    """``per_timestep_kl``'s result: time steps ``t`` (m,) long, Monte Carlo means ``kl`` (m,) and their
    standard errors ``se`` (m,), float64. ``kl.sum()`` over t = 2..T is the ELBO's sum of KL terms."""

    t: torch.Tensor
    kl: torch.Tensor
    se: torch.Tensor


def per_timestep_kl(mixture, schedule, predict, *, target: str | None = None, n: int = 2000,
                    timesteps=None, generator: torch.Generator | None = None) -> KLPerStep:
    """L_{t-1} = E_{x^0 ~ mixture, x^t ~ q(x^t|x^0)} |a_t x^0 + b_t x^t - mu_theta(x^t)|^2 / (2 c_t), per t.

    ``predict(x_t, t)``: x_t of shape (n, d), t an int -> a prediction of ``target`` of shape (n, d)
    (``target``: "x0", "eps" or "score"; default ``predict.target`` if it has one, else "x0"), so
    ``course_lib.diffusion.ExactDenoiser`` or a trained model can be passed (x_t is float64 on the CPU,
    moved to a ``torch.nn.Module``'s device and dtype by ``call_denoiser``). mu_theta = a_t x0_hat + b_t x^t.
    ``timesteps``: the steps to evaluate (ints in 2..T); default all of 2..T, so the result has T - 1 rows.
    Monte Carlo with ``n`` draws of (x^0, eps), the same draws at every t (common random numbers: the
    curves are smooth and differences between predictors are estimated precisely).
    Returns ``KLPerStep(t, kl, se)``.
    """
    if not callable(predict):
        raise TypeError(f"predict: expected a callable predict(x_t, t), got {describe(predict)}")
    target = predictor_target(predict, target)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) < 2:
        raise ValueError(f"n: expected an integer number of Monte Carlo draws >= 2, got {describe(n)}")
    n = int(n)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {describe(generator)}")
    steps = torch.arange(2, schedule.T + 1) if timesteps is None else _steps(schedule, timesteps, "timesteps")
    if steps.ndim != 1 or steps.numel() == 0:
        raise ValueError(f"timesteps: expected a non-empty 1-D sequence of steps in 2..{schedule.T}, "
                         f"got shape {tuple(steps.shape)}")
    x0 = mixture.sample(n, generator=generator)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    kl, se = torch.empty(len(steps), dtype=torch.float64), torch.empty(len(steps), dtype=torch.float64)
    for i, t in enumerate(steps.tolist()):
        ab = float(schedule.alpha_bars[t])
        x_t = math.sqrt(ab) * x0 + math.sqrt(1.0 - ab) * eps
        pred = call_denoiser(predict, x_t, t, name="predict")
        mean = reverse_mean(schedule, x_t, t, pred, target)
        terms = kl_term(schedule, t, x0, x_t, mean)
        kl[i], se[i] = terms.mean(), terms.std() / math.sqrt(n)
    return KLPerStep(steps.clone(), kl, se)
