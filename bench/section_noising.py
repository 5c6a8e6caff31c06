"""Bench section of notebook 04: the noising-trajectory widget's slider latency (target: under 50 ms a move).

A move is ``view.update(t=...)`` (compute + artist updates) followed by a full ``canvas.draw()``, timed by
``_harness.widget_latency`` over a sweep of t. On an ipympl canvas a draw also encodes the frame as PNG for
the browser. With no browser attached (here) ipympl additionally re-encodes the whole figure as a data URL
after every draw, which it stops doing once a front end connects; the harness switches that extra
encoding off to measure what a student's slider move costs.
Wall-clock times count every process on the machine; "CPU" (this thread's CPU time for the same live moves)
is what the move itself costs, and stays meaningful on a shared, busy machine.
"""

from __future__ import annotations

import os
import time

import torch
from _harness import fmt_seconds, section, widget_cpu_latency, widget_latency

TARGET = 0.050  # seconds per slider move


def _mnist_digits(n: int = 8) -> tuple[torch.Tensor, str]:
    """n real MNIST test digits if they are on this machine (never downloads), else random images."""
    from course_lib.data import mnist_dir, mnist_tensors

    if mnist_dir("test") is not None:
        x, _ = mnist_tensors("test", limit=n, download=False, progress=False)
        return x, f"MNIST, {n} digits"
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)), f"{n} random 28x28 images"



@section("noising")
def noising_widget_latency():
    from course_lib import named_mixture
    from course_lib.widgets.noising import noising_widget

    T = 1000
    digits, digits_name = _mnist_digits()
    cases = [
        ("1-D mixture (trimodal_1d)", lambda: noising_widget(named_mixture("trimodal_1d"), T=T)),
        ("2-D mixture (eight_gaussians_2d), exact contours", lambda: noising_widget(named_mixture("eight_gaussians_2d"),
                                                                                    T=T)),
        (digits_name, lambda: noising_widget(digits, T=T)),
    ]
    sweep = list(range(0, T + 1, 25))  # 41 slider values, 0..T
    rows = []
    for name, build in cases:
        t0 = time.perf_counter()
        view = build()
        built = time.perf_counter() - t0
        live = widget_latency(view, "t", sweep)
        cpu = widget_cpu_latency(view, "t", sweep)
        ok = "yes" if live[0] < TARGET else "**no**"
        rows.append([name, fmt_seconds(built), fmt_seconds(live[0]), fmt_seconds(live[1]), fmt_seconds(cpu), ok])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    title = (f"Noising widget (notebook 04): one slider move = update + full draw, T = {T}, {len(sweep)} values of t "
             f"(load average {load:.1f}); target: live median < {fmt_seconds(TARGET)}")
    header = ["data", "build", "live median", "live p95", "live CPU median",
              "live median < 50 ms"]
    return title, header, rows
