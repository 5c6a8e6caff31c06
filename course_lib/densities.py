"""Exact densities: Gaussian mixtures (with everything diffusion needs in closed form) and toy data sets.

A Gaussian mixture p(x^0) = sum_k w_k N(x^0; mu_k, Sigma_k) stays a Gaussian mixture under the forward
noising x^t = sqrt(alpha_bar) x^0 + sqrt(1 - alpha_bar) eps, eps ~ N(0, I), and so does the posterior
p(x^0 | x^t). That makes every quantity a diffusion model learns available exactly:

- the density of the noised data and its score grad log p(x^t)     ``noised(alpha_bar).log_prob / .score``
- the Bayes-optimal denoiser E[x^0 | x^t]                            ``posterior_mean``
- the Bayes-optimal classifier p(y = k | x^t) (label = component)    ``class_posterior``
- the whole posterior p(x^0 | x^t)                                    ``posterior``

Tweedie's formula links them: E[x^0 | x^t] = (x^t + (1 - alpha_bar) grad log p(x^t)) / sqrt(alpha_bar).
(The lecture slide omits the 1/sqrt(alpha_bar); see notebooks/LECTURE_ERRATA.md.)

Everything is computed in float64 on the CPU. Inputs on another device or in another dtype are copied
to CPU float64; results are CPU float64 tensors. Points are always rows: x has shape (n, d).

Toy data sets for the notebooks: ``two_moons``, ``swiss_roll``, ``rings`` (2-D, roughly unit variance),
and named mixtures: ``named_mixture(name)`` with ``name`` in ``MIXTURE_NAMES``.
"""

from __future__ import annotations

import math
import numbers
from functools import lru_cache

import torch

from ._checks import as_float64, check_alpha_bar, check_positive, check_spd, check_weights, describe

__all__ = [
    "MIXTURE_NAMES",
    "GaussianMixture",
    "named_mixture",
    "rings",
    "swiss_roll",
    "two_moons",
]

_LOG_2PI = math.log(2.0 * math.pi)
_CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------------- helpers
def _check_n(n, name: str = "n") -> int:
    """A positive integer sample size."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name}: expected a positive integer, got {describe(n)}")
    if int(n) <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {int(n)}")
    return int(n)


def _check_generator(generator) -> torch.Generator | None:
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {describe(generator)}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator: expected a CPU generator (sampling happens on the CPU), got {generator.device}")
    return generator


def _to_cpu(x):
    # Move before converting: float64 does not exist on every accelerator (Apple's MPS).
    if isinstance(x, torch.Tensor) and x.device != _CPU:
        return x.to(_CPU)
    return x


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


# ---------------------------------------------------------------------------------------------- mixture
class GaussianMixture:
    """p(x) = sum_k weights[k] N(x; means[k], covs[k]), exact and in float64.

    ``weights``: shape (K,), non-negative, summing to 1. ``means``: shape (K, d) (a 1-D mixture has
    means of shape (K, 1)). ``covs``: shape (K, d, d), symmetric positive definite. For convenience
    ``covs`` may also be a number (the same isotropic variance sigma^2 I for every component), shape
    (K,) (one isotropic variance per component) or shape (K, d) (diagonal variances per component);
    these are variances, not standard deviations.

    Attributes: ``K``, ``d`` (ints), ``weights`` (K,), ``means`` (K, d), ``covs`` (K, d, d), all float64
    CPU tensors, copied from the inputs. Treat the object as immutable: methods use factorisations of
    ``covs`` computed once here.

    All methods take points as rows, x of shape (n, d), and return CPU float64 tensors.
    ``log_prob``, ``score`` and ``posterior_mean`` are differentiable by torch autograd in x.
    """

    def __init__(self, weights, means, covs):
        w = check_weights(_to_cpu(weights), "weights")
        K = int(w.shape[0])
        m = as_float64(_to_cpu(means), "means")
        if m.ndim != 2 or m.shape[0] != K:
            hint = " (for a 1-D mixture use means of shape (K, 1), e.g. [[-1.0], [2.0]])" if m.ndim == 1 else ""
            raise ValueError(f"means: expected shape (K, d) with K = {K} (the length of weights), "
                             f"got {tuple(m.shape)}{hint}")
        d = int(m.shape[1])
        if d == 0:
            raise ValueError("means: expected at least one dimension, got shape (K, 0)")
        c = as_float64(_to_cpu(covs), "covs")
        eye = torch.eye(d, dtype=torch.float64)
        full = f"(K, d, d) = ({K}, {d}, {d})"
        if c.ndim == 0:
            c = check_positive(c, "covs") * eye.expand(K, d, d)
        elif c.ndim == 1:
            if c.shape[0] != K:
                raise ValueError(f"covs: expected shape {full}, or ({K},) for one isotropic variance per "
                                 f"component, got {tuple(c.shape)}")
            if not bool((c > 0).all()):
                raise ValueError(f"covs: expected positive variances, got {c.min().item()}")
            c = c[:, None, None] * eye
        elif c.ndim == 2:
            if tuple(c.shape) != (K, d):
                hint = f" (for a single {d}x{d} covariance matrix use covs[None])" if c.shape[0] == c.shape[1] else ""
                raise ValueError(f"covs: expected shape {full}, or ({K}, {d}) for diagonal variances, "
                                 f"got {tuple(c.shape)}{hint}")
            if not bool((c > 0).all()):
                raise ValueError(f"covs: expected positive variances, got {c.min().item()}")
            c = torch.diag_embed(c)
        elif tuple(c.shape) != (K, d, d):
            raise ValueError(f"covs: expected shape {full} to match weights (K = {K}) and means (d = {d}), "
                             f"got {tuple(c.shape)}")
        c = check_spd(c, "covs")

        # clone: the mixture must not change if the caller later edits the arrays it passed in
        self.K: int = K
        self.d: int = d
        self.weights: torch.Tensor = w.detach().clone()
        self.means: torch.Tensor = m.detach().clone()
        self.covs: torch.Tensor = _sym(c.detach().clone())
        self._log_weights = torch.log(self.weights)  # -inf for a zero weight; logsumexp handles it
        self._chol = torch.linalg.cholesky(self.covs)
        self._logdet = 2.0 * torch.log(torch.diagonal(self._chol, dim1=-2, dim2=-1)).sum(-1)
        # Sigma_k = U_k diag(lam_k) U_k^T diagonalises every noised covariance at once:
        # alpha_bar Sigma_k + (1 - alpha_bar) I = U_k diag(alpha_bar lam_k + 1 - alpha_bar) U_k^T,
        # which lets one alpha_bar per row be handled without a factorisation per row.
        self._lam, self._U = torch.linalg.eigh(self.covs)

    # ------------------------------------------------------------------ input checks
    def _points(self, x, name: str) -> torch.Tensor:
        t = as_float64(_to_cpu(x), name)
        if t.ndim == 1:
            hint = f"for 1-D data use {name}[:, None]" if self.d == 1 else f"for a single point use {name}[None, :]"
            raise ValueError(f"{name}: expected shape (n, {self.d}), got {tuple(t.shape)}; {hint}")
        if t.ndim != 2 or t.shape[1] != self.d:
            raise ValueError(f"{name}: expected shape (n, {self.d}) (this mixture has d = {self.d}), "
                             f"got {tuple(t.shape)}")
        return t

    @staticmethod
    def _alpha_bar_rows(alpha_bar, n: int) -> torch.Tensor:
        ab = check_alpha_bar(_to_cpu(alpha_bar), "alpha_bar", n=n)
        return ab.expand(n) if ab.ndim == 0 else ab

    @staticmethod
    def _alpha_bar_number(alpha_bar) -> float:
        ab = check_alpha_bar(_to_cpu(alpha_bar), "alpha_bar")
        if ab.numel() != 1:
            raise ValueError(f"alpha_bar: expected a single number here, got shape {tuple(ab.shape)}")
        return float(ab.reshape(()))

    # ------------------------------------------------------------------ density
    def component_log_prob(self, x) -> torch.Tensor:
        """log N(x; mu_k, Sigma_k) for every component (weights not included). x: (n, d) -> (n, K)."""
        x = self._points(x, "x")
        diff = (x[None, :, :] - self.means[:, None, :]).transpose(-1, -2)  # (K, d, n)
        z = torch.linalg.solve_triangular(self._chol, diff, upper=False)  # L_k^{-1}(x - mu_k)
        maha = (z * z).sum(-2)  # (K, n)
        return (-0.5 * (self.d * _LOG_2PI + self._logdet[:, None] + maha)).T

    def log_prob(self, x) -> torch.Tensor:
        """log p(x) = logsumexp_k (log w_k + log N(x; mu_k, Sigma_k)). x: (n, d) -> (n,)."""
        return torch.logsumexp(self.component_log_prob(x) + self._log_weights, dim=-1)

    def prob(self, x) -> torch.Tensor:
        """p(x) = exp(log_prob(x)). x: (n, d) -> (n,). Prefer log_prob: p(x) underflows far from the data."""
        return torch.exp(self.log_prob(x))

    def responsibilities(self, x) -> torch.Tensor:
        """r_k(x) = p(y = k | x) = w_k N(x; mu_k, Sigma_k) / p(x). x: (n, d) -> (n, K), rows sum to 1."""
        return torch.softmax(self.component_log_prob(x) + self._log_weights, dim=-1)

    def score(self, x) -> torch.Tensor:
        """grad_x log p(x) = sum_k r_k(x) (-Sigma_k^{-1} (x - mu_k)). x: (n, d) -> (n, d)."""
        x = self._points(x, "x")
        r = self.responsibilities(x)  # (n, K)
        diff = (x[None, :, :] - self.means[:, None, :]).transpose(-1, -2)  # (K, d, n)
        prec_diff = torch.cholesky_solve(diff, self._chol)  # Sigma_k^{-1} (x - mu_k), (K, d, n)
        return -torch.einsum("nk,kdn->nd", r, prec_diff)

    def sample(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """Draw y ~ Categorical(weights), x ~ N(mu_y, Sigma_y). Returns x (n, d) [and y (n,) long]."""
        n = _check_n(n)
        generator = _check_generator(generator)
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.d, generator=generator, dtype=torch.float64)
        x = self.means[labels] + torch.einsum("nij,nj->ni", self._chol[labels], z)
        return (x, labels) if return_labels else x

    def mixture_mean(self) -> torch.Tensor:
        """E[x] = sum_k w_k mu_k of the whole mixture. Shape (d,)."""
        return self.weights @ self.means

    def mixture_cov(self) -> torch.Tensor:
        """Cov[x] = sum_k w_k (Sigma_k + mu_k mu_k^T) - E[x] E[x]^T of the whole mixture. Shape (d, d)."""
        m = self.mixture_mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covs + self.means[:, :, None] * self.means[:, None, :])
        return _sym(second - torch.outer(m, m))

    # ------------------------------------------------------------------ diffusion
    def noised(self, alpha_bar) -> GaussianMixture:
        """The law of x^t = sqrt(ab) x^0 + sqrt(1 - ab) eps: means sqrt(ab) mu_k, covs ab Sigma_k + (1 - ab) I.

        ``alpha_bar``: a number in (0, 1]. Returns a new GaussianMixture (same weights).
        """
        ab = self._alpha_bar_number(alpha_bar)
        eye = torch.eye(self.d, dtype=torch.float64)
        return GaussianMixture(self.weights, math.sqrt(ab) * self.means, ab * self.covs + (1.0 - ab) * eye)

    def _posterior_terms(self, x_t, alpha_bar):
        """Per-row, per-component pieces of p(x^0 | x^t), in the eigenbasis of each Sigma_k.

        Returns x_t (n, d), ab (n,), r (n, K) = p(y = k | x^t), cond_mean (n, K, d) = E[x^0 | x^t, y = k],
        cond_var (n, K, d) = eigenvalues of Cov[x^0 | x^t, y = k] (eigenvectors: the columns of U_k).
        """
        x = self._points(x_t, "x_t")
        ab = self._alpha_bar_rows(alpha_bar, x.shape[0])
        a = ab[:, None, None]
        lam = self._lam[None]  # (1, K, d)
        var = a * lam + (1.0 - a)  # eigenvalues of C_k = ab Sigma_k + (1 - ab) I, (n, K, d)
        diff = x[:, None, :] - a.sqrt() * self.means[None]  # x^t - sqrt(ab) mu_k, (n, K, d)
        proj = torch.einsum("kji,nkj->nki", self._U, diff)  # U_k^T diff
        log_joint = self._log_weights - 0.5 * (self.d * _LOG_2PI + torch.log(var).sum(-1) + (proj**2 / var).sum(-1))
        r = torch.softmax(log_joint, dim=-1)
        # Gaussian conditioning within component k: mu_k + sqrt(ab) Sigma_k C_k^{-1} (x^t - sqrt(ab) mu_k)
        cond_mean = self.means[None] + a.sqrt() * torch.einsum("kij,nkj->nki", self._U, lam / var * proj)
        # Sigma_k - ab Sigma_k C_k^{-1} Sigma_k has eigenvalues lam (1 - ab) / (ab lam + 1 - ab) > 0
        cond_var = lam * (1.0 - a) / var
        return x, ab, r, cond_mean, cond_var

    def class_posterior(self, x_t, alpha_bar) -> torch.Tensor:
        """p(y = k | x^t) = w_k N(x^t; sqrt(ab) mu_k, ab Sigma_k + (1 - ab) I) / p(x^t). x_t: (n, d) -> (n, K).

        ``alpha_bar``: a number in (0, 1] or a tensor of shape (n,) (one per row of x_t).
        """
        return self._posterior_terms(x_t, alpha_bar)[2]

    def posterior_mean(self, x_t, alpha_bar) -> torch.Tensor:
        """E[x^0 | x^t] = sum_k p(y = k | x^t) E[x^0 | x^t, y = k], exact. x_t: (n, d) -> (n, d).

        ``alpha_bar``: a number in (0, 1] or a tensor of shape (n,). At alpha_bar = 1, x^0 = x^t is returned.
        Equals Tweedie's (x^t + (1 - ab) grad log p_ab(x^t)) / sqrt(ab) with p_ab = ``noised(ab)``.
        """
        x, ab, r, cond_mean, _ = self._posterior_terms(x_t, alpha_bar)
        mean = torch.einsum("nk,nkd->nd", r, cond_mean)
        return torch.where((ab == 1.0)[:, None], x, mean)

    def posterior_cov(self, x_t, alpha_bar) -> torch.Tensor:
        """Cov[x^0 | x^t] = sum_k r_k (S_k + m_k m_k^T) - m m^T (law of total covariance). x_t: (n, d) -> (n, d, d).

        ``alpha_bar``: a number in (0, 1] or a tensor of shape (n,). Zero at alpha_bar = 1.
        """
        _, ab, r, cond_mean, cond_var = self._posterior_terms(x_t, alpha_bar)
        within = torch.einsum("kij,nkj,klj->nkil", self._U, cond_var, self._U)  # U_k diag(cond_var) U_k^T
        m = torch.einsum("nk,nkd->nd", r, cond_mean)
        dev = cond_mean - m[:, None, :]
        cov = torch.einsum("nk,nkij->nij", r, within + dev[..., :, None] * dev[..., None, :])
        return torch.where((ab == 1.0)[:, None, None], torch.zeros_like(cov), _sym(cov))

    def posterior(self, x_t, alpha_bar) -> GaussianMixture:
        """p(x^0 | x^t) for ONE point x^t, exact: a GaussianMixture with weights p(y = k | x^t).

        Component k is N(mu_k + sqrt(ab) Sigma_k C_k^{-1} (x^t - sqrt(ab) mu_k), Sigma_k - ab Sigma_k C_k^{-1} Sigma_k)
        with C_k = ab Sigma_k + (1 - ab) I. ``x_t``: shape (d,) or (1, d); ``alpha_bar``: a number in (0, 1).
        At alpha_bar = 1 the posterior is a point mass at x^t (no density), so this raises ValueError.
        """
        x = as_float64(_to_cpu(x_t), "x_t")
        if x.ndim == 1 and x.shape[0] == self.d:
            x = x[None]
        if x.ndim != 2 or x.shape != (1, self.d):
            raise ValueError(f"x_t: expected one point, shape ({self.d},) or (1, {self.d}), got {tuple(x.shape)} "
                             "(for many points use posterior_mean or posterior_cov)")
        ab = self._alpha_bar_number(alpha_bar)
        if ab == 1.0:
            raise ValueError("alpha_bar: expected a value < 1 for posterior(): at alpha_bar = 1 there is no noise, "
                             "x^0 = x^t, and the posterior is a point mass with no density "
                             "(posterior_mean(x_t, 1) returns x_t)")
        _, _, r, cond_mean, cond_var = self._posterior_terms(x, ab)
        covs = torch.einsum("kij,kj,klj->kil", self._U, cond_var[0], self._U)
        # renormalise: softmax output sums to 1 only up to rounding
        return GaussianMixture(r[0] / r[0].sum(), cond_mean[0], _sym(covs))

    def mmse(self, alpha_bar, n: int = 100_000, generator: torch.Generator | None = None) -> tuple[float, float]:
        """Bayes-optimal denoising error E|x^0 - E[x^0 | x^t]|^2 (summed over the d coordinates), Monte Carlo.

        A Monte Carlo estimate, not exact: it averages the exact tr Cov[x^0 | x^t] over n draws of x^t
        (same expectation as the squared error, lower variance). Returns (estimate, standard error).
        A learned denoiser's mean squared error (summed over coordinates) cannot go below it.
        """
        ab = self._alpha_bar_number(alpha_bar)
        n = _check_n(n)
        generator = _check_generator(generator)
        x0 = self.sample(n, generator=generator)
        eps = torch.randn(n, self.d, generator=generator, dtype=torch.float64)
        x_t = math.sqrt(ab) * x0 + math.sqrt(1.0 - ab) * eps
        tr = torch.diagonal(self.posterior_cov(x_t, ab), dim1=-2, dim2=-1).sum(-1)
        se = float(tr.std()) / math.sqrt(n) if n > 1 else float("nan")
        return float(tr.mean()), se

    def __repr__(self) -> str:
        def fmt(t: torch.Tensor) -> str:
            return str([round(v, 4) for v in t.tolist()]) if t.ndim == 1 else "[" + ", ".join(fmt(r) for r in t) + "]"

        if self.K <= 4 and self.d <= 2:
            return f"GaussianMixture(K={self.K}, d={self.d}, weights={fmt(self.weights)}, means={fmt(self.means)})"
        return f"GaussianMixture(K={self.K}, d={self.d})"


# ---------------------------------------------------------------------------------------------- named mixtures
def _rotated(sd_major: float, sd_minor: float, degrees: float) -> list[list[float]]:
    th = math.radians(degrees)
    c, s = math.cos(th), math.sin(th)
    a, b = sd_major**2, sd_minor**2
    return [[a * c * c + b * s * s, (a - b) * c * s], [(a - b) * c * s, a * s * s + b * c * c]]


def _bimodal_1d() -> GaussianMixture:
    return GaussianMixture([0.3, 0.7], [[-1.5], [0.6]], [0.3**2, 0.3**2])


def _trimodal_1d() -> GaussianMixture:
    return GaussianMixture([0.25, 0.45, 0.3], [[-1.35], [0.0], [1.2]], [0.15**2, 0.35**2, 0.25**2])


def _two_blobs_2d() -> GaussianMixture:
    return GaussianMixture([0.5, 0.5], [[-0.9, -0.9], [0.9, 0.9]], 0.35**2)


def _eight_gaussians_2d() -> GaussianMixture:
    # radius sqrt(2): a point uniform on a circle of radius r has variance r^2 / 2 per coordinate
    r = math.sqrt(2.0)
    means = [[r * math.cos(2 * math.pi * k / 8), r * math.sin(2 * math.pi * k / 8)] for k in range(8)]
    return GaussianMixture([1 / 8] * 8, means, 0.1**2)


def _anisotropic_2d() -> GaussianMixture:
    # major axes roughly perpendicular to the lines joining the means, so the components stay apart
    covs = [_rotated(0.6, 0.12, 120.0), _rotated(0.6, 0.12, 60.0), _rotated(0.7, 0.12, 0.0)]
    return GaussianMixture([0.3, 0.3, 0.4], [[-1.1, -0.75], [1.1, -0.75], [0.0, 1.1]], covs)


def _grid_2d() -> GaussianMixture:
    # a 3 x 3 grid {-c, 0, c}^2 has variance 2 c^2 / 3 per coordinate
    c = 1.2
    means = [[i * c, j * c] for i in (-1, 0, 1) for j in (-1, 0, 1)]
    return GaussianMixture([1 / 9] * 9, means, 0.15**2)


def _three_classes_2d() -> GaussianMixture:
    # notebook 08's labelled toy (label = component): three elongated classes that overlap near the origin,
    # so p(y | x) is unsure there (the exact classifier is right 92% of the time; mean p(y | x) under p(x | y)
    # is 0.91 / 0.87 / 0.82): room for guidance to sharpen; unequal weights, so p(y) matters too
    r, weights = 1.0, [0.5, 0.3, 0.2]
    means = [[r * math.cos(math.radians(a)), r * math.sin(math.radians(a))] for a in (90.0, 210.0, 330.0)]
    centre = [sum(w * m[i] for w, m in zip(weights, means, strict=True)) for i in (0, 1)]
    means = [[m[0] - centre[0], m[1] - centre[1]] for m in means]
    covs = [_rotated(0.77, 0.385, a) for a in (0.0, 120.0, 60.0)]
    return GaussianMixture(weights, means, covs)


_MIXTURES = {
    "bimodal_1d": (_bimodal_1d, "two well-separated 1-D components, weights 0.3 / 0.7"),
    "trimodal_1d": (_trimodal_1d, "three 1-D components of different widths"),
    "two_blobs_2d": (_two_blobs_2d, "two isotropic 2-D blobs on the diagonal, equal weights"),
    "eight_gaussians_2d": (_eight_gaussians_2d, "8 small isotropic components on a circle of radius sqrt(2)"),
    "anisotropic_2d": (_anisotropic_2d, "3 elongated, correlated 2-D components"),
    "grid_2d": (_grid_2d, "a 3 x 3 grid of small isotropic 2-D components"),
    "three_classes_2d": (_three_classes_2d, "3 overlapping elongated classes, weights 0.5 / 0.3 / 0.2 (notebook 08)"),
}

MIXTURE_NAMES: tuple[str, ...] = tuple(_MIXTURES)


def named_mixture(name: str) -> GaussianMixture:
    """A ready-made GaussianMixture scaled to roughly zero mean and unit variance per coordinate.

    ``name``: one of ``MIXTURE_NAMES``: "bimodal_1d", "trimodal_1d" (d = 1), "two_blobs_2d",
    "eight_gaussians_2d", "anisotropic_2d", "grid_2d", "three_classes_2d" (d = 2). Returns a new object each call.
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a string, one of {', '.join(MIXTURE_NAMES)}; got {describe(name)}")
    if name not in _MIXTURES:
        raise ValueError(f"name: unknown mixture {name!r}; expected one of {', '.join(MIXTURE_NAMES)}")
    return _MIXTURES[name][0]()


# ---------------------------------------------------------------------------------------------- toy data sets
def _toy_args(n, noise, generator) -> tuple[int, float, torch.Generator | None]:
    return _check_n(n), check_positive(noise, "noise", allow_zero=True), _check_generator(generator)


def _add_noise(x: torch.Tensor, noise: float, generator) -> torch.Tensor:
    if noise == 0.0:
        return x
    return x + noise * torch.randn(x.shape, generator=generator, dtype=torch.float64)


# Moons: the outer arc (cos(pi s), sin(pi s)) and the inner arc (1 - cos(pi s), 1/2 - sin(pi s)), s ~ U(0, 1),
# each with probability 1/2. Exact moments: mean (1/2, 1/4), variances 3/4 and 9/16 - 1/pi.
_MOONS_CENTRE = (0.5, 0.25)
_MOONS_SCALE = 1.0 / math.sqrt(0.5 * (0.75 + 9.0 / 16.0 - 1.0 / math.pi))


def two_moons(n: int, noise: float = 0.05, generator: torch.Generator | None = None, return_position: bool = False):
    """Two interleaved half circles, centred and scaled to average variance 1 per coordinate. Returns x (n, 2).

    One scale for both coordinates keeps the shape (x varies more than y). ``noise``: standard deviation
    of the Gaussian noise added to each coordinate, in output units. ``return_position``: also return
    the position (n,) in [0, 1] along the curve: [0, 1/2) traces the upper moon, [1/2, 1] the lower one.
    Draws are i.i.d. (each point picks a moon at random), so any prefix is a valid sample.
    """
    n, noise, generator = _toy_args(n, noise, generator)
    pos = torch.rand(n, generator=generator, dtype=torch.float64)
    lower = pos >= 0.5
    s = torch.where(lower, 2.0 * pos - 1.0, 2.0 * pos)
    c, sn = torch.cos(math.pi * s), torch.sin(math.pi * s)
    x = torch.stack([torch.where(lower, 1.0 - c, c), torch.where(lower, 0.5 - sn, sn)], dim=-1)
    x = (x - torch.tensor(_MOONS_CENTRE, dtype=torch.float64)) * _MOONS_SCALE
    x = _add_noise(x, noise, generator)
    return (x, pos) if return_position else x


@lru_cache(maxsize=1)
def _swiss_roll_moments() -> tuple[tuple[float, float], float]:
    # midpoint rule on a fine grid: the moments of the noiseless spiral, accurate to ~1e-10
    m = 200_000
    u = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    pts = _swiss_roll_curve(u)
    centre = pts.mean(0)
    scale = 1.0 / math.sqrt(float(((pts - centre) ** 2).sum(-1).mean()) / 2.0)
    return (float(centre[0]), float(centre[1])), scale


def _swiss_roll_curve(u: torch.Tensor) -> torch.Tensor:
    t = 1.5 * math.pi * (1.0 + 2.0 * u)
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=-1)


def swiss_roll(n: int, noise: float = 0.05, generator: torch.Generator | None = None, return_position: bool = False):
    """A 2-D swiss roll: the spiral t (cos t, sin t), t = 1.5 pi (1 + 2 u), u ~ U(0, 1). Returns x (n, 2).

    Centred and scaled (one scale for both coordinates) to average variance 1 per coordinate.
    ``noise``: Gaussian noise standard deviation per coordinate, in output units.
    ``return_position``: also return u (n,) in [0, 1], from the inner end (0) to the outer end (1).
    """
    n, noise, generator = _toy_args(n, noise, generator)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    centre, scale = _swiss_roll_moments()
    x = (_swiss_roll_curve(u) - torch.tensor(centre, dtype=torch.float64)) * scale
    x = _add_noise(x, noise, generator)
    return (x, u) if return_position else x


def rings(
    n: int,
    n_rings: int = 2,
    noise: float = 0.05,
    generator: torch.Generator | None = None,
    return_position: bool = False,
    return_labels: bool = False,
):
    """Concentric circles with radii proportional to 1, 2, ..., n_rings, centred at 0. Returns x (n, 2).

    Each point picks a ring uniformly at random and an angle uniformly on it; radii are scaled so the
    noiseless data has variance 1 per coordinate. ``noise``: Gaussian noise standard deviation per
    coordinate, in output units. ``return_position``: also return angle / (2 pi) (n,) in [0, 1).
    ``return_labels``: also return the ring index (n,) long, 0 = innermost. Order: x, position, labels.
    """
    n, noise, generator = _toy_args(n, noise, generator)
    if isinstance(n_rings, bool) or not isinstance(n_rings, numbers.Integral) or int(n_rings) < 1:
        raise ValueError(f"n_rings: expected a positive integer, got {describe(n_rings)}")
    n_rings = int(n_rings)
    labels = torch.randint(n_rings, (n,), generator=generator)
    pos = torch.rand(n, generator=generator, dtype=torch.float64)
    # per-coordinate variance of the noiseless data is E[r^2] / 2; make it 1
    unit = math.sqrt(2.0 / (sum((j + 1) ** 2 for j in range(n_rings)) / n_rings))
    radius = unit * (labels.to(torch.float64) + 1.0)
    angle = 2.0 * math.pi * pos
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    x = _add_noise(x, noise, generator)
    out = (x,) + ((pos,) if return_position else ()) + ((labels,) if return_labels else ())
    return out if len(out) > 1 else x
