"""Bench section of the guidance-strength widget (notebook 08): construction time and slider-move latency.

A move is ``view.update(control=...)`` (look-ups in the precomputed arrays + artist updates) followed by a full
``canvas.draw()``, timed by ``_harness.widget_latency`` (wall clock) and ``widget_cpu_latency`` (this thread's CPU
time, meaningful on a busy machine). Targets: median under 50 ms (CONTRIBUTING), p95 under 100 ms (DESIGN).
The MNIST view runs on synthetic sample sets of the real shape (16 per digit, 7 strengths, both kinds: random
pixels), since only the arrays' shapes matter to its cost.
"""

from __future__ import annotations

import os
import time

import torch
from _harness import fmt_seconds, section, widget_cpu_latency, widget_latency

MEDIAN_TARGET = 0.050
P95_TARGET = 0.100


def _synthetic_mnist():
    from course_lib.guidance_models import sample_set_config

    cfg = sample_set_config(fast=False)
    g = torch.Generator().manual_seed(0)
    sets = {kind: {s: torch.rand(10, cfg["per_digit"], 1, 28, 28, generator=g) * 2 - 1 for s in gs}
            for kind, gs in cfg["gammas"].items()}
    rows = [{"kind": kind, "gamma": float(s), "recognised": min(1.0, 0.3 + 0.08 * s), "diversity": 1 / (1 + 0.1 * s)}
            for kind, gs in cfg["gammas"].items() for s in gs]
    return sets, rows, cfg


@section("guidance_widget")
def guidance_widget_latency():
    from course_lib import NoiseSchedule, named_mixture
    from course_lib.plotting import use_style
    from course_lib.widgets.guidance import MnistGuidanceView, ToyGuidanceView

    use_style()
    rows = []

    def measure(name, view, built, control, values):
        med, p95 = widget_latency(view, control, values)
        cpu = widget_cpu_latency(view, control, values)
        ok = "✓" if med < MEDIAN_TARGET and p95 < P95_TARGET else "✗"
        rows.append([name, f"{control} ({len(values)} moves)", fmt_seconds(built), fmt_seconds(med), fmt_seconds(p95),
                     fmt_seconds(cpu), ok])

    t0 = time.perf_counter()
    toy = ToyGuidanceView(named_mixture("three_classes_2d"), NoiseSchedule.cosine(1000))
    built = time.perf_counter() - t0
    n, steps, G = toy.data["samples"].shape[2], toy.data["steps"], len(toy.gammas)
    name = f"ToyGuidanceView (three_classes_2d, exact models, {n} samples x 3 classes x {G} γ, {steps} steps)"
    measure(name, toy, built, "gamma", [g for _ in range(6) for g in toy.gammas])
    measure(name, toy, built, "y", [k % 3 for k in range(42)])

    sets, trade, cfg = _synthetic_mnist()
    t0 = time.perf_counter()
    mnist = MnistGuidanceView(sets, trade)
    built = time.perf_counter() - t0
    name = (f"MnistGuidanceView (synthetic sets of the real shape: {cfg['per_digit']} per digit, "
            f"{len(cfg['gammas']['classifier'])} γ, both kinds)")
    measure(name, mnist, built, "gamma", [g for _ in range(6) for g in cfg["gammas"]["classifier"]])
    measure(name, mnist, built, "digit", [d % 10 for d in range(40)])
    measure(name, mnist, built, "kind", ["cfg", "classifier"] * 20)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    title = ("Guidance widget (notebook 08): one slider move = update + full draw (ipympl canvas), "
             f"load average {load:.1f}; targets: median < {fmt_seconds(MEDIAN_TARGET)}, "
             f"p95 < {fmt_seconds(P95_TARGET)}")
    header = ["view", "control", "build", "median", "p95", "CPU median", "on target"]
    return title, header, rows
