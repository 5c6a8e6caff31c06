"""The posterior-mean widget: its pure compute against independent references, and its view's in-place updates.

References: Bayes' rule evaluated with scipy's normal densities (the posterior density in 1-D, the
posterior mean by quadrature), the mixture's own class_posterior / posterior_mean (the exact core,
itself tested in test_densities.py), and ``convert`` for denoisers that predict eps or the score.
No test here is random.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from course_lib import GaussianMixture, NoiseSchedule, named_mixture
from course_lib.diffusion import ExactDenoiser
from course_lib.widgets.posterior import (
    PosteriorMeanView,
    denoiser_x0,
    posterior_density_1d,
    posterior_mean_field,
    posterior_view_data,
)

SCHEDULE = NoiseSchedule.linear(1000)
MIX_1D = named_mixture("bimodal_1d")
MIX_2D = named_mixture("eight_gaussians_2d")


def gaussian_fit(mix: GaussianMixture) -> GaussianMixture:
    """A different model than the mixture: one Gaussian with the mixture's mean and covariance."""
    return GaussianMixture([1.0], mix.mixture_mean()[None], mix.mixture_cov()[None])


def bayes_posterior_1d(mix: GaussianMixture, ab: float, x_t: float):
    """p(x^0 | x^t) proportional to p(x^0) N(x^t; sqrt(ab) x^0, 1 - ab), with scipy, normalised by quadrature."""
    w, mu, sd = mix.weights.numpy(), mix.means[:, 0].numpy(), mix.covs[:, 0, 0].sqrt().numpy()

    def joint(x0):
        prior = sum(w[k] * stats.norm.pdf(x0, mu[k], sd[k]) for k in range(len(w)))
        return prior * stats.norm.pdf(x_t, np.sqrt(ab) * x0, np.sqrt(1 - ab))

    lo, hi = -8.0, 8.0
    pts = list(mu) + [x_t / np.sqrt(ab)]
    z = integrate.quad(joint, lo, hi, points=pts, limit=200)[0]
    m = integrate.quad(lambda x0: x0 * joint(x0), lo, hi, points=pts, limit=200)[0] / z
    return (lambda x0: joint(x0) / z), m


# ---------------------------------------------------------------------------------------------- pure compute
@pytest.mark.parametrize(("t", "x_t"), [(1, 0.3), (40, -1.2), (250, 0.9), (700, 2.5), (1000, -3.0)])
def test_posterior_density_1d_is_bayes_rule_and_integrates_to_one(t, x_t):
    ab = float(SCHEDULE.alpha_bars[t])
    grid, dens = posterior_density_1d(MIX_1D, ab, x_t)
    assert np.all(np.diff(grid) >= 0) and np.all(dens >= 0)
    np.testing.assert_allclose(np.trapezoid(dens, grid), 1.0, atol=2e-3)
    ref, ref_mean = bayes_posterior_1d(MIX_1D, ab, x_t)
    idx = np.linspace(0, len(grid) - 1, 60).astype(int)
    np.testing.assert_allclose(dens[idx], [ref(g) for g in grid[idx]], rtol=1e-6, atol=1e-9 * dens.max())
    data = posterior_view_data(MIX_1D, SCHEDULE, t, x_t)
    np.testing.assert_allclose(data["posterior_mean"], [ref_mean], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("mix", "x_t"), [(MIX_1D, [0.4]), (MIX_2D, [0.7, -0.2]), (named_mixture("anisotropic_2d"),
                                                                                   [-1.0, 0.5])])
@pytest.mark.parametrize("t", [3, 200, 900])
def test_view_data_equals_the_exact_core(mix, x_t, t):
    ab = SCHEDULE.alpha_bars[t]
    data = posterior_view_data(mix, SCHEDULE, t, x_t)
    x = torch.tensor([x_t], dtype=torch.float64)
    assert data["t"] == t and data["alpha_bar"] == pytest.approx(float(ab))
    np.testing.assert_allclose(data["x_t"], x_t)
    np.testing.assert_allclose(data["posterior_mean"], mix.posterior_mean(x, ab)[0].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(data["weights"], mix.class_posterior(x, ab)[0].numpy(), rtol=1e-10, atol=1e-12)
    # the components' own moments reproduce the posterior's mean and covariance (law of total covariance)
    w, m, c = data["weights"], data["component_means"], data["component_covs"]
    mean = w @ m
    cov = np.einsum("k,kij->ij", w, c + m[:, :, None] * m[:, None, :]) - np.outer(mean, mean)
    np.testing.assert_allclose(cov, mix.posterior_cov(x, ab)[0].numpy(), rtol=1e-8, atol=1e-12)
    assert data["denoiser_x0"] is None
    assert ("density" in data) == (mix.d == 1)


@pytest.mark.parametrize("mix", [MIX_1D, MIX_2D])
@pytest.mark.parametrize("t", [5, 500])
def test_field_equals_posterior_mean_on_the_grid(mix, t):
    pts = torch.randn(50, mix.d, generator=torch.Generator().manual_seed(t), dtype=torch.float64) * 2
    field = posterior_mean_field(mix, SCHEDULE, t, pts)
    np.testing.assert_allclose(field["exact"], mix.posterior_mean(pts, SCHEDULE.alpha_bars[t]).numpy(), rtol=1e-12)
    assert field["denoiser"] is None


@pytest.mark.parametrize("target", ["x0", "eps", "score"])
def test_denoiser_prediction_is_converted_to_x0(target):
    fit = gaussian_fit(MIX_2D)
    den = ExactDenoiser(fit, SCHEDULE, target)
    pts = torch.tensor([[0.3, -0.4], [1.5, 1.0], [-2.0, 0.1]], dtype=torch.float64)
    t = 333
    want = fit.posterior_mean(pts, SCHEDULE.alpha_bars[t]).numpy()
    np.testing.assert_allclose(denoiser_x0(den, pts, t, SCHEDULE).numpy(), want, rtol=1e-10, atol=1e-12)
    field = posterior_mean_field(MIX_2D, SCHEDULE, t, pts, den)
    np.testing.assert_allclose(field["denoiser"], want, rtol=1e-10, atol=1e-12)
    data = posterior_view_data(MIX_2D, SCHEDULE, t, pts[1], den)
    np.testing.assert_allclose(data["denoiser_x0"], want[1], rtol=1e-10, atol=1e-12)


def test_denoiser_without_a_target_attribute_takes_the_target_argument():
    fit = gaussian_fit(MIX_1D)
    inner = ExactDenoiser(fit, SCHEDULE, "score")

    def plain(x_t, t):  # no .target: the caller says what it predicts
        return inner(x_t, t)

    pts = torch.tensor([[0.5], [-1.0]], dtype=torch.float64)
    want = fit.posterior_mean(pts, SCHEDULE.alpha_bars[60]).numpy()
    np.testing.assert_allclose(denoiser_x0(plain, pts, 60, SCHEDULE, target="score").numpy(), want, rtol=1e-10)
    with pytest.raises(ValueError, match="target"):
        denoiser_x0(plain, pts, 60, SCHEDULE)


def test_a_float32_network_is_given_float32_input():
    class Net(torch.nn.Module):
        target = "score"

        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x_t, t):
            assert x_t.dtype == torch.float32
            return self.lin(x_t)

    net = Net()
    pts = torch.tensor([[0.3, -0.4], [1.5, 1.0]], dtype=torch.float64)
    ab = SCHEDULE.alpha_bars[80]
    with torch.no_grad():
        score = net(pts.float(), 80).double()
    want = (pts + (1 - ab) * score) / ab.sqrt()  # Tweedie, written out
    np.testing.assert_allclose(denoiser_x0(net, pts, 80, SCHEDULE).numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    view = PosteriorMeanView(MIX_2D, SCHEDULE, denoiser=net, t=80, x=[0.3, -0.4])
    np.testing.assert_allclose(np.ravel(view.artists["denoiser"].get_xydata()), want[0].numpy(), rtol=1e-6, atol=1e-6)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="^t:"):
        posterior_view_data(MIX_1D, SCHEDULE, 0, 0.5)
    with pytest.raises(ValueError, match="^t:"):
        posterior_view_data(MIX_1D, SCHEDULE, 1001, 0.5)
    with pytest.raises(ValueError, match="^x_t:"):
        posterior_view_data(MIX_2D, SCHEDULE, 10, 0.5)
    with pytest.raises(TypeError, match="^mixture:"):
        posterior_view_data("bimodal_1d", SCHEDULE, 10, 0.5)
    with pytest.raises(TypeError, match="^schedule:"):
        posterior_view_data(MIX_1D, [0.1, 0.2], 10, 0.5)
    with pytest.raises(ValueError, match="^mixture:"):
        PosteriorMeanView(GaussianMixture([1.0], [[0.0, 0.0, 0.0]], 1.0), SCHEDULE)

    class OneRowTooFew:
        target = "x0"

        def __call__(self, x_t, t):
            return x_t[1:]

    with pytest.raises(ValueError, match="^denoiser:"):
        denoiser_x0(OneRowTooFew(), torch.zeros(3, 1), 5, SCHEDULE)
    with pytest.raises(TypeError, match="^denoiser:"):
        denoiser_x0("not callable", torch.zeros(3, 1), 5, SCHEDULE)


# ---------------------------------------------------------------------------------------------- the view
def _snapshot(view):
    """Every artist of the figure (by identity) and the data of the named moving artists."""
    fig = view.fig
    artists = [id(a) for ax in fig.axes for a in (*ax.lines, *ax.collections, *ax.patches, *ax.texts)]
    return id(fig), len(fig.axes), artists


def _line_data(line):
    return np.concatenate([np.ravel(line.get_xdata()), np.ravel(line.get_ydata())]).astype(float)


def test_view_1d_updates_its_artists_in_place():
    import matplotlib.pyplot as plt

    figs_before = plt.get_fignums()
    view = PosteriorMeanView(MIX_1D, SCHEDULE, t=100, x=0.5)
    fig_id, n_axes, artists = _snapshot(view)
    a = view.artists
    posterior, curve, point = a["posterior"], a["curve"], a["point"]
    before = [_line_data(posterior), _line_data(curve), _line_data(point), _line_data(a["mean_line"])]
    view.update(t=600, x=-1.3)
    view.fig.canvas.draw()
    assert _snapshot(view) == (fig_id, n_axes, artists)
    assert a["posterior"] is posterior and a["curve"] is curve and a["point"] is point
    after = [_line_data(posterior), _line_data(curve), _line_data(point), _line_data(a["mean_line"])]
    assert all(b.shape != c.shape or not np.allclose(b, c) for b, c in zip(before, after, strict=True))
    data = posterior_view_data(MIX_1D, SCHEDULE, 600, -1.3)
    np.testing.assert_allclose(posterior.get_ydata(), data["density"])
    np.testing.assert_allclose(a["mean_line"].get_xdata(), [data["posterior_mean"][0]] * 2)
    np.testing.assert_allclose(point.get_ydata(), data["posterior_mean"])
    np.testing.assert_allclose(curve.get_ydata(), MIX_1D.posterior_mean(view._field_points,
                                                                           SCHEDULE.alpha_bars[600])[:, 0].numpy())
    assert plt.get_fignums() == figs_before  # the view never goes through pyplot, so never opens a figure


def test_view_2d_updates_its_artists_in_place_and_caches_the_field_per_t():
    view = PosteriorMeanView(MIX_2D, SCHEDULE, t=50, x=[0.5, 0.5])
    fig_id, n_axes, artists = _snapshot(view)
    a = view.artists
    quiver, comps, bars = a["field"], a["components"], list(a["bars"])
    uv_before = np.array(quiver.U).copy()
    view.update(t=400, x=-1.0, y=0.8)
    view.fig.canvas.draw()
    assert _snapshot(view) == (fig_id, n_axes, artists)
    assert a["field"] is quiver and a["components"] is comps and list(a["bars"]) == bars
    data = posterior_view_data(MIX_2D, SCHEDULE, 400, [-1.0, 0.8])
    field = MIX_2D.posterior_mean(view._field_points, SCHEDULE.alpha_bars[400]) - view._field_points
    assert not np.allclose(np.array(quiver.U), uv_before)
    np.testing.assert_allclose(np.array(quiver.U), field[:, 0].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.array(quiver.V), field[:, 1].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(comps.get_offsets(), data["component_means"])
    np.testing.assert_allclose([b.get_height() for b in bars], data["weights"])
    np.testing.assert_allclose(np.ravel(a["mean"].get_xydata()), data["posterior_mean"])
    np.testing.assert_allclose(np.ravel(a["x_t"].get_xydata()), [-1.0, 0.8])
    # moving only the point reuses the cached field of this t
    cached = view.field(400)
    view.update(x=0.2)
    assert view.field(400) is cached and len(view._field_cache) == 2


@pytest.mark.parametrize("mix", [MIX_1D, MIX_2D])
def test_view_draws_a_denoiser_passed_in(mix):
    den = ExactDenoiser(gaussian_fit(mix), SCHEDULE, "eps")
    view = PosteriorMeanView(mix, SCHEDULE, denoiser=den, denoiser_label="Gaussian fit", t=300)
    x = [-0.8] if mix.d == 1 else [-0.8, 1.1]
    view.update(**dict(zip(["x", "y"], x, strict=False)))
    want = gaussian_fit(mix).posterior_mean(torch.tensor([x], dtype=torch.float64), SCHEDULE.alpha_bars[300])[0]
    a = view.artists
    if mix.d == 1:
        np.testing.assert_allclose(a["denoiser_line"].get_xdata(), [want[0].item()] * 2, rtol=1e-10)
        np.testing.assert_allclose(a["denoiser_point"].get_ydata(), [want[0].item()], rtol=1e-10)
        legend = view.axes[0].get_legend()
    else:
        np.testing.assert_allclose(np.ravel(a["denoiser"].get_xydata()), want.numpy(), rtol=1e-10)
        legend = view.fig.legends[0]
    assert "Gaussian fit" in [t.get_text() for t in legend.get_texts()]
    # and the exact mean is still drawn beside it, different from the denoiser's guess
    exact = mix.posterior_mean(torch.tensor([x], dtype=torch.float64), SCHEDULE.alpha_bars[300])[0]
    assert not torch.allclose(exact, want, atol=1e-2)


def test_view_rejects_unknown_controls():
    view = PosteriorMeanView(MIX_1D, SCHEDULE)
    with pytest.raises(ValueError, match="^y:"):
        view.update(y=0.3)
