"""The guidance-strength widget: its pure compute against the exact core, and its views' in-place updates.

References: the mixture's closed forms (component moments, mixture mean and covariance, weights = E p(y | x)),
``tilted_density_grid`` itself for the drawn density, Monte Carlo for the probability ellipses, and a hand-made
tiling for the MNIST grid. Statistical tests use fixed seeds; each allows 4.5 standard errors (a false alarm
rate below 1e-5 per compared number for a fresh seed) plus, for samples, a small margin for the sampler's
discretisation (50 steps).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib import GaussianMixture, NoiseSchedule, named_mixture
from course_lib.diffusion import ExactDenoiser
from course_lib.guidance import tilted_density_grid
from course_lib.widgets.guidance import (
    MnistGuidanceView,
    ToyGuidanceView,
    check_sample_sets,
    guided_toy_samples,
    probability_ellipse,
    sample_grid,
    sample_statistics,
    tilted_statistics,
    toy_guidance_data,
    tradeoff_curve,
)

SCHEDULE = NoiseSchedule.cosine(1000)
MIX = named_mixture("three_classes_2d")
GAMMAS = (0.0, 1.0, 3.0)
N = 400
Z = 4.5


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(1)
    return toy_guidance_data(MIX, SCHEDULE, gammas=GAMMAS, n=N, steps=50, seed=3, grid_n=61)


# ---------------------------------------------------------------------------------------------- toy compute
def test_toy_data_shapes(toy):
    K, G = MIX.K, len(GAMMAS)
    assert toy["samples"].shape == (K, G, N, 2) and toy["density"].shape == (K, G, 61, 61)
    for key in ("confidence", "share", "spread", "exact_confidence", "exact_share", "exact_spread"):
        assert toy[key].shape == (K, G)
    np.testing.assert_array_equal(toy["gammas"], GAMMAS)
    assert toy["steps"] == 50 and toy["ellipses"].shape == (K, 2, 3)


@pytest.mark.parametrize("y", range(3))
def test_gamma_one_draws_from_component_y(toy, y):
    x = toy["samples"][y, GAMMAS.index(1.0)]
    mu, cov = MIX.means[y].numpy(), MIX.covs[y].numpy()
    se_mean = np.sqrt(np.diag(cov) / N)
    assert np.all(np.abs(x.mean(0) - mu) < Z * se_mean + 0.02), (x.mean(0), mu)
    # the standard error of an empirical covariance entry: sqrt((S_ii S_jj + S_ij^2) / n)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / N)
    assert np.all(np.abs(np.cov(x.T) - cov) < Z * se_cov + 0.02), (np.cov(x.T), cov)


@pytest.mark.parametrize("y", range(3))
def test_gamma_zero_is_the_unconditional_model(toy, y):
    # E_{p(x)} p(y | x) = p(y) = w_y: the samples' mean confidence is the class's weight
    x = torch.as_tensor(toy["samples"][y, GAMMAS.index(0.0)])
    conf = MIX.class_posterior(x, 1.0)[:, y]
    se = float(conf.std()) / math.sqrt(N)
    assert abs(toy["confidence"][y, 0] - float(MIX.weights[y])) < Z * se + 0.01
    assert toy["confidence"][y, 0] == pytest.approx(float(conf.mean()), abs=1e-12)
    assert toy["exact_confidence"][y, 0] == pytest.approx(float(MIX.weights[y]), abs=1e-3)


def test_every_statistic_of_the_toy_view_rests_on_distinct_samples(toy):
    # at gamma = 0 the prompt is ignored: were the classes' chains started from shared noise, their rows would be
    # copies and a class's statistics would count another class's samples (the MNIST sets' gamma = 0 trap)
    for j, g in enumerate(GAMMAS):
        pts = toy["samples"][:, j].reshape(-1, 2)
        assert len(np.unique(pts, axis=0)) == len(pts), f"gamma {g}: repeated samples"


@pytest.mark.parametrize("y", range(3))
def test_stronger_guidance_makes_the_exact_classifier_surer(toy, y):
    conf = toy["confidence"][y]
    assert conf[0] < 0.6 and np.all(np.diff(conf) > 0), conf
    assert np.all(np.diff(toy["exact_confidence"][y]) > 0)


@pytest.mark.parametrize("y", range(3))
def test_guided_samples_leave_the_tilted_density_for_gamma_above_one(toy, y):
    # what the view's title says: at gamma = 1 the samples' spread sqrt(tr Cov) is p(x | y)'s; at gamma = 3 they
    # are surer than p(x) p(y | x)^gamma (mean p(y | x) 0.98 against 0.94-0.96 with many samples): guided
    # sampling over-sharpens, it does not draw from the tilted density
    g1, g3 = GAMMAS.index(1.0), GAMMAS.index(3.0)
    cov = MIX.covs[y].numpy()
    spread = math.sqrt(np.trace(cov))
    se = math.sqrt(2 * np.trace(cov @ cov) / N) / (2 * spread)  # delta method: sd of sqrt(tr of the sample cov)
    assert abs(toy["spread"][y, g1] - spread) < Z * se + 0.03  # 0.03: the 50-step sampler's own shrinkage
    assert toy["exact_spread"][y, g1] == pytest.approx(spread, abs=1e-3)
    conf = MIX.class_posterior(torch.as_tensor(toy["samples"][y, g3], dtype=torch.float64), 1.0)[:, y].numpy()
    se_conf = conf.std() / math.sqrt(len(conf))
    assert conf.mean() - toy["exact_confidence"][y, g3] > Z * se_conf, (conf.mean(), toy["exact_confidence"][y, g3])


def test_drawn_density_is_the_tilted_density_grid(toy):
    for y in range(3):
        for j, g in enumerate(GAMMAS):
            xs, ys, dens = tilted_density_grid(MIX, y, g, (-3.0, 3.0), (-3.0, 3.0), 61)
            np.testing.assert_allclose(toy["density"][y, j], dens.numpy(), rtol=1e-12)
    np.testing.assert_allclose(toy["xs"], xs.numpy())
    np.testing.assert_allclose(toy["ys"], ys.numpy())


@pytest.mark.parametrize("y", range(3))
def test_tilted_statistics_match_the_closed_forms_at_gamma_zero_and_one(y):
    s0 = tilted_statistics(MIX, y, 0.0)
    assert s0["confidence"] == pytest.approx(float(MIX.weights[y]), abs=1e-4)
    np.testing.assert_allclose(s0["mean"], MIX.mixture_mean().numpy(), atol=1e-4)
    assert s0["spread"] == pytest.approx(math.sqrt(float(MIX.mixture_cov().trace())), abs=1e-3)
    s1 = tilted_statistics(MIX, y, 1.0)
    np.testing.assert_allclose(s1["mean"], MIX.means[y].numpy(), atol=1e-4)
    assert s1["spread"] == pytest.approx(math.sqrt(float(MIX.covs[y].trace())), abs=1e-3)


def test_sample_statistics_of_known_points():
    x = torch.tensor([[0.1, 0.9], [0.0, 0.6], [-1.0, -0.8]], dtype=torch.float64)  # two deep in class 0, one in 1
    s = sample_statistics(MIX, x, 0)
    assert s["share"] == pytest.approx(2 / 3)
    assert s["confidence"] == pytest.approx(float(MIX.class_posterior(x, 1.0)[:, 0].mean()))
    assert s["spread"] == pytest.approx(math.sqrt(float(torch.cov(x.T).trace())))
    np.testing.assert_allclose(s["mean"], x.mean(0).numpy())


@pytest.mark.parametrize(("cov", "mass"), [([[0.36, 0.0], [0.0, 0.0625]], 0.5), ([[0.1369, -0.1288], [-0.1288, 0.2856]],
                                                                               0.9)])
def test_probability_ellipse_holds_its_mass(cov, mass):
    w, h, angle = probability_ellipse(np.array(cov), mass)
    n = 40_000
    x = np.random.default_rng(0).multivariate_normal([0.0, 0.0], cov, size=n)
    th = np.radians(angle)
    u = x[:, 0] * np.cos(th) + x[:, 1] * np.sin(th)  # along the ellipse's width
    v = -x[:, 0] * np.sin(th) + x[:, 1] * np.cos(th)
    inside = np.mean((u / (w / 2)) ** 2 + (v / (h / 2)) ** 2 <= 1.0)
    assert abs(inside - mass) < Z * math.sqrt(mass * (1 - mass) / n)
    assert w >= h


def test_a_float32_network_can_guide_and_the_classifier_is_unused_at_gamma_zero():
    class Net(torch.nn.Module):  # a (bad) trained-looking classifier, float32 like the kit's toy models
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = torch.nn.Linear(2, 3)

        def forward(self, x_t, t):
            assert x_t.dtype == torch.float32
            return self.lin(x_t)

    exact = guided_toy_samples(MIX, SCHEDULE, 0.0, n=20, steps=10, seed=1)
    net = guided_toy_samples(MIX, SCHEDULE, 0.0, classifier=Net(), n=20, steps=10, seed=1)
    np.testing.assert_allclose(net.numpy(), exact.numpy())
    guided = guided_toy_samples(MIX, SCHEDULE, 2.0, classifier=Net(), denoiser=ExactDenoiser(MIX, SCHEDULE, "eps"),
                                n=20, steps=10, seed=1)
    assert guided.shape == (3, 20, 2) and torch.isfinite(guided).all()
    assert not torch.allclose(guided, exact)

    exact_eps = ExactDenoiser(MIX, SCHEDULE, "eps")

    class Den(torch.nn.Module):  # a float32 denoiser: the sampler runs in float32, the exact classifier follows
        target, dim = "eps", 2

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x_t, t):
            assert x_t.dtype == torch.float32
            return exact_eps(x_t, t) * self.scale

    x = guided_toy_samples(MIX, SCHEDULE, 1.0, denoiser=Den(), n=20, steps=10, seed=1)
    ref = guided_toy_samples(MIX, SCHEDULE, 1.0, n=20, steps=10, seed=1)
    assert x.dtype == torch.float64
    np.testing.assert_allclose(x.numpy(), ref.numpy(), atol=1e-4)  # the same numbers, in float32 precision


def test_bad_toy_inputs_name_the_argument():
    with pytest.raises(TypeError, match="^mixture:"):
        toy_guidance_data("three_classes_2d", SCHEDULE)
    with pytest.raises(ValueError, match="^mixture:"):
        toy_guidance_data(named_mixture("bimodal_1d"), SCHEDULE)
    with pytest.raises(ValueError, match="^mixture:"):
        toy_guidance_data(GaussianMixture([1.0], [[0.0, 0.0]], 1.0), SCHEDULE)
    with pytest.raises(TypeError, match="^schedule:"):
        toy_guidance_data(MIX, [0.1, 0.2])
    with pytest.raises(ValueError, match="^gammas:"):
        toy_guidance_data(MIX, SCHEDULE, gammas=[1.0, -2.0])
    with pytest.raises(ValueError, match="^gammas:"):
        toy_guidance_data(MIX, SCHEDULE, gammas=[])
    with pytest.raises(TypeError, match="^gammas:"):
        toy_guidance_data(MIX, SCHEDULE, gammas=3.0)
    with pytest.raises(ValueError, match="^n:"):
        toy_guidance_data(MIX, SCHEDULE, n=0)
    with pytest.raises(ValueError, match="^steps:"):
        guided_toy_samples(MIX, SCHEDULE, 1.0, steps=5000)
    with pytest.raises(TypeError, match="^classifier:"):
        guided_toy_samples(MIX, SCHEDULE, 1.0, classifier="exact")
    with pytest.raises(ValueError, match="^classifier:"):
        guided_toy_samples(MIX, SCHEDULE, 1.0, classifier=lambda x, t: torch.zeros(x.shape[0], 2, dtype=x.dtype))
    with pytest.raises(TypeError, match="^denoiser:"):
        guided_toy_samples(MIX, SCHEDULE, 1.0, denoiser=3)
    with pytest.raises(ValueError, match="^y:"):
        sample_statistics(MIX, torch.zeros(3, 2), 3)
    with pytest.raises(ValueError, match="^mass:"):
        probability_ellipse(np.eye(2), 1.0)
    with pytest.raises(ValueError, match="^y:"):
        ToyGuidanceView(MIX, SCHEDULE, y=5)
    with pytest.raises(ValueError, match="^gamma:"):
        ToyGuidanceView(MIX, SCHEDULE, gammas=(0.0, 1.0), gamma=2.0)


# ---------------------------------------------------------------------------------------------- toy view
def _snapshot(view):
    fig = view.fig
    artists = [id(a) for ax in fig.axes for a in (*ax.lines, *ax.collections, *ax.patches, *ax.texts, *ax.images)]
    return id(fig), len(fig.axes), artists


def test_toy_view_updates_its_artists_in_place():
    import matplotlib.pyplot as plt

    figs_before = plt.get_fignums()
    view = ToyGuidanceView(MIX, SCHEDULE, gammas=(0.0, 1.0, 4.0), n=60, steps=20, grid_n=41, y=0, gamma=1.0)
    snap = _snapshot(view)
    a = view.artists
    image, scatter, conf = a["density"], a["samples"], a["confidence"]
    before = (image.get_array().copy(), scatter.get_offsets().copy(), np.array(conf.get_ydata()).copy())
    view.update(y=2, gamma=4.0)
    view.fig.canvas.draw()
    assert _snapshot(view) == snap
    assert a["density"] is image and a["samples"] is scatter and a["confidence"] is conf
    assert not np.allclose(image.get_array(), before[0])
    assert not np.allclose(scatter.get_offsets(), before[1])
    assert not np.allclose(conf.get_ydata(), before[2])
    _, _, dens = tilted_density_grid(MIX, 2, 4.0, (-3.0, 3.0), (-3.0, 3.0), 41)
    np.testing.assert_allclose(image.get_array(), dens.numpy(), rtol=1e-12)
    np.testing.assert_allclose(scatter.get_offsets(), view.data["samples"][2, 2])
    for e in a["ellipses"]:
        np.testing.assert_allclose(e.get_center(), MIX.means[2].numpy())
    np.testing.assert_allclose(a["confidence"].get_ydata(), view.data["confidence"][2])
    np.testing.assert_allclose(a["exact_spread"].get_ydata(), view.data["exact_spread"][2])
    assert [float(line.get_xdata()[0]) for line in a["current"]] == [4.0, 4.0]
    assert "γ = 4" in a["title"].get_text()
    # a slider move in the front end goes through the same path
    view.controls["y"].value = 1
    np.testing.assert_allclose(scatter.get_offsets(), view.data["samples"][1, 2])
    assert plt.get_fignums() == figs_before  # never through pyplot


def test_toy_view_labels_and_legends():
    view = ToyGuidanceView(MIX, SCHEDULE, gammas=(0.0, 1.0), n=20, steps=10, grid_n=21)
    for ax in view.axes:
        assert ax.get_ylabel()
    assert view.axes[0].get_xlabel() and view.axes[2].get_xlabel()
    assert len(view.fig.legends) == 1 and view.axes[1].get_legend() is not None
    assert "exact" in view.artists["title"].get_text()  # at gamma = 1 with the exact models


# ---------------------------------------------------------------------------------------------- MNIST
STRENGTHS = {"classifier": [0.0, 1.0, 4.0], "cfg": [1.0, 1.5, 6.0]}


def _sets(per_digit: int = 5):
    g = torch.Generator().manual_seed(0)
    return {kind: {s: torch.rand(10, per_digit, 1, 28, 28, generator=g) * 2 - 1 for s in gs}
            for kind, gs in STRENGTHS.items()}


def _rows(diversity: bool = True):
    rows = []
    for kind, gs in STRENGTHS.items():
        for i, s in enumerate(gs):
            row = {"kind": kind, "gamma": s, "recognised": 0.5 + 0.1 * i + (0.05 if kind == "cfg" else 0.0),
                   "unconditional": kind == "classifier" and s == 0.0}
            if diversity:
                row["diversity"] = 1.0 - 0.2 * i
            rows.append(row)
    return rows[::-1]  # any order


def _tile(arr, k: int, nrow: int, size: int = 28) -> np.ndarray:
    r, c = divmod(k, nrow)
    return arr[r * (size + 1): r * (size + 1) + size, c * (size + 1): c * (size + 1) + size]


def test_mnist_view_shows_exactly_the_selected_set():
    sets = _sets()
    view = MnistGuidanceView(sets, _rows(), kind="classifier", digit=3, gamma=4.0)
    arr = view.artists["images"].get_array()
    nrow = view.nrow
    assert nrow == 3
    for k in range(5):
        np.testing.assert_allclose(_tile(arr, k, nrow), sets["classifier"][4.0][3, k, 0].numpy(), rtol=1e-6)
    view.update(kind="cfg", digit=8, gamma=1.5)
    arr = view.artists["images"].get_array()
    for k in range(5):
        np.testing.assert_allclose(_tile(arr, k, nrow), sets["cfg"][1.5][8, k, 0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(arr, sample_grid(sets, "cfg", 1.5, 8, nrow))


def test_mnist_view_updates_in_place_and_draws_the_kinds_curve():
    view = MnistGuidanceView(_sets(), _rows(), kind="classifier", digit=0)
    assert view.values()["gamma"] == 1.0  # the middle strength
    snap = _snapshot(view)
    a = view.artists
    image, rec = a["images"], a["recognised"]
    before = image.get_array().copy()
    view.update(digit=5)
    view.fig.canvas.draw()
    assert _snapshot(view) == snap and a["images"] is image and a["recognised"] is rec
    assert not np.allclose(image.get_array(), before)
    curve = tradeoff_curve(_rows(), "classifier")
    np.testing.assert_allclose(rec.get_xdata(), STRENGTHS["classifier"])
    np.testing.assert_allclose(rec.get_ydata(), curve["recognised"])
    np.testing.assert_allclose(a["diversity"].get_ydata(), [1.0, 0.8, 0.6])
    np.testing.assert_allclose(a["other_recognised"].get_xdata(), STRENGTHS["cfg"])
    np.testing.assert_allclose(np.ravel(a["recognised_now"].get_xydata()), [1.0, 0.6])


def test_mnist_view_marks_the_chance_level_where_the_prompt_is_ignored():
    view = MnistGuidanceView(_sets(), _rows(), kind="classifier", digit=3, gamma=0.0)
    axr = view.axes[1]
    chance = [ln for ln in axr.get_lines() if np.allclose(ln.get_ydata(), 0.1) and ln.get_linestyle() == ":"]
    assert len(chance) == 1
    assert "chance (10%)" in [t.get_text() for t in view.fig.legends[0].get_texts()]
    assert "ignored" in view.artists["title"].get_text()
    view.update(gamma=1.0)
    assert "ignored" not in view.artists["title"].get_text()
    np.testing.assert_array_equal(tradeoff_curve(_rows(), "classifier")["unconditional"], [True, False, False])
    silent = [{"kind": "classifier", "gamma": 0.0, "recognised": 0.1}]  # a row that does not say: False
    assert not tradeoff_curve(silent, "classifier")["unconditional"].any()


def test_switching_kind_repopulates_the_gamma_slider():
    view = MnistGuidanceView(_sets(), _rows(), kind="classifier", gamma=4.0)
    slider = view.controls["gamma"]
    assert [v for _, v in slider.options] == STRENGTHS["classifier"]
    view.controls["kind"].value = "cfg"  # as a click in the front end
    assert [v for _, v in slider.options] == STRENGTHS["cfg"]
    assert slider.value == 6.0  # the nearest of cfg's strengths to 4
    np.testing.assert_allclose(view.artists["recognised"].get_xdata(), STRENGTHS["cfg"])
    np.testing.assert_allclose(view.artists["images"].get_array(), sample_grid(_sets(), "cfg", 6.0, 0, view.nrow))
    view.update(kind="classifier", gamma=0.0)
    assert [v for _, v in slider.options] == STRENGTHS["classifier"] and slider.value == 0.0
    view.update(gamma=1.5, kind="cfg")  # the kind is set first, whatever the order
    assert slider.value == 1.5


def test_mnist_view_without_diversity_says_so():
    view = MnistGuidanceView(_sets(), _rows(diversity=False))
    assert view.artists["no_diversity"].get_visible()
    assert np.isnan(tradeoff_curve(_rows(diversity=False), "cfg")["diversity"]).all()


def test_bad_mnist_inputs_name_the_argument():
    sets, rows = _sets(), _rows()
    with pytest.raises(TypeError, match="^sample_sets:"):
        MnistGuidanceView([], rows)
    with pytest.raises(ValueError, match="^sample_sets:"):
        check_sample_sets({"cfg": {1.0: torch.zeros(9, 4, 1, 28, 28)}})
    with pytest.raises(ValueError, match="^sample_sets:"):
        check_sample_sets({"cfg": {1.0: torch.zeros(10, 4, 1, 28, 28), 2.0: torch.zeros(10, 3, 1, 28, 28)}})
    with pytest.raises(ValueError, match="^tradeoff_rows:"):
        MnistGuidanceView(sets, rows[1:])
    with pytest.raises(ValueError, match="^tradeoff_rows:"):
        MnistGuidanceView(sets, [*rows, {"kind": "other", "gamma": 1.0, "recognised": 0.5}])
    with pytest.raises(ValueError, match="^tradeoff_rows:"):
        MnistGuidanceView(sets, [{"kind": "cfg", "gamma": 1.0}])
    with pytest.raises(TypeError, match="^tradeoff_rows:"):
        MnistGuidanceView(sets, {"kind": "cfg"})
    with pytest.raises(ValueError, match="^kind:"):
        MnistGuidanceView(sets, rows, kind="free")
    with pytest.raises(ValueError, match="^digit:"):
        MnistGuidanceView(sets, rows, digit=10)
    with pytest.raises(ValueError, match="^gamma:"):
        MnistGuidanceView(sets, rows, kind="cfg", gamma=0.0)
    with pytest.raises(ValueError, match="^gamma:"):
        sample_grid(sets, "cfg", 2.0, 1)
    with pytest.raises(ValueError, match="^kind:"):
        tradeoff_curve(rows, "free")
