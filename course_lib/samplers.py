"""Sampling from a diffusion model: one sampler with two knobs (``steps`` and ``eta``) covers DDPM and DDIM.

Each step goes from x^t to x^s (s < t, s = t - 1 for DDPM) through the prediction of x^0:

    x0_hat = the denoiser's prediction at (x^t, t), converted to x^0 with ``course_lib.diffusion.convert``
    x^s    = a x0_hat + b x^t + sqrt(c) z,    z ~ N(0, I)

- DDPM, ancestral sampling (``eta = 1``, every step): (a, b, c) = (a_t, b_t, c_t) of
  q(x^{t-1} | x^0, x^t) = N(a_t x^0 + b_t x^t, c_t I), ``NoiseSchedule.posterior_coefficients``.
- DDIM (Song et al. 2021) on a sub-sequence T = tau_S > ... > tau_1 > tau_0 = 0 of the steps:
  c = eta^2 (1 - alpha_bar_s) / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_s),
  b = sqrt((1 - alpha_bar_s - c) / (1 - alpha_bar_t)),   a = sqrt(alpha_bar_s) - b sqrt(alpha_bar_t),
  i.e. x^s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - c) eps_hat + sqrt(c) z.
  ``eta = 0`` is deterministic given x^T (an ODE solver); ``eta = 1`` is the exact posterior
  q(x^s | x^0, x^t) of the forward chain, so with every step it *is* DDPM (same numbers, same noise).

The last step goes to s = 0, where alpha_bar_0 = 1 gives c = 0, b = 0, a = 1: the sample is the final x0_hat
(no noise is added at the last step). The sampler runs in the denoiser's dtype and on its device (the
parameters of an ``nn.Module``; float64 on the CPU for other callables unless ``dtype``/``device`` say
otherwise); the noise is drawn on the CPU from ``generator`` so a seed gives the same samples on any device.

A denoiser is any callable ``denoiser(x_t, t)`` with x_t of shape (n, ...) and t a long tensor of shape (n,),
returning a prediction of ``target`` ("x0", "eps" or "score") of x_t's shape, e.g. ``ToyDenoiser`` or the
Bayes-optimal ``course_lib.diffusion.ExactDenoiser``. ``target`` defaults to ``denoiser.target``.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from ._checks import describe
from ._runtime import threads_for
from .diffusion import ALL_TARGETS, convert
from .schedules import NoiseSchedule

__all__ = ["SamplerPath", "ancestral_sample", "ddim_sample", "sample", "step_coefficients", "timesteps"]


class SamplerPath(NamedTuple):
    """What a sampler returns with ``return_path=True`` (unpack it: ``x, path, x0_pred, ts = ...``).

    ``x`` (n, ...): the samples, equal to ``path[-1]``. ``path`` (steps + 1, n, ...): x^t at each time in
    ``timesteps``, from x^T (``path[0]``) to the samples. ``x0_pred`` (steps, n, ...): the predicted x^0
    (Tweedie's posterior mean, for an exact denoiser) made from ``path[k]`` at time ``timesteps[k]``.
    ``timesteps`` (steps + 1,): the long tensor T = tau_S > ... > tau_0 = 0. All on the sampler's device.
    """

    x: torch.Tensor
    path: torch.Tensor
    x0_pred: torch.Tensor
    timesteps: torch.Tensor


# ---------------------------------------------------------------------------------------------- time grid
def _check_int(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer in {lo}..{hi}, got {describe(value)}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name}: expected an integer in {lo}..{hi}, got {int(value)}")
    return int(value)


def timesteps(T: int, steps: int | None = None) -> torch.Tensor:
    """The decreasing time grid tau_S = T > ... > tau_1 > tau_0 = 0 with S = ``steps`` (default T), shape (S + 1,).

    Evenly spaced and rounded: ``round(linspace(T, 0, S + 1))``; with S = T it is T, T - 1, ..., 0.
    """
    T = _check_int(T, "T", 1, 10**9)
    steps = T if steps is None else _check_int(steps, "steps", 1, T)
    ts = torch.linspace(T, 0, steps + 1, dtype=torch.float64).round().long()
    return ts


def step_coefficients(schedule: NoiseSchedule, t: int, s: int, eta: float = 1.0) -> tuple[float, float, float]:
    """(a, b, c) of one sampler step x^s = a x0_hat + b x^t + sqrt(c) z, 0 <= s < t <= T, 0 <= eta <= 1.

    For s = t - 1 and eta = 1 these are the lecture's (a_t, b_t, c_t) from ``schedule.posterior_coefficients``.
    Otherwise DDIM's: c = eta^2 (1 - ab_s)/(1 - ab_t) (1 - ab_t/ab_s), b = sqrt((1 - ab_s - c)/(1 - ab_t)),
    a = sqrt(ab_s) - b sqrt(ab_t) (ab = alpha_bar); eta = 1 gives the posterior q(x^s | x^0, x^t) of the chain.
    Returns Python floats (float64 arithmetic).
    """
    t = _check_int(t, "t", 1, schedule.T)
    s = _check_int(s, "s", 0, t - 1)
    (a,), (b,), (c,) = _coefficient_table(schedule, torch.tensor([t, s]), _check_eta(eta))
    return a, b, c


def _coefficient_table(schedule: NoiseSchedule, ts: torch.Tensor, eta: float) -> tuple[list, list, list]:
    """``step_coefficients`` for every step of the grid ``ts`` at once: lists a, b, c of len(ts) - 1 floats."""
    t, s = ts[:-1], ts[1:]
    ab_t, ab_s = schedule.alpha_bars[t], schedule.alpha_bars[s]
    c = eta**2 * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
    # clamp: 1 - ab_s - c is >= 0 in exact arithmetic (it is (1 - ab_s)(1 - eta^2 (...)) with (...) in [0, 1])
    b = ((1 - ab_s - c).clamp(min=0) / (1 - ab_t)).sqrt()
    a = ab_s.sqrt() - b * ab_t.sqrt()
    one = s == t - 1
    if eta == 1.0 and bool(one.any()):
        # single steps of the ancestral sampler: the lecture's (a_t, b_t, c_t) themselves
        a[one], b[one], c[one] = schedule.posterior_coefficients(t[one])
    return a.tolist(), b.tolist(), c.tolist()


def _check_eta(eta) -> float:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real):
        raise TypeError(f"eta: expected a number in [0, 1] (0 = DDIM, 1 = ancestral), got {describe(eta)}")
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta: expected a number in [0, 1] (0 = deterministic DDIM, 1 = ancestral), got {eta}")
    return eta


# ---------------------------------------------------------------------------------------------- the sampler
def _resolve_target(denoiser, target) -> str:
    if target is None:
        target = getattr(denoiser, "target", None)
        if target is None:
            raise ValueError(f"target: the denoiser has no .target attribute, so pass target= one of {ALL_TARGETS} "
                             "(what the denoiser predicts)")
    if target not in ALL_TARGETS:
        raise ValueError(f"target: expected one of {ALL_TARGETS}, got {target!r}")
    return target


def _module(denoiser) -> torch.nn.Module | None:
    """The ``nn.Module`` behind a denoiser: itself, or the ``.denoiser`` a guidance wrapper holds; else None."""
    if isinstance(denoiser, torch.nn.Module):
        return denoiser
    inner = getattr(denoiser, "denoiser", None)
    return inner if isinstance(inner, torch.nn.Module) else None


def _resolve_dtype_device(denoiser, dtype, device, x_T=None):
    """Explicit arguments, else the module's parameters, else x_T's, else float64 on the CPU.

    A wrapper that is not a module but holds one as ``.denoiser`` (the guided denoisers of ``course_lib.guidance``)
    runs in that module's dtype and on its device.
    """
    module = _module(denoiser)
    if module is not None:
        p = next(iter(list(module.parameters()) + list(module.buffers())), None)
        if p is not None:
            return dtype or (p.dtype if p.is_floating_point() else torch.float32), torch.device(device or p.device)
    if x_T is not None:
        return dtype or x_T.dtype, torch.device(device or x_T.device)
    return dtype or torch.float64, torch.device(device or "cpu")


def _resolve_shape(denoiser, shape_or_n) -> tuple[int, ...]:
    if isinstance(shape_or_n, bool):
        raise TypeError(f"shape_or_n: expected a number of samples n or a shape (n, ...), got {shape_or_n!r}")
    if isinstance(shape_or_n, numbers.Integral):
        n = int(shape_or_n)
        if n < 1:
            raise ValueError(f"shape_or_n: expected a positive number of samples, got {n}")
        dim = getattr(denoiser, "dim", None)
        if dim is None and getattr(denoiser, "mixture", None) is not None:
            dim = denoiser.mixture.d
        if dim is None:
            raise ValueError("shape_or_n: this denoiser has no .dim attribute, so pass the full shape, "
                             "e.g. (n, 2) for 2-D points or (n, 1, 28, 28) for MNIST, instead of n")
        return (n, int(dim))
    try:
        shape = tuple(int(s) for s in shape_or_n)
    except TypeError:
        raise TypeError(f"shape_or_n: expected an int n or a shape (n, ...), got {describe(shape_or_n)}") from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape_or_n: expected a shape (n, ...) with at least 2 positive sizes, got {shape}")
    return shape


@torch.no_grad()
def sample(denoiser, schedule: NoiseSchedule, shape_or_n=None, *, target: str | None = None,
           steps: int | None = None, eta: float = 1.0, generator: torch.Generator | None = None,
           x_T: torch.Tensor | None = None, return_path: bool = False, clip_x0: float | None = None,
           dtype: torch.dtype | None = None, device: torch.device | str | None = None):
    """Draw samples by running the reverse chain from x^T ~ N(0, I) to x^0 in ``steps`` steps.

    The one sampler: ``steps=None, eta=1`` is DDPM's ancestral sampler; ``steps=S, eta=0`` is DDIM.
    denoiser: callable (x_t (n, ...), t long (n,)) -> prediction of ``target``. schedule: the training schedule.
    shape_or_n: n (needs ``denoiser.dim`` or an ``ExactDenoiser``) or a shape (n, ...); may be None with x_T.
    steps: number of steps S on the grid ``timesteps(T, S)`` (default T). eta: noise knob in [0, 1], or a function
    ``eta(t)`` giving it for the step from t (e.g. ``lambda t: 1.0 if t > 250 else 0.0``: stochastic early, then DDIM).
    generator: a CPU ``torch.Generator`` for x^T and the noise. x_T: start from this x^T instead.
    clip_x0: clamp x0_hat to [-clip_x0, clip_x0] (DDPM's trick for images in [-1, 1]); None = no clipping.
    Returns x (n, ...), or ``SamplerPath(x, path, x0_pred, timesteps)`` when ``return_path``.
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser: expected a callable denoiser(x_t, t), got {describe(denoiser)}")
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule: expected a NoiseSchedule, got {describe(schedule)}")
    target = _resolve_target(denoiser, target)
    if not callable(eta):
        eta = _check_eta(eta)
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        raise TypeError(f"generator: expected a CPU torch.Generator or None, got {describe(generator)}")
    if clip_x0 is not None and (isinstance(clip_x0, bool) or not isinstance(clip_x0, numbers.Real) or clip_x0 <= 0):
        raise ValueError(f"clip_x0: expected None or a positive number, got {describe(clip_x0)}")
    ts = timesteps(schedule.T, steps)
    if x_T is not None:
        if not isinstance(x_T, torch.Tensor) or not x_T.is_floating_point():
            raise TypeError(f"x_T: expected a floating-point tensor of shape (n, ...), got {describe(x_T)}")
        if shape_or_n is not None and tuple(x_T.shape) != _resolve_shape(denoiser, shape_or_n):
            raise ValueError(f"x_T: expected shape {_resolve_shape(denoiser, shape_or_n)} (from shape_or_n), "
                             f"got {tuple(x_T.shape)}")
        if x_T.ndim < 2:
            raise ValueError(f"x_T: expected shape (n, ...) with one row per sample, got {tuple(x_T.shape)}")
        dtype, device = _resolve_dtype_device(denoiser, dtype, device, x_T)
        x = x_T.to(dtype=dtype, device=device)
    else:
        if shape_or_n is None:
            raise ValueError("shape_or_n: expected the number of samples n or a shape (n, ...) (or pass x_T)")
        shape = _resolve_shape(denoiser, shape_or_n)
        dtype, device = _resolve_dtype_device(denoiser, dtype, device)
        x = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
    n = x.shape[0]

    path, x0_path = [x], []
    if callable(eta):  # eta(t) per step: the step from t uses eta(t)
        rows = [_coefficient_table(schedule, ts[k:k + 2], _check_eta(eta(int(ts[k])))) for k in range(len(ts) - 1)]
        coef_a, coef_b, coef_c = ([row[i][0] for row in rows] for i in range(3))
    else:
        coef_a, coef_b, coef_c = _coefficient_table(schedule, ts, eta)
    with threads_for(_module(denoiser)):  # the CPU threads that suit the network, restored afterwards
        for k in range(len(ts) - 1):
            t = int(ts[k])
            pred = denoiser(x, torch.full((n,), t, dtype=torch.long, device=device))
            if not isinstance(pred, torch.Tensor) or tuple(pred.shape) != tuple(x.shape):
                got = tuple(pred.shape) if isinstance(pred, torch.Tensor) else describe(pred)
                raise ValueError(f"denoiser: expected a prediction of x_t's shape {tuple(x.shape)} at t = {t}, "
                                 f"got {got}")
            ab_t = float(schedule.alpha_bars[t])
            x0_hat = convert(pred.to(dtype), target, "x0", x, ab_t)
            if clip_x0 is not None:
                x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
            a, b, c = coef_a[k], coef_b[k], coef_c[k]
            x = a * x0_hat + b * x
            if c > 0:
                z = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
                x = x + c**0.5 * z
            if return_path:
                path.append(x)
                x0_path.append(x0_hat)
    if not return_path:
        return x
    return SamplerPath(x, torch.stack(path), torch.stack(x0_path), ts.to(device))


def ancestral_sample(denoiser, schedule: NoiseSchedule, shape_or_n=None, *, target: str | None = None,
                     generator: torch.Generator | None = None, steps: int | None = None,
                     return_path: bool = False, **kw):
    """DDPM: x^{t-1} = a_t x0_hat + b_t x^t + sqrt(c_t) z for t = T..1 (``sample`` with eta = 1).

    ``steps`` < T jumps along ``timesteps(T, steps)`` with the chain's posterior q(x^s | x^0, x^t).
    Returns samples (n, ...) or a ``SamplerPath``. See ``sample`` for the other keywords.
    """
    return sample(denoiser, schedule, shape_or_n, target=target, steps=steps, eta=1.0, generator=generator,
                  return_path=return_path, **kw)


def ddim_sample(denoiser, schedule: NoiseSchedule, shape_or_n=None, *, target: str | None = None,
                steps: int | None = None, eta: float = 0.0, generator: torch.Generator | None = None,
                return_path: bool = False, **kw):
    """DDIM (Song et al. 2021) on ``timesteps(T, steps)``: x^s = sqrt(ab_s) x0_hat + sqrt(1-ab_s-c) eps_hat + sqrt(c) z.

    ``eta = 0`` (default): deterministic given x^T. ``eta = 1``: ancestral sampling on the sub-sequence.
    Returns samples (n, ...) or a ``SamplerPath``. See ``sample`` for the other keywords.
    """
    return sample(denoiser, schedule, shape_or_n, target=target, steps=steps, eta=eta, generator=generator,
                  return_path=return_path, **kw)
