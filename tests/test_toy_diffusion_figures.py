"""Notebook 06's figures and quality table (course_lib.toy_diffusion_figures).

The numbers are checked against independent references: the schedule's weights against ``posterior_coefficients``,
leave-one-out energy distances against recomputing ``metrics.energy_distance`` without the point, standard errors
against the spread of repeated simulations. The figures are drawn headlessly (Agg) and inspected for their axes,
labels and artists; bad input must raise an error naming the argument.
"""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

from course_lib import NoiseSchedule, named_mixture, threads_for  # noqa: E402
from course_lib.diffusion import ExactDenoiser  # noqa: E402
from course_lib.metrics import energy_distance  # noqa: E402
from course_lib.samplers import ancestral_sample, ddim_sample, sample  # noqa: E402
from course_lib.toy_diffusion_figures import (  # noqa: E402
    comparison_markdown,
    comparison_sentences,
    energy_distance_jackknife,
    jackknife_se,
    noise_comparisons,
    null_variance,
    plot_denoising_path,
    plot_error_curves,
    plot_sample_paths,
    plot_samples,
    plot_toy_data,
    plot_training_curves,
    quality_difference,
    quality_markdown,
    quality_row,
    sampler_quality_rows,
    schedule_numbers,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _randn(n, d=2, seed=0, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def _drop(x, i):
    return torch.cat([x[:i], x[i + 1:]])


# ---------------------------------------------------------------------------------------------- schedule numbers
def test_schedule_numbers_are_the_elbo_weights_of_posterior_coefficients():
    s = NoiseSchedule.cosine(1000)
    num = schedule_numbers(s)

    def elbo_eps_weight(t):  # a_t^2 / (2 c_t) on the x0 error; an eps error delta is sqrt((1 - ab)/ab) delta in x0
        a, _, c = s.posterior_coefficients(t)
        ab = s.alpha_bars[t]
        return float(a**2 / (2 * c) * (1 - ab) / ab)

    for t, key in ((2, "ELBO eps weight, t = 2"), (500, "ELBO eps weight, t = 500"),
                   (1000, "ELBO eps weight, t = T = 1000")):
        assert num[key] == pytest.approx(elbo_eps_weight(t), rel=1e-9)
    brute = [elbo_eps_weight(t) for t in range(2, 1001)]
    assert num["ELBO eps weight, smallest"] == pytest.approx(min(brute), rel=1e-9)
    assert num["ELBO eps weight, argmin t"] == 2 + brute.index(min(brute))
    assert num["alpha_bar_T"] == pytest.approx(float(s.alpha_bars[-1]), rel=1e-12)
    assert num["sqrt(1 - alpha_bar_1)"] ** 2 == pytest.approx(num["1 - alpha_bar_1"], rel=1e-12)
    # the score target -eps / sqrt(1 - ab_t) by simulation: its variance at t = 1 over that at t = T
    eps = _randn(200_000, 1, seed=3)
    v1, vT = (eps / (1 - s.alpha_bars[1]).sqrt()).var(), (eps / (1 - s.alpha_bars[-1]).sqrt()).var()
    assert float(v1 / vT) == pytest.approx(num["score target variance, t = 1 over t = T"], rel=1e-9)
    with pytest.raises(TypeError, match="schedule"):
        schedule_numbers("cosine")


# ---------------------------------------------------------------------------------------------- jackknife
def test_jackknife_of_a_mean_is_the_textbook_standard_error():
    x = _randn(50, 1, seed=1)[:, 0]
    loo = (x.sum() - x) / (len(x) - 1)
    assert jackknife_se(loo) == pytest.approx(float(x.std()) / math.sqrt(len(x)), rel=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        jackknife_se(torch.ones(1))


def test_energy_jackknife_matches_deleting_each_point():
    x, y = _randn(7, seed=1), _randn(9, seed=2, shift=0.4)
    ej = energy_distance_jackknife(x, y)
    assert ej.value == pytest.approx(energy_distance(x, y), abs=1e-13)
    brute_x = torch.tensor([energy_distance(_drop(x, i), y) for i in range(7)], dtype=torch.float64)
    brute_y = torch.tensor([energy_distance(x, _drop(y, j)) for j in range(9)], dtype=torch.float64)
    torch.testing.assert_close(ej.loo_x, brute_x, rtol=0, atol=1e-13)
    torch.testing.assert_close(ej.loo_y, brute_y, rtol=0, atol=1e-13)
    assert ej.jackknife_se == pytest.approx(jackknife_se(brute_x, brute_y), rel=1e-10)
    # sigma2 = |H D H|^2 / N^2 of the pooled points, H the centring matrix
    z = torch.cat([x, y])
    H = torch.eye(16, dtype=torch.float64) - 1 / 16
    assert ej.sigma2 == pytest.approx(float((H @ torch.cdist(z, z) @ H).pow(2).sum()) / 16**2, rel=1e-10)
    assert ej.null_se == pytest.approx(math.sqrt(null_variance(ej.sigma2, 7, 9)), rel=1e-12)
    assert ej.se == max(ej.jackknife_se, ej.null_se)


def _repeat(shift, reps=300, n=60, m=90):
    """Energy distances of (x, y) and of (x', y): x, x' ~ N(0, I), y ~ N((shift, 0), I) in 2-D, repeated."""
    g = torch.Generator().manual_seed(7)
    out = {k: [] for k in ("value", "se", "jackknife_se", "null_se", "diff", "diff_se")}
    mu = torch.tensor([shift, 0.0], dtype=torch.float64)
    with threads_for(None):  # many small problems: one thread (two threads on a busy machine are many times slower)
        for _ in range(reps):
            x, x2 = (torch.randn(n, 2, generator=g, dtype=torch.float64) for _ in range(2))
            y = torch.randn(m, 2, generator=g, dtype=torch.float64) + mu
            ej = energy_distance_jackknife(x, y)
            for k in ("value", "se", "jackknife_se", "null_se"):
                out[k].append(getattr(ej, k))
            d, se, paired = quality_difference(quality_row("a", "-", x, y), quality_row("b", "-", x2, y), "energy")
            out["diff"].append(d)
            out["diff_se"].append(se)
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


def test_energy_standard_error_against_repeated_draws():
    """The s.e. against the spread of the estimate over 300 independent repetitions (n = 60, m = 90 points).

    With 300 repetitions a spread is known to about 4% (relative s.e. 1/sqrt(2 * 300)); each bound sits at least
    3.5 such errors from the value the correct formula gives, so a false alarm has probability < 1e-3.
    Different laws: the jackknife is right (ratio 1). One law: the null variance is exact (ratio 1), the jackknife
    alone is erratic (for 10% of the data sets below 0.7 of the true spread), and the floored s.e. stays above
    0.75 of it (the floor's own estimate, of sigma2, varies by a few per cent). The textbook std / sqrt(n) of one
    sample, a missing reference term, a variance for a standard error, a missing floor or one with the wrong sample
    sizes all land outside. (The null-case difference sits about 1.5: the jackknife is conservative there.)
    """
    alt = _repeat(0.6)
    assert 0.85 < float(alt["se"].pow(2).mean().sqrt() / alt["value"].std()) < 1.15
    null = _repeat(0.0)
    sd = float(null["value"].std())
    assert 0.86 < float(null["null_se"].pow(2).mean().sqrt()) / sd < 1.14
    assert float(torch.quantile(null["jackknife_se"], 0.1)) < 0.8 * sd  # why the floor is needed
    assert float(null["se"].min()) > 0.75 * sd
    # the difference of two independent sets against one reference: conservative, as the jackknife is (about 1.5)
    assert 0.86 < float(null["diff_se"].pow(2).mean().sqrt() / null["diff"].std()) < 1.8
    assert 0.86 < float(alt["diff_se"].pow(2).mean().sqrt() / alt["diff"].std()) < 1.3


def test_energy_jackknife_rejects_bad_points():
    with pytest.raises(ValueError, match="x: expected points as rows"):
        energy_distance_jackknife(torch.zeros(2, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"y: expected points as rows, shape \(n, 2\)"):
        energy_distance_jackknife(torch.zeros(5, 2), torch.zeros(5, 3))


# ---------------------------------------------------------------------------------------------- the table
def _rows_for_difference():
    mix = named_mixture("eight_gaussians_2d")
    ref = mix.sample(12, generator=torch.Generator().manual_seed(5))
    x_T = _randn(8, seed=6)
    a, b = x_T * 1.5, x_T * 1.5 + 0.05 * x_T**2  # paired: the same x^T
    c = mix.sample(8, generator=torch.Generator().manual_seed(7))  # independent
    return mix, ref, a, b, c


def test_paired_energy_difference_is_the_jackknife_over_pairs_and_reference_points():
    mix, ref, a, b, c = _rows_for_difference()
    ra, rb = quality_row("A", "s1", a, ref, mix, seed=0), quality_row("A", "s2", b, ref, mix, seed=0)
    rc = quality_row("data", "-", c, ref, mix)

    def diff(xa, xb, y):
        return energy_distance(xa, y) - energy_distance(xb, y)

    d, se, paired = quality_difference(ra, rb, "energy")
    assert paired and d == pytest.approx(diff(a, b, ref), abs=1e-12)
    loo_pairs = torch.tensor([diff(_drop(a, i), _drop(b, i), ref) for i in range(8)], dtype=torch.float64)
    loo_ref = torch.tensor([diff(a, b, _drop(ref, j)) for j in range(12)], dtype=torch.float64)
    assert se == pytest.approx(jackknife_se(loo_pairs, loo_ref), rel=1e-9)

    d, se, paired = quality_difference(ra, rc, "energy")  # independent sets, one reference
    assert not paired and d == pytest.approx(diff(a, c, ref), abs=1e-12)
    loo_a = torch.tensor([diff(_drop(a, i), c, ref) for i in range(8)], dtype=torch.float64)
    loo_c = torch.tensor([diff(a, _drop(c, i), ref) for i in range(8)], dtype=torch.float64)
    loo_ref = torch.tensor([diff(a, c, _drop(ref, j)) for j in range(12)], dtype=torch.float64)
    assert se >= jackknife_se(loo_a, loo_c, loo_ref) * (1 - 1e-9)  # floored (test_energy_standard_error_...)
    big = quality_row("data", "-", c + 3.0, ref, mix)  # far apart: the jackknife is above the floor
    d, se, _ = quality_difference(ra, big, "energy")
    loo_a = torch.tensor([diff(_drop(a, i), c + 3, ref) for i in range(8)], dtype=torch.float64)
    loo_c = torch.tensor([diff(a, _drop(c, i) + 3, ref) for i in range(8)], dtype=torch.float64)
    loo_ref = torch.tensor([diff(a, c + 3, _drop(ref, j)) for j in range(12)], dtype=torch.float64)
    assert se == pytest.approx(jackknife_se(loo_a, loo_c, loo_ref), rel=1e-9)


def test_log_prob_difference_pairs_rows_from_one_x_T():
    mix, ref, a, b, c = _rows_for_difference()
    ra, rb = quality_row("A", "s1", a, ref, mix, seed=0), quality_row("A", "s2", b, ref, mix, seed=0)
    rc = quality_row("data", "-", c, ref, mix)
    lp_a, lp_b, lp_c = mix.log_prob(a), mix.log_prob(b), mix.log_prob(c)
    assert ra["log_prob"] == pytest.approx(float(lp_a.mean())) and ra["log_prob_se"] == pytest.approx(
        float(lp_a.std()) / math.sqrt(8))
    d, se, paired = quality_difference(ra, rb, "log_prob")
    assert paired and d == pytest.approx(float((lp_a - lp_b).mean()))
    assert se == pytest.approx(float((lp_a - lp_b).std()) / math.sqrt(8))
    d, se, paired = quality_difference(ra, rc, "log_prob")
    assert not paired and se == pytest.approx(math.hypot(float(lp_a.std()), float(lp_c.std())) / math.sqrt(8))
    with pytest.raises(ValueError, match="key"):
        quality_difference(ra, rb, "fid")
    with pytest.raises(ValueError, match="log_prob needs the mixture"):
        quality_difference(quality_row("A", "s", a, ref), rb, "log_prob")


def test_sampler_rows_start_from_one_x_T():
    s = NoiseSchedule.cosine(40)
    mix = named_mixture("eight_gaussians_2d")
    den = ExactDenoiser(mix, s, "eps")
    ref = mix.sample(300, generator=torch.Generator().manual_seed(1))
    x = ancestral_sample(den, s, 200, generator=torch.Generator().manual_seed(0))
    rows = [quality_row("exact", "DDPM", x, ref, mix, seconds=1.0, seed=0)]
    runs = {"DDIM, 2 steps": {"steps": 2, "eta": 0.0}, "DDPM again": {"eta": 1.0}}
    rows += sampler_quality_rows({"exact": den}, s, runs, ref, mix, n=200, seed=0)
    assert [r["sampler"] for r in rows] == ["DDPM", "DDIM, 2 steps", "DDPM again"]
    # the same x^T: DDPM again reproduces the DDPM samples exactly, DDIM's energy is that of ddim_sample's samples
    assert rows[2]["energy"] == pytest.approx(rows[0]["energy"], abs=1e-12)
    x2 = ddim_sample(den, s, 200, steps=2, generator=torch.Generator().manual_seed(0))
    assert rows[1]["energy"] == pytest.approx(energy_distance(x2, ref), abs=1e-12)
    assert rows[1]["log_prob"] == pytest.approx(float(mix.log_prob(x2).mean()), abs=1e-12)
    with pytest.raises(TypeError, match="denoisers and runs"):
        sampler_quality_rows({}, s, runs, ref)


def test_comparisons_separate_noise_from_a_real_difference():
    mix = named_mixture("eight_gaussians_2d")
    ref = mix.sample(300, generator=torch.Generator().manual_seed(1))
    x = mix.sample(200, generator=torch.Generator().manual_seed(0))  # a perfect sampler
    rows = [quality_row("perfect", "DDPM", x, ref, mix, seed=0),
            quality_row("perfect", "squeezed", 0.8 * x, ref, mix, seed=0),  # shrunk towards 0
            quality_row("perfect", "DDPM again", x.clone(), ref, mix, seed=0),
            quality_row("*fresh data*", "(the truth)", mix.sample(200, generator=torch.Generator().manual_seed(2)),
                        ref, mix)]
    comps = {c["comparison"]: c for c in noise_comparisons(rows, baseline="DDPM")}
    assert list(comps) == ["perfect, DDPM − *fresh data*", "perfect, squeezed − DDPM",
                           "perfect, DDPM again − DDPM"]
    same = comps["perfect, DDPM again − DDPM"]
    assert same["energy"] == (0.0, 0.0) and same["within"] == {"log_prob": True, "energy": True}
    bad = comps["perfect, squeezed − DDPM"]
    assert bad["paired"] and not any(bad["within"].values()), bad
    assert bad["log_prob"][0] < 0  # pulled inside the circle of modes: a lower log density
    # two samples of the truth: within noise (for this fixed seed; the log p comparison fails with probability
    # about 5% for a random seed, the energy one less often, its s.e. being conservative)
    truth = comps["perfect, DDPM − *fresh data*"]
    assert not truth["paired"] and all(truth["within"].values()), truth
    table = quality_markdown(rows)
    assert table.count("\n") == 1 + len(rows) and "±" in table
    assert f"{rows[1]['energy']:.4f} ± {rows[1]['energy_se']:.4f}" in table
    text = comparison_markdown(list(comps.values()))
    assert "≈" in text and "s.e.)" in text
    with pytest.raises(ValueError, match="baseline"):
        noise_comparisons(rows, baseline="Euler")
    with pytest.raises(TypeError, match="rows"):
        quality_markdown([])


def test_quality_row_checks_its_input():
    with pytest.raises(ValueError, match="samples: expected points as rows"):
        quality_row("a", "b", torch.zeros(5), torch.zeros(5, 2))
    with pytest.raises(TypeError, match="denoiser and sampler"):
        quality_row(1, "b", torch.zeros(5, 2), torch.zeros(5, 2))


# ---------------------------------------------------------------------------------------------- figures
def _scatter(ax):
    """The points of the axes' last scatter plot (a PathCollection; contours are other collections)."""
    pcs = [c for c in ax.collections if isinstance(c, PathCollection)]
    return pcs[-1].get_offsets()


def _texts(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []


def test_plot_toy_data():
    mix = named_mixture("eight_gaussians_2d")
    sets = {"mixture": _randn(30, seed=1), "moons": _randn(20, seed=2), "roll": _randn(10, seed=3)}
    fig = plot_toy_data(sets, mix)
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == list(sets)
    assert all(ax.get_xlabel() == "$x_1$" and ax.get_ylabel() == "$x_2$" for ax in fig.axes)
    assert [len(_scatter(ax)) for ax in fig.axes] == [30, 20, 10]
    assert len(fig.axes[0].collections) > 1 and len(fig.axes[1].collections) == 1  # the density, on panel 0 only
    assert _texts(fig) == ["30 draws", "exact density"]
    with pytest.raises(ValueError, match=r"point_sets\['moons'\]: expected points as rows, shape \(n, 2\)"):
        plot_toy_data({"moons": torch.zeros(5, 3)})
    with pytest.raises(TypeError, match="point_sets"):
        plot_toy_data([])


def test_plot_training_curves():
    steps = list(range(10, 510, 10))
    hist = {t: {"step": steps, "loss": [1.0 + 1.0 / k for k in range(1, 51)], "seconds": 1.0}
            for t in ("x0", "eps", "score")}
    floors = {"x0": 0.9, "eps": 0.7, "score": 0.7}
    fig = plot_training_curves(hist, floors)
    assert [ax.get_title() for ax in fig.axes] == ['target "x0"', 'target "eps"', 'target "score"']
    assert fig.axes[0].get_ylabel() == "loss (weighted squared error)" and fig.axes[1].get_ylabel() == ""
    for ax, floor in zip(fig.axes, floors.values(), strict=True):
        raw, smooth, line = ax.get_lines()
        assert len(raw.get_xdata()) == 50 and len(smooth.get_xdata()) == 50 - 2 + 1  # running mean over 50 // 25
        assert smooth.get_ydata()[0] == pytest.approx((2.0 + 1.5) / 2)
        assert list(line.get_ydata()) == [floor, floor] and ax.get_ylim()[0] == pytest.approx(0.95 * floor)
        assert ax.get_xlabel() == "training step"
    assert _texts(fig) == ["training loss (means of 10 steps)", "running mean", "Bayes-optimal loss"]
    with pytest.raises(ValueError, match=r"floors: expected a number for target 'eps'"):
        plot_training_curves(hist, {"x0": 0.9})
    with pytest.raises(ValueError, match=r"histories\['x0'\]: expected 'step' and 'loss' of one length"):
        plot_training_curves({"x0": {"step": [1, 2, 3], "loss": [1.0, 2.0]}}, floors)


def _error_curves(m=5, bad=None):
    ts = torch.tensor([1, 10, 100, 500, 900])[:m]
    curves = {space: {t: {"mse": torch.linspace(1, 2, m), "excess": torch.linspace(0.1, 0.2, m)}
                      for t in ("x0", "eps", "score")} for space in ("x0", "eps")}
    bayes = {space: torch.linspace(0.5, 1, m) for space in ("x0", "eps")}
    if bad == "length":
        curves["eps"]["score"]["mse"] = torch.ones(m + 1)
    if bad == "space":
        del bayes["eps"]
    return ts, curves, bayes


def test_plot_error_curves():
    fig = plot_error_curves(*_error_curves())
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and ax.get_xlabel() == "time step $t$"
        assert len(ax.get_lines()) == 4  # three targets and the Bayes error (or the 10% line)
    assert [ax.get_ylabel() for ax in fig.axes] == ["mean squared error", "mean squared error", "excess / Bayes error"]
    assert "x0-space" in fig.axes[0].get_title() and "eps-space" in fig.axes[1].get_title()
    ratio = fig.axes[2].get_lines()[0].get_ydata()
    assert ratio[0] == pytest.approx(0.1 / 0.5)  # excess / Bayes error, point by point
    assert _texts(fig) == ['learned, target "x0"', 'learned, target "eps"', 'learned, target "score"',
                           "Bayes-optimal (mixture.mmse)", "excess = 10% of the Bayes error"]
    with pytest.raises(ValueError, match=r"curves\['eps'\]\['score'\]\['mse'\]: expected shape \(5,\)"):
        plot_error_curves(*_error_curves(bad="length"))
    with pytest.raises(ValueError, match="space 'eps'"):
        plot_error_curves(*_error_curves(bad="space"))


def test_plot_samples():
    mix = named_mixture("eight_gaussians_2d")
    ref = mix.sample(40, generator=torch.Generator().manual_seed(1))
    sets = {"exact": _randn(25, seed=2), "learned": _randn(25, seed=3, shift=1.0)}
    fig = plot_samples(sets, mix, ref)
    assert len(fig.axes) == 2
    for ax, (name, x) in zip(fig.axes, sets.items(), strict=True):
        ej = energy_distance_jackknife(x, ref)
        assert ax.get_title() == f"{name}\nenergy distance {ej.value:.4f} ± {ej.se:.4f}"
        assert len(_scatter(ax)) == 25 and len(ax.collections) > 1
    assert _texts(fig) == ["samples", "exact density"]
    # a 2 x 4 grid with a data panel without reference, in the data's colour, and no density
    grid = {f"p{i}": _randn(10, seed=i) for i in range(7)}
    fig = plot_samples(grid, reference={"p1": ref}, colors={"p0": "#1b9e77"}, ncols=4)
    assert len(fig.axes) == 8 and not fig.axes[7].get_visible() and not fig.legends
    assert fig.axes[0].get_title() == "p0" and "energy distance" in fig.axes[1].get_title()
    assert matplotlib.colors.to_hex(fig.axes[0].collections[0].get_facecolor()[0]) == "#1b9e77"
    with pytest.raises(ValueError, match=r"keys \['p9'\] name no panel"):
        plot_samples(grid, reference={"p9": ref})
    with pytest.raises(ValueError, match=r"samples\['p'\]: expected points as rows"):
        plot_samples({"p": torch.zeros(3)})


def test_plot_denoising_path_and_sample_paths():
    s = NoiseSchedule.cosine(30)
    mix = named_mixture("eight_gaussians_2d")
    out = sample(ExactDenoiser(mix, s, "eps"), s, 15, generator=torch.Generator().manual_seed(0), return_path=True)
    fig = plot_denoising_path(out, show_t=(30, 10, 1), mixture=mix)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["$x^t$, t = 30", "$x^t$, t = 10", "$x^t$, t = 1"]
    assert fig.axes[3].get_title() == r"$\hat x^0$, t = 30" and fig.axes[3].get_xlabel() == "$x_1$"
    k = [int(t) for t in out.timesteps].index(10)
    torch.testing.assert_close(torch.as_tensor(_scatter(fig.axes[4]).data), out.x0_pred[k])
    with pytest.raises(ValueError, match=r"show_t: .*\[0\] are not among them"):
        plot_denoising_path(out, show_t=(10, 0))
    with pytest.raises(TypeError, match="SamplerPath"):
        plot_denoising_path(out.path)

    ddim = sample(ExactDenoiser(mix, s, "eps"), s, 4, steps=5, eta=0.0, generator=torch.Generator().manual_seed(1),
                  return_path=True)
    fig = plot_sample_paths({"ancestral": out, "DDIM": ddim.path}, mix)
    assert [ax.get_title() for ax in fig.axes] == ["ancestral", "DDIM"]
    assert [len(ax.get_lines()) for ax in fig.axes] == [15 + 1, 4]  # one line per sample (+ the legend's proxy)
    assert _texts(fig) == ["start $x^T$", "sample $x^0$", "exact density"]
    with pytest.raises(ValueError, match=r"paths\['bad'\]: expected a path of shape \(S \+ 1, n, 2\)"):
        plot_sample_paths({"bad": torch.zeros(3, 4)})


def test_comparison_sentences_follow_the_numbers():
    mix = named_mixture("eight_gaussians_2d")
    ref = mix.sample(300, generator=torch.Generator().manual_seed(1))
    x = mix.sample(200, generator=torch.Generator().manual_seed(0))
    rows = [quality_row("perfect", "DDPM", x, ref, mix, seed=0),
            quality_row("perfect", "squeezed", 0.8 * x, ref, mix, seed=0),
            quality_row("*fresh data*", "(the truth)", mix.sample(200, generator=torch.Generator().manual_seed(2)),
                        ref, mix)]
    comps = noise_comparisons(rows, baseline="DDPM")
    assert [(c["denoiser"], c["sampler"], c["against"]) for c in comps] == [
        ("perfect", "DDPM", "*fresh data*"), ("perfect", "squeezed", "DDPM")]
    text = comparison_sentences(comps)
    assert text.startswith("- **perfect**: DDPM against fresh data: mean log p within noise; "
                           "energy distance within noise.")
    d, se = comps[1]["log_prob"]
    assert f"squeezed against DDPM: mean log p lower by {abs(d) / se:.1f} s.e. (clear)" in text
    assert "energy distance larger by" in text
    assert "2 of these 4 differences exceed 2 s.e. (2 exceed 3)" in text and "about 0.2 would exceed" in text
    with pytest.raises(TypeError, match="comparisons"):
        comparison_sentences([])
    with pytest.raises(ValueError, match="z and clear"):
        comparison_sentences(comps, z=3.0, clear=2.0)
