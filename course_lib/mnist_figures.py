"""Figures of notebook 07 (MNIST diffusion) and the digit grids notebook 08 reuses.

Images are (n, 1, 28, 28) in [-1, 1] (the models' scale, ``data.to_model_scale``); they are drawn ink dark on white.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import to_unit
from .plotting import COLORS, image_grid, to_numpy

__all__ = ["imshow_digits", "plot_denoising_strip", "plot_images", "plot_loss_history", "plot_loss_weightings",
           "plot_sample_grids", "plot_time_embedding", "plot_tweedie_rows"]

def imshow_digits(ax, images: torch.Tensor, nrow: int | None = None, title: str | None = None) -> None:
    """Draw images (n, 1, 28, 28) in [-1, 1] on ``ax`` as one grid, ink dark on white, no ticks or frame."""

    # ink dark on white (gray_r), images separated by light grey lines
    ax.imshow(image_grid(to_numpy(to_unit(images.detach().float().cpu())), nrow=nrow, value=0.3), cmap="gray_r",
              vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)


def plot_images(images: torch.Tensor, *, nrow: int | None = None, title: str | None = None, ax=None):
    """A grid of images (n, 1, 28, 28) in [-1, 1], ink dark on white. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        cols, rows = _grid_shape(images.shape[0], nrow)
        width = max(4.0, 0.6 * cols)
        _, ax = plt.subplots(figsize=(width, width * rows / cols + (0.5 if title else 0.1)))
    imshow_digits(ax, images, nrow, title)
    return ax


def _grid_shape(n: int, nrow: int | None) -> tuple[int, int]:
    """(columns, rows) of ``plotting.image_grid`` for n images with ``nrow`` images per row."""
    cols = nrow or int(np.ceil(np.sqrt(n)))
    return cols, int(np.ceil(n / cols))


def plot_loss_history(meta: dict, ax=None):
    """The training loss stored in a checkpoint's metadata (block means per step) against the training step.

    The dashed line at 1 is the loss of predicting eps_hat = 0, what the untrained U-Net does (E|eps|^2 / D = 1).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    if not meta.get("loss"):
        ax.text(0.5, 0.5, "no loss history stored with this model", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.plot(meta["loss_steps"], meta["loss"], color=COLORS["model"], label="U-Net (mean over blocks of steps)")
    ax.axhline(1.0, color=COLORS["truth"], ls="--", lw=1.5, label=r"predict $\hat\varepsilon = 0$")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(r"loss per pixel, $|\hat\varepsilon - \varepsilon|^2 / 784$")
    ax.legend(loc="center right")
    return ax


def plot_sample_grids(grids: dict, *, nrow: int | None = None, suptitle: str | None = None, width: float = 3.2):
    """Several sample grids side by side: ``grids`` maps a panel title to images (n, 1, 28, 28). Returns the figure.

    ``width``: inches per panel (the height follows from the grid's shape).
    """
    import matplotlib.pyplot as plt

    k = len(grids)
    cols, rows = _grid_shape(next(iter(grids.values())).shape[0], nrow)
    height = width * rows / cols + 0.45 + (0.45 if suptitle else 0.0)
    fig, axes = plt.subplots(1, k, figsize=(width * k, height), squeeze=False)
    for ax, (title, images) in zip(axes[0], grids.items(), strict=True):
        imshow_digits(ax, images, nrow, title)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_denoising_strip(path, show_t=None, *, index: int = 0, title: str | None = None):
    """One sample emerging from noise: x^t (top row) and the U-Net's x0_hat = E[x^0 | x^t] (bottom row).

    path: a ``samplers.SamplerPath`` (``return_path=True``) with x (n, 1, 28, 28); ``index`` picks the sample.
    show_t: the steps to show (default 11 steps from T down to 1); a last column shows the final x^0.
    """
    import matplotlib.pyplot as plt

    ts = [int(t) for t in path.timesteps.tolist()]
    T = ts[0]
    if show_t is None:
        show_t = sorted({T, *[int(round(T * f)) for f in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)], 1},
                        reverse=True)
    cols = [ts.index(t) for t in show_t if t in ts[:-1]]
    fig, axes = plt.subplots(2, len(cols) + 1, figsize=(1.05 * (len(cols) + 1) + 0.8, 2.9))
    for j, k in enumerate(cols):
        imshow_digits(axes[0, j], path.path[k][index:index + 1], title=f"t = {ts[k]}")
        imshow_digits(axes[1, j], path.x0_pred[k][index:index + 1])
    imshow_digits(axes[0, -1], path.x[index:index + 1], title="t = 0")
    imshow_digits(axes[1, -1], path.x[index:index + 1])
    axes[0, 0].set_ylabel(r"$x^t$")
    axes[1, 0].set_ylabel(r"$\hat x^0(x^t)$")
    fig.suptitle(title or r"one sample emerging from noise (top) and the predicted $x^0$ = E[$x^0 | x^t$] (bottom)")
    return fig


def plot_tweedie_rows(x0: torch.Tensor, x_t: torch.Tensor, x0_hat: torch.Tensor, t, *, title: str | None = None):
    """Tweedie in pictures: clean digits (top), their noised x^t (middle), x0_hat = E[x^0 | x^t] (bottom).

    x0, x_t, x0_hat: (n, 1, 28, 28); t: the n steps (one per column).
    """
    import matplotlib.pyplot as plt

    n = x0.shape[0]
    fig, axes = plt.subplots(3, n, figsize=(1.1 * n + 0.8, 3.9), squeeze=False)
    for j in range(n):
        imshow_digits(axes[0, j], x0[j:j + 1], title=f"t = {int(t[j])}")
        imshow_digits(axes[1, j], x_t[j:j + 1])
        imshow_digits(axes[2, j], x0_hat[j:j + 1])
    for i, name in enumerate((r"$x^0$", r"$x^t$", r"$\hat x^0$")):
        axes[i, 0].set_ylabel(name)
    fig.suptitle(title or r"Tweedie in pictures: the U-Net's $\hat x^0 = E[x^0 | x^t]$ blurs as t grows")
    return fig


def plot_loss_weightings(schedule, *, kappa: float = 5.0, ax=None):
    """Three weightings of the eps loss over t = 2..T, each divided by its mean over t (only relative weights move
    where a finite network's errors land): uniform (DDPM's "simple" loss), the ELBO's beta_t / (2 alpha_t (1 -
    alpha_bar_{t-1})) (notebook 05's a_t^2 / (2 c_t) on the x^0 error, read on the eps error) and min-SNR,
    min(1, kappa / SNR_t) with SNR_t = alpha_bar_t / (1 - alpha_bar_t), which the U-Net trains with. Returns the axes.
    """
    import matplotlib.pyplot as plt

    from .denoisers import MIN_SNR_KAPPA, loss_weights

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.2))
    t = torch.arange(2, schedule.T + 1)
    ab, ab_prev, alpha = schedule.alpha_bars[t], schedule.alpha_bars[t - 1], schedule.alphas[t]
    elbo = (1 - alpha) / (2 * alpha * (1 - ab_prev))
    if kappa == MIN_SNR_KAPPA:
        min_snr = loss_weights(schedule, "eps", "min_snr")[t]
    else:
        min_snr = (kappa * (1 - ab) / ab).clamp(max=1.0)
    curves = {"uniform (DDPM's simple loss)": torch.ones_like(ab),
              "ELBO: $\\beta_t / (2\\alpha_t(1-\\bar\\alpha_{t-1}))$": elbo,
              f"min-SNR: $\\min(1, {kappa:g}/\\mathrm{{SNR}}_t)$ (the U-Net's)": min_snr}
    colours = (COLORS["truth"], COLORS["encoder"], COLORS["model"])
    for (name, w), colour in zip(curves.items(), colours, strict=True):
        ax.plot(to_numpy(t), to_numpy(w / w.mean()), color=colour, lw=2, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel("weight on the eps error (divided by its mean)")
    ax.set_title("where each loss puts the network's effort")
    ax.legend(loc="lower right", fontsize="small")
    return ax


def plot_time_embedding(T: int, dim: int, ax=None):
    """The time embedding ``nets.time_embedding(t, T, dim)`` of every step t = 1..T as an image (rows t, columns
    coordinates; sines left of the black line, cosines right). Returns the axes."""
    import matplotlib.pyplot as plt

    from .nets import time_embedding

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.2))
    emb = time_embedding(torch.arange(1, T + 1), T, dim)
    im = ax.imshow(to_numpy(emb), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest",
                   extent=(-0.5, dim - 0.5, T + 0.5, 0.5))
    ax.axvline(dim / 2 - 0.5, color="k", lw=1)
    ax.set_xlabel(r"embedding coordinate (left half: $\sin(u\,\omega_k)$, right half: $\cos(u\,\omega_k)$)")
    ax.set_ylabel("time step t")
    ax.set_title(f"sinusoidal time embedding, $u = 1000\\,t/T$ with T = {T}: every t gets its own pattern")
    ax.figure.colorbar(im, ax=ax, label="value")
    return ax
