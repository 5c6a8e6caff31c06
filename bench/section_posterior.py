"""Bench section of the posterior-mean widget (notebook 05): slider-move latency, compute plus a full draw."""

from __future__ import annotations

import statistics
import time

import numpy as np
from _harness import fmt_seconds, latency, section, widget_cpu_latency, widget_latency

TARGET_SECONDS = 0.050


def _blank_view(figsize):
    """Two labelled, empty axes on the same canvas: the floor under any widget's full draw on this machine."""
    from course_lib.widgets._base import WidgetView

    class Blank(WidgetView):
        def _build(self, fig):
            for ax in fig.subplots(1, 2):
                ax.set_xlabel("x")
                ax.set_ylabel("y")
                ax.set_title(" ")

        def _update(self, **values):
            pass

    Blank.figsize = figsize
    view = Blank()
    view.fig.set_layout_engine("none")
    return view



def _live(view):
    # A live JupyterLab front end sends "initialized", after which ipympl stops re-encoding the whole
    # figure as a PNG data URL on every draw (headless it keeps doing so); measure what a user sees.
    if hasattr(view.fig.canvas, "syncing_data_url"):
        view.fig.canvas.syncing_data_url = False
    return view


@section("posterior")
def posterior_widget_latency():
    from course_lib import GaussianMixture, NoiseSchedule, named_mixture
    from course_lib.diffusion import ExactDenoiser
    from course_lib.plotting import use_style
    from course_lib.widgets.posterior import PosteriorMeanView

    use_style()
    schedule = NoiseSchedule.linear(1000)
    t_values = [int(t) for t in np.linspace(1, 1000, 41)]  # all distinct: each move computes a new field
    rows = []
    for name in ("bimodal_1d", "eight_gaussians_2d"):
        mix = named_mixture(name)
        fit = GaussianMixture([1.0], mix.mixture_mean()[None], mix.mixture_cov()[None])
        view = _live(PosteriorMeanView(mix, schedule, denoiser=ExactDenoiser(fit, schedule, "eps"), t=200))
        x_values = [float(v) for v in np.linspace(-2.5, 2.5, 41)]
        for control, values in (("t", t_values), ("x", x_values)):
            med, p95 = widget_latency(view, control, values)
            view._field_cache.clear()  # the CPU pass recomputes the fields too
            cpu = widget_cpu_latency(view, control, values)
            ok = "✓" if p95 < TARGET_SECONDS else "✗"
            rows.append([f"PosteriorMeanView {mix.d}-D ({name}, with a denoiser)", f"{control} ({len(values)} moves)",
                         fmt_seconds(med), fmt_seconds(p95), fmt_seconds(cpu), f"{ok} < {fmt_seconds(TARGET_SECONDS)}"])
        blank = _live(_blank_view(view.figsize))
        med, p95 = _draw_only(blank)
        cpu = _cpu_draw_only(blank)
        rows.append([f"blank figure of the same size ({view.figsize[0]:g} x {view.figsize[1]:g} in)", "draw only",
                     fmt_seconds(med), fmt_seconds(p95), fmt_seconds(cpu), "(floor)"])
    return ("Posterior-mean widget: one slider move = compute + artist updates + a full draw (ipympl canvas)",
            ["view", "slider", "median", "p95", "CPU median", "target (p95)"], rows)


def _draw_only(view, n: int = 41):
    return latency(lambda _v: view.fig.canvas.draw(), range(n))


def _cpu_draw_only(view, n: int = 41) -> float:
    times = []
    for _ in range(n):
        t0 = time.process_time()
        view.fig.canvas.draw()
        times.append(time.process_time() - t0)
    return statistics.median(times)
