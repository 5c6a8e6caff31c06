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


def plot_loss_history(meta: dict, ax=None, *, target: str = "eps", zero_loss: float = 1.0):
    """The training loss stored in a checkpoint's metadata (block means per step) against the training step.

    ``target``: what the U-Net predicts ("eps", "v", "x0"), for the labels. The dashed line at ``zero_loss`` is the
    loss of predicting 0, what the untrained U-Net does (its last layer starts at zero): 1 for eps (E|eps|^2 / D),
    ``mnist_models.zero_prediction_loss`` in general.
    """
    import matplotlib.pyplot as plt

    sym = {"eps": r"\varepsilon", "v": "v", "x0": "x^0"}.get(target, target)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    if not meta.get("loss"):
        ax.text(0.5, 0.5, "no loss history stored with this model", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.plot(meta["loss_steps"], meta["loss"], color=COLORS["model"], label="U-Net (mean over blocks of steps)")
    ax.axhline(zero_loss, color=COLORS["truth"], ls="--", lw=1.5, label=rf"predict $\hat{{{sym}}} = 0$")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(rf"loss per pixel, $|\hat{{{sym}}} - {sym}|^2 / 784$")
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
    """Four losses as weights on the x^0 error |x0_hat - x^0|^2 over t = 2..T, each divided by its mean over t (only
    relative weights move where a finite network's errors land); log scale. Every loss of the course is one of these,
    whatever the network predicts (an eps error is sqrt(SNR_t) times the x^0 error, a v error sqrt(1 + SNR_t) times):
    the ELBO's a_t^2 / (2 c_t) (notebook 05), the uniform eps loss (DDPM's "simple" loss, SNR_t), min-SNR
    (min(SNR_t, kappa)) and the capped v loss (min(1 + SNR_t, kappa), ``weighting="v_min_snr"``, the U-Net's), with
    SNR_t = alpha_bar_t / (1 - alpha_bar_t). The shaded band marks SNR_t < 1, where min-SNR's weight falls to 0 and
    the capped v loss keeps it. Returns the axes.
    """
    import matplotlib.pyplot as plt

    from .denoisers import MIN_SNR_KAPPA, loss_weights

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.2))
    t = torch.arange(2, schedule.T + 1)
    ab, ab_prev, alpha = schedule.alpha_bars[t], schedule.alpha_bars[t - 1], schedule.alphas[t]
    snr = ab / (1 - ab)
    a_t = ab_prev.sqrt() * (1 - alpha) / (1 - ab)
    c_t = (1 - ab_prev) * (1 - alpha) / (1 - ab)
    if kappa == MIN_SNR_KAPPA:  # the library's weights (on the eps and v errors), read on the x^0 error
        min_snr = loss_weights(schedule, "eps", "min_snr")[t] * snr
        v_min_snr = loss_weights(schedule, "v", "v_min_snr")[t] * (1 + snr)
    else:
        min_snr, v_min_snr = snr.clamp(max=kappa), (1 + snr).clamp(max=kappa)
    curves = {r"ELBO: $a_t^2 / (2 c_t)$": a_t**2 / (2 * c_t),
              r"uniform $\varepsilon$ loss: $\mathrm{SNR}_t$": snr,
              f"min-SNR: $\\min(\\mathrm{{SNR}}_t, {kappa:g})$": min_snr,
              f"capped $v$ loss: $\\min(1 + \\mathrm{{SNR}}_t, {kappa:g})$ (the U-Net's)": v_min_snr}
    colours = (COLORS["encoder"], COLORS["truth"], COLORS["data"], COLORS["model"])
    styles = ("-", ":", "--", "-")
    for (name, w), colour, ls in zip(curves.items(), colours, styles, strict=True):
        ax.plot(to_numpy(t), to_numpy(w / w.mean()), color=colour, ls=ls, lw=2, label=name)
    crossing = int(t[snr < 1][0]) if bool((snr < 1).any()) else schedule.T
    ax.axvspan(crossing, schedule.T, color="0.9", zorder=0)
    ax.text(crossing + 5, 0.93, r"$\mathrm{SNR}_t < 1$", transform=ax.get_xaxis_transform(), fontsize="small")
    ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel(r"weight on $|\hat x^0 - x^0|^2$ (divided by its mean)")
    ax.set_title("where each loss puts the network's effort")
    ax.legend(loc="lower left", fontsize="small")
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
    ax.set_xlabel(r"embedding coordinate (left half: $\sin(u\,\omega_i)$, right half: $\cos(u\,\omega_i)$)")
    ax.set_ylabel("time step t")
    ax.set_title(f"sinusoidal time embedding, $u = 1000\\,t/T$ with T = {T}: every t gets its own pattern")
    ax.figure.colorbar(im, ax=ax, label="value")
    return ax
