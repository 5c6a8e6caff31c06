"""The ELBO of a hierarchical VAE, rearranged into per-step terms, on a chain where everything is exact.

The encoder is the diffusion chain q(x^t | x^{t-1}) = N(sqrt(alpha_t) x^{t-1}, 1 - alpha_t) (a ``NoiseSchedule``),
the data are 1-D Gaussian, x^0 ~ N(data_mean, data_var), and the decoder is linear-Gaussian:

    p(x^T) = N(prior_mean, prior_var),   p_theta(x^{t-1} | x^t) = N(slope_t x^t + offset_t, var_t),  t = 1..T.

The ELBO can then be computed two ways that share no algebra:

- ``GaussianChain.log_ratio`` / ``elbo_monte_carlo``: the definition,
  L(x^0) = E_{q(x^{1:T} | x^0)}[log p_theta(x^{0:T}) - log q(x^{1:T} | x^0)], by simulating the chain and
  evaluating every factor's log density;
- ``GaussianChain.elbo_terms``: the rearranged form -L = L_T + sum_{t=2}^T L_{t-1} + L_0 with
  L_T = KL(q(x^T | x^0) || p(x^T)), L_{t-1} = E_{q(x^t | x^0)} KL(q(x^{t-1} | x^0, x^t) || p_theta(x^{t-1} | x^t))
  and L_0 = E_{q(x^1 | x^0)}[-log p_theta(x^0 | x^1)], each in closed form.

``GaussianChain.exact_reverse()`` is the decoder whose steps are the true reverse conditionals q(x^{t-1} | x^t)
of the chain and whose prior is the true q(x^T): then p_theta(x^{0:T}) = q(x^{0:T}) and the ELBO equals the
exact log p(x^0) = log N(x^0; data_mean, data_var) (``GaussianChain.log_prob``); ``perturb`` moves one step
away from it, which lowers the ELBO.

Everything is float64. Notebook 04 section 6 uses this module; the mixture version (a learned or Bayes-optimal
denoiser, T up to 1000) is ``course_lib.diffusion_elbo.diffusion_elbo``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ._checks import as_float64, check_count, check_positive, check_timestep, describe

__all__ = ["GaussianChain", "LinearGaussianReverse", "MCEstimate", "elbo_two_ways", "format_elbo_two_ways", "perturb"]

_LOG_2PI = math.log(2.0 * math.pi)


def _log_normal(x: torch.Tensor, mean: torch.Tensor, var) -> torch.Tensor:
    """log N(x; mean, var), elementwise."""
    return -0.5 * (_LOG_2PI + torch.log(torch.as_tensor(var, dtype=torch.float64)) + (x - mean) ** 2 / var)


def _kl_normal(mean_q, var_q, mean_p, var_p) -> torch.Tensor:
    """KL(N(mean_q, var_q) || N(mean_p, var_p)) for 1-D Gaussians, elementwise."""
    return 0.5 * (var_q / var_p + (mean_q - mean_p) ** 2 / var_p - 1.0 + torch.log(var_p / var_q))


class MCEstimate(NamedTuple):
    """A Monte Carlo average ``mean`` with its standard error ``se`` (floats) and the ``draws`` (n,) it averages."""

    mean: float
    se: float
    draws: torch.Tensor


class LinearGaussianReverse(NamedTuple):
    """A linear-Gaussian decoder: p_theta(x^{t-1}|x^t) = N(slope_t x^t + offset_t, var_t)
    and p(x^T) = N(prior_mean, prior_var).

    ``slope``, ``offset``, ``var``: float64 tensors of shape (T + 1,), indexed by the step t = 1..T of the
    transition x^t -> x^{t-1} (index 0 is unused and holds NaN). ``prior_mean``, ``prior_var``: floats.
    """

    slope: torch.Tensor
    offset: torch.Tensor
    var: torch.Tensor
    prior_mean: float
    prior_var: float

    @property
    def T(self) -> int:
        """Number of steps."""
        return int(self.slope.shape[0]) - 1


def perturb(model: LinearGaussianReverse, t: int, *, shift: float = 0.0, var_factor: float = 1.0
            ) -> LinearGaussianReverse:
    """A copy of ``model`` whose step t (x^t -> x^{t-1}, t in 1..T) has its mean moved by ``shift`` and its
    variance multiplied by ``var_factor`` (> 0). The other steps and the prior are unchanged."""
    if not isinstance(model, LinearGaussianReverse):
        raise TypeError(f"model: expected a LinearGaussianReverse, got {describe(model)}")
    tt = int(check_timestep(t, model.T, "t"))
    shift = float(as_float64(shift, "shift", ndim=0))
    var_factor = check_positive(var_factor, "var_factor")
    offset, var = model.offset.clone(), model.var.clone()
    offset[tt] += shift
    var[tt] *= var_factor
    return model._replace(offset=offset, var=var)


class GaussianChain:
    """x^0 ~ N(data_mean, data_var) pushed through the diffusion encoder of ``schedule`` (1-D, exact, float64).

    ``schedule``: a ``NoiseSchedule`` (T = schedule.T steps). ``data_mean``: a number; ``data_var``: a number > 0.
    Attributes ``schedule``, ``T``, ``data_mean``, ``data_var``, and the marginals q(x^t) = N(means[t], vars[t])
    with means[t] = sqrt(alpha_bar_t) data_mean and vars[t] = alpha_bar_t data_var + 1 - alpha_bar_t, shape (T + 1,).
    """

    def __init__(self, schedule, data_mean, data_var):
        if not hasattr(schedule, "alpha_bars") or not hasattr(schedule, "posterior_coefficients"):
            raise TypeError(f"schedule: expected a NoiseSchedule, got {describe(schedule)}")
        self.schedule = schedule
        self.T: int = schedule.T
        self.data_mean: float = float(as_float64(data_mean, "data_mean", ndim=0))
        self.data_var: float = check_positive(data_var, "data_var")
        ab = schedule.alpha_bars
        self.means: torch.Tensor = ab.sqrt() * self.data_mean
        self.vars: torch.Tensor = ab * self.data_var + (1.0 - ab)

    def __repr__(self) -> str:
        return (f"GaussianChain(T={self.T}, data_mean={self.data_mean:g}, data_var={self.data_var:g}, "
                f"schedule={self.schedule.name!r})")

    # ------------------------------------------------------------------ inputs
    def _x0(self, x0) -> torch.Tensor:
        x = as_float64(x0, "x0", ndim=(0, 1))
        return x.reshape(-1)

    def _model(self, model) -> LinearGaussianReverse:
        if not isinstance(model, LinearGaussianReverse):
            raise TypeError(f"model: expected a LinearGaussianReverse, got {describe(model)}")
        if model.T != self.T:
            raise ValueError(f"model: expected a decoder with T = {self.T} steps (the chain's), got T = {model.T}")
        return model

    # ------------------------------------------------------------------ exact quantities
    def log_prob(self, x0) -> torch.Tensor:
        """The exact log p(x^0) = log N(x^0; data_mean, data_var). x0: a number or shape (n,) -> shape (n,)."""
        x = self._x0(x0)
        return _log_normal(x, torch.tensor(self.data_mean, dtype=torch.float64), self.data_var)

    def exact_reverse(self) -> LinearGaussianReverse:
        """The true reverse chain: p(x^T) = q(x^T) and p_theta(x^{t-1}|x^t) = q(x^{t-1}|x^t), by Gaussian conditioning.

        (x^{t-1}, x^t) is jointly Gaussian with Cov = sqrt(alpha_t) vars[t-1], so
        q(x^{t-1} | x^t) = N(means[t-1] + k_t (x^t - means[t]), vars[t-1] (1 - alpha_t) / vars[t]),
        k_t = sqrt(alpha_t) vars[t-1] / vars[t]. Then p_theta(x^{0:T}) = q(x^{0:T}) as functions.
        """
        alpha = self.schedule.alphas
        slope = torch.full((self.T + 1,), float("nan"), dtype=torch.float64)
        offset, var = slope.clone(), slope.clone()
        k = alpha[1:].sqrt() * self.vars[:-1] / self.vars[1:]
        slope[1:] = k
        offset[1:] = self.means[:-1] - k * self.means[1:]
        var[1:] = self.vars[:-1] * (1.0 - alpha[1:]) / self.vars[1:]
        return LinearGaussianReverse(slope, offset, var, float(self.means[-1]), float(self.vars[-1]))

    def average_log_prob(self) -> float:
        """E[log p(x^0)] over x^0 ~ N(data_mean, data_var): minus the entropy, -log(2 pi e data_var) / 2."""
        return -0.5 * math.log(2.0 * math.pi * math.e * self.data_var)

    def average_elbo(self, model: LinearGaussianReverse) -> float:
        """E[ELBO(x^0)] over x^0 ~ N(data_mean, data_var), from ``elbo_terms`` (quadratic in x^0, so a 4-node
        Gauss-Hermite rule is exact). Never above ``average_log_prob()``; equal for ``exact_reverse()``."""
        e, w = np.polynomial.hermite_e.hermegauss(4)
        x0 = self.data_mean + math.sqrt(self.data_var) * torch.as_tensor(e, dtype=torch.float64)
        return float(torch.as_tensor(w / w.sum(), dtype=torch.float64) @ self.elbo_terms(x0, model)["elbo"])

    # ------------------------------------------------------------------ route (a): the definition
    def sample_paths(self, x0, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n chains x^0, x^1, ..., x^T from q, all started at the number ``x0``, one step at a time -> (n, T + 1)."""
        x = self._x0(x0)
        if x.numel() != 1:
            raise ValueError(f"x0: expected one starting point (a number), got shape {tuple(x.shape)}")
        n = check_count(n, "n")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {describe(generator)}")
        xi = torch.randn(n, self.T, generator=generator, dtype=torch.float64)
        paths = torch.empty(n, self.T + 1, dtype=torch.float64)
        paths[:, 0] = x
        alpha = self.schedule.alphas
        for t in range(1, self.T + 1):
            paths[:, t] = alpha[t].sqrt() * paths[:, t - 1] + (1.0 - alpha[t]).sqrt() * xi[:, t - 1]
        return paths

    def log_ratio(self, paths, model: LinearGaussianReverse) -> torch.Tensor:
        """log p_theta(x^{0:T}) - log q(x^{1:T}|x^0) per path, from the factors' densities. paths: (n, T + 1) -> (n,).

        log p_theta(x^{0:T}) = log p(x^T) + sum_t log p_theta(x^{t-1} | x^t);
        log q(x^{1:T} | x^0) = sum_t log q(x^t | x^{t-1}). Its mean over paths from q is the ELBO.
        """
        x = as_float64(paths, "paths", shape=(None, self.T + 1))
        m = self._model(model)
        alpha = self.schedule.alphas
        log_p = _log_normal(x[:, -1], torch.tensor(m.prior_mean, dtype=torch.float64), m.prior_var)
        log_q = torch.zeros(x.shape[0], dtype=torch.float64)
        for t in range(1, self.T + 1):
            log_p = log_p + _log_normal(x[:, t - 1], m.slope[t] * x[:, t] + m.offset[t], m.var[t])
            log_q = log_q + _log_normal(x[:, t], alpha[t].sqrt() * x[:, t - 1], 1.0 - alpha[t])
        return log_p - log_q

    def elbo_monte_carlo(self, x0, model: LinearGaussianReverse, n: int = 10_000,
                         generator: torch.Generator | None = None) -> MCEstimate:
        """The ELBO at the number ``x0`` by its definition: the average of ``log_ratio`` over n simulated chains."""
        draws = self.log_ratio(self.sample_paths(x0, n, generator), model)
        se = float(draws.std()) / math.sqrt(draws.numel()) if draws.numel() > 1 else float("nan")
        return MCEstimate(float(draws.mean()), se, draws)

    # ------------------------------------------------------------------ route (b): the rearranged terms
    def elbo_terms(self, x0, model: LinearGaussianReverse) -> dict[str, torch.Tensor]:
        """The rearranged ELBO, term by term, in closed form. x0: a number or shape (n,).

        Returns a dict of float64 tensors: "L_T" (n,) = KL(q(x^T | x^0) || p(x^T)); "L" (n, T - 1) with
        column t - 2 = L_{t-1} = E_{q(x^t | x^0)} KL(N(a_t x^0 + b_t x^t, c_t) || N(slope_t x^t + offset_t, var_t)),
        t = 2..T; "L_0" (n,) = E_{q(x^1 | x^0)}[-log N(x^0; slope_1 x^1 + offset_1, var_1)]; and
        "elbo" (n,) = -(L_T + sum_t L_{t-1} + L_0).

        The expectations over x^t ~ N(sqrt(alpha_bar_t) x^0, 1 - alpha_bar_t) use E[(r + k x^t)^2] =
        (r + k sqrt(alpha_bar_t) x^0)^2 + k^2 (1 - alpha_bar_t) for the (affine in x^t) difference of the two means.
        """
        x = self._x0(x0)
        m = self._model(model)
        ab = self.schedule.alpha_bars
        L_T = _kl_normal(ab[-1].sqrt() * x, 1.0 - ab[-1], torch.tensor(m.prior_mean, dtype=torch.float64),
                         torch.tensor(m.prior_var, dtype=torch.float64))
        steps = []
        for t in range(2, self.T + 1):
            a, b, c = self.schedule.posterior_coefficients(t)
            k = b - m.slope[t]  # mean difference: a x^0 + b x^t - (slope x^t + offset) = (a x^0 - offset) + k x^t
            sq = (a * x - m.offset[t] + k * ab[t].sqrt() * x) ** 2 + k**2 * (1.0 - ab[t])
            steps.append(0.5 * (c / m.var[t] + sq / m.var[t] - 1.0 + torch.log(m.var[t] / c)))
        L = torch.stack(steps, dim=1) if steps else torch.zeros(x.shape[0], 0, dtype=torch.float64)
        # -log N(x^0; slope_1 x^1 + offset_1, var_1), averaged over x^1 ~ N(sqrt(ab_1) x^0, 1 - ab_1)
        sq0 = (x - m.offset[1] - m.slope[1] * ab[1].sqrt() * x) ** 2 + m.slope[1] ** 2 * (1.0 - ab[1])
        L_0 = 0.5 * (_LOG_2PI + torch.log(m.var[1])) + sq0 / (2.0 * m.var[1])
        return {"L_T": L_T, "L": L, "L_0": L_0, "elbo": -(L_T + L.sum(dim=1) + L_0)}


def elbo_two_ways(chain: GaussianChain, models: dict, x0: float, n: int = 10_000,
                  generator: torch.Generator | None = None) -> list[dict]:
    """The ELBO at the data point ``x0`` by its definition (Monte Carlo over n chains) and by the rearranged terms.

    ``models``: ``{name: LinearGaussianReverse}``. One dict per model with "model", "T", "mc" and "se" (route (a)),
    "L_T", "L_sum" (sum of the L_{t-1}), "L_0" and "closed" = -(L_T + L_sum + L_0) (route (b)), "z" = (mc - closed) / se
    (NaN when se is at rounding level, 1e-12 or less), "spread" = max - min of the n Monte Carlo draws, "log_p" =
    the exact log p(x^0), and "average_elbo", "average_log_p" over x^0 ~ data. Print them with ``format_elbo_two_ways``.
    """
    rows = []
    for name, model in models.items():
        mc = chain.elbo_monte_carlo(x0, model, n, generator)
        terms = chain.elbo_terms(x0, model)
        closed = float(terms["elbo"][0])
        rows.append({
            "model": str(name), "T": chain.T, "mc": mc.mean, "se": mc.se,
            "L_T": float(terms["L_T"][0]), "L_sum": float(terms["L"].sum()), "L_0": float(terms["L_0"][0]),
            "closed": closed, "z": (mc.mean - closed) / mc.se if mc.se > 1e-12 else float("nan"),
            "spread": float(mc.draws.max() - mc.draws.min()), "log_p": float(chain.log_prob(x0)[0]),
            "average_elbo": chain.average_elbo(model), "average_log_p": chain.average_log_prob(),
        })
    return rows


def format_elbo_two_ways(rows: list[dict]) -> str:
    """``elbo_two_ways``'s rows as a text table."""
    head = (f"{'T':>3} {'decoder':<18} {'(a) Monte Carlo':>21} {'(b) -(L_T+sum L+L_0)':>21} {'(a) - (b)':>10} "
            f"{'z':>6} {'spread':>8} {'log p(x^0)':>11} {'E ELBO':>9} {'E log p':>9}")
    lines = [head]
    for r in rows:
        z = "     -" if math.isnan(r["z"]) else f"{r['z']:6.2f}"
        lines.append(f"{r['T']:3d} {r['model']:<18} {r['mc']:10.5f} +- {r['se']:.5f} {r['closed']:21.5f} "
                     f"{r['mc'] - r['closed']:10.1e} {z} {r['spread']:8.1e} {r['log_p']:11.5f} "
                     f"{r['average_elbo']:9.5f} {r['average_log_p']:9.5f}")
    return "\n".join(lines)
