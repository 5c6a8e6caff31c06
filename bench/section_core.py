"""Bench sections of the foundation: the exact core's speed, and the whole FAST notebook run."""

from __future__ import annotations

import torch
from _harness import fmt_seconds, section, timeit


@section("core")
def core_operations():
    from course_lib import GaussianMixture, LinearGaussianModel, NoiseSchedule, named_mixture

    g = torch.Generator().manual_seed(0)
    s = NoiseSchedule.cosine(1000)
    x0 = torch.randn(100_000, 2, dtype=torch.float64, generator=g)
    t = torch.randint(1, 1001, (100_000,), generator=g)
    mix: GaussianMixture = named_mixture("eight_gaussians_2d")
    x = mix.sample(10_000, generator=g)
    lgm = LinearGaussianModel(torch.randn(5, 2, dtype=torch.float64, generator=g), torch.zeros(5), 0.5)
    xl = lgm.sample(10_000, generator=g)
    qm, qc = torch.zeros(10_000, 2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    rows = [
        ["NoiseSchedule.cosine(1000)", "-", lambda: NoiseSchedule.cosine(1000)],
        ["q_sample, per-row t", "100k x 2", lambda: s.q_sample(x0, t, generator=g)],
        ["posterior_coefficients(t)", "100k t", lambda: s.posterior_coefficients(t)],
        [f"GaussianMixture.log_prob (K={mix.K})", "10k x 2", lambda: mix.log_prob(x)],
        [f"GaussianMixture.score (K={mix.K})", "10k x 2", lambda: mix.score(x)],
        [f"GaussianMixture.posterior_mean (K={mix.K})", "10k x 2", lambda: mix.posterior_mean(x, 0.3)],
        [f"GaussianMixture.class_posterior (K={mix.K})", "10k x 2", lambda: mix.class_posterior(x, 0.3)],
        ["LinearGaussianModel.elbo_terms (d=5, k=2)", "10k", lambda: lgm.elbo_terms(xl, qm, qc)],
    ]
    torch.set_num_threads(1)
    return ("The exact core (float64, 1 thread, median of 7)", ["operation", "input", "time"],
            [[name, size, fmt_seconds(timeit(fn))] for name, size, fn in rows])


@section("notebooks")
def notebook_run():
    from course_lib._notebooks import notebook_paths, run_notebook

    rows, total = [], 0.0
    for p in notebook_paths():
        _, seconds = run_notebook(p, fast=True)
        total += seconds
        rows.append([p.name, f"{seconds:.1f} s"])
    rows.append(["**all notebooks (FAST)**", f"**{total:.1f} s**"])
    return "Notebooks executed top to bottom in FAST mode", ["notebook", "wall time"], rows
