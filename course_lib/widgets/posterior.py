"""The posterior-mean widget: the exact p(x^0 | x^t), its mean E[x^0 | x^t], and a denoiser's guess beside it.

Choose a time step t and a noisy point x^t. For data from a ``GaussianMixture`` the posterior
p(x^0 | x^t) is again a Gaussian mixture (``GaussianMixture.posterior``): component k has weight
p(y = k | x^t) and its own Gaussian-conditioning mean and covariance. Its mean E[x^0 | x^t] is what
a denoiser trained on the x0 target learns (Tweedie: it equals (x^t + (1 - alpha_bar_t) grad log p(x^t))
/ sqrt(alpha_bar_t)). A denoiser predicting eps or the score is converted to x0 with
``course_lib.diffusion.convert`` and drawn beside the exact mean.

Pure compute (tested headlessly against the exact core, timed in bench/section_posterior.py):
- ``posterior_view_data(mixture, schedule, t, x_t, denoiser=None)``: everything drawn for one (t, x^t);
- ``posterior_density_1d(mixture, alpha_bar, x_t)``: p(x^0 | x^t) on a grid refined where it is narrow;
- ``posterior_mean_field(mixture, schedule, t, points, denoiser=None)``: x^t -> E[x^0 | x^t] on many points;
- ``denoiser_x0(denoiser, x_t, t, schedule)``: any denoiser's prediction, as a prediction of x^0.

The view, ``PosteriorMeanView(mixture, schedule, denoiser=None)``, works for 1-D mixtures (sliders t, x)
and 2-D mixtures (sliders t, x, y); it builds its figure once and moves artists in place.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from .._checks import as_float64, check_timestep, describe
from ..densities import GaussianMixture
from ..diffusion import ALL_TARGETS, convert
from ..diffusion_elbo import call_denoiser
from ..plotting import COLORS, to_numpy
from ..schedules import NoiseSchedule
from ._base import WidgetView, cache_axes_rasters, cache_raster

__all__ = [
    "PosteriorMeanView",
    "denoiser_x0",
    "posterior_density_1d",
    "posterior_mean_field",
    "posterior_view_data",
]


# ---------------------------------------------------------------------------------------------- pure compute
def _check_mixture(mixture, dims=None) -> GaussianMixture:
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture: expected a course_lib.GaussianMixture, got {describe(mixture)}")
    if dims is not None and mixture.d not in dims:
        raise ValueError(f"mixture: expected a mixture of dimension {' or '.join(map(str, dims))}, got d = {mixture.d}")
    return mixture


def _check_schedule(schedule) -> NoiseSchedule:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule: expected a course_lib.NoiseSchedule, got {describe(schedule)}")
    return schedule


def _one_step(t, schedule) -> int:
    tt = check_timestep(t, schedule.T, "t")
    if tt.ndim != 0:
        raise ValueError(f"t: expected one time step (an int in 1..{schedule.T}), got shape {tuple(tt.shape)}")
    return int(tt)


def _one_point(x_t, d: int) -> torch.Tensor:
    x = as_float64(x_t, "x_t", finite=False).reshape(-1)
    if x.shape != (d,):
        raise ValueError(f"x_t: expected one point of dimension {d} (a number in 1-D, shape ({d},)), "
                         f"got {x.numel()} value(s)")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x_t: expected finite values, got NaN or inf")
    return x


def _denoiser_target(denoiser, target: str | None) -> str:
    if target is None:
        target = getattr(denoiser, "target", None)
    if target is None:
        raise ValueError("target: the denoiser has no `target` attribute; pass target='x0', 'eps' or 'score'")
    if target not in ALL_TARGETS:
        raise ValueError(f"target: expected one of {ALL_TARGETS}, got {target!r}")
    return target


def denoiser_x0(denoiser, x_t, t: int, schedule, target: str | None = None) -> torch.Tensor:
    """A denoiser's prediction as x0_hat: ``convert(denoiser(x_t, t), target, "x0", x_t, alpha_bar_t)``.

    ``denoiser(x_t, t)``: x_t of shape (n, d), t an int -> a prediction of shape (n, d) of ``target`` ("x0",
    "eps" or "score"; default ``denoiser.target``). A ``torch.nn.Module`` gets x_t on its parameters' device
    and dtype (``course_lib.diffusion_elbo.call_denoiser``). Returns (n, d) float64, CPU.
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser: expected a callable denoiser(x_t, t), got {describe(denoiser)}")
    target = _denoiser_target(denoiser, target)
    schedule = _check_schedule(schedule)
    t = _one_step(t, schedule)
    x = as_float64(x_t, "x_t", ndim=2)
    pred = call_denoiser(denoiser, x, t)
    return convert(pred, target, "x0", x, schedule.alpha_bars[t])


def posterior_density_1d(mixture, alpha_bar, x_t, lim: float = 3.5, n: int = 400):
    """p(x^0 | x^t) of a 1-D mixture on a grid: (grid (m,), density (m,)) as numpy arrays.

    The grid is ``n`` even points on [-lim, lim] plus 81 points within 6 standard deviations of each
    posterior component of weight > 1e-6, so a narrow posterior (small t) is resolved and the
    density integrates to 1 by the trapezoid rule. ``alpha_bar``: a number in (0, 1).
    """
    mixture = _check_mixture(mixture, (1,))
    x = _one_point(x_t, 1)
    post = mixture.posterior(x, alpha_bar)
    sd = post.covs[:, 0, 0].sqrt()
    keep = post.weights > 1e-6
    fine = (post.means[keep, 0, None] + sd[keep, None] * torch.linspace(-6.0, 6.0, 81, dtype=torch.float64)).reshape(-1)
    grid = torch.cat([torch.linspace(-lim, lim, n, dtype=torch.float64), fine]).sort().values
    return to_numpy(grid), to_numpy(post.prob(grid[:, None]))


def posterior_mean_field(mixture, schedule, t: int, points, denoiser=None, target: str | None = None) -> dict:
    """The map x^t -> E[x^0 | x^t] at many points: {"exact": (m, d), "denoiser": (m, d) or None} (numpy).

    ``points``: x^t values, shape (m, d). With a ``denoiser``, its prediction converted to x0 as well.
    """
    mixture = _check_mixture(mixture)
    schedule = _check_schedule(schedule)
    t = _one_step(t, schedule)
    pts = as_float64(points, "points", ndim=2)
    if pts.shape[1] != mixture.d:
        raise ValueError(f"points: expected shape (m, {mixture.d}), got {tuple(pts.shape)}")
    exact = mixture.posterior_mean(pts, schedule.alpha_bars[t])
    learned = None if denoiser is None else to_numpy(denoiser_x0(denoiser, pts, t, schedule, target))
    return {"exact": to_numpy(exact), "denoiser": learned}


def posterior_view_data(mixture, schedule, t: int, x_t, denoiser=None, *, target: str | None = None,
                        lim: float = 3.5) -> dict:
    """Everything the posterior-mean view draws for one time step t and one point x^t (numpy arrays).

    Keys: ``t`` (int), ``alpha_bar`` (float), ``x_t`` (d,), ``weights`` (K,) = p(y = k | x^t),
    ``component_means`` (K, d) and ``component_covs`` (K, d, d) of p(x^0 | x^t), ``posterior_mean`` (d,)
    = E[x^0 | x^t], ``denoiser_x0`` (d,) or None; for a 1-D mixture also ``grid`` (m,) and ``density`` (m,),
    p(x^0 | x^t) on the grid (``posterior_density_1d``).
    """
    mixture = _check_mixture(mixture)
    schedule = _check_schedule(schedule)
    t = _one_step(t, schedule)
    x = _one_point(x_t, mixture.d)
    ab = float(schedule.alpha_bars[t])
    post = mixture.posterior(x, ab)
    out = {
        "t": t,
        "alpha_bar": ab,
        "x_t": to_numpy(x),
        "weights": to_numpy(post.weights),
        "component_means": to_numpy(post.means),
        "component_covs": to_numpy(post.covs),
        "posterior_mean": to_numpy(post.weights @ post.means),
        "denoiser_x0": None if denoiser is None else to_numpy(denoiser_x0(denoiser, x[None], t, schedule, target)[0]),
    }
    if mixture.d == 1:
        out["grid"], out["density"] = posterior_density_1d(mixture, ab, x, lim=lim)
    return out


# ---------------------------------------------------------------------------------------------- the view
def _few_ticks(ax, lim: float, y: bool = True) -> None:
    # Tick labels are most of a full draw's cost (text rendering); a few well-placed ones are also easier to read.
    from matplotlib.ticker import MaxNLocator, MultipleLocator

    step = 1.0 if lim <= 2.0 else 2.0
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.yaxis.set_major_locator(MultipleLocator(step) if y else MaxNLocator(4))


def _ellipse(cov: np.ndarray, n_sd: float = 1.0) -> tuple[float, float, float]:
    """(width, height, angle in degrees) of the n_sd ellipse of a 2x2 covariance."""
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    angle = float(np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1])))
    return 2 * n_sd * float(np.sqrt(vals[1])), 2 * n_sd * float(np.sqrt(vals[0])), angle


class PosteriorMeanView(WidgetView):
    """Sliders t and x^t; draws p(x^0 | x^t), E[x^0 | x^t] and (optionally) a denoiser's prediction.

    ``mixture``: a 1-D or 2-D ``GaussianMixture`` (default ``named_mixture("bimodal_1d")``);
    ``schedule``: a ``NoiseSchedule`` (default ``NoiseSchedule.linear(1000)``); ``denoiser``: optional
    callable ``denoiser(x_t, t)`` with a ``target`` attribute (or pass ``target``), e.g.
    ``ExactDenoiser`` or a trained model; ``denoiser_label``: its legend entry. ``t``, ``x``: initial
    values (``x`` a number in 1-D, a pair in 2-D). ``lim``: the plotted range [-lim, lim] per axis.
    ``field_n``: the 2-D quiver of x^t -> E[x^0 | x^t] is drawn on a field_n x field_n grid.

    1-D: left, the data density p(x^0) and the posterior p(x^0 | x^t) with its mean; right, the whole
    map x^t -> E[x^0 | x^t] at this t with the chosen point on it. 2-D: the data density's contours,
    the field (arrows from x^t to E[x^0 | x^t]), the posterior's components (1-sd ellipses and markers
    whose opacity and size grow with their weight) and mean; right, the weights p(y = k | x^t).
    Controls: ``t``, ``x`` (and ``y`` in 2-D). ``artists`` names every artist that moves.
    """

    _CACHE_SIZE = 256

    def __init__(self, mixture=None, schedule=None, denoiser=None, *, target: str | None = None,
                 denoiser_label: str | None = None, t: int | None = None, x=None, lim: float = 3.0,
                 field_n: int = 11):
        from ..densities import named_mixture

        self.mixture = _check_mixture(named_mixture("bimodal_1d") if mixture is None else mixture, (1, 2))
        self.schedule = _check_schedule(NoiseSchedule.linear(1000) if schedule is None else schedule)
        if denoiser is not None and not callable(denoiser):
            raise TypeError(f"denoiser: expected a callable denoiser(x_t, t), got {describe(denoiser)}")
        self.denoiser = denoiser
        self.target = None if denoiser is None else _denoiser_target(denoiser, target)
        self.denoiser_label = denoiser_label or (f"denoiser ({self.target} target)" if denoiser is not None else "")
        self.d = self.mixture.d
        self.lim = float(lim)
        self.t0 = _one_step(self.schedule.T // 4 if t is None else t, self.schedule)
        default_x = [0.9] if self.d == 1 else [0.6, 0.4]
        self.x0_init = _one_point(default_x if x is None else x, self.d).tolist()
        if isinstance(field_n, bool) or not isinstance(field_n, int) or not 2 <= field_n <= 40:
            raise ValueError(f"field_n: expected an integer in 2..40 (arrows per axis), got {describe(field_n)}")
        self.field_n = field_n
        self._field_cache: OrderedDict[int, dict] = OrderedDict()
        self.figsize = (11.0, 4.3) if self.d == 1 else (11.0, 5.6)
        self.artists: dict = {}
        super().__init__()  # lays the figure out once, then freezes it

    # -- controls --------------------------------------------------------------------------------
    def _controls(self) -> dict:
        import ipywidgets as W

        style = {"description_width": "initial"}
        layout = W.Layout(width="310px")
        c = {"t": W.IntSlider(value=self.t0, min=1, max=self.schedule.T, step=1, description="time step t",
                              style=style, layout=layout, continuous_update=True)}
        names = ["x"] if self.d == 1 else ["x", "y"]
        labels = ["noisy point xᵗ"] if self.d == 1 else ["xᵗ, 1st coordinate", "xᵗ, 2nd coordinate"]
        for name, lab, v in zip(names, labels, self.x0_init, strict=True):
            c[name] = W.FloatSlider(value=float(np.clip(v, -self.lim, self.lim)), min=-self.lim, max=self.lim,
                                    step=0.02, description=lab, style=style, layout=layout,
                                    continuous_update=True, readout_format=".2f")
        return c

    # -- cached per-t field ----------------------------------------------------------------------
    def field(self, t: int) -> dict:
        """``posterior_mean_field`` on the view's grid at step t, cached (a slider move in x only reuses it)."""
        if t in self._field_cache:
            self._field_cache.move_to_end(t)
            return self._field_cache[t]
        out = posterior_mean_field(self.mixture, self.schedule, t, self._field_points, self.denoiser, self.target)
        self._field_cache[t] = out
        if len(self._field_cache) > self._CACHE_SIZE:
            self._field_cache.popitem(last=False)
        return out

    # -- build -----------------------------------------------------------------------------------
    def _build(self, fig) -> None:
        if self.d == 1:
            self._build_1d(fig)
        else:
            self._build_2d(fig)

    def _build_1d(self, fig) -> None:
        lim = self.lim
        ax0, ax1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1.0]})
        self.axes = (ax0, ax1)
        xs = np.linspace(-lim, lim, 400)
        data = to_numpy(self.mixture.prob(torch.as_tensor(xs[:, None])))
        self._data_peak = float(data.max())
        data_fill = ax0.fill_between(xs, data, color=COLORS["data"], alpha=0.25, lw=0, label=r"data $p(x^0)$")
        a = self.artists
        (a["posterior"],) = ax0.plot([], [], color=COLORS["posterior"], lw=2.2, label=r"posterior $p(x^0 \mid x^t)$")
        a["mean_line"] = ax0.axvline(0.0, color=COLORS["truth"], ls="--", lw=1.8, label=r"$\mathbb{E}[x^0 \mid x^t]$")
        a["x_t_line"] = ax0.axvline(0.0, color=COLORS["samples"], ls=":", lw=2.2, label=r"$x^t$", zorder=4)
        if self.denoiser is not None:
            a["denoiser_line"] = ax0.axvline(0.0, color=COLORS["model"], ls="--", lw=1.8, label=self.denoiser_label)
        ax0.set_xlim(-lim, lim)
        ax0.set_xlabel(r"clean value $x^0$")
        ax0.set_ylabel("density")
        ax0.legend(loc="upper left", fontsize=10)
        a["title"] = ax0.set_title(" ")
        _few_ticks(ax0, lim, y=False)

        self._field_points = torch.linspace(-lim, lim, 241, dtype=torch.float64)[:, None]
        gx = to_numpy(self._field_points[:, 0])
        # one legend (left) serves both panels: black = exact, orange = the denoiser, blue = x^t
        (identity,) = ax1.plot(gx, gx, color=COLORS["prior"], ls=":", lw=1.2)
        ax1.text(0.03, 0.97, r"dotted: $x^0 = x^t$ (no denoising)", transform=ax1.transAxes, color=COLORS["prior"],
                 ha="left", va="top", fontsize=10)
        (a["curve"],) = ax1.plot(gx, np.zeros_like(gx), color=COLORS["truth"], lw=2.0)
        if self.denoiser is not None:
            (a["denoiser_curve"],) = ax1.plot(gx, np.zeros_like(gx), color=COLORS["model"], lw=1.8, ls="--")
            (a["denoiser_point"],) = ax1.plot([0.0], [0.0], "o", color=COLORS["model"], ms=7)
        (a["point"],) = ax1.plot([0.0], [0.0], "o", color=COLORS["samples"], ms=8, mec=COLORS["truth"])
        ax1.set_xlim(-lim, lim)
        ax1.set_ylim(-lim, lim)
        ax1.set_xlabel(r"noisy value $x^t$")
        ax1.set_ylabel(r"$\mathbb{E}[x^0 \mid x^t]$, prediction of $x^0$")
        ax1.set_title(r"the whole map $x^t \mapsto \mathbb{E}[x^0 \mid x^t]$")
        _few_ticks(ax1, lim)
        # legends, axes (ticks, labels) and static texts drawn from cached pictures: most of a full draw
        cache_axes_rasters(fig, ax1.title, *ax1.texts)
        # the data density (it moves with the left axis's height only) and the identity line, likewise
        cache_raster(data_fill, key=lambda: tuple(ax0.viewLim.bounds))
        cache_raster(identity)

    def _build_2d(self, fig) -> None:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Ellipse

        lim, a = self.lim, self.artists
        ax0, ax1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.45, 1.0]})
        self.axes = (ax0, ax1)
        X, Y = np.meshgrid(np.linspace(-lim, lim, 90), np.linspace(-lim, lim, 90))
        P = to_numpy(self.mixture.prob(torch.as_tensor(np.stack([X.ravel(), Y.ravel()], 1)))).reshape(X.shape)
        data_contours = ax0.contour(X, Y, P, levels=np.linspace(P.max() / 8, P.max(), 4), colors=COLORS["data"],
                                    linewidths=1.0, alpha=0.8)
        for k, m in enumerate(to_numpy(self.mixture.means)):
            ax0.annotate(str(k), m, xytext=(5, 5), textcoords="offset points", color=COLORS["data"], fontsize=9)
        g = np.linspace(-lim, lim, self.field_n)
        GX, GY = np.meshgrid(g, g)
        self._field_points = torch.as_tensor(np.stack([GX.ravel(), GY.ravel()], 1), dtype=torch.float64)
        a["field"] = ax0.quiver(GX.ravel(), GY.ravel(), np.zeros(GX.size), np.zeros(GX.size), angles="xy",
                                scale_units="xy", scale=1.0, color=COLORS["prior"], alpha=0.5, width=0.003,
                                headwidth=4, headlength=5)
        K = self.mixture.K
        a["ellipses"] = [Ellipse((0, 0), 0.1, 0.1, angle=0.0, facecolor=COLORS["posterior"], edgecolor="none",
                                 alpha=0.0) for _ in range(K)]
        for e in a["ellipses"]:
            ax0.add_patch(e)
        a["components"] = ax0.scatter(np.zeros(K), np.zeros(K), s=np.zeros(K), c=np.zeros((K, 4)), marker="o",
                                      edgecolors="none", zorder=4)
        (a["to_mean"],) = ax0.plot([], [], color=COLORS["truth"], lw=1.2, zorder=4)
        # a ring, drawn above the denoiser's cross: x^t stays visible when a guess lands on it
        (a["x_t"],) = ax0.plot([], [], "o", mfc="none", mec=COLORS["samples"], mew=2.5, ms=13, zorder=8)
        (a["mean"],) = ax0.plot([], [], "*", color=COLORS["truth"], ms=21, mec="white", zorder=6)
        handles = [Line2D([], [], color=COLORS["data"], lw=1.0, label=r"data $p(x^0)$ (k = component)"),
                   Line2D([], [], color=COLORS["prior"], lw=1.0,
                          label=r"arrows $x^t \to \mathbb{E}[x^0 \mid x^t]$"),
                   Line2D([], [], ls="none", marker="o", color=COLORS["posterior"], alpha=0.5, ms=9,
                          label=r"$p(x^0 \mid x^t)$: components by weight"),
                   Line2D([], [], ls="none", marker="o", mfc="none", mec=COLORS["samples"], mew=2.5, ms=11,
                          label=r"$x^t$"),
                   Line2D([], [], ls="none", marker="*", color=COLORS["truth"], ms=14,
                          label=r"$\mathbb{E}[x^0 \mid x^t]$")]
        if self.denoiser is not None:
            (a["denoiser"],) = ax0.plot([], [], "X", color=COLORS["model"], ms=9, mec="white", zorder=7)
            handles.append(Line2D([], [], ls="none", marker="X", color=COLORS["model"], ms=10,
                                  label=self.denoiser_label))
        ax0.set_xlim(-lim, lim)
        ax0.set_ylim(-lim, lim)
        ax0.set_aspect("equal")
        ax0.set_xlabel("1st coordinate")
        ax0.set_ylabel("2nd coordinate")
        a["title"] = ax0.set_title(" ")
        _few_ticks(ax0, lim)

        a["bars"] = ax1.bar(np.arange(K), np.zeros(K), color=COLORS["posterior"], label=r"$p(y = k \mid x^t)$")
        prior_bars = ax1.bar(np.arange(K), to_numpy(self.mixture.weights), fill=False, edgecolor=COLORS["data"],
                             lw=1.5, label=r"prior weight $p(y)$")
        ax1.set_xticks(np.arange(K))
        ax1.set_yticks([0.0, 0.5, 1.0])
        ax1.set_ylim(0, 1.02)
        ax1.set_xlabel("component y")
        ax1.set_ylabel("weight")
        ax1.set_title("posterior weights of the components")
        ax1.legend(loc="upper right", fontsize=10)
        fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=10)
        # legends, axes (ticks, labels) and static texts drawn from cached pictures: most of a full draw
        cache_axes_rasters(fig, ax1.title, *ax0.texts)
        # static data: the data density's contours and the prior weights
        for artist in (data_contours, *prior_bars):
            cache_raster(artist)

    # -- update ----------------------------------------------------------------------------------
    def _update(self, t: int, x: float, y: float | None = None) -> None:
        point = [x] if self.d == 1 else [x, y]
        data = posterior_view_data(self.mixture, self.schedule, t, point, self.denoiser, target=self.target,
                                   lim=max(self.lim, 3.5))
        self.data = data
        field = self.field(data["t"])
        if self.d == 1:
            self._update_1d(data, field)
        else:
            self._update_2d(data, field)

    def _update_1d(self, data: dict, field: dict) -> None:
        a = self.artists
        xt, mean = float(data["x_t"][0]), float(data["posterior_mean"][0])
        a["posterior"].set_data(data["grid"], data["density"])
        a["mean_line"].set_xdata([mean, mean])
        a["x_t_line"].set_xdata([xt, xt])
        inside = np.abs(data["grid"]) <= self.lim
        top = max(self._data_peak, float(data["density"][inside].max()) if inside.any() else 0.0)
        self.axes[0].set_ylim(0.0, 1.1 * top)
        a["curve"].set_ydata(field["exact"][:, 0])
        a["point"].set_data([xt], [mean])
        if self.denoiser is not None:
            guess = float(data["denoiser_x0"][0])
            a["denoiser_line"].set_xdata([guess, guess])
            a["denoiser_curve"].set_ydata(field["denoiser"][:, 0])
            a["denoiser_point"].set_data([xt], [guess])
        a["title"].set_text(f"t = {data['t']},  ᾱ_t = {data['alpha_bar']:.3f},  E[x⁰ | xᵗ] = {mean:+.2f}")

    def _update_2d(self, data: dict, field: dict) -> None:
        a = self.artists
        xt, mean = data["x_t"], data["posterior_mean"]
        uv = field["exact"] - to_numpy(self._field_points)
        a["field"].set_UVC(uv[:, 0], uv[:, 1])
        w = data["weights"]
        for e, m, c, wk in zip(a["ellipses"], data["component_means"], data["component_covs"], w, strict=True):
            width, height, angle = _ellipse(c)
            e.set_center(m)
            e.set_width(width)
            e.set_height(height)
            e.set_angle(angle)
            e.set_alpha(0.35 * float(wk))
        rgba = np.zeros((len(w), 4))
        rgba[:, 3] = np.clip(0.15 + 0.85 * w, 0.0, 1.0) * (w > 1e-3)
        a["components"].set_offsets(data["component_means"])
        a["components"].set_sizes(15.0 + 250.0 * w)
        a["components"].set_facecolor(rgba)
        a["to_mean"].set_data([xt[0], mean[0]], [xt[1], mean[1]])
        a["x_t"].set_data([xt[0]], [xt[1]])
        a["mean"].set_data([mean[0]], [mean[1]])
        if self.denoiser is not None:
            guess = data["denoiser_x0"]
            a["denoiser"].set_data([guess[0]], [guess[1]])
        for bar, wk in zip(a["bars"], w, strict=True):
            bar.set_height(float(wk))
        a["title"].set_text(f"t = {data['t']},  ᾱ_t = {data['alpha_bar']:.3f}")
