"""Figures of notebooks 02 and 03 (VAEs on toy data and on MNIST): ELBO curves, latent codes, samples, grids.

Points are rows (n, 2); images are (n, 1, 28, 28) or (n, 784) in [0, 1]. Each function draws on ``ax`` (a new figure
when None) and returns the axes (or the figure, for multi-panel plots).
"""

from __future__ import annotations

import torch

from .vae import VAE

__all__ = ["plot_beta_sweep", "plot_elbo_history", "plot_latent_codes", "plot_latent_grid", "plot_latent_scatter",
           "plot_reconstructions", "plot_samples", "plot_toy_data", "show_images"]

def _axes(ax, figsize=(7.0, 4.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_elbo_history(hist: dict, ax=None, x: str = "step"):
    """The deepul-style ELBO figure: -ELBO, -reconstruction and KL, train (dashed) and held-out (solid).

    ``hist``: from ``fit_vae`` (or a checkpoint's ``meta["history"]``). All in nats per example.
    """
    from .plotting import COLORS

    ax = _axes(ax, (8, 4.5))
    series = [("elbo", "−ELBO", COLORS["truth"], -1),
              ("reconstruction", "−reconstruction", COLORS["reconstruction"], -1),
              ("kl_prior", "KL(q(z|x) ‖ p(z))", COLORS["prior_matching"], 1)]
    for key, name, colour, sign in series:
        for split, style in (("train", "--"), ("test", "-")):
            values = hist.get(f"{split}_{key}")
            if values:
                where = "held-out" if split == "test" else "train"
                ax.plot(hist[x], [sign * v for v in values], style, color=colour, label=f"{name} ({where})")
    ax.set_xlabel({"step": "training step", "epoch": "epoch"}.get(x, x))
    ax.set_ylabel("nats per example")
    ax.legend(ncol=1, loc="best")
    return ax


def plot_toy_data(x, colour=None, ax=None, title: str = "data", cmap: str = "viridis", s: float = 6):
    """A scatter of 2-D points, optionally coloured (position along a curve, or component)."""
    from .plotting import COLORS, to_numpy

    ax = _axes(ax, (5, 5))
    x = to_numpy(x)
    if colour is None:
        ax.scatter(x[:, 0], x[:, 1], s=s, color=COLORS["data"], alpha=0.6, lw=0)
    else:
        ax.scatter(x[:, 0], x[:, 1], s=s, c=to_numpy(colour), cmap=cmap, alpha=0.8, lw=0)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    return ax


def plot_latent_codes(model: VAE, x, colour, ax=None, colour_label: str = "position along the curve",
                      cmap: str = "viridis"):
    """Where the encoder puts each x. 1-D latent: mu(x) ± sigma(x) against ``colour``; 2-D: mu(x) scattered.

    For a 2-D latent the circles are the prior's 1 and 2 standard deviations.
    """
    import numpy as np

    from .plotting import COLORS, to_numpy

    with torch.no_grad():
        mu, log_sigma = model.encode(x)
    mu, sd, c = to_numpy(mu), to_numpy(log_sigma.exp()), to_numpy(colour)
    if model.latent_dim == 1:
        ax = _axes(ax, (7, 4.5))
        order = np.argsort(c)
        ax.fill_between(c[order], (mu - sd)[order, 0], (mu + sd)[order, 0], color=COLORS["encoder"], alpha=0.2,
                        lw=0, label="μ(x) ± σ(x)")
        ax.scatter(c, mu[:, 0], c=c, cmap=cmap, s=6, lw=0)
        ax.plot([], [], "o", color=COLORS["encoder"], label="posterior mean μ(x)")
        ax.set_xlabel(colour_label)
        ax.set_ylabel("latent code z")
        ax.legend(loc="best")
        return ax
    ax = _axes(ax, (5.5, 5))
    t = np.linspace(0, 2 * np.pi, 200)
    for r in (1, 2):
        ax.plot(r * np.cos(t), r * np.sin(t), color=COLORS["prior"], lw=1.2, ls=":",
                label="prior N(0, I): 1 and 2 sd" if r == 1 else None)
    if np.allclose(c, np.round(c)) and len(np.unique(c)) <= 10:
        # discrete labels (mixture components): one colour each, in a legend
        import matplotlib.pyplot as plt

        colours = plt.get_cmap("tab10")
        for j, value in enumerate(np.unique(c)):
            m = c == value
            ax.scatter(mu[m, 0], mu[m, 1], s=6, lw=0, color=colours(j), label=f"{colour_label} {value:g}")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3)
    else:
        points = ax.scatter(mu[:, 0], mu[:, 1], c=c, cmap=cmap, s=6, lw=0)
        ax.figure.colorbar(points, ax=ax, label=colour_label)
        ax.legend(loc="upper right")
    ax.set_xlabel("$z_1$ (posterior mean)")
    ax.set_ylabel("$z_2$ (posterior mean)")
    ax.set_aspect("equal", adjustable="datalim")
    return ax


def plot_reconstructions(model: VAE, x, ax=None, n_lines: int = 80):
    """Data points and their reconstructions E[x | z = mu(x)], with a line from each of ``n_lines`` to its own."""
    from .plotting import COLORS, to_numpy

    ax = _axes(ax, (5.5, 5))
    with torch.no_grad():
        r = to_numpy(model.reconstruct(x))
    x = to_numpy(x)
    for i in range(min(n_lines, len(x))):
        ax.plot([x[i, 0], r[i, 0]], [x[i, 1], r[i, 1]], color="0.6", lw=0.7)
    ax.scatter(x[:, 0], x[:, 1], s=6, color=COLORS["data"], alpha=0.5, lw=0, label="data x")
    ax.scatter(r[:, 0], r[:, 1], s=6, color=COLORS["reconstruction"], lw=0, label="reconstruction E[x | μ(x)]")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title("reconstructions")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", markerscale=3)
    return ax


def plot_samples(model: VAE, x, ax=None, n: int = 2000, generator: torch.Generator | None = None,
                 title: str = "samples from the model"):
    """Draws z ~ N(0, I), x ~ p(x | z) (blue) over the data (green); for a 1-D latent also the decoder's
    mean curve f(z), z from -3 to 3."""
    from .plotting import COLORS, to_numpy

    ax = _axes(ax, (5.5, 5))
    with torch.no_grad():
        s = to_numpy(model.sample(n, generator=generator))
    x = to_numpy(x)
    ax.scatter(x[:, 0], x[:, 1], s=6, color=COLORS["data"], alpha=0.4, lw=0, label="data")
    ax.scatter(s[:, 0], s[:, 1], s=6, color=COLORS["samples"], alpha=0.6, lw=0, label="samples x ~ p(x|z), z ~ p(z)")
    if model.latent_dim == 1:
        with torch.no_grad():
            z = torch.linspace(-3, 3, 400).unsqueeze(1)
            curve = to_numpy(model.decode(z))
        ax.plot(curve[:, 0], curve[:, 1], color=COLORS["model"], lw=2, label="decoder mean f(z), |z| ≤ 3")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", markerscale=3)
    return ax


def plot_beta_sweep(results: list[dict], x_test, fig=None):
    """The beta trade-off: held-out rate (KL) and distortion (-reconstruction) against beta, and each model's samples.

    Left column: KL on top, -reconstruction below (log beta axis). Right: samples of each model over the data,
    two rows. Returns the figure.
    """
    import math as _math

    import matplotlib.pyplot as plt

    from .plotting import COLORS, to_numpy

    n = len(results)
    ncols = _math.ceil(n / 2)
    fig = fig or plt.figure(figsize=(5.5 + 3.6 * ncols, 7.5))
    grid = fig.add_gridspec(2, ncols + 2)
    rate, distortion = fig.add_subplot(grid[0, :2]), fig.add_subplot(grid[1, :2])
    betas = [r["beta"] for r in results]
    rate.plot(betas, [r["kl_prior"] for r in results], "s-", color=COLORS["prior_matching"], label="KL (rate)")
    rate.set_ylabel("KL(q(z|x) ‖ p(z)), nats")
    rate.set_title("held-out, per example")
    distortion.plot(betas, [-r["reconstruction"] for r in results], "o-", color=COLORS["reconstruction"],
                    label="−reconstruction (distortion)")
    distortion.set_ylabel("−E_q log p(x|z), nats")
    for ax in (rate, distortion):
        ax.set_xscale("log")
        ax.set_xlabel("β (weight of the KL term)")
        ax.axvline(1.0, color=COLORS["truth"], lw=1, ls=":")
        ax.legend(loc="best")
    x = to_numpy(x_test)
    for i, r in enumerate(results):
        ax = fig.add_subplot(grid[i // ncols, 2 + i % ncols])
        with torch.no_grad():
            s = to_numpy(r["model"].sample(1000, generator=torch.Generator().manual_seed(0)))
        ax.scatter(x[:, 0], x[:, 1], s=4, color=COLORS["data"], alpha=0.3, lw=0)
        ax.scatter(s[:, 0], s[:, 1], s=4, color=COLORS["samples"], alpha=0.6, lw=0)
        ax.set_title(f"β = {r['beta']:g}: KL {r['kl_prior']:.2f}")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
    return fig


def show_images(images, ax=None, nrow: int | None = None, title: str | None = None):
    """A grid of (n, 1, 28, 28) images in [0, 1] (black = 0), without axes."""
    from .plotting import image_grid

    ax = _axes(ax, (6, 6))
    # light grey gaps between the images (0 = white, 1 = black in gray_r)
    ax.imshow(image_grid(images.detach().cpu().clamp(0, 1), nrow=nrow, value=0.25), cmap="gray_r", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def plot_latent_scatter(model: VAE, x, labels, ax=None):
    """The posterior means mu(x) of a 2-D latent model, coloured by digit."""
    import matplotlib.pyplot as plt
    import numpy as np

    from .plotting import to_numpy

    ax = _axes(ax, (6.5, 5.5))
    with torch.no_grad():
        mu = torch.cat([model.encode(x[i:i + 2000])[0] for i in range(0, len(x), 2000)])
    mu, labels = to_numpy(mu), to_numpy(labels)
    cmap = plt.get_cmap("tab10")
    for d in range(10):
        m = labels == d
        ax.scatter(mu[m, 0], mu[m, 1], s=3, color=cmap(d), lw=0, label=str(d))
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(2 * np.cos(t), 2 * np.sin(t), ":", color="k", lw=1.2, label="prior 2 sd")
    ax.set_xlabel("$z_1$ (posterior mean)")
    ax.set_ylabel("$z_2$ (posterior mean)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(title="digit", markerscale=4, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax


def plot_latent_grid(model: VAE, n: int = 15, ax=None, quantile: float = 0.95):
    """Decode a grid of z in 2-D: z_i = Phi^{-1}(p_i), p_i evenly spaced in [1 - quantile, quantile].

    Equal steps in p are equal prior mass, so the grid covers the prior as the decoder sees it.
    """
    from scipy.stats import norm

    if model.latent_dim != 2:
        raise ValueError(f"model: expected a 2-D latent for a latent grid, got latent_dim = {model.latent_dim}")
    ax = _axes(ax, (7, 7))
    q = torch.as_tensor(norm.ppf(torch.linspace(1 - quantile, quantile, n).numpy()), dtype=torch.float32)
    z1, z2 = torch.meshgrid(q, q.flip(0), indexing="xy")  # z2 grows upwards on the page
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)
    with torch.no_grad():
        images = model.decode(z).cpu()
    show_images(images, ax=ax, nrow=n)
    ticks = [0, n // 2, n - 1]
    ax.set_xticks([29 * i + 13.5 for i in ticks], [f"{float(q[i]):.2f}" for i in ticks])
    ax.set_yticks([29 * i + 13.5 for i in ticks], [f"{float(q.flip(0)[i]):.2f}" for i in ticks])
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    return ax


