"""Figures (and the few numbers they print) of notebook 08, conditioning and guidance.

Toy figures take a labelled 2-D ``GaussianMixture`` (label = component) and points as (n, 2) tensors with labels
(n,); the exact quantities are drawn in black (``plotting.COLORS["truth"]``), each class in its own colour
(``class_colors``), the background of a map is p(y | x) blended from the class colours.

- ``clear_cut_shares``: the share of samples the exact classifier assigns to their prompt with p(y | x) >= 0.9.
- ``ellipse_shares``: the share of each class's samples inside the 50 % / 90 % probability ellipses of its
  component, next to the share a draw of p(x | y) has there (the check that gamma = 1 samples p(x | y)).
- ``sample_tilted`` and ``tilted_region_shares``: exact draws from p(x) p(y | x)^gamma / Z (rejection from p(x | y))
  and the share of points inside its highest-density regions (guided sampling with gamma > 1 against the tilt).
- ``classifier_curves``: accuracy and KL(exact || learned) of noise-aware classifiers against t.
- ``plot_direct_route``, ``plot_gamma_one_check``, ``plot_tilted_vs_guided``, ``plot_classifier_maps``,
  ``plot_classifier_curves``, ``plot_gradient_field``, ``plot_sample_overlay``: the toy figures.
- ``plot_guidance_grids``, ``plot_noisy_accuracy``, ``plot_tradeoff``: the MNIST figures (images (n, 1, 28, 28)
  in [-1, 1]; sample sets as ``guidance_models.guidance_sample_sets`` returns them), and ``tradeoff_markdown``:
  the trade-off table as printed (the chance level named where the prompt is ignored).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .plotting import COLORS, label, to_numpy

__all__ = [
    "class_colors",
    "classifier_curves",
    "clear_cut_shares",
    "draw_class_map",
    "draw_ellipses",
    "ellipse_shares",
    "plot_classifier_curves",
    "plot_classifier_maps",
    "plot_direct_route",
    "plot_gamma_one_check",
    "plot_gradient_field",
    "plot_guidance_grids",
    "plot_noisy_accuracy",
    "plot_sample_overlay",
    "plot_tilted_vs_guided",
    "plot_tradeoff",
    "sample_tilted",
    "tilted_region_shares",
    "tradeoff_markdown",
]

LIM = (-3.0, 3.0)
_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
          "#d62728")
KIND_NAMES = {"classifier": "classifier guidance", "cfg": "classifier-free guidance"}
KIND_COLORS = {"classifier": COLORS["model"], "cfg": COLORS["samples"]}


def class_colors(K: int) -> list[str]:
    """One colour per class (K <= 10), the same in every toy figure of notebook 08."""
    if not 1 <= K <= len(_TAB10):
        raise ValueError(f"K: expected 1..{len(_TAB10)} classes, got {K}")
    return list(_TAB10[:K])


def _rgb(hex_color: str) -> np.ndarray:
    h = hex_color.lstrip("#")
    return np.array([int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4)])


def _square(ax, lim=LIM, title: str | None = None, ylabel: bool = True) -> None:
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_aspect("equal")
    label(ax, "$x_1$", "$x_2$" if ylabel else None, title)


def _grid(lim, n: int) -> tuple[np.ndarray, torch.Tensor]:
    xs = np.linspace(lim[0], lim[1], n)
    X, Y = np.meshgrid(xs, xs)
    return xs, torch.as_tensor(np.stack([X.ravel(), Y.ravel()], 1), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- building blocks
def draw_class_map(ax, class_probs, K: int, lim=LIM, n: int = 160, strength: float = 0.5):
    """Background of ``ax``: the colour of each point blends the class colours by p(y = k | x).

    class_probs: a function of points (m, 2) float64 -> probabilities (m, K). ``strength`` in (0, 1]: how far the
    colours are from white (lighter keeps scattered points readable). Returns the image artist.
    """
    _, pts = _grid(lim, n)
    with torch.no_grad():
        p = to_numpy(class_probs(pts)).reshape(n, n, K)
    cols = np.stack([_rgb(c) for c in class_colors(K)])               # (K, 3)
    rgb = 1.0 - strength * (1.0 - p @ cols)                           # blend, then towards white
    return ax.imshow(np.clip(rgb, 0, 1), origin="lower", extent=(lim[0], lim[1], lim[0], lim[1]),
                     interpolation="bilinear", zorder=0)


def draw_ellipses(ax, mixture, k: int, levels=(0.5, 0.9), color: str = COLORS["truth"], **kw):
    """The probability ellipses of component k: {x : (x - mu)^T Sigma^-1 (x - mu) <= -2 log(1 - p)} for p in levels.

    A Gaussian in 2-D puts exactly mass p inside (the Mahalanobis distance squared is chi^2 with 2 degrees of freedom).
    """
    mu, cov = to_numpy(mixture.means[k]), to_numpy(mixture.covs[k])
    vals, vecs = np.linalg.eigh(cov)
    th = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(th), np.sin(th)])
    styles = ("-", "--", ":", "-.")
    for i, p in enumerate(levels):
        r = math.sqrt(-2.0 * math.log(1.0 - p))
        pts = mu[:, None] + vecs @ (r * np.sqrt(vals)[:, None] * circle)
        ax.plot(pts[0], pts[1], color=color, ls=styles[i % len(styles)], lw=kw.pop("lw", 1.4), zorder=3,
                label=kw.pop("label", None) if i == 0 else None)


def _scatter_classes(ax, x, labels, K: int, *, s: float = 5, alpha: float = 0.5, marker: str = "o",
                     prefix: str = "class", zorder: int = 2) -> None:
    pts, lab = to_numpy(x), to_numpy(labels)
    for k, c in enumerate(class_colors(K)):
        sel = lab == k
        if sel.any():
            ax.scatter(pts[sel, 0], pts[sel, 1], s=s, alpha=alpha, color=c, marker=marker, lw=0,
                       label=f"{prefix} y = {k}", zorder=zorder)


def _mahalanobis2(mixture, k: int, x: torch.Tensor) -> torch.Tensor:
    d = x.double() - mixture.means[k]
    return (d * torch.linalg.solve(mixture.covs[k], d.T).T).sum(1)


def ellipse_shares(mixture, x, labels, levels=(0.5, 0.9)) -> list[dict]:
    """For each class k: the share of its samples (x[labels == k]) inside component k's probability ellipses.

    x: (n, 2); labels: (n,). Returns rows {"class", "n", "inside_50", "inside_90", ..., "mean", "cov"}: a sample of
    p(x | y = k) has a share p inside the p-ellipse, within about 2 sqrt(p (1 - p) / n) (95 %).
    """
    x, labels = torch.as_tensor(x).double(), torch.as_tensor(labels)
    rows = []
    for k in range(mixture.K):
        xk = x[labels == k]
        m2 = _mahalanobis2(mixture, k, xk)
        row = {"class": k, "n": int(xk.shape[0])}
        for p in levels:
            row[f"inside_{round(100 * p)}"] = float((m2 <= -2.0 * math.log(1.0 - p)).double().mean())
        row["mean"], row["cov"] = xk.mean(0), torch.cov(xk.T)
        rows.append(row)
    return rows


def clear_cut_shares(mixture, x, labels, level: float = 0.9) -> list[float]:
    """For each class k: the share of the samples with prompt k (x[labels == k], x (n, 2)) that the exact classifier
    assigns to k with probability at least ``level``, p(y = k | x) >= level (the "clear-cut" samples)."""
    x, labels = torch.as_tensor(x).double(), torch.as_tensor(labels)
    p = mixture.responsibilities(x)
    return [float((p[labels == k, k] >= level).double().mean()) for k in range(mixture.K)]


# ---------------------------------------------------------------------------------------------- the tilted density
def sample_tilted(mixture, y: int, gamma: float, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n exact draws from p_gamma(x | y) = p(x) p(y | x)^gamma / Z for gamma >= 1, (n, d) float64.

    p(x) p(y | x)^gamma = p(y) p(x | y) p(y | x)^(gamma - 1), and p(y | x)^(gamma - 1) <= 1: draw x ~ p(x | y) (the
    component) and keep it with probability p(y | x)^(gamma - 1) (rejection sampling).
    """
    if gamma < 1:
        raise ValueError(f"gamma: rejection from p(x | y) needs gamma >= 1, got {gamma}")
    from .guidance import component_mixture

    comp, out, have = component_mixture(mixture, y), [], 0
    while have < n:
        x = comp.sample(2 * n, generator=generator)
        accept = mixture.responsibilities(x)[:, y] ** (gamma - 1)
        keep = torch.rand(2 * n, generator=generator, dtype=torch.float64) < accept
        out.append(x[keep])
        have += int(keep.sum())
    return torch.cat(out)[:n]


def _tilted_regions(mixture, y: int, gamma: float, levels, lim, n: int):
    """Grid, normalised tilted density, and per level p the density threshold of the highest-density region p."""
    from .guidance import tilted_density_grid

    xs, _, dens = tilted_density_grid(mixture, y, gamma, xlim=lim, ylim=lim, n=n)
    cell = float((xs[1] - xs[0]) ** 2)
    flat = torch.sort(dens.reshape(-1), descending=True).values
    mass = torch.cumsum(flat, 0) * cell
    thresholds = [float(flat[min(int(torch.searchsorted(mass, p)), flat.numel() - 1)]) for p in levels]
    return to_numpy(xs), to_numpy(dens), thresholds, cell


def tilted_region_shares(mixture, y: int, gamma: float, x, levels=(0.5, 0.9), lim=LIM, n: int = 300) -> list[float]:
    """The share of points x (m, 2) inside the highest-density regions of mass p (for p in ``levels``) of
    p_gamma(x | y) = p(x) p(y | x)^gamma / Z (Z and the regions from an n x n grid). A draw of p_gamma gives about p."""
    from .guidance import tilted_log_density

    xs, dens, thresholds, cell = _tilted_regions(mixture, y, gamma, levels, lim, n)
    _, pts = _grid(lim, n)
    log_z = float(torch.logsumexp(tilted_log_density(mixture, pts, y, gamma), 0)) + math.log(cell)
    at_x = torch.exp(tilted_log_density(mixture, torch.as_tensor(x).double(), y, gamma) - log_z)
    return [float((at_x >= th).double().mean()) for th in thresholds]


# ---------------------------------------------------------------------------------------------- toy figures
def _class_handles(K: int, prefix: str) -> list:
    import matplotlib.pyplot as plt

    return [plt.Line2D([], [], color=c, marker="o", ls="", ms=6, label=f"{prefix} y = {k}")
            for k, c in enumerate(class_colors(K))]


def plot_direct_route(mixture, data, samples, *, unsure: float = 0.9, lim=LIM):
    """Left: labelled data over the map of p(y | x). Right: samples of a conditional model, one colour per prompt y,
    with those the exact classifier is unsure of (p(y | x) < ``unsure``) ringed in black.

    data, samples: pairs (x (n, 2), labels (n,)). Returns the figure.
    """
    import matplotlib.pyplot as plt

    K = mixture.K
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.9))
    for ax, (x, lab), title in ((axes[0], data, "data $(x^0, y)$ over $p(y \\mid x)$"),
                                (axes[1], samples, "samples of the conditional denoiser")):
        draw_class_map(ax, mixture.responsibilities, K, lim, strength=0.3)
        _scatter_classes(ax, x, lab, K, s=6, alpha=0.8)
        _square(ax, lim, title, ylabel=ax is axes[0])
    x, lab = samples
    p = mixture.responsibilities(torch.as_tensor(x).double()).gather(1, torch.as_tensor(lab).long()[:, None])[:, 0]
    bad = to_numpy(p < unsure)
    pts = to_numpy(x)
    axes[1].scatter(pts[bad, 0], pts[bad, 1], s=36, facecolors="none", edgecolors=COLORS["truth"], lw=0.8, zorder=4)
    ring = plt.Line2D([], [], color=COLORS["truth"], marker="o", mfc="none", ls="", ms=9,
                      label=f"$p(y \\mid x) < {unsure:g}$ for its prompt y ({int(bad.sum())} of {len(bad)})")
    fig.legend(handles=_class_handles(K, "class / prompt") + [ring], loc="outside lower center", ncol=2)
    return fig


def plot_gamma_one_check(mixture, x, labels, *, levels=(0.5, 0.9), lim=LIM, title: str | None = None):
    """One panel per class: the samples with prompt y = k and, in black, component k's probability ellipses.

    x: (n, 2); labels: (n,). The titles give the share inside each ellipse (expected: the level). Returns the figure.
    """
    import matplotlib.pyplot as plt

    K = mixture.K
    rows = ellipse_shares(mixture, x, labels, levels)
    fig, axes = plt.subplots(1, K, figsize=(4.3 * K, 4.9), sharey=True)
    for k, ax in enumerate(np.atleast_1d(axes)):
        sel = torch.as_tensor(labels) == k
        _scatter_classes(ax, torch.as_tensor(x)[sel], torch.as_tensor(labels)[sel], K, s=5, alpha=0.6)
        draw_ellipses(ax, mixture, k, levels)
        shares = ", ".join(f"{100 * rows[k][f'inside_{round(100 * p)}']:.0f}%" for p in levels)
        _square(ax, lim, f"prompt y = {k}: inside {shares}", ylabel=k == 0)
    styles = ("-", "--", ":", "-.")
    handles = _class_handles(K, "guided samples, prompt") + [
        plt.Line2D([], [], color=COLORS["truth"], ls=styles[i % 4],
                   label=f"{round(100 * p)}% ellipse of $p(x \\mid y)$") for i, p in enumerate(levels)]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles) // 2 + len(handles) % 2)
    if title:
        fig.suptitle(title)
    return fig


def plot_tilted_vs_guided(mixture, y: int, guided: dict, *, levels=(0.5, 0.9), lim=None, n: int = 200):
    """One panel per gamma: the tilted density p(x) p(y | x)^gamma / Z (grey shades in decades of density, its 50 % /
    90 % highest-density regions in black, its mean a black +) with guided samples of prompt y on top (``guided``:
    {gamma: x (m, 2)}, their mean a coloured x). lim: the window (default: 2.6 standard deviations around mu_y)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    k = len(guided)
    fig, axes = plt.subplots(1, k, figsize=(3.5 * k, 4.6), sharey=True, squeeze=False)
    color = class_colors(mixture.K)[y]
    mu = to_numpy(mixture.means[y])
    if lim is None:
        r = 2.6 * float(np.sqrt(np.linalg.eigvalsh(to_numpy(mixture.covs[y])).max()))
        xlim, ylim = (mu[0] - r, mu[0] + r), (mu[1] - r, mu[1] + r)
    else:
        xlim = ylim = lim
    wide = (min(xlim[0], ylim[0]) - 0.5, max(xlim[1], ylim[1]) + 0.5)
    for ax, (gamma, x) in zip(axes[0], guided.items(), strict=True):
        xs, dens, thresholds, cell = _tilted_regions(mixture, y, gamma, levels, wide, n)
        top = dens.max()
        ax.contourf(xs, xs, np.clip(dens, top * 1e-4, None), levels=top * np.logspace(-4, 0, 9), cmap="Greys",
                    norm=LogNorm(top * 1e-5, top * 12), zorder=0)
        order = np.argsort(thresholds)  # contour wants increasing levels: the largest region (lowest density) first
        ax.contour(xs, xs, dens, levels=[thresholds[i] for i in order], colors=COLORS["truth"],
                   linestyles=[("-" if levels[i] == max(levels) else "--") for i in order], linewidths=1.3, zorder=3)
        pts = to_numpy(x)
        ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.8, color=color, lw=0, zorder=2)
        w = dens.reshape(-1) * cell
        gx, gy = np.meshgrid(xs, xs)
        ax.plot(float((w * gx.reshape(-1)).sum() / w.sum()), float((w * gy.reshape(-1)).sum() / w.sum()), "+",
                color=COLORS["truth"], ms=16, mew=2.5, zorder=5)
        ax.plot(*pts.mean(0), "x", color=color, ms=12, mew=3, zorder=5, markeredgecolor=color)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        label(ax, "$x_1$", "$x_2$" if ax is axes[0, 0] else None, f"$\\gamma$ = {gamma:g}")
    handles = [plt.Line2D([], [], color=COLORS["truth"], ls="-", label="90% region of $p(x)\\,p(y \\mid x)^\\gamma$"),
               plt.Line2D([], [], color=COLORS["truth"], ls="--", label="its 50% region"),
               plt.Line2D([], [], color=COLORS["truth"], marker="+", ms=12, mew=2, ls="", label="its mean"),
               plt.Line2D([], [], color=color, marker="o", ls="", label=f"guided samples, prompt y = {y}"),
               plt.Line2D([], [], color=color, marker="x", ms=10, mew=2.5, ls="", label="their mean")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3)
    return fig


@torch.no_grad()
def classifier_curves(mixture, schedule, classifiers: dict, ts, n: int = 4000, generator=None) -> dict:
    """Accuracy on x^t ~ q(x^t | x^0), (x^0, y) from the mixture, and KL(p(y | x^t) || p_phi(y | x^t)) averaged
    over x^t, for each classifier ``clf(x_t, t)`` -> logits (m, K) in ``classifiers`` ({name: clf}), each t >= 1 in ts.

    Returns {name: {"accuracy": [...], "kl": [...]}} (the exact classifier's accuracy is the Bayes accuracy, its KL 0).
    """
    from .guidance import ExactClassifier

    exact = ExactClassifier(mixture, schedule)
    out = {name: {"accuracy": [], "kl": []} for name in classifiers}
    x0, y = mixture.sample(n, generator=generator, return_labels=True)
    for t in ts:
        x_t = schedule.q_sample(x0, int(t), generator=generator)
        log_p = exact(x_t, int(t))
        for name, clf in classifiers.items():
            logits = clf(x_t.to(_dtype_of(clf)), torch.full((n,), int(t))).double()
            log_q = torch.log_softmax(logits, -1)
            out[name]["accuracy"].append(float((log_q.argmax(1) == y).double().mean()))
            out[name]["kl"].append(float((log_p.exp() * (log_p - log_q)).sum(1).mean()))
    return out


def _dtype_of(model) -> torch.dtype:
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    return params[0].dtype if params else torch.float64


def plot_classifier_maps(mixture, schedule, classifiers: dict, ts, *, lim=LIM, n: int = 120):
    """p(y | x^t) as colour maps: one row per classifier ({name: clf(x_t, t) -> logits}), one column per t in ts."""
    import matplotlib.pyplot as plt

    K = mixture.K
    rows, cols = len(classifiers), len(ts)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols + 0.4, 2.9 * rows + 0.9), sharex=True, sharey=True,
                             squeeze=False)
    for i, (name, clf) in enumerate(classifiers.items()):
        for j, t in enumerate(ts):
            ax = axes[i, j]

            def probs(x, clf=clf, t=t):
                return torch.softmax(clf(x.to(_dtype_of(clf)), torch.full((x.shape[0],), int(t))).double(), -1)

            draw_class_map(ax, probs, K, lim, n, strength=0.85)
            ax.set_xlim(*lim)
            ax.set_ylim(*lim)
            ax.set_aspect("equal")
            if i == 0:
                ab = float(schedule.alpha_bars[int(t)])
                ax.set_title(f"t = {int(t)} ($\\bar\\alpha_t$ = {ab:.2f})", fontsize=11)
            if j == 0:
                ax.set_ylabel(f"{name}\n$x^t_2$")
            if i == rows - 1:
                ax.set_xlabel("$x^t_1$")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.85, label=f"$p(y = {k} \\mid x^t) = 1$")
               for k, c in enumerate(class_colors(K))]
    fig.legend(handles=handles, loc="outside lower center", ncol=K, title="colour: classes blended by probability")
    return fig


def plot_classifier_curves(ts, curves: dict, *, prior_max: float | None = None):
    """Left: accuracy against t for each classifier ({name: {"accuracy", "kl"}}, ``classifier_curves``), with the
    accuracy of guessing the most frequent class (``prior_max``). Right: KL(exact || classifier) against t, log scale
    (for a classifier that ignores x^t and answers p(y) it is the mutual information I(y; x^t))."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    t = to_numpy(torch.as_tensor(ts))
    palette = [COLORS["truth"], COLORS["model"], COLORS["samples"], COLORS["encoder"]]
    for (name, c), color in zip(curves.items(), palette, strict=False):
        ls = "--" if color == COLORS["truth"] else "-"
        axes[0].plot(t, c["accuracy"], color=color, ls=ls, marker="o", ms=4, label=name)
        if max(c["kl"]) > 1e-9:  # the exact classifier's KL is 0 up to rounding: nothing to draw
            axes[1].plot(t, c["kl"], color=color, marker="o", ms=4, label=name)
    if prior_max is not None:
        axes[0].axhline(prior_max, color=COLORS["prior"], ls=":", label="always the most frequent class")
    label(axes[0], "time step $t$", "accuracy", "how often the most likely class is right")
    label(axes[1], "time step $t$", "KL(exact $\\|$ classifier), nats (log scale)",
          "distance from the exact $p(y \\mid x^t)$")
    axes[1].set_yscale("log")
    axes[0].legend()
    axes[1].legend()
    return fig


def plot_gradient_field(mixture, points, fields: dict, *, y: int, t: int, background=None, lim=LIM,
                        scale: float | None = None):
    """Arrows of grad log p(y | x^t) at ``points`` (m, 2), one set per entry of ``fields`` ({name: grads (m, 2)}); the
    first entry in black (the exact one), the rest coloured. background: a function points (m, 2) -> p(y | x^t)
    (m, K) drawn as the class map (e.g. the exact one at t). Returns (figure, axes)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.6, 7.0))
    if background is not None:
        draw_class_map(ax, background, mixture.K, lim, strength=0.35)
    p = to_numpy(points)
    spacing = float(np.min(np.diff(np.unique(p[:, 0])))) if len(np.unique(p[:, 0])) > 1 else 0.3
    mags = np.concatenate([np.linalg.norm(to_numpy(g), axis=1) for g in fields.values()])
    scale = scale or float(np.percentile(mags, 50)) / (0.5 * spacing)  # a median arrow: half the grid spacing
    cap = 1.1 * spacing * scale                                          # arrows longer than 1.1 spacings are capped
    styles = [(COLORS["truth"], 0.009, 0.9), (COLORS["model"], 0.004, 1.0), (COLORS["samples"], 0.003, 1.0)]
    for (name, g), (color, width, alpha) in zip(fields.items(), styles, strict=False):
        gg = to_numpy(g).astype(float)
        norm = np.linalg.norm(gg, axis=1, keepdims=True)
        gg = gg * np.minimum(1.0, cap / np.maximum(norm, 1e-300))
        ax.quiver(p[:, 0], p[:, 1], gg[:, 0], gg[:, 1], color=color, angles="xy", scale_units="xy", scale=scale,
                  width=width, alpha=alpha, label=name, zorder=3)
    _square(ax, lim, f"$\\nabla_x \\log p(y = {y} \\mid x^t)$ at t = {t} (long arrows capped)")
    fig.legend(loc="outside lower center", ncol=1)
    return fig, ax


def plot_sample_overlay(mixture, panels: dict, *, lim=LIM, class_map: bool = True):
    """Panels of samples to compare: ``panels`` maps a title to {legend: (x (n, 2), labels (n,))}. In each panel the
    first set is drawn as dots in the class colours, the second as black crosses (e.g. exact vs learned)."""
    import matplotlib.pyplot as plt

    K, k = mixture.K, len(panels)
    fig, axes = plt.subplots(1, k, figsize=(4.3 * k, 5.0), sharey=True, squeeze=False)
    for ax, (title, sets) in zip(axes[0], panels.items(), strict=True):
        if class_map:
            draw_class_map(ax, mixture.responsibilities, K, lim, strength=0.35)
        for i, (name, (x, lab)) in enumerate(sets.items()):
            if i == 0:
                _scatter_classes(ax, x, lab, K, s=9, alpha=0.75, prefix=f"{name},")
            else:
                pts = to_numpy(x)
                ax.scatter(pts[:, 0], pts[:, 1], s=10, marker="x", lw=0.6, color=COLORS["truth"], alpha=0.35,
                           label=name, zorder=3)
        _square(ax, lim, title, ylabel=ax is axes[0, 0])
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), markerscale=2.0)
    return fig


# ---------------------------------------------------------------------------------------------- MNIST figures
def plot_guidance_grids(sets: dict, gammas=None, *, per_digit: int = 6, kind: str = "classifier",
                        symbol: str = "gamma"):
    """Guided digits for several strengths: one panel per gamma, one row per prompt digit 0..9, ``per_digit`` samples
    per row (the same starting noise in every panel's column j). sets: {gamma: (10, m, 1, 28, 28) in [-1, 1]}.

    symbol: "gamma" titles the panels by gamma, "w" by w = gamma - 1 (classifier-free guidance). Returns the figure.
    """
    import matplotlib.pyplot as plt

    from .mnist_figures import imshow_digits

    gammas = list(sets) if gammas is None else list(gammas)
    m = min(per_digit, next(iter(sets.values())).shape[1])
    k = len(gammas)
    width = max(0.33 * m + 0.25, 1.5)
    fig, axes = plt.subplots(1, k, figsize=(width * k + 0.6, 0.33 * 10 + 1.3), squeeze=False)
    for ax, g in zip(axes[0], gammas, strict=True):
        x = sets[g][:, :m].reshape(-1, 1, 28, 28)
        title = f"$\\gamma$ = {g:g}" if symbol == "gamma" else f"w = {g - 1:g}\n($\\gamma$ = {g:g})"
        imshow_digits(ax, x, nrow=m, title=title)
    ax0 = axes[0, 0]
    ax0.set_yticks([(28 + 1) * d + 14 for d in range(10)], [str(d) for d in range(10)])
    ax0.tick_params(left=False)
    ax0.set_ylabel("prompt digit y")
    fig.suptitle(f"{KIND_NAMES.get(kind, kind)}: rows = prompt digits, columns = starting noises")
    return fig


def plot_noisy_accuracy(ts, accuracy, *, schedule=None, judge_accuracy: float | None = None):
    """The noise-aware classifier's test accuracy on x^t against t (``noisy_accuracy`` or its training metadata),
    with chance (10 %) and, if given, the clean held-out judge's accuracy. ``schedule`` adds alpha_bar_t on top."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    t = np.asarray(ts, dtype=float)
    ax.plot(t, np.asarray(accuracy) * 100, color=COLORS["model"], marker="o",
            label="noise-aware classifier $p_\\phi(y \\mid x^t, t)$ on noised test digits")
    ax.axhline(10, color=COLORS["prior"], ls=":", label="chance (10%)")
    if judge_accuracy is not None:
        ax.axhline(100 * judge_accuracy, color=COLORS["truth"], ls="--", lw=1.2,
                   label=f"clean judge on $x^0$ ({100 * judge_accuracy:.1f}%)")
    label(ax, "time step $t$", "test accuracy (%)")
    ax.set_ylim(0, 104)
    if schedule is not None:
        top = ax.secondary_xaxis("top", functions=(lambda u: u, lambda u: u))
        ticks = [int(v) for v in t if v > 0][::2]
        top.set_ticks(ticks, [f"{float(schedule.alpha_bars[v]):.2f}" for v in ticks])
        top.set_xlabel(r"$\bar\alpha_t$")
    fig.legend(loc="outside lower center", ncol=3)
    return fig


def plot_tradeoff(rows: list[dict]):
    """The trade-off against the strength gamma (``tradeoff_table`` rows): left, the share of samples the held-out
    judge recognises as the prompt digit; right, their diversity relative to real digits (1 = as varied as data)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind in dict.fromkeys(r["kind"] for r in rows):
        sel = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["gamma"])
        g = [r["gamma"] for r in sel]
        axes[0].plot(g, [100 * r["recognised"] for r in sel], marker="o", color=KIND_COLORS.get(kind),
                     label=KIND_NAMES.get(kind, kind))
        if all("diversity" in r for r in sel):
            axes[1].plot(g, [r["diversity"] for r in sel], marker="o", color=KIND_COLORS.get(kind),
                         label=KIND_NAMES.get(kind, kind))
    axes[0].axhline(10, color=COLORS["prior"], ls=":", label="chance (10%): the prompt ignored")
    axes[1].axhline(1.0, color=COLORS["truth"], ls="--", lw=1.2, label="real digits")
    label(axes[0], "guidance strength $\\gamma$ (= 1 + w)", "recognised as the prompt (%)",
          "the judge agrees with the prompt")
    label(axes[1], "guidance strength $\\gamma$ (= 1 + w)", "diversity / diversity of real digits",
          "how varied the samples of a digit are")
    axes[0].set_ylim(0, 104)
    axes[1].set_ylim(bottom=0)
    for ax in axes:
        ax.legend()
    return fig


def tradeoff_markdown(rows: list[dict]) -> str:
    """``tradeoff_table`` rows as a markdown table: guidance, gamma, w (classifier-free), recognised, diversity,
    the Frechet distance where the rows have one, and the distinct images each row rests on. Where a row is
    ``unconditional`` (the prompt is ignored: classifier guidance at gamma = 0) "recognised" is marked as the
    chance level it is."""
    from .metrics import markdown_table

    table = []
    for r in rows:
        rec = f"{r['recognised']:.1%}" + (" (chance: prompt ignored)" if r.get("unconditional") else "")
        table.append({**r, "kind": KIND_NAMES.get(r["kind"], r["kind"]), "recognised": rec,
                      "w": "" if r["kind"] != "cfg" else f"{r['gamma'] - 1:g}"})
    columns = {"kind": "guidance", "gamma": "γ", "w": "w", "recognised": "recognised by the judge",
               "diversity": "diversity"}
    if any("frechet" in r for r in rows):
        columns["frechet"] = "Fréchet distance"
    if any("images" in r for r in rows):
        columns["images"] = "distinct images"
    return markdown_table(table, columns, {"gamma": "g", "diversity": ".2f", "frechet": ".1f"})
