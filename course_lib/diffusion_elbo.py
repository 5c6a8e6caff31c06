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

The whole ELBO (``diffusion_elbo``): -L(x^0) = L_T + sum_{t=2}^T L_{t-1} + L_0 with
L_T = KL(q(x^T | x^0) || N(0, I)) and the reconstruction term L_0 = E_{q(x^1 | x^0)}[-log p_theta(x^0 | x^1)] for
a Gaussian decoder p_theta(x^0 | x^1) = N(x0_hat(x^1), sigma_{theta,1}^2 I) (the model mean at t = 1 is
a_1 x0_hat + b_1 x^1 = x0_hat, since a_1 = 1, b_1 = 0). Its variance cannot be c_1 = 0; the default is
``first_step_variance(schedule)`` = beta_1 / alpha_1 = (1 - alpha_bar_1) / alpha_bar_1, the variance of
x^0 = (x^1 - sqrt(beta_1) xi) / sqrt(alpha_1) given x^1 when the data density is flat on the scale sqrt(beta_1)
(the limit of Var[x^0 | x^1] = (beta_1 / alpha_1) (1 + beta_1 d^2/dx^2 log p(x^1)) as beta_1 -> 0, by the
second-order Tweedie formula). For data from a 1-D ``GaussianMixture`` the terms are computed for each x^0,
with the expectation over x^t ~ q(x^t | x^0) by Gauss-Hermite quadrature, and set against the exact log p(x^0):
the gap log p(x^0) - L(x^0), averaged over x^0 from the data, is >= 0 for any model (it is
KL(p_data || p_theta) + E[log p_theta(x^0) - L(x^0)]). For the Bayes-optimal means (x0_hat = E[x^0 | x^t]) it
equals KL(q(x^T) || N(0, I)) + sum_t E KL(q(x^{t-1} | x^t) || p_theta(x^{t-1} | x^t)): only the shapes of the
reverse steps differ, and that difference vanishes as the steps get small in log-SNR (``log_snr_schedule`` with a
growing T: the gap falls like 1/T). The cosine and DDPM's linear schedules do not make their first steps small as T
grows, and there the gap levels off. ``elbo_gap_vs_T`` tabulates the gap against T, ``plot_gap_vs_T`` draws it.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
import torch

from ._checks import as_float64, as_tensor, check_count, check_positive, check_timestep, describe
from ._runtime import threads_for
from .diffusion import ALL_TARGETS, convert
from .vae import gaussian_kl_diag, mean_stderr

__all__ = [
    "DiffusionELBO",
    "GapTable",
    "KLPerStep",
    "RetimedDenoiser",
    "call_denoiser",
    "diffusion_elbo",
    "elbo_gap_vs_T",
    "first_step_variance",
    "kl_term",
    "log_snr_schedule",
    "per_timestep_kl",
    "plot_gap_vs_T",
    "predictor_target",
    "reverse_mean",
]


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


# ============================================================================== the whole ELBO on 1-D mixtures
_LOG_2PI = math.log(2.0 * math.pi)


def log_snr_schedule(T: int, log_snr_max: float = 7.0, log_snr_min: float = -7.0):
    """A ``NoiseSchedule`` whose log-SNR log(alpha_bar_t / (1 - alpha_bar_t)) falls linearly in t, from ``log_snr_max``
    at t = 1 to ``log_snr_min`` at t = T (T >= 2).

    Its two ends do not depend on T, so a larger T only refines the steps in between: every step's change of
    log-SNR, (log_snr_max - log_snr_min) / (T - 1), goes to 0. (DDPM's linear and the cosine schedule instead
    push alpha_bar_1 towards 1 as T grows, and their first steps keep multiplying the noise variance 1 - alpha_bar_t
    by about t / (t - 1), however large T is.) Defaults: alpha_bar_1 = sigmoid(7) = 0.99909 (noise sd 0.030) and
    alpha_bar_T = sigmoid(-7) = 9.1e-4.
    """
    from .schedules import NoiseSchedule

    T = check_count(T, "T", 2)
    hi = float(as_float64(log_snr_max, "log_snr_max", ndim=0))
    lo = float(as_float64(log_snr_min, "log_snr_min", ndim=0))
    if not hi > lo:
        raise ValueError(f"log_snr_max: expected a value > log_snr_min = {lo:g}, got {hi:g}")
    lam = torch.linspace(hi, lo, T, dtype=torch.float64)
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.sigmoid(lam)])
    return NoiseSchedule(1.0 - alpha_bar[1:] / alpha_bar[:-1], name="log-SNR linear")


def first_step_variance(schedule) -> float:
    """sigma_{theta,1}^2 = beta_1 / alpha_1 = (1 - alpha_bar_1) / alpha_bar_1: the default variance of p_theta(x^0|x^1).

    Inverting the first step, x^0 = (x^1 - sqrt(beta_1) xi) / sqrt(alpha_1): this is Var[x^0 | x^1] when the data
    density is flat on the scale sqrt(beta_1) of one step's noise (c_1 = 0 cannot be used: the ELBO would be -inf).
    """
    if not hasattr(schedule, "alpha_bars"):
        raise TypeError(f"schedule: expected a NoiseSchedule, got {describe(schedule)}")
    ab1 = float(schedule.alpha_bars[1])
    return (1.0 - ab1) / ab1


class DiffusionELBO(NamedTuple):
    """``diffusion_elbo``'s result, one row per data point x^0, float64 (nats).

    ``x0`` (n, 1); ``log_p`` (n,) the exact log p(x^0) of the data; ``L_T`` (n,) = KL(q(x^T | x^0) || N(0, 1));
    ``L`` (n, T - 1) with column t - 2 = L_{t-1}(x^0) = E_{q(x^t|x^0)} KL(q(x^{t-1}|x^0, x^t) || p_theta(x^{t-1}|x^t)),
    t = 2..T; ``L_0`` (n,) = E_{q(x^1|x^0)}[-log p_theta(x^0|x^1)]; ``decoder_var``: the variance of p_theta(x^0|x^1).
    Properties: ``elbo`` = -(L_T + sum L + L_0) and ``gap`` = log_p - elbo, shape (n,).
    """

    x0: torch.Tensor
    log_p: torch.Tensor
    L_T: torch.Tensor
    L: torch.Tensor
    L_0: torch.Tensor
    decoder_var: float

    @property
    def elbo(self) -> torch.Tensor:
        """The ELBO of each data point, -(L_T + sum_t L_{t-1} + L_0). Shape (n,)."""
        return -(self.L_T + self.L.sum(dim=1) + self.L_0)

    @property
    def gap(self) -> torch.Tensor:
        """log p(x^0) - ELBO(x^0) for each data point. Shape (n,). Its mean over data x^0 is >= 0."""
        return self.log_p - self.elbo

    def summary(self) -> dict[str, tuple[float, float]]:
        """(mean, standard error) over the data points of "log_p", "elbo", "gap", "L_T", "L_sum" (sum of the
        L_{t-1}) and "L_0". The standard errors are over the draws of x^0 (the quadrature over x^t adds none)."""
        parts = {"log_p": self.log_p, "elbo": self.elbo, "gap": self.gap, "L_T": self.L_T,
                 "L_sum": self.L.sum(dim=1), "L_0": self.L_0}
        return {k: mean_stderr(v) for k, v in parts.items()}


def _gauss_hermite(nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes e_j and weights w_j (summing to 1) with sum_j w_j f(e_j) ~ E f(eps), eps ~ N(0, 1); exact for
    polynomials of degree < 2 * nodes."""
    e, w = np.polynomial.hermite_e.hermegauss(nodes)
    return torch.as_tensor(e, dtype=torch.float64), torch.as_tensor(w / w.sum(), dtype=torch.float64)


def diffusion_elbo(mixture, schedule, predict, x0, *, target: str | None = None, nodes: int = 32,
                   decoder_var: float | None = None, control_variate: bool = False) -> DiffusionELBO:
    """The whole diffusion ELBO of each data point x^0 of a 1-D ``GaussianMixture``, term by term, and its log p(x^0).

    The model: p(x^T) = N(0, 1); for t = 2..T, p_theta(x^{t-1} | x^t) = N(a_t x0_hat(x^t) + b_t x^t, c_t);
    p_theta(x^0 | x^1) = N(x0_hat(x^1), ``decoder_var``) (default ``first_step_variance(schedule)`` = beta_1 / alpha_1).
    ``predict(x_t, t)``: x_t of shape (m, 1) float64, t an int in 1..T -> a prediction of ``target`` ("x0", "eps"
    or "score"; default ``predict.target`` or "x0"), converted to x0_hat; an ``ExactDenoiser`` gives the
    Bayes-optimal x0_hat = E[x^0 | x^t], a trained ``ToyDenoiser`` (see ``RetimedDenoiser``) a learned one.
    ``x0``: data points, shape (n, 1). Each expectation over x^t ~ N(sqrt(alpha_bar_t) x^0, 1 - alpha_bar_t) is a
    Gauss-Hermite quadrature with ``nodes`` nodes, so ``predict`` is called T times on n * nodes points.
    Returns a ``DiffusionELBO`` (per data point: log_p, L_T, the T - 1 terms L_{t-1}, L_0; elbo; gap).

    ``control_variate=True`` (for a predictor close to the optimum) splits each term's |x^0 - x0_hat|^2 into
    |x^0 - m|^2 + |m - x0_hat|^2 with m = E[x^0 | x^t] exact (``mixture.posterior_mean``), dropping the cross term
    2 (x^0 - m)(m - x0_hat): its mean over x^0 ~ data is 0 (x^0 - m is uncorrelated with any function of x^t),
    but its noise over a few hundred x^0 can exceed a good denoiser's whole excess. The mean over the data points
    is then still unbiased for E[ELBO], with a much smaller standard error, and the gap is the Bayes-optimal
    predictor's plus a sum of non-negative excess terms; a single point's terms are no longer its own ELBO.
    """
    if not callable(predict):
        raise TypeError(f"predict: expected a callable predict(x_t, t), got {describe(predict)}")
    target = predictor_target(predict, target)
    if getattr(mixture, "d", None) != 1 or not hasattr(mixture, "log_prob"):
        raise ValueError(f"mixture: expected a 1-D GaussianMixture (d = 1), got {describe(mixture)}"
                         + (f" with d = {mixture.d}" if hasattr(mixture, "d") else ""))
    if not hasattr(schedule, "alpha_bars") or not hasattr(schedule, "posterior_coefficients"):
        raise TypeError(f"schedule: expected a NoiseSchedule, got {describe(schedule)}")
    x = as_float64(x0, "x0", shape=(None, 1))
    nodes = check_count(nodes, "nodes")
    var0 = first_step_variance(schedule) if decoder_var is None else check_positive(decoder_var, "decoder_var")
    e, w = _gauss_hermite(nodes)
    with threads_for(predict if isinstance(predict, torch.nn.Module) else None):  # one thread for small tensors
        return _diffusion_elbo(mixture, schedule, predict, target, x, e, w, var0, bool(control_variate))


def _diffusion_elbo(mixture, schedule, predict, target, x, e, w, var0, control_variate) -> DiffusionELBO:
    nodes = e.shape[0]
    n, T, ab = x.shape[0], schedule.T, schedule.alpha_bars
    x0_rep = x.repeat_interleave(nodes, dim=0)  # (n * nodes, 1): row i * nodes + j is x^0_i
    e_rep = e.repeat(n)[:, None]  # ... with node e_j
    L = torch.empty(n, T - 1, dtype=torch.float64)
    L_0 = torch.empty(n, dtype=torch.float64)
    for t in range(1, T + 1):
        x_t = ab[t].sqrt() * x0_rep + (1.0 - ab[t]).sqrt() * e_rep
        pred = call_denoiser(predict, x_t, t, name="predict")
        if control_variate:
            # |x^0 - x0_hat|^2 -> |x^0 - m|^2 + |m - x0_hat|^2 with m = E[x^0 | x^t]: the dropped cross term
            # 2 (x^0 - m)(m - x0_hat) has mean 0 over the data, and its noise would hide a small excess
            x0_hat = convert(pred, target, "x0", x_t, ab[t])
            m = mixture.posterior_mean(x_t, ab[t])
            sq = ((x0_rep - m).pow(2) + (m - x0_hat).pow(2)).sum(-1)
        else:
            sq = None
        if t == 1:
            if sq is None:
                sq = (x0_rep - convert(pred, target, "x0", x_t, ab[1])).pow(2).sum(-1)
            L_0 = (sq / (2.0 * var0) + 0.5 * (_LOG_2PI + math.log(var0))).reshape(n, nodes) @ w
        else:
            if sq is None:
                kl = kl_term(schedule, t, x0_rep, x_t, reverse_mean(schedule, x_t, t, pred, target))
            else:
                a, _, c = schedule.posterior_coefficients(t)
                kl = a**2 * sq / (2.0 * c)
            L[:, t - 2] = kl.reshape(n, nodes) @ w
    L_T = gaussian_kl_diag(ab[T].sqrt() * x, 0.5 * torch.log(1.0 - ab[T]).expand_as(x))
    return DiffusionELBO(x, mixture.log_prob(x), L_T, L, L_0, var0)


class RetimedDenoiser:
    """A denoiser trained on one schedule, used on another: step t of ``schedule`` calls ``model`` at the step of
    ``trained_on`` whose log-SNR log(alpha_bar / (1 - alpha_bar)) is nearest.

    For two cosine schedules with T' dividing T_model the matched alpha_bars are equal except at the clipped last
    step. ``steps`` (T + 1,) long: the model's step used for each step t; ``max_log_snr_gap``: the largest
    |log-SNR difference| over t = 1..T (0 when every step matches). ``target``: the model's.
    Call it like a model: ``(x_t (n, d), t int) -> prediction (n, d)``, float64 on the CPU.
    """

    def __init__(self, model, trained_on, schedule):
        if not callable(model):
            raise TypeError(f"model: expected a callable model(x_t, t), got {describe(model)}")
        for s, name in ((trained_on, "trained_on"), (schedule, "schedule")):
            if not hasattr(s, "alpha_bars"):
                raise TypeError(f"{name}: expected a NoiseSchedule, got {describe(s)}")
        self.model, self.trained_on, self.schedule = model, trained_on, schedule
        self.target = predictor_target(model)
        snr_model = torch.log(trained_on.alpha_bars[1:]) - torch.log1p(-trained_on.alpha_bars[1:])
        snr = torch.log(schedule.alpha_bars[1:]) - torch.log1p(-schedule.alpha_bars[1:])
        diff = (snr[:, None] - snr_model[None, :]).abs()
        best = diff.argmin(dim=1)
        self.steps = torch.cat([torch.zeros(1, dtype=torch.long), best + 1])
        self.max_log_snr_gap = float(diff.gather(1, best[:, None]).max())

    def __call__(self, x_t, t):
        tt = check_timestep(t, self.schedule.T, "t")
        mapped = self.steps[tt]
        return call_denoiser(self.model, x_t, int(mapped) if mapped.ndim == 0 else mapped, name="model")

    def __repr__(self) -> str:
        return (f"RetimedDenoiser(T={self.schedule.T} on a model trained with T={self.trained_on.T}, "
                f"max |log-SNR gap| = {self.max_log_snr_gap:.2g})")


class GapTable(NamedTuple):
    """``elbo_gap_vs_T``'s result: for each number of steps ``T`` (m,) long, the means over the data points of
    ``elbo``, ``gap`` = log p(x^0) - ELBO and their standard errors ``elbo_se``, ``gap_se``; the parts of -ELBO
    ``L_0``, ``L_sum`` (sum of the L_{t-1}), ``L_T``; ``excess``, ``excess_se``: the mean of gap - the baseline
    predictor's gap on the same points, with its (paired) standard error (NaN without a baseline); all float64 (m,).
    ``log_p``, ``log_p_se``: the exact E[log p(x^0)] over the data points (floats). The same x^0 serve every T."""

    T: torch.Tensor
    elbo: torch.Tensor
    elbo_se: torch.Tensor
    gap: torch.Tensor
    gap_se: torch.Tensor
    L_0: torch.Tensor
    L_sum: torch.Tensor
    L_T: torch.Tensor
    excess: torch.Tensor
    excess_se: torch.Tensor
    log_p: float
    log_p_se: float

    def rows(self) -> str:
        """The table as text: T, ELBO +- se, gap +- se, T * gap, the three parts of -ELBO (and the excess, if any)."""
        has_excess = bool(torch.isfinite(self.excess).any())
        lines = [f"E log p(x^0) = {self.log_p:.4f} +- {self.log_p_se:.4f} (exact log p, averaged over the data points)",
                 f"{'T':>5} {'ELBO':>18} {'gap = log p - ELBO':>22} {'T * gap':>9} {'L_0':>9} {'sum L_t-1':>10} "
                 f"{'L_T':>9}" + (f" {'gap - baseline gap':>22}" if has_excess else "")]
        for i in range(len(self.T)):
            T = int(self.T[i])
            line = (f"{T:5d} {float(self.elbo[i]):9.4f} +- {float(self.elbo_se[i]):.4f} "
                    f"{float(self.gap[i]):13.5f} +- {float(self.gap_se[i]):.5f} {T * float(self.gap[i]):9.3f} "
                    f"{float(self.L_0[i]):9.4f} {float(self.L_sum[i]):10.4f} {float(self.L_T[i]):9.2e}")
            if has_excess:
                line += f" {float(self.excess[i]):13.5f} +- {float(self.excess_se[i]):.5f}"
            lines.append(line)
        return "\n".join(lines)


def elbo_gap_vs_T(mixture, Ts, make_predict, *, n: int = 500, nodes: int = 32, generator=None,
                  make_schedule=None, decoder_var: float | None = None, control_variate: bool = False,
                  make_baseline=None) -> GapTable:
    """The diffusion ELBO and its gap to log p(x^0), averaged over n data points x^0 ~ ``mixture``, for each T in Ts.

    ``make_predict(schedule) -> predict`` builds the predictor for a schedule of T steps (e.g.
    ``lambda s: ExactDenoiser(mixture, s, "x0")``). ``make_schedule(T) -> NoiseSchedule``: default
    ``NoiseSchedule.cosine``. The same n draws of x^0 (from ``generator``) serve every T. ``nodes``,
    ``decoder_var``, ``control_variate``: see ``diffusion_elbo``. ``make_baseline``: like ``make_predict``; when
    given, the table's ``excess`` is the paired mean of (gap - the baseline's gap) on the same points.
    """
    from .schedules import NoiseSchedule

    for f, name in ((make_predict, "make_predict"), (make_baseline, "make_baseline")):
        if not callable(f) and not (f is None and name == "make_baseline"):
            raise TypeError(f"{name}: expected a callable {name}(schedule), got {describe(f)}")
    make_schedule = NoiseSchedule.cosine if make_schedule is None else make_schedule
    Ts = [check_count(T, "Ts") for T in (Ts.tolist() if isinstance(Ts, torch.Tensor) else list(Ts))]
    if not Ts:
        raise ValueError("Ts: expected at least one number of steps")
    x0 = mixture.sample(check_count(n, "n", 2), generator=generator)
    keys = ("elbo", "elbo_se", "gap", "gap_se", "L_0", "L_sum", "L_T", "excess", "excess_se")
    cols = {k: [] for k in keys}
    log_p = None
    for T in Ts:
        schedule = make_schedule(T)
        res = diffusion_elbo(mixture, schedule, make_predict(schedule), x0, nodes=nodes, decoder_var=decoder_var,
                             control_variate=control_variate)
        summ = res.summary()
        log_p = summ["log_p"]
        for k in ("elbo", "gap"):
            cols[k].append(summ[k][0])
            cols[f"{k}_se"].append(summ[k][1])
        for k in ("L_0", "L_sum", "L_T"):
            cols[k].append(summ[k][0])
        excess = (float("nan"), float("nan"))
        if make_baseline is not None:
            base = diffusion_elbo(mixture, schedule, make_baseline(schedule), x0, nodes=nodes,
                                  decoder_var=decoder_var, control_variate=control_variate)
            excess = mean_stderr(res.gap - base.gap)
        cols["excess"].append(excess[0])
        cols["excess_se"].append(excess[1])
    return GapTable(torch.tensor(Ts), *(torch.tensor(cols[k], dtype=torch.float64) for k in keys),
                    log_p=log_p[0], log_p_se=log_p[1])


def plot_gap_vs_T(tables: dict, ax=None, reference: bool = True,
                  excess_label: str = "its excess over the baseline's gap (same points)"):
    """log p(x^0) - ELBO against T on log-log axes, +-2 standard errors, one line per ``GapTable`` in ``tables``
    (``{legend label: table}``; the first is drawn in black, as the exact/optimal reference, the others in colour).
    A table with an ``excess`` (a baseline was given) also gets a dotted line for it, in its colour, labelled
    ``excess_label``.
    ``reference``: a dashed line proportional to 1/T through the first table's last point. Returns the axes."""
    import matplotlib.pyplot as plt

    from .plotting import COLORS, label, to_numpy

    if ax is None:
        _, ax = plt.subplots(figsize=(12, 5))
    colours = [COLORS["truth"], COLORS["model"], COLORS["samples"], COLORS["encoder"]]
    markers = ["o", "s", "^", "D"]
    for i, (name, tab) in enumerate(tables.items()):
        T, gap, se = to_numpy(tab.T), to_numpy(tab.gap), to_numpy(tab.gap_se)
        ax.errorbar(T, gap, yerr=2 * se, color=colours[i % 4], marker=markers[i % 4], capsize=3, label=name)
        if i == 0 and reference:
            ref = gap[-1] * T[-1] / T
            ax.plot(T, ref, "--", color=COLORS["prior"], label=r"$\propto 1/T$")
        if bool(torch.isfinite(tab.excess).all()):
            ax.errorbar(T, to_numpy(tab.excess), yerr=2 * to_numpy(tab.excess_se), color=colours[i % 4], ls=":",
                        marker=markers[i % 4], mfc="white", capsize=3,
                        label=excess_label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    label(ax, "number of steps $T$", r"gap $= \mathbb{E}\,[\log p(x^0) - L(x^0)]$ (nats)",
          r"How far the diffusion ELBO is below $\log p(x^0)$")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=10)  # outside: the lines span the whole axes
    return ax
