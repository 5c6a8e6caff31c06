"""The forward process q(x^t | x^0) over t: compute functions, static figures and the noising-trajectory widget.

The chain x^t = sqrt(alpha_t) x^{t-1} + sqrt(1 - alpha_t) eps_t has the closed form
x^t | x^0 ~ N(sqrt(alpha_bar_t) x^0, (1 - alpha_bar_t) I), and x^{t-1} | x^0, x^t ~ N(a_t x^0 + b_t x^t, c_t I).

Pure compute functions (tested headlessly against the exact core):

- ``simulate_paths(x0, schedule, generator)``: the chain, step by step, (T + 1, n, ...).
- ``noised_density_grid(mixture, schedule, xs)``: the exact density of x^t on a grid for every t, (T + 1, m).
- ``path_histograms(paths, edges)``: histogram densities of simulated x^t for every t, (T + 1, bins).
- ``hdr_levels(density, cell_area, masses)``: density levels enclosing the given probability masses.
- ``fit_posterior_coefficients(paths, ts)``: regress simulated x^{t-1} on (x^0, x^t): fitted a_t, b_t, c_t.
- ``moment_zscores(schedule, paths)``: z-scores of the simulated mean and variance of x^t against the closed form.

Static figures for notebook 04 (each returns a pyplot Figure): ``figure_closed_form_check``,
``figure_schedules``, ``figure_posterior_coefficients``.

Views (``WidgetView``; a t slider and a schedule dropdown; everything precomputed at construction):
``NoisingView1D`` (a 1-D mixture), ``NoisingView2D`` (2-D points or a 2-D mixture), ``NoisingViewImages``
(a row of images, e.g. MNIST digits); ``noising_widget(data)`` picks the right one.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import as_tensor, check_timestep, describe
from ..densities import GaussianMixture
from ..plotting import COLORS, image_grid, label, to_numpy
from ..schedules import NoiseSchedule
from ._base import WidgetView, cache_axes_rasters, cache_raster

__all__ = [
    "NoisingView1D",
    "NoisingView2D",
    "NoisingViewImages",
    "figure_closed_form_check",
    "figure_posterior_coefficients",
    "figure_schedules",
    "fit_posterior_coefficients",
    "hdr_levels",
    "moment_zscores",
    "noised_density_grid",
    "noising_widget",
    "path_histograms",
    "posterior_fit_table",
    "simulate_paths",
]


# ============================================================================================ compute
def _check_schedule(schedule, name: str = "schedule") -> NoiseSchedule:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"{name}: expected a NoiseSchedule (e.g. NoiseSchedule.cosine(1000)), got {describe(schedule)}")
    return schedule


def _check_generator(generator) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {describe(generator)}")
    return generator


def simulate_paths(x0, schedule: NoiseSchedule, generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the forward chain x^t = sqrt(alpha_t) x^{t-1} + sqrt(1 - alpha_t) eps_t, t = 1..T, one step at a time.

    x0: shape (n, ...). Returns paths of shape (T + 1, n, ...) with ``paths[0] = x0`` and ``paths[t]`` = x^t,
    in the dtype of x0 (float tensors keep theirs; anything else becomes float64), on the CPU.
    Uses no closed form, so it is the independent reference that q(x^t | x^0) is checked against.
    """
    schedule = _check_schedule(schedule)
    generator = _check_generator(generator)
    x = as_tensor(x0, "x0", dtype=None)
    if not x.is_floating_point():
        x = x.to(torch.float64)
    if x.ndim == 0:
        raise ValueError(f"x0: expected a batch of shape (n, ...), got a 0-d {describe(x)}")
    x = x.detach().cpu()
    paths = torch.empty((schedule.T + 1, *x.shape), dtype=x.dtype)
    paths[0] = x
    keep = schedule.alphas.sqrt().tolist()
    noise = (1.0 - schedule.alphas).sqrt().tolist()
    for t in range(1, schedule.T + 1):
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        torch.add(keep[t] * paths[t - 1], eps, alpha=noise[t], out=paths[t])
    return paths


def noised_density_grid(mixture: GaussianMixture, schedule: NoiseSchedule, xs) -> torch.Tensor:
    """The exact density q(x^t) of the noised mixture at the points ``xs``, for every t = 0..T.

    q(x^t) = mixture.noised(alpha_bar_t).prob(xs). xs: shape (m,) for a 1-D mixture, or (m, d).
    Returns float64 of shape (T + 1, m); row 0 is the data density itself (alpha_bar_0 = 1).
    """
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture: expected a GaussianMixture, got {describe(mixture)}")
    schedule = _check_schedule(schedule)
    pts = as_tensor(xs, "xs", dtype=torch.float64, ndim=(1, 2))
    if pts.ndim == 1:
        if mixture.d != 1:
            raise ValueError(f"xs: expected points of shape (m, {mixture.d}) for this {mixture.d}-D mixture, "
                             f"got shape {tuple(pts.shape)}")
        pts = pts[:, None]
    out = torch.empty(schedule.T + 1, pts.shape[0], dtype=torch.float64)
    for t, ab in enumerate(schedule.alpha_bars.tolist()):
        out[t] = mixture.noised(ab).log_prob(pts).exp()
    return out


def path_histograms(paths, edges) -> torch.Tensor:
    """Histogram densities of 1-D paths for every t: counts / (n * bin width), so each row integrates to 1.

    paths: shape (T + 1, n) or (T + 1, n, 1). edges: shape (bins + 1,), increasing. Returns float64
    (T + 1, bins). Samples outside the edges are counted nowhere (a row then integrates to less than 1).
    """
    p = as_tensor(paths, "paths", dtype=torch.float64)
    if p.ndim == 3 and p.shape[2] == 1:
        p = p[..., 0]
    if p.ndim != 2:
        raise ValueError(f"paths: expected shape (T + 1, n) or (T + 1, n, 1), got {tuple(p.shape)}")
    e = as_tensor(edges, "edges", dtype=torch.float64, ndim=1)
    if e.shape[0] < 2 or not bool((torch.diff(e) > 0).all()):
        raise ValueError(f"edges: expected at least 2 increasing bin edges, got shape {tuple(e.shape)}")
    bins = e.shape[0] - 1
    idx = torch.bucketize(p, e, right=True) - 1  # bin i holds edges[i] <= x < edges[i+1]
    idx[p == e[-1]] = bins - 1  # the last bin is closed, as in numpy.histogram
    inside = (idx >= 0) & (idx < bins)
    rows = torch.arange(p.shape[0])[:, None].expand_as(idx)
    flat = (rows * bins + idx.clamp(0, bins - 1))[inside]
    counts = torch.bincount(flat, minlength=p.shape[0] * bins).reshape(p.shape[0], bins).to(torch.float64)
    return counts / (p.shape[1] * torch.diff(e))


def hdr_levels(density, cell_area: float, masses=(0.5, 0.9)) -> np.ndarray:
    """Density levels whose super-level sets {p >= level} hold the given probability masses (on a grid).

    density: array of grid values (any shape), cell_area: the area of one grid cell. Returns the levels
    as an increasing numpy array (the largest mass gives the lowest level), for contour lines.
    """
    p = np.sort(to_numpy(density).ravel())[::-1]
    cum = np.cumsum(p) * float(cell_area)
    total = cum[-1]
    levels = [p[min(int(np.searchsorted(cum, m * total)), p.size - 1)] for m in masses]
    return np.sort(np.asarray(levels, dtype=np.float64))


def fit_posterior_coefficients(paths, ts) -> dict[str, np.ndarray]:
    """Least-squares regression of simulated x^{t-1} on (x^0, x^t), one fit per t in ``ts``.

    paths: shape (T + 1, n) or (T + 1, n, 1), e.g. from ``simulate_paths``, with x^0 = paths[0] varying
    across the n rows. Model: x^{t-1} = a x^0 + b x^t + noise (no intercept; the true one is 0).
    Returns numpy arrays of shape (len(ts),): ``t``, ``a``, ``b``, ``c`` (residual variance, n - 2
    degrees of freedom) and the standard errors ``a_se``, ``b_se``, ``c_se`` (c_se assumes Gaussian residuals).
    """
    p = as_tensor(paths, "paths", dtype=torch.float64)
    if p.ndim == 3 and p.shape[2] == 1:
        p = p[..., 0]
    if p.ndim != 2 or p.shape[1] < 3:
        raise ValueError(f"paths: expected shape (T + 1, n) or (T + 1, n, 1) with n >= 3, got {tuple(p.shape)}")
    T, n = p.shape[0] - 1, p.shape[1]
    tt = check_timestep(torch.as_tensor(ts), T, "ts").reshape(-1).tolist()
    out = {k: np.empty(len(tt)) for k in ("t", "a", "b", "c", "a_se", "b_se", "c_se")}
    x0 = p[0].numpy()
    for i, t in enumerate(tt):
        X = np.column_stack([x0, p[t].numpy()])
        y = p[t - 1].numpy()
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        resid = y - X @ coef
        c = float(resid @ resid) / (n - 2)
        # at t = 1, x^0 = x^{t-1} exactly: c = 0 and the covariance of the fit is degenerate
        cov = c * np.linalg.pinv(X.T @ X)
        out["t"][i], out["a"][i], out["b"][i], out["c"][i] = t, coef[0], coef[1], c
        out["a_se"][i], out["b_se"][i] = np.sqrt(np.maximum(np.diag(cov), 0.0))
        out["c_se"][i] = c * math.sqrt(2.0 / (n - 2))
    return out


def moment_zscores(schedule: NoiseSchedule, paths) -> dict[str, np.ndarray]:
    """z-scores of the simulated mean and variance of x^t against q(x^t | x^0), for chains started at one x^0.

    paths: (T + 1, n) or (T + 1, n, 1), every path starting at the same x^0. For t = 1..T:
    z_mean = (mean - sqrt(alpha_bar_t) x^0) / sqrt((1 - alpha_bar_t) / n) and
    z_var = (var - (1 - alpha_bar_t)) / ((1 - alpha_bar_t) sqrt(2 / (n - 1))); each is ~N(0, 1) if the closed
    form is right. Returns numpy arrays of shape (T,): ``t``, ``z_mean``, ``z_var``.
    """
    schedule = _check_schedule(schedule)
    p = _fixed_start_paths(schedule, paths)
    n = p.shape[1]
    x0 = float(p[0, 0])
    ab = to_numpy(schedule.alpha_bars)[1:]
    mean, var = p[1:].mean(1, dtype=np.float64), p[1:].var(1, ddof=1, dtype=np.float64)
    z_mean = (mean - np.sqrt(ab) * x0) / np.sqrt((1 - ab) / n)
    z_var = (var - (1 - ab)) / ((1 - ab) * math.sqrt(2.0 / (n - 1)))
    return {"t": np.arange(1, schedule.T + 1), "z_mean": z_mean, "z_var": z_var}


def posterior_fit_table(schedule: NoiseSchedule, fit: dict) -> str:
    """A text table of ``fit_posterior_coefficients`` output next to the exact a_t, b_t, c_t of ``schedule``."""
    schedule = _check_schedule(schedule)
    a, b, c = (to_numpy(v) for v in schedule.posterior_coefficients(torch.as_tensor(fit["t"].astype(np.int64))))
    lines = [f"{'t':>5} | {'a_t fitted':>18} {'exact':>8} | {'b_t fitted':>18} {'exact':>8} | "
             f"{'c_t fitted':>20} {'exact':>9}"]
    for i, t in enumerate(fit["t"].astype(int)):
        lines.append(f"{t:>5} | {fit['a'][i]:>9.4f} ± {fit['a_se'][i]:<6.4f} {a[i]:>8.4f} | "
                     f"{fit['b'][i]:>9.4f} ± {fit['b_se'][i]:<6.4f} {b[i]:>8.4f} | "
                     f"{fit['c'][i]:>10.3e} ± {fit['c_se'][i]:<7.1e} {c[i]:>9.3e}")
    return "\n".join(lines)


def _fixed_start_paths(schedule: NoiseSchedule, paths) -> np.ndarray:
    p = to_numpy(as_tensor(paths, "paths", dtype=None))
    if p.ndim == 3 and p.shape[2] == 1:
        p = p[..., 0]
    if p.ndim != 2 or p.shape[0] != schedule.T + 1:
        raise ValueError(f"paths: expected shape (T + 1, n) = ({schedule.T + 1}, n), got {p.shape}")
    if not np.all(p[0] == p[0, 0]):
        raise ValueError("paths: expected every path to start at the same x^0 (this conditions on x^0)")
    return p


# ============================================================================================ static figures
def _schedule_dict(schedules) -> dict[str, NoiseSchedule]:
    if isinstance(schedules, NoiseSchedule):
        return {schedules.name: schedules}
    if isinstance(schedules, dict):
        for k, s in schedules.items():
            _check_schedule(s, f"schedules[{k!r}]")
        return dict(schedules)
    try:
        items = list(schedules)
    except TypeError:
        raise TypeError(f"schedules: expected a NoiseSchedule, a list of them or a dict name -> schedule, "
                        f"got {describe(schedules)}") from None
    out = {}
    for i, s in enumerate(items):
        out[_check_schedule(s, f"schedules[{i}]").name] = s
    return out


_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D")


def figure_closed_form_check(schedule: NoiseSchedule, paths, ts, bins: int = 60):
    """The simulated chain against q(x^t | x^0) = N(sqrt(alpha_bar_t) x^0, (1 - alpha_bar_t)) for one fixed x^0.

    paths: (T + 1, n) or (T + 1, n, 1) from ``simulate_paths`` started at a single value x^0 (every row the
    same). Left: mean and variance of x^t vs t, simulation (markers) and closed form (black).
    Right: histograms of x^t at the steps ``ts`` with the closed-form density (black). Returns the Figure.
    """
    import matplotlib.pyplot as plt

    schedule = _check_schedule(schedule)
    p = _fixed_start_paths(schedule, paths)
    x0 = float(p[0, 0])
    ab = to_numpy(schedule.alpha_bars)
    steps = np.arange(schedule.T + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    every = max(1, schedule.T // 25)
    sub = steps[::every]
    ax1.plot(steps, np.sqrt(ab) * x0, color=COLORS["truth"], label=r"$\sqrt{\bar\alpha_t}\,x^0$")
    ax1.plot(steps, 1 - ab, color=COLORS["truth"], ls="--", label=r"$1-\bar\alpha_t$")
    ax1.plot(sub, p[sub].mean(1, dtype=np.float64), "o", color=COLORS["samples"], ms=5, label="chain: mean")
    ax1.plot(sub, p[sub].var(1, dtype=np.float64), "s", color=COLORS["model"], ms=5, label="chain: variance")
    label(ax1, "step $t$", "mean and variance of $x^t$",
          f"$x^0 = {x0:g}$, {schedule.name} schedule, {p.shape[1]:,} chains")
    ax1.set_ylim(min(0.0, 1.15 * x0) - 0.07, max(1.0, x0) * 1.15 + 0.05)  # headroom for the legend
    ax1.legend(loc="upper right", fontsize="small", ncols=2)
    cmap = plt.get_cmap("viridis")
    lo, hi = min(float(p[list(ts)].min()), -3.5), max(float(p[list(ts)].max()), 3.5)
    grid = np.linspace(lo, hi, 400)
    for i, t in enumerate(ts):
        colour = cmap(i / max(1, len(ts) - 1) * 0.9)
        ax2.hist(p[t], bins=bins, range=(lo, hi), density=True, color=colour, alpha=0.45,
                 label=rf"chain, $t={t}$ ($\bar\alpha_t={ab[t]:.2g}$)")
        sd = math.sqrt(1 - ab[t])
        dens = np.exp(-0.5 * ((grid - math.sqrt(ab[t]) * x0) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
        ax2.plot(grid, dens, color=COLORS["truth"], lw=1.5, label="closed form" if i == len(ts) - 1 else None)
    label(ax2, "$x^t$", "density", r"histograms vs $N(\sqrt{\bar\alpha_t}x^0,\ 1-\bar\alpha_t)$")
    ax2.legend(loc="upper left", fontsize="small")
    return fig


def figure_schedules(schedules):
    """alpha_bar_t vs t (left) and the signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) on a log axis (right).

    schedules: a NoiseSchedule, a list of them, or a dict label -> schedule. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    scheds = _schedule_dict(schedules)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    for i, (name, s) in enumerate(scheds.items()):
        steps = np.arange(s.T + 1)
        ls = _LINESTYLES[i % len(_LINESTYLES)]
        ax1.plot(steps, to_numpy(s.alpha_bars), color=COLORS["truth"], ls=ls, label=name)
        ax2.semilogy(steps[1:], to_numpy(s.snr)[1:], color=COLORS["truth"], ls=ls, label=name)
    label(ax1, "step $t$", r"$\bar\alpha_t$", r"signal kept: $\bar\alpha_t=\prod_{s\leq t}\alpha_s$")
    label(ax2, "step $t$", r"SNR $\bar\alpha_t/(1-\bar\alpha_t)$", "signal-to-noise ratio (log scale)")
    ax2.axhline(1.0, color=COLORS["prior"], lw=1, ls=":", label="SNR = 1")
    ax1.legend()
    ax2.legend()
    return fig


def figure_posterior_coefficients(schedules, fits: dict | None = None):
    """a_t, b_t, c_t of q(x^{t-1} | x^0, x^t) vs t for each schedule (black), with regression estimates (markers).

    schedules: as in ``figure_schedules``. fits: optional dict label -> ``fit_posterior_coefficients`` output,
    drawn as markers with +-2 standard-error bars. t is on a log axis (a_t and b_t change most in the first
    steps); c_t is on a log axis too, next to beta_t (dotted), the variance of one forward step. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    scheds = _schedule_dict(schedules)
    fits = fits or {}
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.6), layout="constrained")
    names = ("a", "b", "c")
    beta_lines = []
    for i, (name, s) in enumerate(scheds.items()):
        steps = np.arange(1, s.T + 1)
        coefs = [to_numpy(v) for v in s.posterior_coefficients(torch.as_tensor(steps))]
        ls = _LINESTYLES[i % len(_LINESTYLES)]
        for ax, v in zip(axes, coefs, strict=True):
            ax.plot(steps, v, color=COLORS["truth"], ls=ls, label=f"exact, {name}")
        beta_lines += axes[2].plot(steps, to_numpy(s.betas[1:]), color=COLORS["prior"], ls=ls, lw=1.2,
                                   label=rf"$\beta_t = 1 - \alpha_t$, {name}")
        if name in fits:
            f = fits[name]
            for ax, k in zip(axes, names, strict=True):
                ax.errorbar(f["t"], f[k], yerr=2 * f[f"{k}_se"], fmt=_MARKERS[i % len(_MARKERS)], ms=6,
                            color=COLORS["samples"] if i == 0 else COLORS["model"], capsize=2, mfc="none", mew=1.5,
                            label=f"regression, {name}")
    for ax in axes:
        ax.set_xscale("log")
    axes[2].set_yscale("log")
    label(axes[0], "step $t$ (log scale)", "$a_t$", "$a_t$: weight on $x^0$")
    label(axes[1], "step $t$ (log scale)", "$b_t$", "$b_t$: weight on $x^t$")
    label(axes[2], "step $t$ (log scale)", "$c_t$ (log scale)", "$c_t$: variance of $x^{t-1}\\mid x^0,x^t$")
    # one legend for the three panels: the same schedules and estimates appear in each
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles + beta_lines, labels + [h.get_label() for h in beta_lines], loc="outside lower center",
               ncols=len(handles) + len(beta_lines), fontsize="small")
    return fig


# ============================================================================================ views
def _default_schedules(T: int, schedules) -> dict[str, NoiseSchedule]:
    if schedules is None:
        return {"linear": NoiseSchedule.linear(T), "cosine": NoiseSchedule.cosine(T)}
    scheds = _schedule_dict(schedules)
    if not scheds:
        raise ValueError("schedules: expected at least one schedule, got none")
    Ts = {s.T for s in scheds.values()}
    if len(Ts) != 1:
        raise ValueError(f"schedules: expected schedules with the same T (one t slider), got T = {sorted(Ts)}")
    return scheds


class _NoisingView(WidgetView):
    """Shared machinery: the controls (``t`` slider, ``schedule`` dropdown) and schedule-change detection.

    Subclasses precompute per-schedule arrays in ``_precompute(name, schedule)`` (called once per schedule
    at construction), draw in ``_build`` and update in ``_show_schedule(name)`` (artists that depend on the
    schedule only) and ``_show_t(t, name)`` (artists that move with t).
    """

    figsize = (9.0, 3.9)

    def __init__(self, *, T: int, schedules, t: int | None, seed: int):
        self.schedules = _default_schedules(T, schedules)
        self.T = next(iter(self.schedules.values())).T
        self.seed = int(seed)
        self._t0 = self.T // 4 if t is None else int(check_timestep(t, self.T, "t", allow_zero=True))
        self._shown_schedule = None
        self.pre = {name: self._precompute(name, s) for name, s in self.schedules.items()}
        super().__init__()  # lays the figure out once, then freezes it

    def _generator(self) -> torch.Generator:
        # the same seed for every schedule: common random numbers, so switching schedules changes only the schedule
        return torch.Generator().manual_seed(self.seed)

    def _controls(self) -> dict:
        import ipywidgets as W

        return {
            "t": W.IntSlider(value=self._t0, min=0, max=self.T, step=1, description="t",
                             continuous_update=True, layout=W.Layout(width="300px")),
            "schedule": W.Dropdown(options=list(self.schedules), value=next(iter(self.schedules)),
                                   description="schedule", layout=W.Layout(width="300px")),
        }

    def _precompute(self, name: str, schedule: NoiseSchedule) -> dict:
        raise NotImplementedError

    def _show_schedule(self, name: str) -> None:
        raise NotImplementedError

    def _show_t(self, t: int, name: str) -> None:
        raise NotImplementedError

    def _update(self, t: int, schedule: str) -> None:
        if schedule != self._shown_schedule:
            self._show_schedule(schedule)
            self._shown_schedule = schedule
        self._show_t(int(t), schedule)

    @staticmethod
    def _few_ticks(ax, nx: int = 4, ny: int = 4) -> None:
        # every tick label is re-rendered on every draw: a few of them keep a slider move cheap
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nx))
        ax.yaxis.set_major_locator(MaxNLocator(ny))

    def _title(self, t: int, name: str) -> str:
        # plain text (ᾱₜ, not mathtext): a new string on every move would be parsed as mathtext on every draw
        ab = float(self.schedules[name].alpha_bars[t])
        return f"t = {t}:  \u1fb1\u209c = {ab:.3f}"

    @staticmethod
    def _key(ax, entries, x: float = 0.02, y: float = 0.98, ha: str = "left", fontsize="small") -> list:
        """A legend made of coloured text lines (marker glyph + label) in axes coordinates.

        A matplotlib Legend re-lays out its boxes on every draw, which cost a fifth of a slider move here;
        plain texts do not. ``entries``: (glyph, label, colour) triples, top to bottom.
        """
        from matplotlib.font_manager import FontProperties

        step = 1.35 * FontProperties(size=fontsize).get_size_in_points()  # line spacing, whatever the axes' height
        return [ax.annotate(f"{glyph}  {text}", (x, y), xycoords="axes fraction", xytext=(0, -step * i),
                            textcoords="offset points", color=colour, ha=ha, va="top", fontsize=fontsize)
                for i, (glyph, text, colour) in enumerate(entries)]

    # a coefficient strip: sqrt(alpha_bar_t) (signal) and sqrt(1 - alpha_bar_t) (noise) vs t, a marker at t
    def _build_coefficients(self, ax) -> None:
        steps = np.arange(self.T + 1)
        zeros = np.zeros(self.T + 1)
        (self._signal_line,) = ax.plot(steps, zeros, color=COLORS["truth"])
        (self._noise_line,) = ax.plot(steps, zeros, color=COLORS["truth"], ls="--")
        self._coef_t = ax.axvline(0, color=COLORS["gap"], lw=1.5)
        ax.set_xlim(0, self.T)
        ax.set_ylim(-0.02, 1.05)
        ax.set_xticks([0, self.T // 2, self.T])
        ax.set_yticks([0.0, 0.5, 1.0])
        label(ax, "step t", "coefficient")
        self._key(ax, [("——", "√ᾱₜ  (signal)", COLORS["truth"]), ("– –", "√(1 − ᾱₜ)  (noise)", COLORS["truth"]),
                       ("│", "current t", COLORS["gap"])], x=0.98, y=0.7, ha="right")
        for line in (self._signal_line, self._noise_line):  # they change with the schedule only
            cache_raster(line, key=lambda: self._shown_schedule)

    def _cache_static(self, fig, *extra) -> None:
        # axes (ticks, labels), legends, keys and static titles from cached pictures: most of a full draw was
        # their text, re-rendered on every move of t
        cache_axes_rasters(fig, *extra, *(t for ax in fig.axes for t in ax.texts))

    def _show_schedule_coefficients(self, name: str) -> None:
        ab = to_numpy(self.schedules[name].alpha_bars)
        self._signal_line.set_ydata(np.sqrt(ab))
        self._noise_line.set_ydata(np.sqrt(1 - ab))


class NoisingView1D(_NoisingView):
    """The noising trajectory of a 1-D Gaussian mixture: the exact density of x^t over (t, x), paths, and q(x^t).

    Left: heat map of q(x^t) (``noised_density_grid``; dark = dense) over t (horizontal) and x (vertical), a
    few simulated chain paths, and a vertical line at the current t. Right: the exact q(x^t) at the current t
    (black) with a histogram of ``n_samples`` simulated chains at t.

    mixture: a GaussianMixture with d = 1. T: steps of the default schedules (linear and cosine); or pass
    ``schedules`` (a dict name -> NoiseSchedule, all with the same T). xlim: the x range (default
    +-max(3.5, data range)). ``n_points`` grid points, ``bins`` histogram bins. Precomputed per schedule:
    density (T + 1, n_points), histograms (T + 1, bins), paths (T + 1, n_paths), and the heat map as RGBA
    (n_points, ~(T + 1) / k, 4) uint8, every k-th step with k = ceil((T + 1) / 400).
    """

    figsize = (9.0, 3.9)

    def __init__(self, mixture: GaussianMixture, *, T: int = 1000, schedules=None, n_samples: int = 2000,
                 n_paths: int = 4, n_points: int = 241, bins: int = 60, xlim=None, t: int | None = None,
                 seed: int = 0):
        if not isinstance(mixture, GaussianMixture) or mixture.d != 1:
            raise TypeError(f"mixture: expected a 1-D GaussianMixture (d = 1), got {describe(mixture)}"
                            + (f" with d = {mixture.d}" if isinstance(mixture, GaussianMixture) else ""))
        self.mixture = mixture
        self.n_samples, self.n_paths = int(n_samples), int(n_paths)
        if self.n_samples < self.n_paths or self.n_paths < 0:
            raise ValueError(f"n_paths: expected 0 <= n_paths <= n_samples = {self.n_samples}, got {n_paths}")
        self.x0 = mixture.sample(self.n_samples, generator=torch.Generator().manual_seed(seed))
        if xlim is None:
            r = max(3.5, float(self.x0.abs().max()) * 1.05)
            xlim = (-r, r)
        self.xlim = (float(xlim[0]), float(xlim[1]))
        self.xs = torch.linspace(*self.xlim, int(n_points), dtype=torch.float64)
        self.edges = torch.linspace(*self.xlim, int(bins) + 1, dtype=torch.float64)
        super().__init__(T=T, schedules=schedules, t=t, seed=seed + 1)

    def _precompute(self, name, schedule):
        paths = simulate_paths(self.x0, schedule, self._generator())[..., 0]  # (T + 1, n)
        return {
            "density": to_numpy(noised_density_grid(self.mixture, schedule, self.xs)),  # (T + 1, m)
            "hist": to_numpy(path_histograms(paths, self.edges)),  # (T + 1, bins)
            "paths": to_numpy(paths[:, : self.n_paths]),  # (T + 1, n_paths)
        }

    def _build(self, fig):
        import matplotlib as mpl
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator

        ax, axd = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1.1])
        self.ax_heat, self.ax_density = ax, axd
        pmax = max(float(p["density"].max()) for p in self.pre.values())
        hmax = max(float(p["hist"].max()) for p in self.pre.values())
        # The heat map as precomputed RGBA (grey level ~ sqrt(density), one scale for all schedules): a draw then
        # only resamples pixels, with no normalisation or colour mapping of (T + 1) x n_points values.
        # Every k-th step only: at most 400 columns, about the axes' width in pixels (resampling is the cost).
        greys = mpl.colormaps["Greys"]
        k = max(1, math.ceil((self.T + 1) / 400))
        for pre in self.pre.values():
            pre["rgba"] = greys(np.sqrt(pre["density"][::k].T / pmax), bytes=True)  # (n_points, ~(T + 1) / k, 4)
        xs = to_numpy(self.xs)
        dx = xs[1] - xs[0]
        ncols = len(range(0, self.T + 1, k))
        self._heat = ax.imshow(np.zeros((len(xs), ncols, 4), dtype=np.uint8), origin="lower", aspect="auto",
                               interpolation="nearest",
                               extent=(-k / 2, (ncols - 1) * k + k / 2, xs[0] - dx / 2, xs[-1] + dx / 2))
        ax.set_xlim(0, self.T)
        steps = np.arange(self.T + 1)
        self._paths = [ax.plot(steps, np.zeros(self.T + 1), color=COLORS["samples"], lw=0.8, alpha=0.8)[0]
                       for _ in range(self.n_paths)]
        self._vline = ax.axvline(self._t0, color=COLORS["gap"], lw=2)
        label(ax, "step t", "xᵗ")
        heat_title = ax.set_title("exact density of xᵗ (dark = high) and chain paths", y=1.0)
        ax.set_ylim(*self.xlim)
        ax.set_xticks([0, self.T // 4, self.T // 2, 3 * self.T // 4, self.T])
        ax.yaxis.set_major_locator(MaxNLocator(4))
        handles = [Line2D([], [], color=COLORS["truth"], label="exact q(xᵗ)"),
                   Line2D([], [], color=COLORS["samples"], label=f"simulated chains (n = {self.n_samples:,})"),
                   Line2D([], [], color=COLORS["gap"], label="current t")]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small")
        edges = to_numpy(self.edges)
        self._hist = axd.stairs(np.zeros(len(edges) - 1), edges, orientation="horizontal", fill=True,
                                color=COLORS["samples"], alpha=0.45)
        (self._curve,) = axd.plot(np.zeros(len(xs)), xs, color=COLORS["truth"])
        axd.set_xlim(0, 1.05 * max(pmax, hmax))
        axd.set_xticks([])  # the shape matters here, not the density's units
        axd.yaxis.set_visible(False)  # shared with the heat map, which labels it
        self._dtitle = axd.set_title(self._title(self._t0, next(iter(self.schedules))), y=1.0)
        axd.set_xlabel("density at t")
        # the heat map and the paths change with the schedule only: resampling the image was a fifth of a draw
        for artist in (self._heat, *self._paths):
            cache_raster(artist, key=lambda: self._shown_schedule)
        self._cache_static(fig, heat_title)

    def _show_schedule(self, name):
        pre = self.pre[name]
        self._heat.set_data(pre["rgba"])
        for i, line in enumerate(self._paths):
            line.set_ydata(pre["paths"][:, i])

    def _show_t(self, t, name):
        pre = self.pre[name]
        self._vline.set_xdata([t, t])
        self._hist.set_data(values=pre["hist"][t])
        self._curve.set_xdata(pre["density"][t])
        self._dtitle.set_text(self._title(t, name))


class NoisingView2D(_NoisingView):
    """The noising trajectory of a 2-D data set: the cloud of x^t, a few paths, and exact contours for a mixture.

    Left: ``n_samples`` chains at the current t (scatter), the paths of ``n_paths`` of them up to t, and, when
    ``data`` is a GaussianMixture, black contours of the exact q(x^t) enclosing 50% and 90% of the mass.
    Right: sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) vs t with the current t marked.

    data: a GaussianMixture with d = 2 (``n_samples`` points are drawn from it) or points of shape (n, 2)
    (e.g. ``two_moons(1000)``). lim: the axes show [-lim, lim]^2. Precomputed per schedule: the cloud
    (T + 1, n, 2) in float32; contours are computed per move on a ``n_grid`` x ``n_grid`` grid (a few ms).
    """

    figsize = (9.0, 4.0)

    def __init__(self, data, *, T: int = 1000, schedules=None, n_samples: int = 1000, n_paths: int = 3,
                 lim: float = 3.5, n_grid: int = 60, masses=(0.5, 0.9), t: int | None = None, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        if isinstance(data, GaussianMixture):
            if data.d != 2:
                raise ValueError(f"data: expected a 2-D mixture (d = 2), got d = {data.d}")
            self.mixture = data
            x0 = data.sample(int(n_samples), generator=gen)
        else:
            self.mixture = None
            x0 = as_tensor(data, "data", dtype=torch.float64, shape=(None, 2))
        self.x0 = x0
        self.n_paths = min(int(n_paths), x0.shape[0])
        self.lim = float(lim)
        self.masses = tuple(masses)
        g = np.linspace(-self.lim, self.lim, int(n_grid))
        self._grid_axis = g
        gx, gy = np.meshgrid(g, g)
        self._grid_pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float64)
        self._cell_area = float((g[1] - g[0]) ** 2)
        super().__init__(T=T, schedules=schedules, t=t, seed=seed + 1)

    def _precompute(self, name, schedule):
        return {"cloud": to_numpy(simulate_paths(self.x0.to(torch.float32), schedule, self._generator()))}

    def contour_segments(self, t: int, name: str) -> list[np.ndarray]:
        """Contour lines of the exact q(x^t) at the ``masses`` levels: a list of (k, 2) polylines ([] if no mixture)."""
        if self.mixture is None:
            return []
        import contourpy

        ab = float(self.schedules[name].alpha_bars[t])
        n = len(self._grid_axis)
        dens = self.mixture.noised(ab).log_prob(self._grid_pts).exp().numpy().reshape(n, n)
        gen = contourpy.contour_generator(self._grid_axis, self._grid_axis, dens)
        segs = []
        for level in hdr_levels(dens, self._cell_area, self.masses):
            segs.extend(gen.lines(level))
        return segs

    def _build(self, fig):
        from matplotlib.collections import LineCollection

        ax, axc = fig.subplots(1, 2, width_ratios=[1.1, 1])
        self.ax_cloud, self.ax_coef = ax, axc
        self._scatter = ax.scatter(np.zeros(len(self.x0)), np.zeros(len(self.x0)), s=5, color=COLORS["samples"],
                                   alpha=0.5, linewidths=0)
        self._paths = [ax.plot([], [], color=COLORS["model"], lw=0.8, alpha=0.9)[0] for _ in range(self.n_paths)]
        if self.mixture is not None:
            self._contours = LineCollection([], colors=COLORS["truth"], linewidths=1.3)
            ax.add_collection(self._contours)
        ax.set_xlim(-self.lim, self.lim)
        ax.set_ylim(-self.lim, self.lim)
        ax.set_aspect("equal")
        self._few_ticks(ax, 3, 3)
        label(ax, "xᵗ₁", "xᵗ₂")
        self._ctitle = ax.set_title(self._title(self._t0, next(iter(self.schedules))), y=1.0)
        entries = [("●", f"{len(self.x0):,} chains xᵗ", COLORS["samples"])]
        if self.n_paths:
            entries.append(("——", "chain paths up to t", COLORS["model"]))
        if self.mixture is not None:
            pct = ", ".join(f"{m:.0%}" for m in self.masses)
            entries.append(("——", f"exact q(xᵗ): {pct} regions", COLORS["truth"]))
        self._key(ax, entries, fontsize="x-small")
        self._build_coefficients(axc)
        self._cache_static(fig, axc.set_title("xᵗ = √ᾱₜ x⁰ + √(1 − ᾱₜ) ε", y=1.0))

    def _show_schedule(self, name):
        self._show_schedule_coefficients(name)

    def _show_t(self, t, name):
        cloud = self.pre[name]["cloud"]
        self._scatter.set_offsets(cloud[t])
        for i, line in enumerate(self._paths):
            line.set_data(cloud[: t + 1, i, 0], cloud[: t + 1, i, 1])
        if self.mixture is not None:
            self._contours.set_segments(self.contour_segments(t, name))
        self._coef_t.set_xdata([t, t])
        self._ctitle.set_text(self._title(t, name))


class NoisingViewImages(_NoisingView):
    """The noising trajectory of a few images (e.g. MNIST digits): a row of x^t, one chain per image.

    images: shape (n, H, W) or (n, 1, H, W) with pixels in [0, 1]; they are mapped to x^0 = 2 x - 1 in [-1, 1]
    (the scale diffusion models train on) before noising, and x^t is shown clipped to [-1, 1] (grey = 0).
    Top: the row of x^t. Bottom: sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) vs t with the current t marked.
    Precomputed per schedule: paths (T + 1, n, H, W) in float32 (n = 8 digits, T = 1000: 25 MB).
    """

    figsize = (9.0, 3.8)

    def __init__(self, images, *, T: int = 1000, schedules=None, t: int | None = None, seed: int = 0):
        x = as_tensor(images, "images", dtype=torch.float32)
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 3 or x.shape[0] < 1:
            raise ValueError(f"images: expected shape (n, H, W) or (n, 1, H, W), got {tuple(x.shape)}")
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise ValueError(f"images: expected pixels in [0, 1] (as from mnist_tensors), got values in "
                             f"[{float(x.min()):.3g}, {float(x.max()):.3g}]")
        self.x0 = 2.0 * x - 1.0  # (n, H, W) in [-1, 1]
        super().__init__(T=T, schedules=schedules, t=t, seed=seed)

    def _precompute(self, name, schedule):
        return {"paths": simulate_paths(self.x0, schedule, self._generator())}

    def row(self, t: int, name: str) -> np.ndarray:
        """The images x^t side by side, clipped to [-1, 1]: shape (H, n W + n - 1), padding value 1."""
        return image_grid(self.pre[name]["paths"][t].clamp(-1.0, 1.0), nrow=len(self.x0), value=1.0)

    def _build(self, fig):
        ax, axc = fig.subplots(2, 1, height_ratios=[1.25, 1])
        self.ax_images, self.ax_coef = ax, axc
        name = next(iter(self.schedules))
        self._image = ax.imshow(self.row(0, name), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{len(self.x0)} images, each noised by its own chain (pixels clipped to [-1, 1])")
        self._ititle = ax.set_title(self._title(self._t0, name), y=1.0)
        self._build_coefficients(axc)
        self._cache_static(fig)

    def _show_schedule(self, name):
        self._show_schedule_coefficients(name)

    def _show_t(self, t, name):
        self._image.set_data(self.row(t, name))
        self._coef_t.set_xdata([t, t])
        self._ititle.set_text(self._title(t, name))


def noising_widget(data, **kw) -> _NoisingView:
    """The noising-trajectory view for ``data``: a 1-D mixture, 2-D points or a 2-D mixture, or images.

    GaussianMixture with d = 1 -> ``NoisingView1D``; d = 2 or points (n, 2) -> ``NoisingView2D``;
    images (n, H, W) or (n, 1, H, W) in [0, 1] -> ``NoisingViewImages``. Keywords go to the view.
    """
    if isinstance(data, GaussianMixture):
        return NoisingView1D(data, **kw) if data.d == 1 else NoisingView2D(data, **kw)
    x = as_tensor(data, "data", dtype=None)
    if x.ndim == 2 and x.shape[1] == 2:
        return NoisingView2D(x, **kw)
    if x.ndim in (3, 4):
        return NoisingViewImages(x, **kw)
    raise ValueError(f"data: expected a GaussianMixture (d = 1 or 2), points of shape (n, 2) or images of shape "
                     f"(n, H, W) / (n, 1, H, W), got shape {tuple(x.shape)}")
