"""The ELBO decomposition, live: log p(x) = ELBO + KL(q || p(z|x)) and ELBO = reconstruction - KL(q || p(z)).

Everything here runs on the exact linear-Gaussian model (``course_lib.vae.LinearGaussianModel``), so each
number has a closed form to be checked against. q(z|x) = N(q_mean, diag(exp(2 q_log_std))): for k = 1 that
is every Gaussian (the family contains the posterior), for k > 1 it is the mean-field family.

Pure compute functions (tested headlessly against the exact core):

- ``reparameterised_elbo(model, x, q_mean, q_log_std, eps)``: the lecture's differentiable estimate
  1/n sum_j [log p(x|z_j) + log p(z_j) - log q(z_j|x)], z_j = mu + sigma * eps_j, for given draws eps.
- ``elbo_view_data(model, x, q_mean, q_log_std, n_draws, eps)``: every number the widget draws.
- ``elbo_ascent(model, x, q_mean, q_log_std, steps=...)``: gradient ascent on the ELBO over phi (and theta = W),
  a generator yielding the exact terms after every step; ``ascent_history`` stacks its states into arrays.
- ``log_marginal_quadrature(model, x, n_points)``: log p(x) = log int p(x|z) p(z) dz on a grid of n_points^k nodes.
- ``quadrature_table``, ``quadrature_cost``: its error against the closed form, and its cost as k grows.
- ``mean_field_optimum(model, x)``: the best diagonal q in closed form (precision-matching), and its gap.

Static figures for notebook 01 (each returns a pyplot Figure): ``figure_decoder_samples``,
``figure_quadrature``, ``figure_quadrature_cost``, ``figure_decomposition``, ``figure_ascent``,
``figure_restricted_families``, ``figure_mean_field``.

View: ``ElboView`` (k = d = 1): sliders for q's mean and log standard deviation, the decoder's W and
sigma and the number of Monte Carlo draws; buttons that run gradient ascent and animate it.
``ElboView.run_ascent(steps, params, start=...)`` starts from given values (reproducible), not from the sliders.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from .._checks import as_float64, check_count, describe
from ..plotting import COLORS, label, to_numpy
from ..vae import LinearGaussianModel
from ._base import WidgetView, cache_axes_rasters

__all__ = [
    "ELBO_COLOR",
    "ElboView",
    "ascent_history",
    "elbo_ascent",
    "elbo_view_data",
    "figure_ascent",
    "figure_decoder_samples",
    "figure_decomposition",
    "figure_mean_field",
    "figure_quadrature",
    "figure_quadrature_cost",
    "figure_restricted_families",
    "log_marginal_quadrature",
    "mean_field_optimum",
    "quadrature_cost",
    "quadrature_table",
    "reparameterised_elbo",
    "standard_normal_draws",
]

_LOG_2PI = math.log(2 * math.pi)
#: The ELBO's colour (plotting.COLORS has none): blue, between the black truth and the coloured terms.
ELBO_COLOR = "#386cb0"
TERMS = ("log_px", "elbo", "reconstruction", "kl_prior", "kl_posterior")
PARAMS = ("phi", "phi+theta")
FAMILIES = ("gaussian", "fixed_std")
OBJECTIVES = ("exact", "monte_carlo")


# ============================================================================================ checks
def _check_model(model) -> LinearGaussianModel:
    if not isinstance(model, LinearGaussianModel):
        raise TypeError(f"model: expected a LinearGaussianModel, got {describe(model)}")
    return model


def _one_x(model: LinearGaussianModel, x) -> torch.Tensor:
    """One observation as a (1, d) row: accepts a number (d = 1), shape (d,) or shape (1, d)."""
    t = as_float64(x, "x")
    if t.ndim == 0 and model.d == 1:
        t = t.reshape(1)
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.shape != (1, model.d):
        raise ValueError(f"x: expected one observation of shape ({model.d},) or (1, {model.d}), got {tuple(t.shape)}")
    return t


def _latent(value, k: int, name: str) -> torch.Tensor:
    """A q parameter of shape (k,): a number (k = 1), or shape (k,); keeps the autograd graph."""
    t = as_float64(value, name)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.shape != (k,):
        raise ValueError(f"{name}: expected shape ({k},) (one entry per latent coordinate), got {tuple(t.shape)}")
    return t



def _choice(value, allowed, name: str) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {list(allowed)}, got {value!r}")
    return value


def _q_cov(q_log_std: torch.Tensor) -> torch.Tensor:
    return torch.diag(torch.exp(2 * q_log_std))


def standard_normal_draws(n: int, k: int = 1, seed: int = 0) -> torch.Tensor:
    """The draws eps ~ N(0, I_k), shape (n, k), that ``model.elbo_monte_carlo(..., n, generator)`` uses with
    ``generator = torch.Generator().manual_seed(seed)`` (so the two estimates can be compared exactly)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(1, check_count(n, "n"), k, generator=g, dtype=torch.float64)[0]


# ============================================================================================ compute
def reparameterised_elbo(model, x, q_mean, q_log_std, eps) -> tuple[torch.Tensor, torch.Tensor]:
    """L_hat = 1/n sum_j [log p(x|z_j) + log p(z_j) - log q(z_j|x)], z_j = mu + sigma * eps_j, sigma = exp(log_std).

    x: one observation, shape (d,) or (1, d); q_mean, q_log_std: shape (k,) (numbers when k = 1); eps: the
    fixed draws, shape (n, k) ((n,) when k = 1). Returns (estimate 0-d, values (n,)), float64, differentiable
    in q_mean, q_log_std and the model's W: the lecture's "differentiable estimate for fixed draws".
    """
    model = _check_model(model)
    k = model.k
    x = _one_x(model, x)
    m = _latent(q_mean, k, "q_mean")
    ls = _latent(q_log_std, k, "q_log_std")
    e = as_float64(eps, "eps")
    if e.ndim == 1 and k == 1:
        e = e.unsqueeze(-1)
    if e.ndim != 2 or e.shape[1] != k or e.shape[0] < 1:
        raise ValueError(f"eps: expected draws of shape (n, {k}), got {tuple(e.shape)}")
    z = m + torch.exp(ls) * e  # the reparameterisation: the randomness is in eps, the gradient flows to m, ls
    # log q(z|x) at z = m + sigma * eps, written in eps: no division by sigma needed
    log_q = -0.5 * (k * _LOG_2PI + (e**2).sum(-1)) - ls.sum()
    values = model.decoder_log_prob(x, z.unsqueeze(0))[0] + model.log_prior(z) - log_q
    return values.mean(), values


def _normal_pdf(z: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return torch.exp(-0.5 * ((z - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def elbo_view_data(model, x, q_mean: float, q_log_std: float, n_draws: int, eps=None, z_grid=None) -> dict:
    """Every number the ELBO widget draws, for a model with k = 1 and q(z|x) = N(q_mean, exp(q_log_std)^2).

    ``eps``: the common random numbers, shape (N,) or (N, 1) with N >= n_draws; the first n_draws are used,
    so the estimate moves smoothly with the sliders (default: ``standard_normal_draws(n_draws)``, the draws
    ``model.elbo_monte_carlo`` makes with a generator seeded 0). ``z_grid``: where the densities are
    evaluated, shape (m,) (default 401 points on [-5, 5]).

    Returns floats ``log_px``, ``elbo``, ``reconstruction``, ``kl_prior``, ``kl_posterior`` (exact, from
    ``model.elbo_terms``), ``mc_estimate``, ``mc_stderr`` (the reparameterised estimate and its standard error
    std/sqrt(n)), ``q_std``, ``posterior_mean``, ``posterior_std``; numpy arrays ``mc_values`` and ``mc_z``
    (n_draws,), the per-draw values and latents, and ``z_grid``, ``q_density``, ``posterior_density``,
    ``prior_density`` (m,).
    """
    model = _check_model(model)
    if model.k != 1:
        raise ValueError(f"model: expected a model with one latent dimension (k = 1), got k = {model.k}")
    x = _one_x(model, x)
    n_draws = check_count(n_draws, "n_draws", minimum=2)
    if eps is None:
        e = standard_normal_draws(n_draws)
    else:
        e = as_float64(eps, "eps")
        if e.ndim == 2 and e.shape[1] == 1:
            e = e[:, 0]
        if e.ndim != 1:
            raise ValueError(f"eps: expected draws of shape (N,) or (N, 1), got {tuple(e.shape)}")
        if e.shape[0] < n_draws:
            raise ValueError(f"eps: expected at least n_draws = {n_draws} draws, got {e.shape[0]}")
        e = e[:n_draws].unsqueeze(-1)
    m = _latent(q_mean, 1, "q_mean")
    ls = _latent(q_log_std, 1, "q_log_std")
    terms = model.elbo_terms(x, m, _q_cov(ls))
    estimate, values = reparameterised_elbo(model, x, m, ls, e)
    post_mean, post_cov = model.posterior(x)
    zs = torch.linspace(-5, 5, 401, dtype=torch.float64) if z_grid is None else as_float64(z_grid, "z_grid", ndim=1)
    q_std = math.exp(float(ls))
    pm, ps = float(post_mean[0, 0]), math.sqrt(float(post_cov[0, 0]))
    out = {name: float(terms[name][0]) for name in TERMS}
    out.update(
        mc_estimate=float(estimate),
        mc_stderr=float(values.std() / math.sqrt(n_draws)),
        mc_values=to_numpy(values),
        mc_z=to_numpy(m + q_std * e[:, 0]),
        q_std=q_std,
        posterior_mean=pm,
        posterior_std=ps,
        z_grid=to_numpy(zs),
        q_density=to_numpy(_normal_pdf(zs, float(m), q_std)),
        posterior_density=to_numpy(_normal_pdf(zs, pm, ps)),
        prior_density=to_numpy(_normal_pdf(zs, 0.0, 1.0)),
    )
    return out


def elbo_ascent(model, x, q_mean, q_log_std, *, steps: int, params: str = "phi", family: str = "gaussian",
                objective: str = "exact", eps=None, lr: float = 0.05,
                bounds: Mapping[str, tuple[float, float]] | None = None) -> Iterator[dict]:
    """Gradient ascent on the ELBO L(phi, theta; x) with Adam; yields the state before the first and after every step.

    phi = (q_mean, q_log_std), shapes (k,); q(z|x) = N(q_mean, diag(exp(2 q_log_std))). ``params``: "phi"
    (the encoder only) or "phi+theta" (also the decoder weight W; b and sigma stay fixed). ``family``:
    "gaussian" (mean and standard deviation free) or "fixed_std" (q_log_std stays at its starting value: a
    family that excludes the posterior). ``objective``: "exact" (``model.elbo_terms``) or "monte_carlo"
    (``reparameterised_elbo`` with the fixed draws ``eps``, shape (n, k); default 64 standard-normal draws).
    ``bounds``: optional ``{"q_mean"|"q_log_std"|"W": (lo, hi)}``, clamped after every step (projected
    ascent; the widget passes its slider ranges). Each yielded dict holds ``step``, numpy ``q_mean``,
    ``q_log_std``, ``W``, the float ``objective`` and the exact float terms ``log_px``, ``elbo``,
    ``reconstruction``, ``kl_prior``, ``kl_posterior``, all at the same parameters.
    """
    model = _check_model(model)
    steps = check_count(steps, "steps", minimum=0)
    _choice(params, PARAMS, "params")
    _choice(family, FAMILIES, "family")
    _choice(objective, OBJECTIVES, "objective")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
        raise ValueError(f"lr: expected a step size > 0, got {lr!r}")
    k = model.k
    x = _one_x(model, x)
    m = _latent(q_mean, k, "q_mean").detach().clone().requires_grad_(True)
    ls = _latent(q_log_std, k, "q_log_std").detach().clone().requires_grad_(family == "gaussian")
    W = model.W.detach().clone().requires_grad_(params == "phi+theta")
    b, sigma = model.b, model.sigma
    if objective == "monte_carlo":
        e = standard_normal_draws(64, k) if eps is None else as_float64(eps, "eps")
        if e.ndim == 1 and k == 1:
            e = e.unsqueeze(-1)
    leaves = {"q_mean": m, "q_log_std": ls, "W": W}
    bounds = dict(bounds or {})
    unknown = sorted(set(bounds) - set(leaves))
    if unknown:
        raise ValueError(f"bounds: unknown parameter {unknown[0]!r}; expected some of {sorted(leaves)}")
    trained = [t for t in leaves.values() if t.requires_grad]
    opt = torch.optim.Adam(trained, lr=float(lr))
    for step in range(steps + 1):
        current = LinearGaussianModel(W, b, sigma)
        terms = current.elbo_terms(x, m, _q_cov(ls))
        value = terms["elbo"][0] if objective == "exact" else reparameterised_elbo(current, x, m, ls, e)[0]
        yield {
            "step": step,
            "q_mean": to_numpy(m).copy(),
            "q_log_std": to_numpy(ls).copy(),
            "W": to_numpy(W).copy(),
            "objective": float(value.detach()),
            **{name: float(terms[name][0].detach()) for name in TERMS},
        }
        if step == steps:
            return
        opt.zero_grad()
        (-value).backward()
        opt.step()
        with torch.no_grad():
            for name, (lo, hi) in bounds.items():
                leaves[name].clamp_(float(lo), float(hi))


def ascent_history(states) -> dict[str, np.ndarray]:
    """Stack the states of ``elbo_ascent`` (any iterable of its dicts) into arrays over the steps, one per key."""
    states = list(states)
    return {key: np.stack([np.asarray(s[key]) for s in states]) for key in states[0]}


def log_marginal_quadrature(model, x, n_points: int, half_width: float = 6.0) -> torch.Tensor:
    """log p(x) = log int p(x|z) p(z) dz ~ log sum_g dz^k p(x|z_g) p(z_g) on n_points^k grid nodes in [-h, h]^k.

    The integrand is smooth and negligible at the border, so the plain Riemann sum (the trapezoid rule
    here) converges fast; its cost is n_points^k decoder evaluations per x. x: (n, d) -> (n,), float64.
    """
    model = _check_model(model)
    n_points = check_count(n_points, "n_points", minimum=2)
    if not half_width > 0:
        raise ValueError(f"half_width: expected a number > 0, got {half_width!r}")
    x = as_float64(x, "x", shape=(None, model.d))
    nodes = torch.linspace(-half_width, half_width, n_points, dtype=torch.float64)
    dz = float(nodes[1] - nodes[0])
    grid = torch.cartesian_prod(*[nodes] * model.k).reshape(-1, model.k)  # (n_points^k, k)
    log_joint = model.decoder_log_prob(x, grid.expand(x.shape[0], -1, -1)) + model.log_prior(grid)
    return torch.logsumexp(log_joint, dim=-1) + model.k * math.log(dz)


def quadrature_table(model, x, n_points_list, half_width: float = 6.0) -> dict[str, np.ndarray]:
    """log p(x) by quadrature for each number of nodes next to ``model.log_marginal``; x: one observation.

    Returns arrays ``n_points``, ``quadrature``, ``exact`` and ``abs_error``.
    """
    model = _check_model(model)
    x = _one_x(model, x)
    exact = float(model.log_marginal(x)[0])
    ns = [int(n) for n in n_points_list]
    quad = [float(log_marginal_quadrature(model, x, n, half_width)[0]) for n in ns]
    return {"n_points": np.array(ns), "quadrature": np.array(quad), "exact": np.full(len(ns), exact),
            "abs_error": np.abs(np.array(quad) - exact)}


def quadrature_cost(ks, n_points: int = 16, d: int = 8, half_width: float = 6.0, seed: int = 0) -> dict:
    """The price of the integral: time one quadrature log p(x) with n_points nodes per latent dimension, k in ks.

    Each k gets a linear-Gaussian model (W = 0.5 * standard normal, shape (d, k), sigma = 1) and one x drawn
    from it. Returns arrays ``k``, ``nodes`` (n_points^k), ``seconds`` (best of 3 runs) and ``abs_error``
    against the closed form. Keep n_points^max(k) below ~10^6 (memory grows like nodes * d).
    """
    g = torch.Generator().manual_seed(seed)
    rows = {"k": [], "nodes": [], "seconds": [], "abs_error": []}
    for k in ks:
        k = check_count(k, "ks")
        model = LinearGaussianModel(0.5 * torch.randn(d, k, generator=g, dtype=torch.float64), torch.zeros(d), 1.0)
        x = model.sample(1, generator=g)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            value = log_marginal_quadrature(model, x, n_points, half_width)
            best = min(best, time.perf_counter() - t0)
        rows["k"].append(k)
        rows["nodes"].append(n_points**k)
        rows["seconds"].append(best)
        rows["abs_error"].append(abs(float(value[0] - model.log_marginal(x)[0])))
    return {key: np.array(v) for key, v in rows.items()}


def mean_field_optimum(model, x) -> dict:
    """The best diagonal q(z|x) in closed form: mean = posterior mean, variance_j = 1 / Lambda_jj.

    Lambda = I + W'W / sigma^2 is the posterior precision; minimising KL(q || p(z|x)) over diagonal Gaussians
    matches the precision's diagonal (not the covariance's), so q is narrower than the posterior's marginals.
    Returns ``q_mean``, ``q_log_std`` (k,) tensors and ``kl_posterior``, the gap that cannot close,
    = 1/2 (sum_j log Lambda_jj - log det Lambda) (a float, 0 when Lambda is diagonal).
    """
    model = _check_model(model)
    x = _one_x(model, x)
    post_mean, _ = model.posterior(x)
    precision = torch.eye(model.k, dtype=torch.float64) + model.W.T @ model.W / model.sigma**2
    q_log_std = -0.5 * torch.log(torch.diagonal(precision))
    terms = model.elbo_terms(x, post_mean[0], _q_cov(q_log_std))
    return {"q_mean": post_mean[0], "q_log_std": q_log_std, "kl_posterior": float(terms["kl_posterior"][0])}


# ============================================================================================ bars
def _fmt(v: float) -> str:
    """Two decimals below 10, then three significant digits; a typographic minus, and no "-0.00"."""
    if abs(v) < 0.005:
        return "0.00"
    text = f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"
    return text.replace("-", "\N{MINUS SIGN}")


def _duration(seconds: float) -> str:
    for unit, size in (("year", 3.15e7), ("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size:
            n = round(seconds / size)
            return f"{n:,d} {unit}{'' if n == 1 else 's'}"
    return f"{seconds:.2g} s"


class _Waterfall:
    """The decomposition as floating bars on one axis, built once and updated in place.

    Three columns: log p(x) | ELBO, then the KL gap floating from the ELBO up to log p(x) | reconstruction,
    then -KL(q || p(z)) floating from it down to the ELBO. Every bar starts at 0 or where the previous one
    ended, so the identities read off the picture whatever the signs; dashed lines join equal levels.
    """

    X = {"log_px": 0.0, "elbo": 0.8, "gap": 1.2, "reconstruction": 1.8, "prior_matching": 2.2}
    WIDTH = 0.36

    def __init__(self, ax, legend: bool = True, fontsize: str = "small"):
        from matplotlib.lines import Line2D
        from matplotlib.patches import Rectangle

        self.ax = ax
        w = self.WIDTH
        style = {
            # short labels: every glyph is re-rendered on each slider move
            "log_px": dict(color=COLORS["truth"], label=r"$\log p_\theta(x)$"),
            "elbo": dict(color=ELBO_COLOR, label="ELBO"),
            "gap": dict(facecolor=COLORS["gap"], edgecolor="white", hatch="//", label=r"gap KL$(q\|p(z|x))$"),
            "reconstruction": dict(color=COLORS["reconstruction"], label="reconstruction"),
            "prior_matching": dict(color=COLORS["prior_matching"], label=r"$-$KL$(q\|p(z))$"),
        }
        self.bars, self.labels = {}, {}
        for name, x in self.X.items():
            self.bars[name] = ax.add_patch(Rectangle((x - w / 2, 0.0), w, 0.0, **style[name]))
            self.labels[name] = ax.annotate("", (x, 0.0), xytext=(0, 3), textcoords="offset points", ha="center",
                                            va="bottom", fontsize=fontsize, zorder=4,
                                            bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8))
        self.labels["gap"].set_color(COLORS["gap"])
        ax.axhline(0.0, color="0.4", lw=0.8)
        dashed = dict(color="0.35", lw=1.0, ls=(0, (3, 2)), zorder=0)
        self.links = {
            "log_px": ax.add_line(Line2D([0.0, 0.0], [0.0, 0.0], **dashed)),
            "elbo": ax.add_line(Line2D([0.0, 0.0], [0.0, 0.0], **dashed)),
            "reconstruction": ax.add_line(Line2D([0.0, 0.0], [0.0, 0.0], **dashed)),
        }
        ticks = [r"$\log p_\theta(x)$", "ELBO + gap", r"recon. $-$ KL"]
        ax.set_xticks([0.0, 1.0, 2.0], ticks)
        ax.set_xlim(-0.45, 2.55)
        ax.set_ylabel("nats")
        self.handles = [self.bars[n] for n in self.X]
        if legend:
            ax.legend(handles=self.handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                      fontsize=fontsize, handlelength=1.2, columnspacing=1.0)

    def set(self, terms: Mapping[str, float]) -> list[float]:
        """Move the bars to these exact terms; returns the y values that must stay visible."""
        w = self.WIDTH
        log_px, elbo = terms["log_px"], terms["elbo"]
        rec, kl_prior, gap = terms["reconstruction"], terms["kl_prior"], terms["kl_posterior"]
        spans = {  # (start, end) of every bar
            "log_px": (0.0, log_px),
            "elbo": (0.0, elbo),
            "gap": (elbo, elbo + gap),
            "reconstruction": (0.0, rec),
            "prior_matching": (rec, rec - kl_prior),
        }
        for name, (y0, y1) in spans.items():
            bar = self.bars[name]
            bar.set_y(y0)
            bar.set_height(y1 - y0)
            up = y1 >= y0
            text = self.labels[name]
            text.xy = (self.X[name], y1)
            text.xyann = (0, 3 if up else -3)
            text.set_verticalalignment("bottom" if up else "top")
            text.set_text(_fmt(gap if name == "gap" else -kl_prior if name == "prior_matching" else y1))
        X = self.X
        self.links["log_px"].set_data([X["log_px"] + w / 2, X["gap"] + w / 2], [log_px, log_px])
        self.links["elbo"].set_data([X["elbo"] - w / 2, X["prior_matching"] + w / 2], [elbo, elbo])
        self.links["reconstruction"].set_data([X["reconstruction"] + w / 2, X["prior_matching"] - w / 2], [rec, rec])
        return [0.0, log_px, elbo, elbo + gap, rec, rec - kl_prior]


def _stable_limits(current: tuple[float, float], lo: float, hi: float, pad: float = 0.18,
                   fill: float = 0.3) -> tuple[float, float]:
    """Axis limits that stay put while [lo, hi] fits inside them and fills at least ``fill`` of them.

    So the scale does not jump on every slider move; it re-fits (with ``pad`` of the span as margin for the
    value labels) when the data leave the window or shrink to a small part of it.
    """
    span = max(hi - lo, 1e-6)
    c_lo, c_hi = current
    margin = 0.5 * pad * span
    if c_lo <= lo - margin and hi + margin <= c_hi and span >= fill * (c_hi - c_lo):
        return current
    return lo - pad * span, hi + pad * span


# ============================================================================================ view
class ElboView(WidgetView):
    """The ELBO decomposition for one observation x of the model z ~ N(0, 1), x | z ~ N(W z + b, sigma^2) (k = d = 1).

    Left: floating bars, log p(x) | ELBO + KL gap | reconstruction - KL(q || p(z)), with their values, and the
    reparameterised Monte Carlo estimate of the ELBO (orange, +- 2 standard errors) beside the exact ELBO.
    Right: q(z|x), the exact posterior p(z|x) and the prior p(z) on one axis, with the draws z_j as a rug.
    Sliders: ``q_mean``, ``q_log_std`` (phi), ``W``, ``sigma`` (theta), ``n_draws``. The draws eps_j are fixed
    at construction (common random numbers), so the estimate moves smoothly. The buttons run ``run_ascent``
    from the sliders as they are; code passes ``start=`` (stated values, ``"initial"`` or ``end_values(history)``)
    so that its numbers do not depend on where the sliders were left.
    """

    figsize = (11.0, 5.0)
    layout_w_pad = 0.12
    RANGES = {"q_mean": (-4.0, 4.0), "q_log_std": (-3.0, 1.0), "W": (-3.0, 3.0), "sigma": (0.2, 2.0)}

    def __init__(self, x: float = 1.5, *, W: float = 1.0, b: float = 0.0, sigma: float = 0.7,
                 q_mean: float = -0.5, q_log_std: float = 0.3, n_draws: int = 16, max_draws: int = 512,
                 seed: int = 0, ascent_steps: int = 120):
        for value, name in ((x, "x"), (W, "W"), (b, "b"), (sigma, "sigma"), (q_mean, "q_mean"),
                            (q_log_std, "q_log_std")):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise TypeError(f"{name}: expected a finite number, got {describe(value)}")
        self.max_draws = check_count(max_draws, "max_draws", minimum=2)
        if not 2 <= check_count(n_draws, "n_draws", minimum=2) <= self.max_draws:
            raise ValueError(f"n_draws: expected 2 <= n_draws <= max_draws = {self.max_draws}, got {n_draws}")
        for name, value in (("W", W), ("sigma", sigma), ("q_mean", q_mean), ("q_log_std", q_log_std)):
            lo, hi = self.RANGES[name]
            if not lo <= value <= hi:
                raise ValueError(f"{name}: expected a value in the slider range [{lo}, {hi}], got {value}")
        self.x, self.b = float(x), float(b)
        self.ascent_steps = check_count(ascent_steps, "ascent_steps")
        self.eps = standard_normal_draws(self.max_draws, 1, seed)  # common random numbers, (max_draws, 1)
        self.z_grid = torch.linspace(-4.5, 4.5, 361, dtype=torch.float64)
        self._init = {"q_mean": q_mean, "q_log_std": q_log_std, "W": W, "sigma": sigma, "n_draws": n_draws}
        self.data: dict = {}
        self.buttons = self._buttons()
        super().__init__()  # lays the figure out once (with room for wider tick labels), then freezes it

    # -- controls ---------------------------------------------------------------------------------
    def _controls(self):
        import ipywidgets as widgets

        style, layout = {"description_width": "130px"}, widgets.Layout(width="320px")
        v = self._init

        def slider(name, text, step):
            lo, hi = self.RANGES[name]
            return widgets.FloatSlider(value=v[name], min=lo, max=hi, step=step, description=text, style=style,
                                       layout=layout, continuous_update=True, readout_format=".2f")

        return {
            "q_mean": slider("q_mean", "q mean μ (φ)", 0.01),
            "q_log_std": slider("q_log_std", "q log σ_q (φ)", 0.01),
            "W": slider("W", "decoder W (θ)", 0.01),
            "sigma": slider("sigma", "decoder σ (θ)", 0.01),
            "n_draws": widgets.IntSlider(value=v["n_draws"], min=2, max=self.max_draws, step=1,
                                         description="MC draws n", style=style, layout=layout),
        }

    def _buttons(self):
        import ipywidgets as widgets

        layout = widgets.Layout(width="320px")
        buttons = {
            "phi": widgets.Button(description="maximise ELBO over φ", layout=layout, icon="play"),
            "phi+theta": widgets.Button(description="maximise ELBO over φ and θ (W)", layout=layout, icon="play"),
            "fixed_std": widgets.Button(description="maximise over μ only (σ_q fixed)", layout=layout, icon="play"),
        }
        buttons["phi"].on_click(lambda _: self._animate("phi", "gaussian"))
        buttons["phi+theta"].on_click(lambda _: self._animate("phi+theta", "gaussian"))
        buttons["fixed_std"].on_click(lambda _: self._animate("phi", "fixed_std"))
        return buttons

    def _animate(self, params, family):
        for b in self.buttons.values():
            b.disabled = True
        try:
            self.run_ascent(self.ascent_steps, params=params, family=family, animate=True)
        finally:
            for b in self.buttons.values():
                b.disabled = False

    def model(self, values: Mapping | None = None) -> LinearGaussianModel:
        """The linear-Gaussian model at the current (or the given) slider values."""
        v = self.values() if values is None else values
        return LinearGaussianModel([[float(v["W"])]], [self.b], float(v["sigma"]))

    # -- figure -----------------------------------------------------------------------------------
    def _build(self, fig):
        from matplotlib.ticker import MaxNLocator

        ax, axd = fig.subplots(1, 2, width_ratios=[1.15, 1])
        self.ax_bars, self.ax_density = ax, axd
        self.waterfall = _Waterfall(ax, legend=False)
        mc = dict(color=COLORS["model"], zorder=5)
        (self._mc_whisker,) = ax.plot([0.45, 0.45], [0.0, 0.0], lw=2.0, marker="_", markersize=12, **mc)
        (self._mc_point,) = ax.plot([0.45], [0.0], ls="none", marker="D", markersize=7, label="MC ELBO ± 2 SE",
                                    **mc)
        ax.legend(handles=self.waterfall.handles + [self._mc_point], loc="upper center",
                  bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize="small", handlelength=1.2, columnspacing=1.0)
        ax.yaxis.set_major_locator(MaxNLocator(6))
        self._bar_title = ax.set_title(" ", y=1.0)  # a fixed y: no title re-positioning on every draw
        self._ylim = (-1.0, 1.0)

        zs = to_numpy(self.z_grid)
        # q on top of the thicker posterior, so q = p(z|x) shows as a purple line inside a black one
        (self._post_line,) = axd.plot(zs, zs * 0, color=COLORS["posterior"], lw=3.2, label=r"$p_\theta(z|x)$")
        (self._q_line,) = axd.plot(zs, zs * 0, color=COLORS["encoder"], lw=1.8, label=r"$q_\phi(z|x)$")
        (self._prior_line,) = axd.plot(zs, zs * 0, color=COLORS["prior"], ls="--", label=r"$p(z)$")
        (self._rug,) = axd.plot([], [], ls="none", marker="|", markersize=14, color=COLORS["encoder"], alpha=0.5,
                                label=r"draws $z_j$")
        label(axd, "$z$", "density")
        axd.set_xlim(zs[0], zs[-1])
        axd.set_xticks([-4, -2, 0, 2, 4])
        axd.yaxis.set_major_locator(MaxNLocator(5))
        self._dens_ylim = (0.0, 1.0)
        axd.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize="small", handlelength=1.4,
                   columnspacing=1.0)
        self._dens_title = axd.set_title(" ", y=1.0)
        # legends and axes (ticks, labels) drawn from cached pictures: most of a full draw was their text
        cache_axes_rasters(fig)

    def _update(self, q_mean, q_log_std, W, sigma, n_draws):
        values = {"q_mean": q_mean, "q_log_std": q_log_std, "W": W, "sigma": sigma}
        d = elbo_view_data(self.model(values), self.x, q_mean, q_log_std, n_draws, eps=self.eps, z_grid=self.z_grid)
        self.data = d
        ys = self.waterfall.set(d)
        lo, hi = d["mc_estimate"] - 2 * d["mc_stderr"], d["mc_estimate"] + 2 * d["mc_stderr"]
        self._mc_whisker.set_ydata([lo, hi])
        self._mc_point.set_ydata([d["mc_estimate"]])
        self._ylim = _stable_limits(self._ylim, min(ys + [lo]), max(ys + [hi]), fill=0.45)
        self.ax_bars.set_ylim(*self._ylim)
        self._bar_title.set_text(f"exact ELBO {_fmt(d['elbo'])}\nMonte Carlo {_fmt(d['mc_estimate'])} ± "
                                 f"{_fmt(2 * d['mc_stderr'])} (2 SE, n = {n_draws})")

        self._q_line.set_ydata(d["q_density"])
        self._post_line.set_ydata(d["posterior_density"])
        self._prior_line.set_ydata(d["prior_density"])
        peak = max(d["q_density"].max(), d["posterior_density"].max(), d["prior_density"].max())
        # [0, top] stays put while the peak is in [top / 2, top / 1.04] (as _stable_limits does, but with the
        # bottom at 0: asking _stable_limits for a margin below 0 re-fitted the scale on every move)
        top = self._dens_ylim[1]
        if not 0.5 * top <= peak <= top / 1.04:
            top = 1.08 * float(peak)
        self._dens_ylim = (0.0, top)
        self.ax_density.set_ylim(*self._dens_ylim)
        self._rug.set_data(d["mc_z"], np.full(n_draws, 0.03 * self._dens_ylim[1]))
        self._dens_title.set_text(f"p(z|x) = N({_fmt(d['posterior_mean'])}, {d['posterior_std']:.2f}²) at x = "
                                  f"{_fmt(self.x)}\nq(z|x) = N({_fmt(q_mean)}, {d['q_std']:.2f}²)")

    # -- gradient ascent --------------------------------------------------------------------------
    def run_ascent(self, steps: int = 120, params: str = "phi", *, start: Mapping | str | None = None,
                   family: str = "gaussian", objective: str = "exact", lr: float = 0.05, animate: bool = False,
                   sleep: float = 0.03, frame_every: int = 2) -> dict[str, np.ndarray]:
        """Gradient ascent on the ELBO (``elbo_ascent``) from ``start``, then leave the sliders at the end.

        ``start``: where the ascent starts, so that a notebook cell gives the same numbers however the sliders
        were left: a mapping with ``q_mean``, ``q_log_std``, ``W``, ``sigma`` (and optionally ``n_draws``,
        default the constructor's), e.g. stated values or ``end_values(history)`` of an earlier run; the string
        ``"initial"`` for the constructor's values (``initial_values()``); ``None`` for the current sliders
        (what the buttons do: interactive use). The sliders are set to the start before the first step.
        ``params``: "phi" or "phi+theta" (theta = W); ``family``: "gaussian" or "fixed_std" (sigma_q held);
        ``objective``: "exact" or "monte_carlo" (the first n_draws of the widget's fixed draws). Parameters are
        clamped to the slider ranges. ``animate``: move the sliders and redraw every ``frame_every`` steps,
        pausing ``sleep`` seconds (the button does this; tests and scripts leave it off). Returns the
        history: a dict of arrays over steps 0..steps (``step``, ``q_mean``, ``q_log_std``, ``W``,
        ``objective``, ``log_px``, ``elbo``, ``reconstruction``, ``kl_prior``, ``kl_posterior``, and the
        constants ``sigma`` and ``n_draws`` of the run).
        """
        frame_every = check_count(frame_every, "frame_every")
        if start is None:
            v = self.values()
        else:
            v = self._start_values(start)
            self.update(**v)
        states = []
        for state in elbo_ascent(self.model(v), self.x, v["q_mean"], v["q_log_std"], steps=steps, params=params,
                                 family=family, objective=objective, eps=self.eps[: v["n_draws"]], lr=lr,
                                 bounds={k: self.RANGES[k] for k in ("q_mean", "q_log_std", "W")}):
            states.append(state)
            if animate and (state["step"] % frame_every == 0 or state["step"] == steps):
                self._show_state(state)  # with a front end, update() has drawn and pushed the frame
                if not self._front_end_connected():
                    self.fig.canvas.draw()  # as before: draw_idle would wait for the busy kernel
                time.sleep(sleep)
        if not animate:
            self._show_state(states[-1])
        history = ascent_history(states)
        history["sigma"] = np.full(len(states), float(v["sigma"]))
        history["n_draws"] = np.full(len(states), int(v["n_draws"]))
        return history

    def initial_values(self) -> dict:
        """The slider values the view was built with (``q_mean``, ``q_log_std``, ``W``, ``sigma``, ``n_draws``)."""
        return dict(self._init)

    @staticmethod
    def end_values(history: Mapping[str, np.ndarray]) -> dict:
        """The slider values at the end of a ``run_ascent`` history: a ``start`` that continues that run."""
        return {"q_mean": float(np.asarray(history["q_mean"])[-1].reshape(-1)[0]),
                "q_log_std": float(np.asarray(history["q_log_std"])[-1].reshape(-1)[0]),
                "W": float(np.asarray(history["W"])[-1].reshape(-1)[0]),
                "sigma": float(np.asarray(history["sigma"])[-1]),
                "n_draws": int(np.asarray(history["n_draws"])[-1])}

    def _start_values(self, start) -> dict:
        if isinstance(start, str):
            if start != "initial":
                raise ValueError(f"start: expected a mapping of slider values, 'initial' or None, got {start!r}")
            return self.initial_values()
        if not isinstance(start, Mapping):
            raise TypeError(f"start: expected a mapping of slider values, 'initial' or None, got {describe(start)}")
        missing = [k for k in ("q_mean", "q_log_std", "W", "sigma") if k not in start]
        unknown = sorted(set(start) - set(self._init))
        if missing or unknown:
            what = f"it lacks {missing}" if missing else f"unknown key {unknown[0]!r}"
            raise ValueError(f"start: expected the keys q_mean, q_log_std, W, sigma (and optionally n_draws); {what}")
        v = {"n_draws": self._init["n_draws"], **start}
        for name in ("q_mean", "q_log_std", "W", "sigma"):
            value = v[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise TypeError(f"start: {name} must be a finite number, got {describe(value)}")
            lo, hi = self.RANGES[name]
            if not lo <= value <= hi:
                raise ValueError(f"start: {name} = {value} is outside its slider range [{lo}, {hi}]")
            v[name] = float(value)
        n = v["n_draws"]
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 2 <= n <= self.max_draws:
            raise ValueError(f"start: n_draws must be an integer in [2, {self.max_draws}], got {n!r}")
        v["n_draws"] = int(n)
        return v

    def _show_state(self, state):
        self.update(q_mean=float(state["q_mean"][0]), q_log_std=float(state["q_log_std"][0]),
                    W=float(state["W"][0, 0]))


# ============================================================================================ figures
def figure_decoder_samples(model, n: int = 500, seed: int = 0):
    """The decoder as a generative model (k = 1, d = 2): z ~ p(z), then x ~ p(x|z); the samples lie around the
    line {W z + b}. Points are coloured by their z."""
    import matplotlib.pyplot as plt

    model = _check_model(model)
    if model.k != 1 or model.d != 2:
        raise ValueError(f"model: expected k = 1 and d = 2, got k = {model.k}, d = {model.d}")
    x, z = model.sample(check_count(n, "n"), generator=torch.Generator().manual_seed(seed), return_z=True)
    x, z = to_numpy(x), to_numpy(z)[:, 0]
    fig, ax = plt.subplots(figsize=(7.0, 5.0))
    lim = 3.2
    sc = ax.scatter(x[:, 0], x[:, 1], c=z, cmap="coolwarm", vmin=-lim, vmax=lim, s=14, alpha=0.85,
                    label=r"$x\sim p_\theta(x|z)$ with $z\sim p(z)$")
    line = to_numpy(torch.linspace(-lim, lim, 2, dtype=torch.float64)[:, None] @ model.W.T + model.b)
    ax.plot(line[:, 0], line[:, 1], color=COLORS["truth"], label=r"decoder mean $Wz+b$, $z\in[-3.2, 3.2]$")
    b = to_numpy(model.b)
    ax.plot(*b, "o", color=COLORS["truth"], ms=7, label=r"$b$ (the mean at $z=0$)")
    fig.colorbar(sc, ax=ax, label="latent $z$")
    label(ax, "$x_1$", "$x_2$", rf"{len(x)} draws from the decoder ($k=1$, $d=2$, $\sigma={model.sigma:g}$)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper left", fontsize="small")
    return fig


def figure_quadrature(model, x, n_points_list, show_nodes: int = 9, half_width: float = 6.0):
    """Left: the integrand p(x|z) p(z) over z (k = 1) with the nodes of a ``show_nodes``-point grid; right: the
    error of log p(x) by quadrature against the closed form, as the number of nodes grows."""
    import matplotlib.pyplot as plt

    model = _check_model(model)
    if model.k != 1:
        raise ValueError(f"model: expected k = 1, got k = {model.k}")
    x1 = _one_x(model, x)
    zs = torch.linspace(-half_width, half_width, 801, dtype=torch.float64)
    f = torch.exp(model.decoder_log_prob(x1.expand(len(zs), -1), zs[:, None]) + model.log_prior(zs[:, None]))
    nodes = torch.linspace(-half_width, half_width, show_nodes, dtype=torch.float64)
    fn = torch.exp(model.decoder_log_prob(x1.expand(len(nodes), -1), nodes[:, None]) + model.log_prior(nodes[:, None]))
    table = quadrature_table(model, x1, n_points_list, half_width)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12.0, 4.2))
    ax1.plot(to_numpy(zs), to_numpy(f), color=COLORS["truth"], label=r"$p_\theta(x|z)\,p(z)$")
    dz = float(nodes[1] - nodes[0])
    ax1.bar(to_numpy(nodes), to_numpy(fn), width=dz, color=COLORS["model"], alpha=0.3, edgecolor=COLORS["model"],
            label=f"Riemann sum, {show_nodes} nodes")
    ax1.plot(to_numpy(nodes), to_numpy(fn), "o", color=COLORS["model"], ms=5)
    title = rf"the integral $p_\theta(x)=\int p_\theta(x|z)p(z)\,dz$ at $x={_fmt(float(x1[0, 0]))}$"
    label(ax1, "$z$", "integrand", title)
    ax1.legend(fontsize="small")
    err = np.maximum(table["abs_error"], 1e-17)
    ax2.semilogy(table["n_points"], err, "o-", color=COLORS["model"], label="quadrature")
    ax2.axhline(2.2e-16 * max(1.0, abs(table["exact"][0])), color=COLORS["truth"], ls=":", label="float64 round-off")
    label(ax2, "nodes $m$", r"$|\log p_\theta(x)$ quadrature $-$ closed form$|$", "error against the closed form")
    ax2.legend(fontsize="small")
    return fig


def figure_quadrature_cost(cost: Mapping[str, np.ndarray], n_points: int, extrapolate_to: int = 10):
    """Grid nodes n_points^k and the measured seconds per log p(x) against k, extrapolated to larger k."""
    import matplotlib.pyplot as plt

    ks, secs = np.asarray(cost["k"]), np.asarray(cost["seconds"])
    kk = np.arange(1, extrapolate_to + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12.0, 4.2))
    ax1.semilogy(kk, float(n_points) ** kk, "o--", color=COLORS["prior"], label=f"$m^k$, $m={n_points}$ nodes per axis")
    ax1.semilogy(ks, cost["nodes"], "o", color=COLORS["truth"], label="computed here")
    label(ax1, "latent dimension $k$", "grid nodes", "nodes grow like $m^k$")
    ax1.legend(fontsize="small")
    # per-node cost from the largest run, then extrapolate
    per_node = secs[-1] / cost["nodes"][-1]
    ax2.semilogy(kk, per_node * float(n_points) ** kk, "--", color=COLORS["prior"],
                 label="extrapolated (cost per node)")
    ax2.semilogy(ks, secs, "o", color=COLORS["model"], label="measured")
    for s, text in ((1.0, "1 second"), (3600.0, "1 hour"), (3.15e7, "1 year")):
        ax2.axhline(s, color="0.75", lw=0.8, zorder=0)
        ax2.text(kk[0], s * 1.4, text, fontsize="small", color="0.4")
    last = per_node * float(n_points) ** kk[-1]
    ax2.annotate(f"k = {kk[-1]}: ≈ {_duration(last)}", (kk[-1], last), xytext=(-8, 0), textcoords="offset points",
                 ha="right", va="center", fontsize="small")
    label(ax2, "latent dimension $k$", "seconds for one $\\log p_\\theta(x)$", "…and so does the time")
    ax2.legend(fontsize="small", loc="lower right")
    return fig


def figure_decomposition(model, x, qs: Mapping[str, tuple[float, float]]):
    """One panel of floating bars per choice of q (name -> (q_mean, q_log_std)), same y axis, k = 1."""
    import matplotlib.pyplot as plt

    model = _check_model(model)
    if model.k != 1:
        raise ValueError(f"model: expected k = 1, got k = {model.k}")
    x1 = _one_x(model, x)
    fig, axes = plt.subplots(1, len(qs), figsize=(4.4 * len(qs), 4.8), sharey=True, squeeze=False)
    ys = []
    for ax, (name, (m, ls)) in zip(axes[0], qs.items(), strict=True):
        terms = model.elbo_terms(x1, [float(m)], [[math.exp(2 * float(ls))]])
        bars = _Waterfall(ax, legend=False)
        ys += bars.set({k: float(v[0]) for k, v in terms.items()})
        ax.set_title(f"{name}\n" + rf"$q=N({_fmt(float(m))}, {math.exp(float(ls)):.2f}^2)$")
        ax.set_xticks([0.0, 1.0, 2.0], [r"$\log p$", "ELBO\n+ gap", "recon.\n" + r"$-$ KL"])
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    lo, hi = min(ys), max(ys)
    axes[0][0].set_ylim(lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo))
    fig.legend(handles=bars.handles, loc="outside lower center", ncol=3, fontsize="small")
    return fig


def figure_ascent(histories: Mapping[str, Mapping[str, np.ndarray]]):
    """Gradient ascent runs one after another (name -> ``run_ascent``/``elbo_ascent`` history): log p(x) and the ELBO,
    log p(x) alone (its own scale: it moves only with theta), and the KL gap (log scale), over the steps."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14.0, 4.3))
    offset, phases = 0, []
    for i, (name, h) in enumerate(histories.items()):
        steps = np.asarray(h["step"]) + offset
        first = i == 0
        # log p(x) thick underneath: where the ELBO reaches it, a black rim stays visible
        ax1.plot(steps, h["log_px"], color=COLORS["truth"], lw=4, label=r"$\log p_\theta(x)$" if first else None)
        ax1.plot(steps, h["elbo"], color=ELBO_COLOR, label=r"ELBO $L(\phi,\theta;x)$" if first else None)
        ax2.plot(steps, h["log_px"], color=COLORS["truth"], label=r"$\log p_\theta(x)$" if first else None)
        ax3.semilogy(steps, np.maximum(h["kl_posterior"], 1e-16), color=COLORS["gap"],
                     label=r"$D_{KL}(q_\phi(z|x)\,\|\,p_\theta(z|x))$" if first else None)
        for ax in (ax1, ax2, ax3):
            if i > 0:
                ax.axvline(offset, color="0.5", ls=":", lw=1)
        phases.append(f"steps {offset}–{int(steps[-1])}: {name}")
        offset = int(steps[-1])
    fig.suptitle("gradient ascent on the ELBO;  " + ",  ".join(phases) + "  (dotted line)", fontsize="medium")
    label(ax1, "gradient step", "nats", r"$\log p_\theta(x)$ = ELBO + gap")
    ax1.legend(fontsize="small", loc="lower right")
    label(ax2, "gradient step", "nats", r"$\log p_\theta(x)$: moves only with $\theta$")
    ax2.legend(fontsize="small", loc="lower right")
    label(ax3, "gradient step", "nats (log scale)", "KL gap to the posterior")
    ax3.legend(fontsize="small", loc="upper right")
    return fig


def figure_restricted_families(histories: Mapping[str, Mapping[str, np.ndarray]],
                               floors: Mapping[str, float] | None = None):
    """The KL gap during ascent for several families of q (name -> history), with each family's closed-form
    floor (name -> the smallest gap it can reach) as a dashed line."""
    import matplotlib.pyplot as plt

    colors = [COLORS["encoder"], COLORS["gap"], COLORS["data"], COLORS["model"]]
    fig, ax = plt.subplots(figsize=(8.0, 4.4))
    for (name, h), c in zip(histories.items(), colors, strict=False):
        floor = (floors or {}).get(name, 0.0)
        text = f"{name}: floor {floor:.3f}" if floor > 1e-12 else name
        ax.semilogy(h["step"], np.maximum(h["kl_posterior"], 1e-16), color=c, label=text)
        if floor > 1e-12:
            ax.axhline(floor, color=c, ls="--", lw=1.2)
    ax.plot([], [], color="0.3", ls="--", lw=1.2, label="floor: the closed-form best q of the family")
    label(ax, "gradient step", r"$D_{KL}(q\,\|\,p_\theta(z|x))$ (log scale)",
          "the gap closes only if q can be the posterior")
    ax.legend(fontsize="small", loc="lower left")
    return fig


def figure_mean_field(model, x, q_mean, q_log_std, title: str = "mean-field q against the correlated posterior"):
    """k = 2: contours of the exact posterior p(z|x) (black) and a diagonal q = N(q_mean, diag exp(2 q_log_std))."""
    import matplotlib.pyplot as plt

    from ..plotting import density_grid

    model = _check_model(model)
    if model.k != 2:
        raise ValueError(f"model: expected k = 2, got k = {model.k}")
    x1 = _one_x(model, x)
    pm, pc = model.posterior(x1)
    m = _latent(q_mean, 2, "q_mean").detach()
    s = torch.exp(_latent(q_log_std, 2, "q_log_std").detach())
    post = torch.distributions.MultivariateNormal(pm[0], pc)
    q = torch.distributions.Independent(torch.distributions.Normal(m, s), 1)
    r = 3.2 * float(torch.sqrt(torch.diagonal(pc)).max())
    lim_x = (float(pm[0, 0]) - r, float(pm[0, 0]) + r)
    lim_y = (float(pm[0, 1]) - r, float(pm[0, 1]) + r)
    fig, ax = plt.subplots(figsize=(6.0, 5.4))
    levels = np.exp(-0.5 * np.array([2.0, 1.0]) ** 2)  # the 2- and 1-sigma ellipses, relative to the peak
    for dist, color, ls in ((post, COLORS["posterior"], "-"), (q, COLORS["encoder"], "--")):
        X, Y, P = density_grid(dist.log_prob, lim_x, lim_y, n=200)
        ax.contour(X, Y, P / P.max(), levels=levels, colors=color, linestyles=ls, linewidths=2)
    ax.plot(*to_numpy(pm[0]), "+", color=COLORS["posterior"], ms=12, mew=2)
    ax.plot([], [], color=COLORS["posterior"], label=r"posterior $p_\theta(z|x)$ (1 and 2 sd)")
    ax.plot([], [], color=COLORS["encoder"], ls="--", label=r"best diagonal $q(z|x)$")
    label(ax, "$z_1$", "$z_2$", title)
    ax.set_aspect("equal")
    ax.legend(fontsize="small", loc="upper right")
    return fig
