"""The Frechet distance between two sets of feature vectors (the "FID" when the features come from a classifier).

Fit a Gaussian to each set, N(mu_1, S_1) and N(mu_2, S_2); their Frechet (2-Wasserstein) distance squared is

    d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}).

The trace of the matrix square root is computed from symmetric eigendecompositions in float64
(tr (S_1^{1/2} S_2 S_1^{1/2})^{1/2} = sum_i sqrt(lambda_i), lambda_i the eigenvalues of the symmetric PSD
matrix S_1^{1/2} S_2 S_1^{1/2}), which stays real and stable when a covariance is singular (more features
than samples, dead ReLU units), where ``scipy.linalg.sqrtm`` of the non-symmetric S_1 S_2 can return
complex noise. Like the FID, the value is d^2 (not d), and the plug-in estimate is biased upwards for
small sample sizes: compare sets of the same size, and quote the distance between two real sets as the floor.
"""

from __future__ import annotations

import torch

from ._checks import as_float64

__all__ = ["feature_statistics", "frechet_distance", "gaussian_frechet_distance"]


def feature_statistics(feats) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (d,), covariance (d, d)) of features (n, d), float64, with the unbiased 1/(n - 1) covariance."""
    f = as_float64(feats.detach().cpu() if isinstance(feats, torch.Tensor) else feats, "feats", ndim=2)
    if f.shape[0] < 2:
        raise ValueError(f"feats: expected at least 2 rows (feature vectors) for a covariance, got {f.shape[0]}")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def gaussian_frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """d^2 between N(mu1, cov1) and N(mu2, cov2): |mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1^1/2 cov2 cov1^1/2)^1/2).

    mu: (d,); cov: (d, d) symmetric positive semi-definite. Returns a float >= 0 (float64 arithmetic).
    """
    mu1, mu2 = as_float64(mu1, "mu1", ndim=1), as_float64(mu2, "mu2", ndim=1)
    d = mu1.shape[0]
    cov1 = as_float64(cov1, "cov1", shape=(d, d))
    cov2 = as_float64(cov2, "cov2", shape=(d, d))
    if mu2.shape != (d,):
        raise ValueError(f"mu2: expected shape ({d},) like mu1, got {tuple(mu2.shape)}")
    r1 = _psd_sqrt(cov1)
    m = r1 @ cov2 @ r1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt
    return max(float(value), 0.0)


def frechet_distance(feats_a, feats_b) -> float:
    """The Frechet distance d^2 between Gaussians fitted to two feature sets, (n, d) and (m, d). Symmetric, >= 0."""
    mu_a, cov_a = feature_statistics(feats_a)
    mu_b, cov_b = feature_statistics(feats_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feats_b: expected {mu_a.shape[0]} features per row like feats_a, got {mu_b.shape[0]}")
    return gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b)
