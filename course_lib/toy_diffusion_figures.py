"""Notebook 06's figures, and its sample-quality table with standard errors.

Numbers first (tested headlessly against brute force and simulation):
- ``schedule_numbers(schedule)``: the schedule's values that notebook 06's prose quotes (alpha_bar_T, 1 - alpha_bar_1,
  the ELBO's weight on the eps error beta_t / (2 alpha_t (1 - alpha_bar_{t-1})) = a_t^2 / (2 c_t) (1 - ab_t) / ab_t,
  ...).
- ``energy_distance_jackknife(x, y)``: the unbiased energy distance of ``metrics.energy_distance`` and its standard
  error: the jackknife (conservative on average: Efron & Stein 1981), never below the exact variance the estimate has
  when x and y come from one law (``null_variance``), where the jackknife alone is erratic.
- ``sample_scores`` / ``quality_row`` / ``sampler_quality_rows``: the table's numbers per sample set, each with its
  standard error; ``quality_difference`` / ``noise_comparisons``: differences between rows with the standard error
  of the difference (paired when two rows start from the same x^T); ``quality_markdown``, ``comparison_markdown``;
  ``comparison_sentences``: the same differences in words, generated from the numbers (the notebook's conclusions).

Figures (each returns the matplotlib figure; 2-D points are rows of an (n, 2) tensor):
- ``plot_toy_data``: the data sets side by side, the exact mixture density in black on the first;
- ``plot_training_curves``: each target's training loss against the Bayes-optimal loss, its floor;
- ``plot_error_curves``: each target's error at every t against the Bayes error, and excess / Bayes error;
- ``plot_samples``: sample sets side by side, each with its energy distance (± s.e.) to fresh data;
- ``plot_denoising_path``: x^t and the prediction x0_hat along one sampler run (Tweedie in pictures);
- ``plot_sample_paths``: the paths of a few samples, one panel per sampler.
Helpers for other panels: ``density_contours(ax, mixture)`` and ``square_axes(ax, title)``.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from typing import NamedTuple

import torch

from ._checks import as_float64, describe
from .plotting import COLORS, density_grid, label, to_numpy

__all__ = [
    "LIM",
    "TARGET_COLORS",
    "EnergyJackknife",
    "comparison_markdown",
    "comparison_sentences",
    "density_contours",
    "energy_distance_jackknife",
    "jackknife_se",
    "noise_comparisons",
    "null_variance",
    "plot_denoising_path",
    "plot_error_curves",
    "plot_sample_paths",
    "plot_samples",
    "plot_toy_data",
    "plot_training_curves",
    "quality_difference",
    "quality_markdown",
    "quality_row",
    "sample_scores",
    "sampler_quality_rows",
    "schedule_numbers",
    "square_axes",
]

LIM = (-2.6, 2.6)  # the square every 2-D panel of notebook 06 shows
TARGET_COLORS = {"x0": COLORS["encoder"], "eps": COLORS["model"], "score": COLORS["samples"]}
_EXACT = "donot_use_mm_for_euclid_dist"  # distances from differences (as in metrics): no lost digits


# ---------------------------------------------------------------------------------------------- checks
def _points(x, name: str, d: int | None = None, minimum: int = 3) -> torch.Tensor:
    """Rows of an (n, d) tensor as float64 on the CPU, n >= ``minimum``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    t = as_float64(x, name)
    if t.ndim != 2 or t.shape[0] < minimum or (d is not None and t.shape[1] != d):
        want = f"(n, {d})" if d is not None else "(n, d)"
        raise ValueError(f"{name}: expected points as rows, shape {want} with n >= {minimum}, got {tuple(t.shape)}")
    return t


def _named_sets(sets, name: str, d: int | None = 2) -> dict:
    if not isinstance(sets, dict) or not sets:
        raise TypeError(f"{name}: expected a non-empty dict name -> points (n, 2), got {describe(sets)}")
    return {str(k): _points(v, f"{name}[{k!r}]", d, minimum=1) for k, v in sets.items()}


# ---------------------------------------------------------------------------------------------- schedule numbers
def schedule_numbers(schedule) -> dict[str, float]:
    """The schedule's numbers that notebook 06's prose quotes, by name (float).

    "alpha_bar_T", "sqrt(alpha_bar_T)", "beta_T", "1 - alpha_bar_1", "sqrt(1 - alpha_bar_1)"; "score target variance,
    t = 1 over t = T" = (1 - ab_T) / (1 - ab_1) (the score's target -eps / sqrt(1 - ab_t) has variance d / (1 - ab_t));
    "ELBO eps weight, t = ..." at t = 2, 500 and T and its minimum over t >= 2 with "... argmin t": the weight
    a_t^2 / (2 c_t) of the ELBO's step-t term on the x^0 error, read on the eps error:
    beta_t / (2 alpha_t (1 - ab_{t-1})).
    """
    from .schedules import NoiseSchedule

    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule: expected a NoiseSchedule, got {describe(schedule)}")
    T, ab, beta, alpha = schedule.T, schedule.alpha_bars, schedule.betas, schedule.alphas
    if T < 3:
        raise ValueError(f"schedule: expected T >= 3 (the ELBO weights start at t = 2), got T = {T}")
    w = beta[2:] / (2 * alpha[2:] * (1 - ab[1:-1]))  # t = 2..T
    mid = min(500, T)
    out = {
        "alpha_bar_T": float(ab[T]), "sqrt(alpha_bar_T)": float(ab[T].sqrt()), "beta_T": float(beta[T]),
        "1 - alpha_bar_1": float(1 - ab[1]), "sqrt(1 - alpha_bar_1)": float((1 - ab[1]).sqrt()),
        "score target variance, t = 1 over t = T": float((1 - ab[T]) / (1 - ab[1])),
        "ELBO eps weight, t = 2": float(w[0]), f"ELBO eps weight, t = {mid}": float(w[mid - 2]),
        f"ELBO eps weight, t = T = {T}": float(w[-1]),
        "ELBO eps weight, smallest": float(w.min()), "ELBO eps weight, argmin t": float(int(w.argmin()) + 2),
    }
    return out


# ---------------------------------------------------------------------------------------------- energy distance
class EnergyJackknife(NamedTuple):
    """``energy_distance_jackknife``'s result: the estimate and its standard error, with what they are made of.

    ``se`` = max(``jackknife_se``, ``null_se``). ``loo_x`` (n,): the estimate without x_i; ``loo_y`` (m,): without
    y_j. ``sigma2``: E|d~(Z, Z')|^2 of the doubly centred distance, estimated from the pooled points (``null_se``).
    """

    value: float
    se: float
    loo_x: torch.Tensor
    loo_y: torch.Tensor
    jackknife_se: float
    null_se: float
    sigma2: float


def null_variance(sigma2: float, n: int, m: int) -> float:
    """Var of the unbiased energy distance of n and m points when both sets come from one law:
    sigma2 (4 / (n m) + 2 / (n (n - 1)) + 2 / (m (m - 1))), sigma2 = E d~(Z, Z')^2 (see ``energy_distance_jackknife``).
    """
    return sigma2 * (4 / (n * m) + 2 / (n * (n - 1)) + 2 / (m * (m - 1)))


def _row_sums(a: torch.Tensor, b: torch.Tensor, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_j |a_i - b_j| for each i, sum_i |a_i - b_j| for each j): float64 (n,), (m,); memory chunk x m."""
    ra = torch.empty(a.shape[0], dtype=torch.float64)
    rb = torch.zeros(b.shape[0], dtype=torch.float64)
    for i in range(0, a.shape[0], chunk):
        D = torch.cdist(a[i:i + chunk], b, compute_mode=_EXACT)
        ra[i:i + chunk] = D.sum(1)
        rb += D.sum(0)
    return ra, rb


_SELF_SUMS: dict[str, torch.Tensor] = {}  # fingerprint -> sum_k |y_j - y_k| per row: the reference's, reused


def _fingerprint(y: torch.Tensor) -> str:
    """A hash of a float64 CPU tensor's shape and values (identifies a reference set)."""
    return hashlib.sha1(str(tuple(y.shape)).encode() + y.contiguous().numpy().tobytes()).hexdigest()


def _self_sums(y: torch.Tensor) -> torch.Tensor:
    """sum_k |y_j - y_k| for each row j, remembered for the last few sets (a table compares many with one)."""
    key = _fingerprint(y)
    if key not in _SELF_SUMS:
        if len(_SELF_SUMS) >= 4:
            _SELF_SUMS.pop(next(iter(_SELF_SUMS)))
        _SELF_SUMS[key] = _row_sums(y, y)[0]
    return _SELF_SUMS[key]


def jackknife_se(*loo: torch.Tensor) -> float:
    """Jackknife standard error from leave-one-out values, one (n_k,) tensor per independent sample k:
    sqrt(sum_k (n_k - 1) / n_k sum_i (loo_k[i] - mean_k)^2)."""
    if not loo:
        raise ValueError("loo: expected at least one tensor of leave-one-out values")
    var = 0.0
    for k, v in enumerate(loo):
        v = as_float64(v, f"loo[{k}]", ndim=1)
        if v.shape[0] < 2:
            raise ValueError(f"loo[{k}]: expected at least 2 leave-one-out values, got {v.shape[0]}")
        n = v.shape[0]
        var += (n - 1) / n * float(((v - v.mean()) ** 2).sum())
    return math.sqrt(var)


def energy_distance_jackknife(x, y) -> EnergyJackknife:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| of x (n, d) and y (m, d), n, m >= 3, with a standard error.

    The estimate is ``metrics.energy_distance``'s unbiased U-statistic. Two variances, from the row sums of the three
    distance matrices (O((n + m)^2) time, O(chunk (n + m)) memory):
    - the jackknife: delete x_i (then y_j) in turn; ``jackknife_se(loo_x, loo_y)``. It estimates the first-order
      (1/n) part of the variance well, and in expectation overstates the whole (the Efron-Stein inequality); but
      where the two laws (nearly) agree that part vanishes, the estimate's spread shrinks like 1/n, and the jackknife
      becomes erratic (for one data set it can be several times too small);
    - the variance the estimate has when x and y come from one law, ``null_variance(sigma2, n, m)``: with
      d~(a, b) = |a - b| - E|a - Z| - E|Z - b| + E|Z - Z'| (which has mean 0 in either argument), the estimate is
      a sum of uncorrelated d~ terms; sigma2 = E d~^2 is estimated from the pooled n + m points (double centring).
    ``se`` is the larger of the two: the floor keeps a near-zero distance from looking more precise than it can be.
    """
    x = _points(x, "x")
    y = _points(y, "y", x.shape[1])
    n, m = x.shape[0], y.shape[0]
    rxy, ryx = _row_sums(x, y)
    rxx, ryy = _row_sums(x, x)[0], _self_sums(y)
    sxy, sxx, syy = float(rxy.sum()), float(rxx.sum()), float(ryy.sum())
    value = 2 * sxy / (n * m) - sxx / (n * (n - 1)) - syy / (m * (m - 1))
    loo_x = 2 * (sxy - rxy) / ((n - 1) * m) - (sxx - 2 * rxx) / ((n - 1) * (n - 2)) - syy / (m * (m - 1))
    loo_y = 2 * (sxy - ryx) / (n * (m - 1)) - sxx / (n * (n - 1)) - (syy - 2 * ryy) / ((m - 1) * (m - 2))
    # sigma2 of the pooled points z (N of them): |H D H|_F^2 / N^2, H = I - 11'/N, from the row sums r of D and
    # sum_ab |z_a - z_b|^2 = 2 N sum |z|^2 - 2 |sum z|^2
    z = torch.cat([x, y])
    N = n + m
    r = torch.cat([rxx + rxy, ryx + ryy])
    total = sxx + syy + 2 * sxy
    sq = 2 * N * float((z * z).sum()) - 2 * float(z.sum(0).pow(2).sum())
    sigma2 = max(0.0, (sq - 2 / N * float((r * r).sum()) + total**2 / N**2) / N**2)
    jk, null = jackknife_se(loo_x, loo_y), math.sqrt(null_variance(sigma2, n, m))
    return EnergyJackknife(value, max(jk, null), loo_x, loo_y, jk, null, sigma2)


# ---------------------------------------------------------------------------------------------- the quality table
def sample_scores(samples, reference, mixture=None) -> dict:
    """Notebook 06's quality numbers of ``samples`` (n, d) against fresh ``reference`` data (m, d), with s.e.

    "energy", "energy_se": ``energy_distance_jackknife(samples, reference)``. With a ``GaussianMixture``: "log_prob",
    "log_prob_se": the mean of log p(x_i) and its standard error std / sqrt(n) (the samples are independent).
    Keys starting with "_" keep what ``quality_difference`` needs (leave-one-out values, per-point log densities).
    """
    x = _points(samples, "samples")
    y = _points(reference, "reference", x.shape[1])
    ej = energy_distance_jackknife(x, y)
    out = {"energy": ej.value, "energy_se": ej.se, "n": x.shape[0], "_loo_x": ej.loo_x, "_loo_y": ej.loo_y,
           "_sigma2": ej.sigma2, "_m": y.shape[0], "_reference": _fingerprint(y)}
    if mixture is not None:
        lp = mixture.log_prob(x)
        out.update(log_prob=float(lp.mean()), log_prob_se=float(lp.std()) / math.sqrt(x.shape[0]), _log_p=lp)
    return out


def quality_row(denoiser: str, sampler: str, samples, reference, mixture=None, *, seconds: float | None = None,
                seed: int | None = None) -> dict:
    """One row of the quality table: "denoiser", "sampler", "seconds", "seed" and ``sample_scores``'s keys.

    ``seed``: the seed of the generator that drew x^T (rows with the same seed and size start from the same x^T,
    and ``quality_difference`` pairs them); None for data or unknown.
    """
    if not isinstance(denoiser, str) or not isinstance(sampler, str):
        raise TypeError(f"denoiser and sampler: expected names (str), got {describe(denoiser)} and {describe(sampler)}")
    return {"denoiser": denoiser, "sampler": sampler, "seconds": seconds, "seed": seed,
            **sample_scores(samples, reference, mixture)}


def sampler_quality_rows(denoisers: dict, schedule, runs: dict, reference, mixture=None, *, n: int = 2000,
                         seed: int = 0, **sample_kw) -> list[dict]:
    """``quality_row`` for every denoiser and sampler setting (``metrics.sampler_quality_table`` with s.e.).

    ``denoisers``: name -> denoiser (see ``samplers.sample``). ``runs``: name -> keywords of ``samplers.sample``,
    e.g. ``{"DDIM, 20 steps": {"steps": 20, "eta": 0.0}}``. Each run draws ``n`` samples with a generator seeded by
    ``seed``, so every row starts from the same x^T (n, d). ``sample_kw`` (e.g. ``clip_x0``) go to every run.
    """
    from .metrics import sampler_runs

    if not isinstance(denoisers, dict) or not denoisers or not isinstance(runs, dict) or not runs:
        raise TypeError(f"denoisers and runs: expected non-empty dicts, got {describe(denoisers)} and {describe(runs)}")
    return [quality_row(name, run, x, reference, mixture, seconds=seconds, seed=seed)
            for name, run, x, seconds in sampler_runs(denoisers, schedule, runs, n=n, seed=seed, **sample_kw)]


_KEYS = {"log_prob": "mean log p", "energy": "energy distance"}


def quality_difference(a: dict, b: dict, key: str) -> tuple[float, float, bool]:
    """(a[key] - b[key], its standard error, paired) for two rows of ``quality_row``; key "energy" or "log_prob".

    Paired when both rows have the same ``seed`` (not None) and size: sample i of each comes from the same x^T_i, so
    the pairs are the independent units (log p: the s.e. of the mean of the differences; energy: the jackknife
    deleting pair i, then reference point j; no floor, as two samplers fed the same noise can agree exactly).
    Otherwise the two sample sets are independent (log p: sqrt(se_a^2 + se_b^2); energy: the jackknife deleting each
    point of a, of b, and each reference point from both when the rows share their reference, floored like
    ``energy_distance_jackknife`` by the difference's variance when all the sets come from one law).
    """
    if key not in _KEYS:
        raise ValueError(f"key: expected one of {tuple(_KEYS)}, got {key!r}")
    for nm, r in (("a", a), ("b", b)):
        if not isinstance(r, dict) or key not in r:
            raise ValueError(f"{nm}: expected a row of quality_row with {key!r} (log_prob needs the mixture), "
                             f"got {describe(r)}")
    paired = a.get("seed") is not None and a.get("seed") == b.get("seed") and a["n"] == b["n"]
    diff = a[key] - b[key]
    if key == "log_prob":
        if paired:
            d = a["_log_p"] - b["_log_p"]
            return diff, float(d.std()) / math.sqrt(d.shape[0]), True
        return diff, math.hypot(a["log_prob_se"], b["log_prob_se"]), False
    same_ref = a["_reference"] == b["_reference"]
    if paired:
        loo_y = (a["_loo_y"] - b["_loo_y"],) if same_ref else (a["_loo_y"], b["_loo_y"])
        return diff, jackknife_se(a["_loo_x"] - b["_loo_x"], *loo_y), True
    if same_ref:
        jk = jackknife_se(a["_loo_x"], b["_loo_x"], a["_loo_y"] - b["_loo_y"])
        na, nb, m = a["n"], b["n"], a["_m"]  # one law for all three sets: the reference's own terms cancel
        null = (a["_sigma2"] + b["_sigma2"]) / 2 * (4 / (na * m) + 2 / (na * (na - 1)) + 4 / (nb * m)
                                                   + 2 / (nb * (nb - 1)))
    else:
        jk = jackknife_se(a["_loo_x"], a["_loo_y"], b["_loo_x"], b["_loo_y"])
        null = null_variance(a["_sigma2"], a["n"], a["_m"]) + null_variance(b["_sigma2"], b["n"], b["_m"])
    return diff, max(jk, math.sqrt(null)), False


def _pm(value: float, se: float, fmt: str) -> str:
    return f"{value:{fmt}} ± {se:{fmt.lstrip('+')}}"


def quality_markdown(rows: list[dict], formats: dict[str, str] | None = None) -> str:
    """The quality table as markdown: denoiser, sampler, "value ± s.e." for log p and energy, seconds."""
    from .metrics import markdown_table

    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise TypeError(f"rows: expected a non-empty list of rows (dicts) of quality_row, got {describe(rows)}")
    f = {"log_prob": ".3f", "energy": ".4f", "seconds": ".1f", **(formats or {})}
    shown = []
    for r in rows:
        s = {"denoiser": r["denoiser"], "sampler": r["sampler"], "seconds": r.get("seconds"),
             "energy": _pm(r["energy"], r["energy_se"], f["energy"])}
        if "log_prob" in r:
            s["log_prob"] = _pm(r["log_prob"], r["log_prob_se"], f["log_prob"])
        shown.append(s)
    columns = {"denoiser": "denoiser", "sampler": "sampler", "log_prob": "mean log p(samples) ± s.e.",
               "energy": "energy distance to data ± s.e.", "seconds": "seconds"}
    return markdown_table(shown, columns, {"seconds": f["seconds"]})


def noise_comparisons(rows: list[dict], *, baseline: str = "DDPM, 1000 steps", truth: str = "*fresh data*",
                      z: float = 2.0) -> list[dict]:
    """The differences the notebook discusses, each with its s.e. and whether it is within noise (|d| <= z s.e.).

    For each denoiser: its ``baseline`` row against the ``truth`` row (the row whose "denoiser" is ``truth``), and each
    other sampler's row against its ``baseline`` (paired: same x^T). Returns rows with "comparison", "key" -> (d, se),
    "within" -> {key: bool} for key "log_prob" (when present) and "energy", and the parts of the comparison's name:
    "denoiser", "sampler" (the first row's) and "against" (``baseline`` or ``truth``).
    """
    if not isinstance(rows, list) or not rows:
        raise TypeError(f"rows: expected a non-empty list of rows of quality_row, got {describe(rows)}")
    if not isinstance(z, numbers.Real) or not z > 0:
        raise ValueError(f"z: expected a positive number of standard errors, got {describe(z)}")
    truth_rows = [r for r in rows if r["denoiser"] == truth]
    by = {(r["denoiser"], r["sampler"]): r for r in rows if r["denoiser"] != truth}
    pairs = []
    for den in dict.fromkeys(d for d, _ in by):
        base = by.get((den, baseline))
        if base is None:
            continue
        if truth_rows:
            pairs.append((den, baseline, truth, base, truth_rows[0]))
        pairs += [(den, s, baseline, r, base) for (d, s), r in by.items() if d == den and s != baseline]
    if not pairs:
        raise ValueError(f"rows: no row has the baseline sampler {baseline!r}; samplers: "
                         f"{sorted({s for _, s in by})}")
    out = []
    for den, sampler, against, a, b in pairs:
        row = {"comparison": f"{den}, {sampler} − {against}", "denoiser": den, "sampler": sampler, "against": against,
               "within": {}}
        for key in _KEYS:
            if key in a and key in b:
                d, se, paired = quality_difference(a, b, key)
                row[key] = (d, se)
                row["paired"] = paired
                row["within"][key] = abs(d) <= z * se
        out.append(row)
    return out


def comparison_markdown(comparisons: list[dict], formats: dict[str, str] | None = None, z: float = 2.0) -> str:
    """``noise_comparisons`` as markdown: "difference ± s.e." per number, "≈" marking those within noise."""
    from .metrics import markdown_table

    f = {"log_prob": "+.3f", "energy": "+.4f", **(formats or {})}
    shown = []
    for c in comparisons:
        s = {"comparison": c["comparison"]}
        for key in _KEYS:
            if key in c:
                d, se = c[key]
                s[key] = _pm(d, se, f[key]) + (" ≈" if c["within"][key] else f" ({d / se:+.1f} s.e.)")
        shown.append(s)
    columns = {"comparison": "difference (rows of the table above)", "log_prob": "in mean log p",
               "energy": "in energy distance"}
    return markdown_table(shown, columns) + f"\n\n≈: within noise, |difference| ≤ {z:g} s.e."


_WORDS = {"log_prob": ("mean log p", "higher", "lower"), "energy": ("energy distance", "larger", "smaller")}


def _strength(d: float, se: float, z: float, clear: float) -> str:
    if se == 0.0:
        return "identical" if d == 0.0 else "different (standard error 0)"
    r = abs(d) / se
    if r <= z:
        return "within noise"
    return f"by {r:.1f} s.e. (weak evidence)" if r <= clear else f"by {r:.1f} s.e. (clear)"


def comparison_sentences(comparisons: list[dict], z: float = 2.0, clear: float = 3.0) -> str:
    """``noise_comparisons`` in words, one markdown bullet per denoiser, generated from the numbers.

    Each difference is "within noise" (|d| <= ``z`` s.e.), "higher/lower by r s.e. (weak evidence)" (up to ``clear``
    s.e.) or "higher/lower by r s.e. (clear)"; a last line counts the differences beyond
    ``z`` and ``clear`` s.e. next to the number expected beyond ``z`` by chance alone when every true difference is 0
    (each |d| / s.e. about a standard normal draw).
    """
    if not isinstance(comparisons, list) or not comparisons or not all(
            isinstance(c, dict) and "denoiser" in c for c in comparisons):
        raise TypeError(f"comparisons: expected the non-empty list of noise_comparisons, got {describe(comparisons)}")
    if not (isinstance(z, numbers.Real) and isinstance(clear, numbers.Real) and 0 < z <= clear):
        raise ValueError(f"z and clear: expected numbers with 0 < z <= clear, got {describe(z)} and {describe(clear)}")
    bullets, n, beyond, beyond_clear = {}, 0, 0, 0
    for c in comparisons:
        parts = []
        for key, (name, up, down) in _WORDS.items():
            if key not in c:
                continue
            d, se = c[key]
            strength = _strength(d, se, z, clear)
            n += 1
            if strength != "within noise" and se > 0:
                beyond += 1
                beyond_clear += abs(d) / se > clear
            if strength.startswith("by"):
                strength = f"{up if d > 0 else down} {strength}"
            parts.append(f"{name} {strength}")
        against = "fresh data" if c["against"].strip("*") == "fresh data" else c["against"]
        bullets.setdefault(c["denoiser"], []).append(f"{c['sampler']} against {against}: {'; '.join(parts)}")
    lines = [f"- **{den}**: " + ". ".join(s) + "." for den, s in bullets.items()]
    chance = n * math.erfc(z / math.sqrt(2))
    lines.append(f"\n{beyond} of these {n} differences exceed {z:g} s.e. ({beyond_clear} exceed {clear:g}); if every "
                 f"true difference were 0, about {chance:.1f} would exceed {z:g} s.e. by chance alone.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- panel helpers
def density_contours(ax, mixture, lim=LIM, n: int = 200):
    """The exact density of a 2-D ``mixture`` as black contours (levels 0.05, 0.5, 2) on ``ax``; returns ``ax``."""
    if getattr(mixture, "d", None) != 2:
        raise ValueError(f"mixture: expected a 2-D GaussianMixture, got {describe(mixture)}")
    X, Y, P = density_grid(mixture.log_prob, xlim=lim, ylim=lim, n=n)
    ax.contour(X, Y, P, levels=[0.05, 0.5, 2.0], colors=COLORS["truth"], linewidths=1.0)
    return ax


def square_axes(ax, title: str | None = None, lim=LIM, xlabel: str | None = "$x_1$", ylabel: str | None = "$x_2$"):
    """Equal axes on the square ``lim`` x ``lim``, labelled $x_1$, $x_2$ and titled; returns ``ax``."""
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_aspect("equal")
    return label(ax, xlabel, ylabel, title)


def _density_proxy(ax):
    ax.plot([], [], color=COLORS["truth"], lw=1, label="exact density")


# ---------------------------------------------------------------------------------------------- figures
def plot_toy_data(point_sets: dict, mixture=None, lim=LIM):
    """Section 1: one panel per data set, ``point_sets`` name -> points (n, 2); ``mixture``'s exact density (black
    contours) on the first panel. Returns the figure."""
    import matplotlib.pyplot as plt

    sets = _named_sets(point_sets, "point_sets")
    fig, axes = plt.subplots(1, len(sets), figsize=(4.4 * len(sets), 4.9), squeeze=False)
    axes = axes[0]
    if mixture is not None:
        density_contours(axes[0], mixture, lim)
    for ax, (name, pts) in zip(axes, sets.items(), strict=True):
        p = to_numpy(pts)
        ax.scatter(p[:, 0], p[:, 1], s=4, alpha=0.5, color=COLORS["data"], label=f"{len(p)} draws")
        square_axes(ax, name, lim)
    if mixture is not None:
        _density_proxy(axes[0])
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2)
    return fig


def _curve(v, name: str, m: int) -> torch.Tensor:
    return as_float64(v, name, shape=(m,), finite=False)


def plot_error_curves(ts, curves: dict, bayes: dict, spaces=("x0", "eps"), ratio_space: str = "eps",
                      threshold: float = 0.1):
    """Section 4: each learned target's error at every t against the Bayes error, and excess / Bayes error.

    ts: steps (m,). curves: space -> target -> ``denoiser_error``'s dict, whose "mse" and "excess" are (m,).
    bayes: space -> Bayes error (m,). One log-log panel of "mse" per space in ``spaces`` with the Bayes error in
    black, and a third panel of excess / Bayes error in ``ratio_space`` (the same in every space) with a dotted line
    at ``threshold``. Returns the figure.
    """
    import matplotlib.pyplot as plt

    t = as_float64(ts, "ts", ndim=1)
    m = t.shape[0]
    if not isinstance(curves, dict) or not isinstance(bayes, dict):
        raise TypeError(f"curves and bayes: expected dicts keyed by space, got {describe(curves)} and "
                        f"{describe(bayes)}")
    for space in (*spaces, ratio_space):
        if space not in curves or space not in bayes:
            raise ValueError(f"curves and bayes: expected an entry for space {space!r}, got curves {list(curves)} "
                             f"and bayes {list(bayes)}")
        if not isinstance(curves[space], dict) or not curves[space]:
            raise ValueError(f"curves[{space!r}]: expected a dict target -> denoiser_error result, got "
                             f"{describe(curves[space])}")
        for target, c in curves[space].items():
            for k in ("mse", "excess"):
                if not isinstance(c, dict) or k not in c:
                    raise ValueError(f"curves[{space!r}][{target!r}]: expected denoiser_error's dict with {k!r}")
                _curve(c[k], f"curves[{space!r}][{target!r}][{k!r}]", m)
        _curve(bayes[space], f"bayes[{space!r}]", m)
    t_np = to_numpy(t)
    fig, axes = plt.subplots(1, len(spaces) + 1, figsize=(5 * (len(spaces) + 1), 4.6))
    for ax, space in zip(axes[:-1], spaces, strict=True):
        for target, c in curves[space].items():
            ax.plot(t_np, to_numpy(c["mse"]), color=TARGET_COLORS.get(target), label=f'learned, target "{target}"')
        ax.plot(t_np, to_numpy(bayes[space]), color=COLORS["truth"], ls="--", lw=2.5,
                label="Bayes-optimal (mixture.mmse)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        sym = {"x0": r"\hat x^0", "eps": r"\hat\varepsilon", "score": r"\widehat{\nabla\log p}"}.get(space, space)
        label(ax, "time step $t$", "mean squared error", f"error of ${sym}$ ({space}-space)")
    ax = axes[-1]
    b = as_float64(bayes[ratio_space], "bayes")
    for target, c in curves[ratio_space].items():
        ax.plot(t_np, to_numpy(as_float64(c["excess"], "excess") / b), color=TARGET_COLORS.get(target),
                label=f'target "{target}"')
    ax.axhline(threshold, color=COLORS["prior"], ls=":", label=f"excess = {threshold:.0%} of the Bayes error")
    ax.set_xscale("log")
    ax.set_yscale("log")
    label(ax, "time step $t$", "excess / Bayes error", "distance from optimal (any space)")
    handles, labels = axes[0].get_legend_handles_labels()
    h2, l2 = ax.get_legend_handles_labels()
    fig.legend(handles + h2[-1:], labels + l2[-1:], loc="outside lower center", ncol=len(labels) + 1)
    return fig


def plot_samples(samples: dict, mixture=None, reference=None, *, colors: dict | None = None, ncols: int | None = None,
                 digits: int = 4, lim=LIM, size: float = 4, panel: float = 3.75):
    """Sample sets side by side: ``samples`` title -> points (n, 2), one panel each (``ncols`` per row).

    ``mixture``: its exact density in black contours on every panel. ``reference``: fresh data (m, 2), or a dict
    title -> fresh data for some panels; a panel with one gets "energy distance value ± s.e." (``digits`` decimals,
    ``energy_distance_jackknife``) under its title. ``colors``: title -> point colour (default the samples' blue).
    Returns the figure.
    """
    import matplotlib.pyplot as plt

    sets = _named_sets(samples, "samples")
    if reference is not None and not isinstance(reference, dict):
        reference = dict.fromkeys(sets, reference)
    reference = reference or {}
    unknown = set(reference) - set(sets) | set(colors or {}) - set(sets)
    if unknown:
        raise ValueError(f"reference and colors: keys {sorted(unknown)} name no panel; panels: {list(sets)}")
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits: expected a positive integer, got {describe(digits)}")
    k = len(sets)
    ncols = k if ncols is None else ncols
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols: expected a positive integer, got {describe(ncols)}")
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols, (panel + 0.65) * nrows), squeeze=False)
    for ax, (title, x) in zip(axes.flat, sets.items(), strict=False):
        if mixture is not None:
            density_contours(ax, mixture, lim)
        p = to_numpy(x)
        ax.scatter(p[:, 0], p[:, 1], s=size, alpha=0.5, color=(colors or {}).get(title, COLORS["samples"]),
                   label="samples")
        if title in reference:
            ej = energy_distance_jackknife(x, reference[title])
            title = f"{title}\nenergy distance {ej.value:.{digits}f} ± {ej.se:.{digits}f}"
        square_axes(ax, title, lim)
    for ax in list(axes.flat)[k:]:
        ax.set_visible(False)
    first = axes.flat[0]
    if mixture is not None:
        _density_proxy(first)
        handles, labels = first.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=2)
    return fig


def plot_denoising_path(path, show_t=(900, 600, 400, 250, 100, 1), mixture=None, lim=LIM,
                        title: str = r"the noisy state $x^t$ (top) and its prediction $\hat x^0$ (bottom)"):
    """Tweedie in pictures: x^t (top row) and the prediction x0_hat made from it (bottom row) at each t in ``show_t``.

    path: a ``samplers.SamplerPath`` (``return_path=True``) of 2-D samples: ``path.path`` (S + 1, n, 2), ``x0_pred``
    (S, n, 2), ``timesteps`` (S + 1,). Each t in ``show_t`` must be one of ``timesteps[:-1]``. Returns the figure.
    """
    import matplotlib.pyplot as plt

    for attr in ("path", "x0_pred", "timesteps"):
        if not isinstance(getattr(path, attr, None), torch.Tensor):
            raise TypeError(f"path: expected a SamplerPath (sample(..., return_path=True)), got {describe(path)}")
    if path.path.ndim != 3 or path.path.shape[-1] != 2 or path.x0_pred.shape[0] != path.path.shape[0] - 1:
        raise ValueError(f"path: expected 2-D samples, path (S + 1, n, 2) and x0_pred (S, n, 2), got "
                         f"{tuple(path.path.shape)} and {tuple(path.x0_pred.shape)}")
    steps = [int(t) for t in path.timesteps[:-1]]
    missing = [t for t in show_t if t not in steps]
    if missing or not show_t:
        raise ValueError(f"show_t: expected steps the sampler visited (from {steps[0]} down to {steps[-1]}), "
                         f"{missing or 'none given'} are not among them")
    fig, axes = plt.subplots(2, len(show_t), figsize=(2.7 * len(show_t), 6.2), sharex=True, sharey=True,
                             squeeze=False)
    for j, t in enumerate(show_t):
        k = steps.index(t)
        for i, (pts, color, what) in enumerate(((path.path[k], COLORS["samples"], "$x^t$"),
                                                (path.x0_pred[k], COLORS["model"], r"$\hat x^0$"))):
            ax = axes[i, j]
            if mixture is not None:
                density_contours(ax, mixture, lim)
            p = to_numpy(pts)
            ax.scatter(p[:, 0], p[:, 1], s=3, alpha=0.4, color=color)
            square_axes(ax, None, lim, xlabel="$x_1$" if i == 1 else None, ylabel="$x_2$" if j == 0 else None)
            ax.set_title(f"{what}, t = {t}", fontsize=12)
    fig.suptitle(title)
    return fig


def plot_sample_paths(paths: dict, mixture=None, lim=(-3.2, 3.2)):
    """Sampler paths: ``paths`` name -> a ``SamplerPath`` or its ``path`` tensor (S + 1, n, 2), one panel each, with
    the starts x^T and the samples x^0 marked. Returns the figure."""
    import matplotlib.pyplot as plt

    if not isinstance(paths, dict) or not paths:
        raise TypeError(f"paths: expected a non-empty dict name -> SamplerPath or (S + 1, n, 2), got {describe(paths)}")
    arrays = {}
    for name, res in paths.items():
        p = getattr(res, "path", res)
        p = as_float64(p.detach().cpu() if isinstance(p, torch.Tensor) else p, f"paths[{name!r}]")
        if p.ndim != 3 or p.shape[0] < 2 or p.shape[2] != 2:
            raise ValueError(f"paths[{name!r}]: expected a path of shape (S + 1, n, 2) with S >= 1, got "
                             f"{tuple(p.shape)}")
        arrays[name] = to_numpy(p)
    fig, axes = plt.subplots(1, len(arrays), figsize=(5 * len(arrays), 5), squeeze=False)
    axes = axes[0]
    for ax, (name, p) in zip(axes, arrays.items(), strict=True):
        if mixture is not None:
            density_contours(ax, mixture, lim)
        ax.plot(p[:, :, 0], p[:, :, 1], color=COLORS["samples"], lw=0.6, alpha=0.6)
        ax.scatter(p[0, :, 0], p[0, :, 1], s=14, color=COLORS["prior"], zorder=3, label="start $x^T$")
        ax.scatter(p[-1, :, 0], p[-1, :, 1], s=14, color=COLORS["model"], zorder=3, label="sample $x^0$")
        square_axes(ax, name, lim)
    if mixture is not None:
        _density_proxy(axes[0])
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return fig


def plot_training_curves(histories: dict, floors: dict):
    """Section 3: each target's training loss against its floor, the Bayes-optimal loss (black, dashed).

    histories: target -> a training history with "step" and "loss" (equal lengths: the loss's mean over each
    logging interval), e.g. ``info.meta`` of ``cached_toy_denoiser``. floors: target -> the Bayes-optimal loss (a
    number). One panel per target: the raw curve, its running mean over 4% of training, the floor. Returns the figure.
    """
    import matplotlib.pyplot as plt

    if not isinstance(histories, dict) or not histories or not isinstance(floors, dict):
        raise TypeError(f"histories and floors: expected dicts target -> history / number, got {describe(histories)} "
                        f"and {describe(floors)}")
    curves = {}
    for target, h in histories.items():
        if not isinstance(h, dict) or "step" not in h or "loss" not in h:
            raise ValueError(f"histories[{target!r}]: expected a dict with 'step' and 'loss', got {describe(h)}")
        steps, loss = as_float64(h["step"], f"histories[{target!r}]['step']", ndim=1), as_float64(
            h["loss"], f"histories[{target!r}]['loss']", ndim=1)
        if steps.shape != loss.shape or loss.shape[0] < 2:
            raise ValueError(f"histories[{target!r}]: expected 'step' and 'loss' of one length >= 2, got "
                             f"{tuple(steps.shape)} and {tuple(loss.shape)}")
        if target not in floors or isinstance(floors[target], bool) or not isinstance(floors[target], numbers.Real):
            raise ValueError(f"floors: expected a number for target {target!r}, got {describe(floors.get(target))}")
        curves[target] = (steps, loss)
    fig, axes = plt.subplots(1, len(curves), figsize=(13 / 3 * len(curves), 4.2), squeeze=False)
    axes = axes[0]
    for i, (ax, (target, (steps, loss))) in enumerate(zip(axes, curves.items(), strict=True)):
        color, floor = TARGET_COLORS.get(target, COLORS["model"]), float(floors[target])
        ax.plot(to_numpy(steps), to_numpy(loss), color=color, lw=0.8, alpha=0.35,
                label="training loss (means of 10 steps)")
        k = max(1, len(loss) // 25)  # a running mean over 4% of training, to see the trend through the noise
        smooth = torch.nn.functional.avg_pool1d(loss[None, None], k, stride=1)[0, 0]
        ax.plot(to_numpy(steps[k - 1:]), to_numpy(smooth), color=color, lw=2.2, label="running mean")
        ax.axhline(floor, color=COLORS["truth"], ls="--", label="Bayes-optimal loss")
        late = sorted(loss[len(loss) // 20:].tolist())
        ax.set_ylim(0.95 * floor, max(1.3 * floor, late[int(0.98 * (len(late) - 1))]))
        label(ax, "training step", "loss (weighted squared error)" if i == 0 else None, f'target "{target}"')
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return fig
