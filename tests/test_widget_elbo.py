"""The ELBO-decomposition widget: its pure compute against independent references, its bars, in-place updates
and gradient ascent.

References: scipy's normal densities and Gaussian conditioning written out for k = d = 1 (posterior,
marginal), ``LinearGaussianModel.elbo_terms`` / ``elbo_monte_carlo`` (the exact core, tested in
test_linear_gaussian.py), scipy.optimize for the best diagonal q, and the known optimum of the
Monte Carlo objective with fixed draws. The one statistical test states its false-alarm rate.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
from scipy import optimize, stats

from course_lib import LinearGaussianModel
from course_lib.widgets.elbo import (
    ElboView,
    elbo_ascent,
    elbo_view_data,
    log_marginal_quadrature,
    mean_field_optimum,
    reparameterised_elbo,
    standard_normal_draws,
)

matplotlib.use("Agg")

CASES = [  # (x, W, b, sigma, q_mean, q_log_std)
    (1.5, 1.0, 0.0, 0.7, -0.5, 0.3),
    (-2.0, 2.5, 0.5, 0.3, 0.2, -1.5),
    (0.3, -0.8, -0.2, 1.6, 1.0, 0.8),
]


def model_1d(W, b, sigma):
    return LinearGaussianModel([[W]], [b], sigma)


def conditioning_1d(x, W, b, sigma):
    """(posterior mean, posterior sd, log p(x)) from the joint Gaussian of (z, x): Cov(z, x) = W, Var x = W^2 + s^2."""
    var_x = W**2 + sigma**2
    return W * (x - b) / var_x, math.sqrt(1 - W**2 / var_x), stats.norm(b, math.sqrt(var_x)).logpdf(x)


# ====================================================================== pure compute
@pytest.mark.parametrize("x, W, b, sigma, m, ls", CASES)
def test_view_data_matches_the_exact_core_and_scipy(x, W, b, sigma, m, ls):
    model = model_1d(W, b, sigma)
    zs = np.linspace(-4, 4, 81)
    d = elbo_view_data(model, x, m, ls, 32, z_grid=zs)
    terms = model.elbo_terms([[x]], [m], [[math.exp(2 * ls)]])
    for name in ("log_px", "elbo", "reconstruction", "kl_prior", "kl_posterior"):
        assert d[name] == pytest.approx(float(terms[name][0]), rel=1e-12, abs=1e-12), name
    pm, ps, log_px = conditioning_1d(x, W, b, sigma)
    assert d["log_px"] == pytest.approx(log_px, rel=1e-10)
    assert (d["posterior_mean"], d["posterior_std"]) == pytest.approx((pm, ps), rel=1e-10)
    assert d["q_std"] == pytest.approx(math.exp(ls))
    np.testing.assert_allclose(d["z_grid"], zs)
    np.testing.assert_allclose(d["q_density"], stats.norm(m, math.exp(ls)).pdf(zs), rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(d["posterior_density"], stats.norm(pm, ps).pdf(zs), rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(d["prior_density"], stats.norm().pdf(zs), rtol=1e-12)
    # the KL terms from scipy's densities by quadrature, independently of the closed forms
    fine = np.linspace(m - 12 * math.exp(ls), m + 12 * math.exp(ls), 20001)
    q = stats.norm(m, math.exp(ls))
    kl_post = np.trapezoid(q.pdf(fine) * (q.logpdf(fine) - stats.norm(pm, ps).logpdf(fine)), fine)
    kl_prior = np.trapezoid(q.pdf(fine) * (q.logpdf(fine) - stats.norm().logpdf(fine)), fine)
    assert d["kl_posterior"] == pytest.approx(kl_post, rel=1e-6, abs=1e-9)
    assert d["kl_prior"] == pytest.approx(kl_prior, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("x, W, b, sigma, m, ls", CASES)
def test_monte_carlo_matches_elbo_monte_carlo_with_the_same_draws(x, W, b, sigma, m, ls):
    model = model_1d(W, b, sigma)
    d = elbo_view_data(model, x, m, ls, 40)  # default draws: those of a generator seeded 0
    est, se = model.elbo_monte_carlo([[x]], [m], [[math.exp(2 * ls)]], 40, generator=torch.Generator().manual_seed(0))
    assert d["mc_estimate"] == pytest.approx(float(est[0]), rel=1e-12)
    assert d["mc_stderr"] == pytest.approx(float(se[0]), rel=1e-12)
    assert d["mc_values"].shape == d["mc_z"].shape == (40,)
    np.testing.assert_allclose(d["mc_z"], m + math.exp(ls) * standard_normal_draws(40)[:, 0].numpy())
    assert d["mc_values"].mean() == pytest.approx(d["mc_estimate"])


def test_common_random_numbers_use_a_prefix_and_move_smoothly():
    model = model_1d(1.0, 0.0, 0.7)
    eps = standard_normal_draws(100)
    d10 = elbo_view_data(model, 1.5, 0.2, -0.3, 10, eps=eps)
    np.testing.assert_allclose(d10["mc_z"], 0.2 + math.exp(-0.3) * eps[:10, 0].numpy())
    assert d10["mc_estimate"] == pytest.approx(float(reparameterised_elbo(model, 1.5, 0.2, -0.3, eps[:10])[0]))
    # the same draws for every slider value: a small move of q's mean moves the estimate a little
    # (|d estimate / d mu| is bounded by the curvature here; fresh draws would jump by ~ the standard error)
    steps = [elbo_view_data(model, 1.5, 0.2 + 1e-3 * i, -0.3, 10, eps=eps)["mc_estimate"] for i in range(5)]
    assert np.abs(np.diff(steps)).max() < 0.01
    with pytest.raises(ValueError, match="at least n_draws"):
        elbo_view_data(model, 1.5, 0.0, 0.0, 101, eps=eps)


def test_reparameterised_elbo_is_unbiased_and_differentiable():
    # k = 2, d = 3: equal to elbo_monte_carlo with a diagonal covariance and the same draws ...
    g = torch.Generator().manual_seed(4)
    model = LinearGaussianModel(torch.randn(3, 2, generator=g, dtype=torch.float64), torch.zeros(3), 0.8)
    x = model.sample(1, generator=g)
    m = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    ls = torch.tensor([-0.4, 0.1], dtype=torch.float64, requires_grad=True)
    cov = torch.diag(torch.exp(2 * ls))
    want, _ = model.elbo_monte_carlo(x, m, cov, 7, generator=torch.Generator().manual_seed(9))
    got, values = reparameterised_elbo(model, x, m, ls, standard_normal_draws(7, 2, seed=9))
    assert float(got.detach()) == pytest.approx(float(want[0].detach()), rel=1e-12) and values.shape == (7,)
    # ... differentiable: its gradient is the gradient of the library's estimate
    g_got = torch.autograd.grad(got, [m, ls])
    g_want = torch.autograd.grad(want[0], [m, ls])
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # ... and unbiased: 20,000 draws land within 5 standard errors of the exact ELBO (false alarm 5.7e-7)
    big, vals = reparameterised_elbo(model, x, m, ls, standard_normal_draws(20_000, 2, seed=1))
    exact = float(model.elbo_terms(x, m, cov)["elbo"][0].detach())
    assert abs(float(big.detach()) - exact) < 5 * float(vals.detach().std()) / math.sqrt(20_000)


def test_inputs_are_checked():
    model = model_1d(1.0, 0.0, 0.7)
    with pytest.raises(ValueError, match="k = 1"):
        elbo_view_data(LinearGaussianModel(torch.ones(2, 2), torch.zeros(2), 1.0), [0.0, 0.0], 0.0, 0.0, 4)
    with pytest.raises(ValueError, match="n_draws"):
        elbo_view_data(model, 1.0, 0.0, 0.0, 1)
    with pytest.raises(ValueError, match="x: expected one observation"):
        elbo_view_data(model, [1.0, 2.0], 0.0, 0.0, 4)
    with pytest.raises(TypeError, match="model"):
        elbo_view_data("model", 1.0, 0.0, 0.0, 4)
    with pytest.raises(ValueError, match="params"):
        next(elbo_ascent(model, 1.0, 0.0, 0.0, steps=3, params="theta"))
    with pytest.raises(ValueError, match="family"):
        next(elbo_ascent(model, 1.0, 0.0, 0.0, steps=3, family="full"))
    with pytest.raises(ValueError, match="q_mean"):
        ElboView(q_mean=9.0)


def test_quadrature_matches_the_closed_form_marginal():
    for k, n_points in ((1, 60), (2, 60)):
        g = torch.Generator().manual_seed(k)
        model = LinearGaussianModel(0.7 * torch.randn(3, k, generator=g, dtype=torch.float64), torch.ones(3), 0.9)
        x = model.sample(4, generator=g)
        torch.testing.assert_close(log_marginal_quadrature(model, x, n_points), model.log_marginal(x),
                                   rtol=1e-9, atol=1e-9)
    # too few nodes is visibly wrong (the figure's point): 3 nodes on [-6, 6] miss the mass
    coarse = log_marginal_quadrature(model_1d(1.0, 0.0, 0.3), torch.tensor([[1.0]]), 3)
    assert abs(float(coarse[0] - model_1d(1.0, 0.0, 0.3).log_marginal([[1.0]])[0])) > 0.1


# ====================================================================== the view: bars and in-place updates
@pytest.fixture(scope="module")
def view():
    return ElboView()


def _bar_ends(view):
    bars = view.waterfall.bars
    return {name: (r.get_y(), r.get_y() + r.get_height()) for name, r in bars.items()}


BAR_CASES = [c for c in CASES if c[2] == 0.0] + [(1.5, -1.5, 0.0, 0.25, 2.5, -2.5)]  # the view has b = 0


@pytest.mark.parametrize("x, W, b, sigma, m, ls", BAR_CASES)
def test_bars_show_the_identities(view, x, W, b, sigma, m, ls):
    view.x = x
    view.update(W=W, sigma=sigma, q_mean=m, q_log_std=ls, n_draws=20)
    d, e = view.data, _bar_ends(view)
    terms = model_1d(W, 0.0, sigma).elbo_terms([[x]], [m], [[math.exp(2 * ls)]])
    t = {k: float(v[0]) for k, v in terms.items()}
    assert e["log_px"] == pytest.approx((0.0, t["log_px"]))
    assert e["elbo"] == pytest.approx((0.0, t["elbo"]))
    assert e["reconstruction"] == pytest.approx((0.0, t["reconstruction"]))
    # log p(x) = ELBO + gap: the gap bar starts where the ELBO bar ends and ends at the log p(x) bar's top
    assert e["gap"][0] == pytest.approx(e["elbo"][1])
    assert e["gap"][1] == pytest.approx(e["log_px"][1], abs=1e-9)
    assert e["gap"][1] - e["gap"][0] == pytest.approx(t["kl_posterior"]) and e["gap"][1] >= e["gap"][0]
    # ELBO = reconstruction - KL(q || p(z)): the prior-matching bar runs from the reconstruction down to the ELBO
    assert e["prior_matching"][0] == pytest.approx(e["reconstruction"][1])
    assert e["prior_matching"][1] == pytest.approx(e["elbo"][1], abs=1e-9)
    assert e["prior_matching"][0] - e["prior_matching"][1] == pytest.approx(t["kl_prior"])
    # the numbers printed on the bars, and the Monte Carlo marker +- 2 standard errors
    labels = {k: float(a.get_text().replace("\N{MINUS SIGN}", "-")) for k, a in view.waterfall.labels.items()}
    shown = {"log_px": t["log_px"], "elbo": t["elbo"], "gap": t["kl_posterior"],
             "reconstruction": t["reconstruction"], "prior_matching": -t["kl_prior"]}
    for name, value in shown.items():  # rounded to 2 decimals below 10, then to 3 significant digits
        assert labels[name] == pytest.approx(value, abs=0.006 if abs(value) < 10 else 0.06 if abs(value) < 100 else 0.6)
    assert view._mc_point.get_ydata()[0] == pytest.approx(d["mc_estimate"])
    lo, hi = view._mc_whisker.get_ydata()
    assert (lo, hi) == pytest.approx((d["mc_estimate"] - 2 * d["mc_stderr"], d["mc_estimate"] + 2 * d["mc_stderr"]))
    # everything drawn is inside the axis
    ylo, yhi = view.ax_bars.get_ylim()
    assert ylo <= min(min(v) for v in e.values()) and max(max(v) for v in e.values()) <= yhi
    view.x = 1.5


def test_updates_change_the_same_artists_in_place(view):
    view.update(q_mean=-0.5, q_log_std=0.3, W=1.0, sigma=0.7, n_draws=16)
    fig, axes = view.fig, list(view.fig.axes)
    children = [list(ax.get_children()) for ax in axes]
    bars = dict(view.waterfall.bars)
    heights = {k: r.get_height() for k, r in bars.items()}
    q_before = view._q_line.get_ydata().copy()
    rug_before = view._rug.get_xdata().copy()
    view.update(q_mean=0.8, q_log_std=-0.6, n_draws=40)
    assert view.fig is fig and list(view.fig.axes) == axes
    assert [list(ax.get_children()) for ax in axes] == children  # same objects, none added
    assert all(view.waterfall.bars[k] is bars[k] for k in bars)
    assert any(view.waterfall.bars[k].get_height() != heights[k] for k in bars)
    assert not np.allclose(view._q_line.get_ydata(), q_before)
    assert len(view._rug.get_xdata()) == 40 and len(rug_before) == 16
    np.testing.assert_allclose(view._post_line.get_ydata(), view.data["posterior_density"])


# ====================================================================== gradient ascent
def test_ascent_on_phi_closes_the_gap(view):
    view.update(q_mean=-0.5, q_log_std=0.3, W=1.0, sigma=0.7, n_draws=16)
    h = view.run_ascent(200, "phi")
    assert h["kl_posterior"][0] > 1.0 and h["kl_posterior"][-1] < 1e-5
    np.testing.assert_allclose(h["log_px"], h["log_px"][0])  # theta fixed: log p(x) does not move
    np.testing.assert_allclose(h["elbo"] + h["kl_posterior"], h["log_px"], atol=1e-10)
    pm, ps, _ = conditioning_1d(1.5, 1.0, 0.0, 0.7)
    assert (view.values()["q_mean"], math.exp(view.values()["q_log_std"])) == pytest.approx((pm, ps), abs=2e-3)
    assert view.data["kl_posterior"] == pytest.approx(h["kl_posterior"][-1])  # the sliders show the end state


def test_ascent_on_phi_and_theta_raises_log_px(view):
    view.update(q_mean=-0.5, q_log_std=0.3, W=0.4, sigma=0.7, n_draws=16)
    h = view.run_ascent(300, "phi+theta")
    assert h["log_px"][-1] > h["log_px"][0] + 0.2
    assert h["elbo"][-1] > h["elbo"][0]
    # the maximum-likelihood W for one x: W^2 + sigma^2 = (x - b)^2
    assert abs(view.values()["W"]) == pytest.approx(math.sqrt(1.5**2 - 0.7**2), abs=0.02)
    assert h["kl_posterior"][-1] < 1e-3


def test_buttons_animate_the_ascent():
    v = ElboView(ascent_steps=4)
    before = v.values()["q_mean"]
    v.buttons["phi"].click()
    assert v.values()["q_mean"] != before
    assert not any(b.disabled for b in v.buttons.values())


START = {"q_mean": -0.5, "q_log_std": 0.3, "W": 1.0, "sigma": 0.7}


def test_ascent_from_a_stated_start_does_not_depend_on_the_sliders():
    """A notebook cell that runs the ascent gives the same numbers whatever the student did with the sliders."""
    fresh, moved = ElboView(), ElboView()
    moved.update(q_mean=2.5, q_log_std=-2.0, W=-1.7, sigma=1.6, n_draws=100)
    h_fresh = fresh.run_ascent(60, "phi", start=START)
    h_moved = moved.run_ascent(60, "phi", start=START)
    for key in h_fresh:
        np.testing.assert_array_equal(h_fresh[key], h_moved[key], err_msg=key)
    assert fresh.values() == moved.values()  # both widgets show the end of the same run
    assert h_fresh["sigma"][0] == 0.7 and h_fresh["n_draws"][0] == fresh.initial_values()["n_draws"]
    # the start is the stated one: the exact terms of q = N(-0.5, exp(0.3)^2) for W = 1, sigma = 0.7
    terms = model_1d(1.0, 0.0, 0.7).elbo_terms([[1.5]], [-0.5], [[math.exp(0.6)]])
    assert h_moved["elbo"][0] == pytest.approx(float(terms["elbo"][0]), rel=1e-12)
    # and running the same cell again repeats it
    again = moved.run_ascent(60, "phi", start=START)
    np.testing.assert_array_equal(again["elbo"], h_fresh["elbo"])


def test_end_values_continue_a_run_and_initial_is_the_constructors():
    v = ElboView(W=0.4, sigma=0.9, q_mean=1.0, q_log_std=-0.2, n_draws=8)
    assert v.initial_values() == {"q_mean": 1.0, "q_log_std": -0.2, "W": 0.4, "sigma": 0.9, "n_draws": 8}
    v.update(q_mean=-3.0, W=2.0)
    first = v.run_ascent(40, "phi", start="initial")
    assert first["q_mean"][0][0] == 1.0 and first["W"][0][0, 0] == pytest.approx(0.4)
    second = v.run_ascent(40, "phi+theta", start=v.end_values(first))
    for key in ("q_mean", "q_log_std", "W", "elbo", "log_px"):
        np.testing.assert_allclose(second[key][0], first[key][-1], rtol=0, atol=1e-12, err_msg=key)
    # the same two phases in one go with the pure function, from the same start
    states = list(elbo_ascent(model_1d(0.4, 0.0, 0.9), 1.5, first["q_mean"][-1], first["q_log_std"][-1],
                              steps=0))
    assert states[0]["elbo"] == pytest.approx(second["elbo"][0], rel=1e-12)


@pytest.mark.parametrize("start, error, words", [
    ({"q_mean": 0.0, "q_log_std": 0.0, "W": 1.0}, ValueError, "lacks"),
    ({**START, "b": 0.0}, ValueError, "unknown key 'b'"),
    ({**START, "W": 5.0}, ValueError, "outside its slider range"),
    ({**START, "sigma": "0.7"}, TypeError, "finite number"),
    ({**START, "n_draws": 1}, ValueError, "n_draws"),
    ("sliders", ValueError, "'initial' or None"),
    ([0.0, 0.0, 1.0, 0.7], TypeError, "mapping"),
])
def test_a_bad_start_is_named(start, error, words):
    with pytest.raises(error, match=words):
        ElboView().run_ascent(3, start=start)


def test_a_family_without_the_posterior_keeps_a_gap():
    # fixed sigma_q = 1: the best mean is the posterior mean, and the gap floor is KL(N(mu*, 1) || N(mu*, v))
    model = model_1d(1.0, 0.0, 0.7)
    pm, ps, _ = conditioning_1d(1.5, 1.0, 0.0, 0.7)
    r = 1.0 / ps**2
    floor = 0.5 * (r - 1 - math.log(r))
    h = [s["kl_posterior"] for s in elbo_ascent(model, 1.5, -0.5, 0.0, steps=250, family="fixed_std")]
    assert min(h) >= floor - 1e-9
    assert h[-1] == pytest.approx(floor, abs=1e-4)


def test_mean_field_keeps_a_gap_with_a_correlated_posterior():
    model = LinearGaussianModel([[1.0, 1.0]], [0.0], 0.5)  # posterior correlation -0.8
    x = torch.tensor([[1.2]], dtype=torch.float64)
    best = mean_field_optimum(model, x)
    # an independent optimum: scipy minimises the exact KL over diagonal q
    def kl(p):
        return float(model.elbo_terms(x, p[:2], np.diag(np.exp(2 * p[2:])))["kl_posterior"][0])
    res = optimize.minimize(kl, np.zeros(4), method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12,
                                                                          "maxiter": 4000})
    assert best["kl_posterior"] == pytest.approx(res.fun, abs=1e-7)
    np.testing.assert_allclose(best["q_log_std"].numpy(), res.x[2:], atol=1e-3)
    assert best["kl_posterior"] == pytest.approx(0.5 * math.log(25 / 9), rel=1e-10)  # 1/2 log(prod diag / det)
    states = list(elbo_ascent(model, x, [0.0, 0.0], [0.0, 0.0], steps=400))
    assert min(s["kl_posterior"] for s in states) >= best["kl_posterior"] - 1e-9
    assert states[-1]["kl_posterior"] == pytest.approx(best["kl_posterior"], abs=1e-4)


def test_monte_carlo_objective_stops_at_its_own_optimum():
    # with fixed draws the Monte Carlo ELBO is maximised at m + s * mean(eps) = posterior mean and
    # s^2 * var(eps) = posterior variance (var with 1/n): close to, not at, the posterior
    model = model_1d(1.0, 0.0, 0.7)
    eps = standard_normal_draws(8, seed=2)
    e = eps[:, 0].numpy()
    pm, ps, _ = conditioning_1d(1.5, 1.0, 0.0, 0.7)
    s_star = ps / e.std()
    m_star = pm - s_star * e.mean()
    last = list(elbo_ascent(model, 1.5, 0.0, 0.0, steps=600, objective="monte_carlo", eps=eps))[-1]
    assert (float(last["q_mean"][0]), math.exp(float(last["q_log_std"][0]))) == pytest.approx((m_star, s_star),
                                                                                                abs=2e-3)
    assert last["kl_posterior"] > 1e-3


def test_creating_the_view_leaves_the_pyplot_backend_alone():
    """``import ipympl`` switches matplotlib's backend; the view must undo it, else every later notebook figure
    becomes an ipympl widget (not inline, missing from the HTML export). A fresh process: ipympl not yet imported."""
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
            "from course_lib.widgets.elbo import ElboView\nElboView()\n"
            "print(matplotlib.get_backend(), type(plt.figure().canvas).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.lower().split() == ["agg", "figurecanvasagg"], out.stdout
