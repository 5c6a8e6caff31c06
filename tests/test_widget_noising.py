"""The noising-trajectory widget: its pure compute functions against independent references, and its views.

References: scipy's normal density for the noised mixture, numpy.histogram, the closed form of q(x^t | x^0)
(tested by z-scores on simulated chains), the standard normal's known highest-density regions, and
NoiseSchedule.posterior_coefficients for the regression. Statistical checks use |z| < Z = 5 (two-sided
false-alarm rate 5.7e-7 per check, under 1e-4 for the whole file) with fixed seeds, so they are deterministic.
Views are built with a small T to keep the file fast; latency is measured in bench/section_noising.py.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import scipy.stats
import torch

from course_lib import GaussianMixture, NoiseSchedule, named_mixture, two_moons
from course_lib.widgets import noising

Z = 5.0
KINDS = ["linear", "cosine"]


def make(kind: str, T: int) -> NoiseSchedule:
    return getattr(NoiseSchedule, kind)(T)


# ====================================================================== noised_density_grid
@pytest.mark.parametrize("kind", KINDS)
def test_density_grid_integrates_to_one_and_matches_scipy(kind):
    mix = named_mixture("trimodal_1d")
    s = make(kind, 100)
    xs = torch.linspace(-9, 9, 3001, dtype=torch.float64)
    grid = noising.noised_density_grid(mix, s, xs)
    assert grid.shape == (101, 3001) and grid.dtype == torch.float64
    mass = torch.trapezoid(grid, xs, dim=1)
    np.testing.assert_allclose(mass.numpy(), 1.0, atol=1e-6)
    # independent reference: sum_k w_k N(x; sqrt(ab) mu_k, ab s_k^2 + 1 - ab), with scipy
    w, mu, var = mix.weights.numpy(), mix.means[:, 0].numpy(), mix.covs[:, 0, 0].numpy()
    for t in [0, 1, 7, 50, 100]:
        ab = s.alpha_bars[t].item()
        ref = sum(wk * scipy.stats.norm.pdf(xs.numpy(), math.sqrt(ab) * m, math.sqrt(ab * v + 1 - ab))
                  for wk, m, v in zip(w, mu, var, strict=True))
        np.testing.assert_allclose(grid[t].numpy(), ref, rtol=1e-10, atol=1e-300)
        np.testing.assert_allclose(grid[t].log().numpy(), mix.noised(ab).log_prob(xs[:, None]).numpy(), rtol=1e-12)
    np.testing.assert_allclose(grid[0].numpy(), mix.prob(xs[:, None]).numpy(), rtol=1e-12)


def test_density_grid_takes_2d_points_and_checks_its_arguments():
    mix = named_mixture("two_blobs_2d")
    s = NoiseSchedule.cosine(20)
    pts = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = noising.noised_density_grid(mix, s, pts)
    assert grid.shape == (21, 50)
    np.testing.assert_allclose(grid[13].numpy(), mix.noised(s.alpha_bars[13].item()).prob(pts).numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="xs"):
        noising.noised_density_grid(mix, s, torch.zeros(5))
    with pytest.raises(TypeError, match="mixture"):
        noising.noised_density_grid(two_moons(10), s, torch.zeros(5))
    with pytest.raises(TypeError, match="schedule"):
        noising.noised_density_grid(mix, "cosine", pts)


# ====================================================================== simulate_paths
@pytest.mark.parametrize("kind", KINDS)
def test_simulated_paths_have_the_moments_of_q_xt_given_x0(kind):
    """Column 0 starts at x^0 = 2; column 1 at x^0 ~ N(1.5, 0.7^2). Mean and variance of x^t by z-scores."""
    T, N = 100, 40_000
    s = make(kind, T)
    gen = torch.Generator().manual_seed(1)
    m = torch.tensor([2.0, 1.5], dtype=torch.float64)
    sd0 = torch.tensor([0.0, 0.7], dtype=torch.float64)
    x0 = m + sd0 * torch.randn(N, 2, generator=gen, dtype=torch.float64)
    paths = noising.simulate_paths(x0, s, torch.Generator().manual_seed(2))
    assert paths.shape == (T + 1, N, 2) and paths.dtype == torch.float64
    assert torch.equal(paths[0], x0)
    for t in [1, 3, 20, 50, 100]:
        ab = s.alpha_bars[t]
        want_mean, want_var = ab.sqrt() * m, ab * sd0**2 + 1 - ab
        z_mean = (paths[t].mean(0) - want_mean) / (want_var / N).sqrt()
        z_var = (paths[t].var(0) - want_var) / (want_var * math.sqrt(2 / (N - 1)))
        assert z_mean.abs().max() < Z, f"t={t}: mean z-scores {z_mean.tolist()}"
        assert z_var.abs().max() < Z, f"t={t}: variance z-scores {z_var.tolist()}"
    # given x^0, the standardised noise (x^t - sqrt(ab) x^0) / sqrt(1 - ab) is N(0, 1) and independent of x^0
    t = 30
    ab = s.alpha_bars[t]
    eps = (paths[t, :, 1] - ab.sqrt() * x0[:, 1]) / (1 - ab).sqrt()
    corr = torch.corrcoef(torch.stack([eps, x0[:, 1]]))[0, 1]
    assert abs(corr.item()) * math.sqrt(N) < Z


def test_simulated_paths_keep_dtype_and_shape_and_are_reproducible():
    s = NoiseSchedule.linear(30)
    x0 = torch.rand(3, 1, 4, 4)  # float32 images
    p1 = noising.simulate_paths(x0, s, torch.Generator().manual_seed(5))
    p2 = noising.simulate_paths(x0, s, torch.Generator().manual_seed(5))
    assert p1.shape == (31, 3, 1, 4, 4) and p1.dtype == torch.float32
    assert torch.equal(p1, p2)
    # the chain's own recursion: (x^t - sqrt(alpha_t) x^{t-1}) / sqrt(1 - alpha_t) is N(0, 1) noise
    a = s.alphas.to(torch.float32).reshape(-1, 1, 1, 1, 1)
    eps = (p1[1:] - a[1:].sqrt() * p1[:-1]) / (1 - a[1:]).sqrt()
    n = eps.numel()
    assert abs(eps.double().mean().item()) * math.sqrt(n) < Z
    assert abs(eps.double().var().item() - 1) / math.sqrt(2 / (n - 1)) < Z
    assert noising.simulate_paths([[1.0], [2.0]], s).dtype == torch.float64
    with pytest.raises(TypeError, match="generator"):
        noising.simulate_paths(x0, s, generator=5)
    with pytest.raises(ValueError, match="x0"):
        noising.simulate_paths(torch.tensor(1.0), s)


# ====================================================================== histograms, HDR levels, regression
def test_path_histograms_match_numpy():
    gen = torch.Generator().manual_seed(3)
    paths = torch.randn(6, 500, 1, generator=gen, dtype=torch.float64) * 2
    edges = torch.linspace(-3, 3, 13, dtype=torch.float64)
    h = noising.path_histograms(paths, edges)
    assert h.shape == (6, 12)
    for t in range(6):
        counts, _ = np.histogram(paths[t, :, 0].numpy(), bins=edges.numpy())
        np.testing.assert_allclose(h[t].numpy(), counts / (500 * 0.5), rtol=1e-12)
    # every sample inside the edges: each row integrates to 1
    inside = noising.path_histograms(paths.clamp(-3, 3), edges)
    np.testing.assert_allclose((inside * 0.5).sum(1).numpy(), 1.0, rtol=1e-12)


def test_hdr_levels_of_a_standard_normal():
    """For N(0, I_2), {p >= level} holding mass m is the disc r^2 <= -2 log(1 - m): level = (1 - m) / (2 pi)."""
    g = np.linspace(-6, 6, 601)
    X, Y = np.meshgrid(g, g)
    dens = np.exp(-0.5 * (X**2 + Y**2)) / (2 * np.pi)
    levels = noising.hdr_levels(dens, (g[1] - g[0]) ** 2, masses=(0.5, 0.9))
    np.testing.assert_allclose(levels, [0.1 / (2 * np.pi), 0.5 / (2 * np.pi)], rtol=2e-2)
    assert levels[0] < levels[1]


@pytest.mark.parametrize("kind", KINDS)
def test_fit_posterior_coefficients_recovers_a_b_c(kind):
    T, N = 60, 100_000
    s = make(kind, T)
    x0 = named_mixture("bimodal_1d").sample(N, generator=torch.Generator().manual_seed(7))
    paths = noising.simulate_paths(x0, s, torch.Generator().manual_seed(8))
    ts = [2, 10, 30, 60]
    fit = noising.fit_posterior_coefficients(paths, ts)
    a, b, c = (v.numpy() for v in s.posterior_coefficients(torch.tensor(ts)))
    np.testing.assert_array_equal(fit["t"], ts)
    for k, want in (("a", a), ("b", b), ("c", c)):
        z = (fit[k] - want) / fit[f"{k}_se"]
        assert np.abs(z).max() < Z, f"{k}: fitted {fit[k]}, exact {want}, z {z}"
    # t = 1: x^0 = x^{t-1} exactly, so the fit is a = 1, b = 0 with no residual
    one = noising.fit_posterior_coefficients(paths, [1])
    np.testing.assert_allclose([one["a"][0], one["b"][0], one["c"][0]], [1.0, 0.0, 0.0], atol=1e-10)


# ====================================================================== views
def _artists(fig):
    return [a for ax in fig.axes for a in ax.get_children()]


def _assert_in_place(view, **values):
    """update(**values) keeps the figure, its axes and its artists (same objects); returns nothing new."""
    import matplotlib.pyplot as plt

    fig, axes, artists, fignums = view.fig, list(view.fig.axes), _artists(view.fig), plt.get_fignums()
    view.update(**values)
    assert view.fig is fig
    assert view.fig.axes == axes
    assert [id(a) for a in _artists(view.fig)] == [id(a) for a in artists]
    assert plt.get_fignums() == fignums


def test_view_1d_updates_its_artists_in_place():
    mix = named_mixture("trimodal_1d")
    view = noising.NoisingView1D(mix, T=60, n_samples=400, n_paths=3, n_points=101, bins=20, t=0)
    s = view.schedules["linear"]
    grid = noising.noised_density_grid(mix, s, view.xs).numpy()
    line, curve, hist, heat = view._vline, view._curve, view._hist, view._heat
    for t in [0, 17, 60]:
        _assert_in_place(view, t=t)
        assert view._vline is line and view._curve is curve and view._hist is hist and view._heat is heat
        np.testing.assert_array_equal(line.get_xdata(), [t, t])
        np.testing.assert_allclose(curve.get_xdata(), grid[t], rtol=1e-12)
        np.testing.assert_allclose(curve.get_ydata(), view.xs.numpy())
        np.testing.assert_allclose(hist.get_data().values, view.pre["linear"]["hist"][t])
        assert f"t = {t}" in view._dtitle.get_text()
    # the histogram is that of the view's own chains, which start at its x^0
    paths = noising.simulate_paths(view.x0, s, view._generator())[..., 0]
    np.testing.assert_allclose(view.pre["linear"]["hist"], noising.path_histograms(paths, view.edges).numpy())
    np.testing.assert_allclose(view.pre["linear"]["paths"], paths[:, :3].numpy())
    assert math.isfinite(view.last_update_seconds)


def test_view_1d_switches_schedule():
    mix = named_mixture("bimodal_1d")
    view = noising.NoisingView1D(mix, T=40, n_samples=200, n_points=81, t=10)
    lin_heat = np.array(view._heat.get_array())
    lin_path = np.array(view._paths[0].get_ydata())
    _assert_in_place(view, schedule="cosine")
    cos = noising.noised_density_grid(mix, view.schedules["cosine"], view.xs).numpy()
    np.testing.assert_allclose(view._curve.get_xdata(), cos[10], rtol=1e-12)
    assert not np.array_equal(np.array(view._heat.get_array()), lin_heat)
    np.testing.assert_array_equal(np.array(view._heat.get_array()), view.pre["cosine"]["rgba"])
    assert not np.allclose(view._paths[0].get_ydata(), lin_path)
    # both schedules start their chains from the same x^0 with the same noise draws
    assert view._paths[0].get_ydata()[0] == lin_path[0]
    _assert_in_place(view, schedule="linear", t=25)
    np.testing.assert_array_equal(np.array(view._heat.get_array()), lin_heat)


def test_view_2d_mixture_cloud_and_exact_contours():
    mix = named_mixture("two_blobs_2d")
    view = noising.NoisingView2D(mix, T=50, n_samples=300, n_grid=50, t=0)
    scatter, contours = view._scatter, view._contours
    for t, name in [(0, "linear"), (20, "linear"), (20, "cosine"), (50, "cosine")]:
        _assert_in_place(view, t=t, schedule=name)
        assert view._scatter is scatter and view._contours is contours
        np.testing.assert_allclose(scatter.get_offsets(), view.pre[name]["cloud"][t])
        segs = contours.get_segments()
        assert len(segs) >= 2  # at least one line per mass level
        # every contour point lies on one of the two HDR levels of the exact noised density
        ab = view.schedules[name].alpha_bars[t].item()
        pts = np.concatenate(segs)
        dens = mix.noised(ab).prob(torch.as_tensor(pts)).numpy()
        n = len(view._grid_axis)
        grid_dens = mix.noised(ab).prob(view._grid_pts).numpy().reshape(n, n)
        levels = noising.hdr_levels(grid_dens, view._cell_area, view.masses)
        rel = np.min(np.abs(dens[:, None] / levels[None, :] - 1), axis=1)
        assert rel.max() < 0.1, rel.max()
        np.testing.assert_array_equal(view._coef_t.get_xdata(), [t, t])
    # the cloud follows the closed form: (x^T - sqrt(alpha_bar_T) x^0) / sqrt(1 - alpha_bar_T) ~ N(0, I)
    ab = view.schedules["cosine"].alpha_bars[-1].item()
    eps = (torch.as_tensor(view.pre["cosine"]["cloud"][-1]).double() - math.sqrt(ab) * view.x0) / math.sqrt(1 - ab)
    n = eps.numel()
    assert abs(eps.mean().item()) * math.sqrt(n) < Z
    assert abs(eps.var().item() - 1) / math.sqrt(2 / (n - 1)) < Z


def test_view_2d_points_has_no_contours_and_shows_paths():
    pts = two_moons(200, generator=torch.Generator().manual_seed(0))
    view = noising.NoisingView2D(pts, T=30, n_paths=2, t=5)
    assert view.mixture is None and view.contour_segments(5, "linear") == []
    _assert_in_place(view, t=12)
    cloud = view.pre["linear"]["cloud"]
    np.testing.assert_allclose(view._paths[1].get_xdata(), cloud[:13, 1, 0])
    np.testing.assert_allclose(view._scatter.get_offsets(), cloud[12])
    np.testing.assert_allclose(cloud[0], pts.numpy(), rtol=1e-6)


def test_view_images_on_a_tiny_synthetic_batch():
    gen = torch.Generator().manual_seed(4)
    imgs = torch.rand(3, 1, 6, 5, generator=gen)
    view = noising.NoisingViewImages(imgs, T=25, t=0)
    image = view._image
    row = np.asarray(image.get_array())
    assert row.shape == (6, 3 * 5 + 2)
    np.testing.assert_allclose(row[:, :5], 2 * imgs[0, 0].numpy() - 1, rtol=1e-6)  # x^0 = 2 x - 1
    for t, name in [(7, "linear"), (7, "cosine"), (25, "cosine")]:
        _assert_in_place(view, t=t, schedule=name)
        assert view._image is image
        shown = np.asarray(image.get_array())
        want = np.clip(view.pre[name]["paths"][t].numpy(), -1, 1)
        np.testing.assert_allclose(shown[:, 6:11], want[1], rtol=1e-6)
    assert not np.allclose(view.row(7, "linear"), view.row(7, "cosine"))
    with pytest.raises(ValueError, match="images"):
        noising.NoisingViewImages(imgs * 255)


def test_noising_widget_dispatch_and_argument_errors():
    assert isinstance(noising.noising_widget(named_mixture("bimodal_1d"), T=30, n_samples=50, n_points=21),
                      noising.NoisingView1D)
    assert isinstance(noising.noising_widget(named_mixture("two_blobs_2d"), T=30, n_samples=50),
                      noising.NoisingView2D)
    assert isinstance(noising.noising_widget(torch.rand(20, 2) - 0.5, T=30), noising.NoisingView2D)
    assert isinstance(noising.noising_widget(torch.rand(2, 4, 4), T=30), noising.NoisingViewImages)
    with pytest.raises(ValueError, match="data"):
        noising.noising_widget(torch.rand(20, 3), T=30)
    with pytest.raises(ValueError, match="same T"):
        noising.NoisingView2D(torch.zeros(5, 2), schedules=[NoiseSchedule.linear(30), NoiseSchedule.cosine(20)])
    with pytest.raises(ValueError, match="t"):
        noising.NoisingView2D(torch.zeros(5, 2), T=30, t=31)
    with pytest.raises(TypeError, match="1-D"):
        noising.NoisingView1D(named_mixture("two_blobs_2d"), T=30)
    view = noising.NoisingView2D(torch.zeros(5, 2), T=30, t=3)
    with pytest.raises(ValueError, match="not a control"):
        view.update(alpha=1)


# ====================================================================== static figures
def _labelled(fig):
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), ax
        assert ax.get_legend() is not None or fig.legends, ax


def test_static_figures_are_labelled():
    import matplotlib.pyplot as plt

    lin, cos = NoiseSchedule.linear(40), NoiseSchedule.cosine(40)
    paths = noising.simulate_paths(torch.full((500, 1), 1.5, dtype=torch.float64), lin, torch.Generator())
    figs = [noising.figure_closed_form_check(lin, paths, [1, 10, 40]),
            noising.figure_schedules({"linear": lin, "cosine": cos})]
    x0 = GaussianMixture([1.0], [[0.0]], 1.0).sample(2000, generator=torch.Generator().manual_seed(0))
    fits = {"linear": noising.fit_posterior_coefficients(noising.simulate_paths(x0, lin), [2, 20, 40])}
    figs.append(noising.figure_posterior_coefficients([lin, cos], fits))
    for fig in figs:
        assert isinstance(fig, matplotlib.figure.Figure)
        _labelled(fig)
        plt.close(fig)
    with pytest.raises(ValueError, match="same x\\^0"):
        noising.figure_closed_form_check(lin, noising.simulate_paths(x0, lin), [1])


def test_moment_zscores_accept_the_right_schedule_and_reject_the_wrong_one():
    lin, cos = NoiseSchedule.linear(100), NoiseSchedule.cosine(100)
    x0 = torch.full((20_000, 1), 1.5, dtype=torch.float64)
    paths = noising.simulate_paths(x0, lin, torch.Generator().manual_seed(9))
    z = noising.moment_zscores(lin, paths)
    assert z["t"].tolist() == list(range(1, 101))
    # 200 z-scores, each N(0, 1) under the closed form: max |z| < 5 has false-alarm rate < 1.2e-4
    assert np.abs(z["z_mean"]).max() < Z and np.abs(z["z_var"]).max() < Z
    assert np.abs(noising.moment_zscores(cos, paths)["z_mean"]).max() > 10 * Z
    table = noising.posterior_fit_table(lin, noising.fit_posterior_coefficients(
        noising.simulate_paths(torch.randn(500, 1, generator=torch.Generator().manual_seed(1)), lin), [1, 50]))
    a50 = lin.posterior_coefficients(50)[0].item()
    assert f"{a50:.4f}" in table and len(table.splitlines()) == 3
