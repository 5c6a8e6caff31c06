"""Figure helpers shared by notebooks and widgets: lecture-size style, truth-vs-estimate colours, grids.

``use_style()`` once at the top of a notebook; ``use_style(lecture=True)`` for large fonts and high
contrast on a projector (or set ``COURSE_LECTURE=1``).
"""

from __future__ import annotations

import os

import matplotlib as mpl
import numpy as np
import torch

__all__ = ["COLORS", "density_grid", "image_grid", "label", "to_numpy", "use_style"]

# One meaning per colour across the course: the exact object is always black, learned ones coloured.
COLORS = {
    "truth": "#000000",
    "model": "#d95f02",
    "data": "#1b9e77",
    "encoder": "#7570b3",
    "prior": "#888888",
    "posterior": "#000000",
    "samples": "#1f78b4",
    "gap": "#e7298a",
    "reconstruction": "#66a61e",
    "prior_matching": "#e6ab02",
}


def use_style(lecture: bool | None = None) -> None:
    """Readable defaults: labelled, uncluttered axes at lecture size; ``lecture=True`` enlarges further."""
    if lecture is None:
        lecture = os.environ.get("COURSE_LECTURE", "").strip().lower() in {"1", "true", "yes", "on"}
    base = 15 if lecture else 12
    mpl.rcParams.update({
        "figure.dpi": 100,
        "figure.figsize": (7.0, 4.2),
        "figure.constrained_layout.use": True,
        "font.size": base,
        "axes.titlesize": base + 1,
        "axes.labelsize": base,
        "xtick.labelsize": base - 1,
        "ytick.labelsize": base - 1,
        "legend.fontsize": base - 1,
        "legend.frameon": False,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": False,
        "lines.linewidth": 2.6 if lecture else 2.0,
        "image.cmap": "viridis",
        "savefig.bbox": "tight",
    })


def to_numpy(x) -> np.ndarray:
    """A tensor (any device, any dtype, with or without grad) or array as a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def label(ax, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None):
    """Set the labels that every figure must have; returns ``ax``."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    return ax


def density_grid(log_prob, xlim=(-3, 3), ylim=(-3, 3), n: int = 150):
    """Evaluate ``log_prob`` (a function of (m, 2) float64 tensors) on a grid.

    Returns ``(X, Y, P)``: numpy arrays of shape (n, n) for ``ax.contourf``/``imshow`` with P = exp(log_prob).
    """
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    X, Y = np.meshgrid(xs, ys)
    pts = torch.as_tensor(np.stack([X.ravel(), Y.ravel()], axis=1), dtype=torch.float64)
    P = to_numpy(torch.exp(log_prob(pts))).reshape(n, n)
    return X, Y, P


def image_grid(images, nrow: int | None = None, pad: int = 1, value: float = 1.0) -> np.ndarray:
    """Tile images of shape (n, H, W) or (n, 1, H, W) into one (rows*(H+pad)-pad, ...) array for imshow."""
    imgs = to_numpy(images)
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    if imgs.ndim != 3:
        raise ValueError(f"images: expected shape (n, H, W) or (n, 1, H, W), got {imgs.shape}")
    n, h, w = imgs.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    ncol = int(np.ceil(n / nrow))
    out = np.full((ncol * (h + pad) - pad, nrow * (w + pad) - pad), value, dtype=np.float64)
    for i in range(n):
        r, c = divmod(i, nrow)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = imgs[i]
    return out


__all__ += ["plot_gradient_estimator_variance"]


def plot_gradient_estimator_variance(result: dict, ax=None):
    """Notebook 02's figure: variance of the two gradient estimators against the number of draws, log-log.

    ``result``: from ``course_lib.vae.gradient_estimator_variance``. Dots are the measured variances over the
    repeats, dashed black lines the exact per-draw variance / n. Returns ``ax``.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.8))
    n = np.asarray(result["n"], dtype=float)
    series = (("score_function", "score function  f(z) ∂ log q/∂μ", COLORS["model"], "o"),
              ("pathwise", "pathwise (reparameterisation)  f′(μ + σε)", COLORS["samples"], "s"))
    for key, name, colour, marker in series:
        ax.plot(n, result[key], marker, color=colour, markersize=7, label=f"{name}: measured")
        ax.plot(n, result[f"exact_{key}"], "--", color=COLORS["truth"], linewidth=1.2)
    ax.plot([], [], "--", color=COLORS["truth"], linewidth=1.2, label="exact: (variance of one draw) / n")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend(loc="lower left")
    f = "z²" if result.get("c", 0.0) == 0 else f"(z − {result['c']:g})²"
    where = f"N({result['mu']:g}, {result['sigma']:g}²)" if "mu" in result else "N(μ, σ²)"
    return label(ax, "number of draws n", "variance of the gradient estimate",
                 f"two unbiased estimates of ∂/∂μ E[{f}], z ~ {where}")
