"""How good are samples? Numbers that compare a sample set with the truth.

- ``average_log_prob(mixture, x)``: (1/n) sum_i log p(x_i) under the true mixture. Compare it with the same
  number for fresh data, E_p[log p] = -entropy: lower means samples in low-density places (blur, spread).
  It cannot see missing spread: samples piled on the modes score *higher* than the truth.
- ``energy_distance(x, y)``: D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo), >= 0 and = 0 only
  when X and Y have the same law; the estimate is unbiased (U-statistics), so it is ~0, possibly
  slightly negative, for two samples of one law. Sees both missing spread and missing modes.
- ``energy_test(x, y)``: a permutation test of "same law" based on the energy distance.
- ``mmd(x, y)``: the kernel two-sample distance with a Gaussian kernel (unbiased MMD^2).
- ``mixture_fit_test(mixture, x)``: an exact goodness-of-fit test of x against a Gaussian mixture.
- ``sampler_quality_table``: these numbers for several denoisers x samplers (notebook 06's table, and bench/).

Points are rows: x of shape (n, d); everything is computed in float64 on the CPU.
"""

from __future__ import annotations

import math

import torch

from ._checks import as_float64, describe

# distances from differences, not from |a|^2 + |b|^2 - 2 a.b, which loses digits for nearby points
_EXACT = "donot_use_mm_for_euclid_dist"

__all__ = ["average_log_prob", "binomial_se", "energy_distance", "energy_test", "format_share", "markdown_table",
           "mixture_fit_test", "mmd", "sample_quality", "sampler_quality_table", "sampler_runs"]


def _points(x, name: str, d: int | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    t = as_float64(x, name)
    if t.ndim != 2 or t.shape[0] < 2 or (d is not None and t.shape[1] != d):
        want = f"(n, {d})" if d is not None else "(n, d)"
        raise ValueError(f"{name}: expected points as rows, shape {want} with n >= 2, got {tuple(t.shape)}")
    return t


def average_log_prob(mixture, x) -> tuple[float, float]:
    """(mean, standard error) of log p(x_i) under ``mixture`` (a GaussianMixture). x: (n, d)."""
    lp = mixture.log_prob(_points(x, "x", mixture.d))
    return float(lp.mean()), float(lp.std()) / math.sqrt(lp.shape[0])


def _mean_dist(a: torch.Tensor, b: torch.Tensor | None = None, chunk: int = 4096) -> float:
    """Mean Euclidean distance between rows of a and b; with b None, over pairs i != j of a."""
    same = b is None
    b = a if same else b
    total = 0.0
    for i in range(0, a.shape[0], chunk):
        total += float(torch.cdist(a[i:i + chunk], b, compute_mode=_EXACT).sum())
    n, m = a.shape[0], b.shape[0]
    return total / (n * (n - 1)) if same else total / (n * m)


def energy_distance(x, y) -> float:
    """Squared energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'|, unbiased (U-statistics). x: (n, d), y: (m, d).

    0 in expectation for two samples of the same law; for N(0, I) against N(delta, I) it grows like |delta|^2
    for small shifts.
    """
    x = _points(x, "x")
    y = _points(y, "y", x.shape[1])
    return 2.0 * _mean_dist(x, y) - _mean_dist(x) - _mean_dist(y)


def energy_test(x, y, permutations: int = 199, generator: torch.Generator | None = None) -> tuple[float, float]:
    """Permutation test of "x and y come from the same law": (energy statistic, p-value).

    Statistic: the V-statistic n m / (n + m) (2 mean|x - y| - mean|x - x'| - mean|y - y'|) of the pooled
    distance matrix; the p-value is (1 + #{permuted >= observed}) / (1 + permutations), exact in level.
    Memory: the (n + m)^2 distance matrix; keep n + m below ~5000.
    """
    x = _points(x, "x")
    y = _points(y, "y", x.shape[1])
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
        raise ValueError(f"permutations: expected a positive integer, got {describe(permutations)}")
    n, m = x.shape[0], y.shape[0]
    z = torch.cat([x, y])
    D = torch.cdist(z, z, compute_mode=_EXACT)
    labels = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(m, dtype=torch.bool)])
    perms = [labels] + [labels[torch.randperm(n + m, generator=generator)] for _ in range(permutations)]
    W = torch.stack([torch.where(p, 1.0 / n, -1.0 / m).to(torch.float64) for p in perms], dim=1)  # (n + m, P)
    # w^T D w = mean D_xx + mean D_yy - 2 mean D_xy = -(energy V-statistic)
    stats = -(W * (D @ W)).sum(0) * (n * m / (n + m))
    observed = float(stats[0])
    p = (1 + int((stats[1:] >= observed).sum())) / (1 + permutations)
    return observed, p


def mmd(x, y, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with the Gaussian kernel exp(-|a - b|^2 / (2 h^2)); h = ``bandwidth`` or the median distance.

    x: (n, d), y: (m, d). ~0 for two samples of one law, > 0 when they differ (up to noise).
    """
    x = _points(x, "x")
    y = _points(y, "y", x.shape[1])
    if bandwidth is None:
        z = torch.cat([x[:1000], y[:1000]])
        bandwidth = float(torch.cdist(z, z).median())
    if not bandwidth > 0:
        raise ValueError(f"bandwidth: expected a positive number, got {bandwidth!r}")

    def k(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2))

    n, m = x.shape[0], y.shape[0]
    kxx = (k(x, x).sum() - n) / (n * (n - 1))
    kyy = (k(y, y).sum() - m) / (m * (m - 1))
    return float(kxx + kyy - 2 * k(x, y).mean())


def mixture_fit_test(mixture, x, generator: torch.Generator | None = None) -> dict[str, float]:
    """Exact goodness-of-fit test of "x_1..x_n are i.i.d. from ``mixture``"; returns p-values.

    Each point gets a component label drawn from its responsibilities p(k | x_i). If x ~ p, the pairs
    (x_i, k_i) are draws of the joint law, so exactly: labels ~ Categorical(weights) ("weights": chi-square
    test), and given k, x ~ N(mu_k, Sigma_k), so n_k (xbar_k - mu_k)^T Sigma_k^-1 (xbar_k - mu_k) ~ chi2_d
    ("means") and sum_i (x_i - mu_k)^T Sigma_k^-1 (x_i - mu_k) ~ chi2_{n_k d} ("spread", two-sided).
    "means" and "spread" are Bonferroni-combined over components, "all" over the three (so each is a valid
    p-value: P(p <= a) <= a under the null). Components with fewer than 5 points are skipped.
    """
    from scipy import stats

    x = _points(x, "x", mixture.d)
    r = mixture.responsibilities(x)
    labels = torch.multinomial(r, 1, generator=generator)[:, 0]
    counts = torch.bincount(labels, minlength=mixture.K).to(torch.float64)
    expected = mixture.weights * x.shape[0]
    keep = expected > 0
    chi2 = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    p_weights = float(stats.chi2.sf(chi2, int(keep.sum()) - 1)) if int(keep.sum()) > 1 else 1.0
    p_means, p_spread = [], []
    for k in range(mixture.K):
        xk = x[labels == k]
        nk = xk.shape[0]
        if nk < 5:
            continue
        L = torch.linalg.cholesky(mixture.covs[k])
        z = torch.linalg.solve_triangular(L, (xk - mixture.means[k]).T, upper=False)  # whitened, (d, nk)
        p_means.append(float(stats.chi2.sf(nk * float((z.mean(1) ** 2).sum()), mixture.d)))
        ss = float((z**2).sum())
        dof = nk * mixture.d
        p_spread.append(float(min(1.0, 2 * min(stats.chi2.sf(ss, dof), stats.chi2.cdf(ss, dof)))))

    def bonferroni(ps):
        return float(min(1.0, len(ps) * min(ps))) if ps else 1.0

    out = {"weights": p_weights, "means": bonferroni(p_means), "spread": bonferroni(p_spread)}
    out["all"] = bonferroni(list(out.values()))
    return out


def sample_quality(samples, reference, mixture=None) -> dict[str, float]:
    """The notebook's quality numbers of ``samples`` (n, d) against fresh ``reference`` data (m, d).

    "energy": ``energy_distance(samples, reference)``; with a mixture also "log_prob" (the samples' average log
    density) and "log_prob_data" (the reference's, the value a perfect sampler gets up to noise).
    """
    out = {"energy": energy_distance(samples, reference)}
    if mixture is not None:
        out["log_prob"] = average_log_prob(mixture, samples)[0]
        out["log_prob_data"] = average_log_prob(mixture, reference)[0]
    return out


def sampler_runs(denoisers: dict, schedule, runs: dict, *, n: int = 2000, seed: int = 0, **sample_kw):
    """Yield ``(denoiser name, run name, samples (n, d), seconds)`` for every denoiser and every sampler setting.

    ``denoisers``: name -> denoiser (see ``samplers.sample``). ``runs``: name -> keywords of ``samplers.sample``,
    e.g. ``{"DDPM, 1000 steps": {"eta": 1.0}, "DDIM, 20 steps": {"steps": 20, "eta": 0.0}}``. Each run draws ``n``
    samples with a generator seeded by ``seed`` (the same x^T for every denoiser and run). ``sample_kw`` (e.g.
    ``clip_x0``) go to every run.
    """
    import time

    from .samplers import sample

    for name, den in denoisers.items():
        for run, kw in runs.items():
            t0 = time.perf_counter()
            x = sample(den, schedule, n, generator=torch.Generator().manual_seed(seed), **{**sample_kw, **kw})
            yield name, run, x, time.perf_counter() - t0


def sampler_quality_table(denoisers: dict, schedule, runs: dict, reference, mixture=None, *, n: int = 2000,
                          seed: int = 0, **sample_kw) -> list[dict]:
    """Sample quality for every denoiser and every sampler setting (``sampler_runs``): one row (a dict) per pair.

    ``reference``: fresh data (m, d). Row keys: "denoiser", "sampler", "seconds" and those of ``sample_quality``.
    """
    return [{"denoiser": name, "sampler": run, "seconds": seconds,
             **sample_quality(x.detach().cpu().to(torch.float64), reference, mixture)}
            for name, run, x, seconds in sampler_runs(denoisers, schedule, runs, n=n, seed=seed, **sample_kw)]


def binomial_se(share: float, n: int) -> float:
    """The standard error sqrt(p (1 - p) / n) of a share p of n independent yes/no draws."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive number of draws, got {describe(n)}")
    if not 0.0 <= float(share) <= 1.0:
        raise ValueError(f"share: expected a number in [0, 1], got {describe(share)}")
    return math.sqrt(float(share) * (1.0 - float(share)) / n)


def format_share(share: float, n: int) -> str:
    """"93.1% ± 1.2%": a share of n draws with its binomial standard error (``binomial_se``)."""
    return f"{float(share):.1%} ± {binomial_se(share, n):.1%}"


def markdown_table(rows: list[dict], columns: dict[str, str], formats: dict[str, str] | None = None) -> str:
    """A markdown table of ``rows`` (dicts): ``columns`` maps a row key to its header; ``formats`` a key to a
    format spec (e.g. ``"+.3f"``). Missing values print as an empty cell."""
    formats = formats or {}
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for k in columns:
            v = r.get(k)
            cells.append("" if v is None else format(v, formats.get(k, "")) if not isinstance(v, str) else v)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
