"""Notebook 05's figure helpers (course_lib.tweedie_figures): the curves they draw are the right ones."""

from __future__ import annotations

import matplotlib
import torch

from course_lib import NoiseSchedule, named_mixture
from course_lib.tweedie_figures import gradient_flow, plot_gradient_flow, plot_tweedie_vs_shorthand, tweedie_curves

matplotlib.use("Agg")


def test_tweedie_is_exact_and_the_shorthand_only_for_variance_exploding_noise():
    mix = named_mixture("trimodal_1d")
    x = torch.linspace(-3, 3, 101, dtype=torch.float64)[:, None]
    c = tweedie_curves(mix, 0.4, x)
    torch.testing.assert_close(c["tweedie"], c["exact"], rtol=0, atol=1e-12)
    torch.testing.assert_close(c["shorthand_ve"], c["exact_ve"], rtol=0, atol=1e-12)
    assert (c["shorthand"] - c["exact"]).abs().max() > 0.1  # the slide's shorthand misses (ERRATA 1)
    # the VE posterior mean by brute force: x^t = x^0 + sigma eps, weights p(x^0) N(x^t; x^0, sigma^2) on a grid
    grid = torch.linspace(-6, 6, 20001, dtype=torch.float64)[:, None]
    w = mix.log_prob(grid)[None, :] - (x - grid.T) ** 2 / (2 * 0.6)
    brute = (torch.softmax(w, 1) * grid.T).sum(1, keepdim=True)
    torch.testing.assert_close(c["exact_ve"], brute, rtol=0, atol=1e-6)


def test_gradient_flow_climbs_to_a_mode():
    mix = named_mixture("eight_gaussians_2d")
    p_t = mix.noised(0.96)
    starts = torch.tensor([[2.0, 2.0], [0.3, -0.2], [-2.2, 0.1]], dtype=torch.float64)
    path = gradient_flow(p_t, starts, 0.04, eta=0.4, steps=200)
    assert path.shape == (201, 3, 2)
    torch.testing.assert_close(path[0], starts)
    lp = p_t.log_prob(path.reshape(-1, 2)).reshape(201, 3)
    assert bool((lp[1:] >= lp[:-1] - 1e-12).all())  # ascent
    assert p_t.score(path[-1]).norm(dim=1).max() < 1e-3  # at a stationary point


def test_figures_draw_and_report():
    schedule = NoiseSchedule.linear(1000)
    fig, errors = plot_tweedie_vs_shorthand(named_mixture("trimodal_1d"), schedule, ts=(100, 300), n=51)
    assert set(errors) == {100, 300} and errors[300]["tweedie"] < 1e-12 < errors[300]["shorthand"]
    assert len(fig.axes) == 4
    fig2 = plot_gradient_flow(named_mixture("eight_gaussians_2d"), schedule, torch.zeros(2, 2, dtype=torch.float64),
                              steps=5)
    assert len(fig2.axes) == 2
    matplotlib.pyplot.close("all")
