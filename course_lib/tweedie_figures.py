"""Notebook 05's figures: Tweedie's formula against the slide's shorthand, and denoising as gradient flow.

Pure compute first (tested headlessly), then the figures that draw it:
- ``tweedie_curves(mixture, alpha_bar, x)``: for 1-D points x (n, 1), the exact E[x^0 | x^t], Tweedie's
  (x^t + (1 - ab) grad log p(x^t)) / sqrt(ab) and the slide's shorthand x^t + (1 - ab) grad log p(x^t) for the
  lecture's (variance-preserving) noise, and the exact mean and the shorthand for the variance-exploding form
  x^t = x^0 + sigma eps with sigma^2 = 1 - ab (where the shorthand is exact; notebooks/LECTURE_ERRATA.md item 1).
- ``gradient_flow(density, starts, scale, eta, steps)``: x <- x + eta scale grad log p(x), the path (steps + 1, n, d).
- ``plot_tweedie_vs_shorthand`` and ``plot_gradient_flow``: the two figures (each returns (figure, numbers)).
"""

from __future__ import annotations

import torch

from .densities import GaussianMixture
from .plotting import COLORS, density_grid, label, to_numpy

__all__ = ["gradient_flow", "plot_gradient_flow", "plot_tweedie_vs_shorthand", "tweedie_curves"]


def tweedie_curves(mixture: GaussianMixture, alpha_bar, x: torch.Tensor) -> dict:
    """The five curves of the Tweedie figure at points x (n, 1) of a 1-D mixture; float64 tensors (n, 1).

    Variance preserving (x^t = sqrt(ab) x^0 + sqrt(1 - ab) eps): "exact", "tweedie", "shorthand".
    Variance exploding (x^t = x^0 + sigma eps, sigma^2 = 1 - ab): "exact_ve", "shorthand_ve". The VE posterior mean
    is the VP one at ab_ve = 1 / (1 + sigma^2) after rescaling x^t by sqrt(ab_ve).
    """
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
    score = mixture.noised(ab).score(x)
    sigma2 = 1 - ab
    ab_ve = 1 / (1 + sigma2)
    density_ve = GaussianMixture(mixture.weights, mixture.means,
                                 mixture.covs + sigma2 * torch.eye(mixture.d, dtype=torch.float64))
    return {"exact": mixture.posterior_mean(x, ab), "tweedie": (x + (1 - ab) * score) / ab.sqrt(),
            "shorthand": x + (1 - ab) * score, "exact_ve": mixture.posterior_mean(ab_ve.sqrt() * x, ab_ve),
            "shorthand_ve": x + sigma2 * density_ve.score(x)}


def plot_tweedie_vs_shorthand(mixture: GaussianMixture, schedule, ts=(100, 300), x_range=(-3.5, 3.5), n: int = 301):
    """Top row: exact E[x^0 | x^t], Tweedie and the slide's shorthand (variance preserving) at each t in ``ts``;
    bottom row: the variance-exploding form, where the shorthand is exact. Returns (figure, {t: largest errors})."""
    import matplotlib.pyplot as plt

    x = torch.linspace(*x_range, n, dtype=torch.float64)[:, None]
    xs = to_numpy(x)
    fig, axes = plt.subplots(2, len(ts), figsize=(5.5 * len(ts), 7.5), sharex=True, squeeze=False)
    errors = {}
    for col, t in enumerate(ts):
        ab = schedule.alpha_bars[t]
        c = tweedie_curves(mixture, ab, x)
        ax = axes[0, col]
        ax.plot(xs, to_numpy(c["exact"]), color=COLORS["truth"], lw=3, label=r"exact $\mathbb{E}[x^0 \mid x^t]$")
        ax.plot(xs, to_numpy(c["tweedie"]), color=COLORS["model"], ls="--",
                label=r"Tweedie: $(x^t + (1-\bar\alpha_t)\nabla\log p) / \sqrt{\bar\alpha_t}$")
        ax.plot(xs, to_numpy(c["shorthand"]), color=COLORS["gap"], ls=":",
                label=r"slide: $x^t + (1-\bar\alpha_t)\nabla\log p$")
        label(ax, None, r"estimate of $x^0$",
              rf"$x^t = \sqrt{{\bar\alpha_t}}x^0 + \sqrt{{1-\bar\alpha_t}}\varepsilon$, "
              rf"$t = {t}$, $\bar\alpha_t = {ab.item():.2f}$")
        ax = axes[1, col]
        ax.plot(xs, to_numpy(c["exact_ve"]), color=COLORS["truth"], lw=3, label=r"exact $\mathbb{E}[x^0 \mid x^t]$")
        ax.plot(xs, to_numpy(c["shorthand_ve"]), color=COLORS["model"], ls="--",
                label=r"slide: $x^t + \sigma^2\nabla\log p(x^t)$")
        label(ax, "$x^t$", r"estimate of $x^0$",
              rf"$x^t = x^0 + \sigma\varepsilon$, $\sigma^2 = 1-\bar\alpha_{{{t}}} = {1 - ab.item():.2f}$")
        errors[t] = {"tweedie": (c["tweedie"] - c["exact"]).abs().max().item(),
                     "shorthand": (c["shorthand"] - c["exact"]).abs().max().item(),
                     "shorthand_ve": (c["shorthand_ve"] - c["exact_ve"]).abs().max().item()}
    for ax in axes.flat:
        ax.legend(loc="lower right", fontsize=10)
    return fig, errors


def gradient_flow(density: GaussianMixture, starts: torch.Tensor, scale, eta: float = 0.4,
                  steps: int = 40) -> torch.Tensor:
    """Gradient ascent on log p, x <- x + eta * scale * grad log p(x), from ``starts`` (n, d): path (steps + 1, n, d).

    With ``density`` the noised p(x^t) and scale = 1 - alpha_bar_t, each step moves a fraction eta of the way to the
    (scaled) posterior mean sqrt(ab) E[x^0 | x^t] (Tweedie); the path ends in a mode of p(x^t).
    """
    x, path = starts, [starts]
    for _ in range(steps):
        x = x + eta * scale * density.score(x)
        path.append(x)
    return torch.stack(path)


def plot_gradient_flow(mixture: GaussianMixture, schedule, starts: torch.Tensor, ts=(450, 60), eta: float = 0.4,
                       steps: int = 40, lim: float = 2.8):
    """The noised density's contours, the arrows (1/4)(1 - ab_t) grad log p(x^t) and gradient-flow paths from
    ``starts`` (n, 2) at each t in ``ts`` (one panel each). Returns the figure."""
    import matplotlib.pyplot as plt

    coarse = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64)
    cx, cy = torch.meshgrid(coarse, coarse, indexing="xy")
    pts = torch.stack([cx.ravel(), cy.ravel()], 1)
    fig, axes = plt.subplots(1, len(ts), figsize=(5.5 * len(ts), 5.6), squeeze=False)
    for ax, t in zip(axes[0], ts, strict=True):
        ab = schedule.alpha_bars[t]
        p_t = mixture.noised(ab)
        X, Y, P = density_grid(p_t.log_prob, xlim=(-lim, lim), ylim=(-lim, lim), n=120)
        ax.contour(X, Y, P, levels=6, colors=COLORS["data"], linewidths=1.0)
        arrows = to_numpy(0.25 * (1 - ab) * p_t.score(pts))  # a quarter of the length, to keep them apart
        ax.quiver(to_numpy(pts[:, 0]), to_numpy(pts[:, 1]), arrows[:, 0], arrows[:, 1], angles="xy",
                  scale_units="xy", scale=1.0, color=COLORS["prior"], width=0.003)
        path = to_numpy(gradient_flow(p_t, starts, 1 - ab, eta, steps))
        ax.plot(path[:, :, 0], path[:, :, 1], color=COLORS["samples"], lw=1.2)
        ax.plot(path[0, :, 0], path[0, :, 1], "o", color=COLORS["samples"], ms=5)
        ax.plot(path[-1, :, 0], path[-1, :, 1], "X", color=COLORS["truth"], ms=9)
        ax.set_aspect("equal")
        label(ax, "1st coordinate", "2nd coordinate", rf"$t = {t}$, $\bar\alpha_t = {ab.item():.2f}$")
    handles = [plt.Line2D([], [], color=COLORS["data"], lw=1.0, label=r"noised density $p(x^t)$"),
               plt.Line2D([], [], color=COLORS["prior"], lw=1.0,
                          label=r"arrows: $\frac{1}{4}(1-\bar\alpha_t)\nabla\log p(x^t)$"),
               plt.Line2D([], [], color=COLORS["samples"], marker="o", ms=5, lw=1.2, label="trajectory (from the dot)"),
               plt.Line2D([], [], color=COLORS["truth"], marker="X", ms=9, ls="none", label=f"after {steps} steps")]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=10)
    return fig
