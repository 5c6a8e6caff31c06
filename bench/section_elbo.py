"""Bench section of notebook 01: the ELBO widget's latency per slider move (target < 50 ms, full draw included)."""

from __future__ import annotations

import numpy as np
from _harness import fmt_seconds, section, timeit, widget_latency

TARGET = 0.050


@section("elbo")
def elbo_widget():
    import torch

    from course_lib.widgets.elbo import ElboView, elbo_view_data

    torch.set_num_threads(1)
    view = ElboView()
    sweeps = {
        "q_mean": np.linspace(-3.0, 3.0, 41),
        "q_log_std": np.linspace(-2.5, 0.8, 41),
        "W": np.linspace(-2.5, 2.5, 41),
        "sigma": np.linspace(0.3, 1.8, 41),
        "n_draws": [int(n) for n in np.linspace(2, view.max_draws, 41)],
    }
    rows = []
    # calibration: the same-size figure with two bare axes, so a loaded machine's numbers can be read
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bare = Figure(figsize=view.figsize)
    FigureCanvasAgg(bare)
    for ax in bare.subplots(1, 2):
        ax.plot([0, 1], [0, 1])
    rows.append(["calibration: bare 2-axes figure, full Agg draw", "-", fmt_seconds(timeit(bare.canvas.draw)), "-",
                 "-"])
    model = view.model()
    compute = timeit(lambda: elbo_view_data(model, view.x, 0.3, -0.2, 64, eps=view.eps, z_grid=view.z_grid))
    rows.append(["elbo_view_data alone (n = 64)", "-", fmt_seconds(compute), "-", "-"])
    for control, values in sweeps.items():
        view.update(q_mean=-0.5, q_log_std=0.3, W=1.0, sigma=0.7, n_draws=16)
        median, p95 = widget_latency(view, control, values)
        rows.append([f"slider `{control}`", f"{len(values)} values", fmt_seconds(median), fmt_seconds(p95),
                     "yes" if p95 < TARGET else "**no**"])
    return ("ELBO widget: one slider move = compute + artist updates + a full draw (target < 50 ms)",
            ["what", "sweep", "median", "p95", "p95 < 50 ms"], rows)
