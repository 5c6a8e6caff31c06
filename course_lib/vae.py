"""VAEs: the exact linear-Gaussian model, then neural ones.

The linear-Gaussian model z ~ N(0, I_k), x | z ~ N(W z + b, sigma^2 I_d) is the one latent-variable model
where every term of the lecture's decomposition has a closed form:
log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)) and ELBO(q) = E_q[log p(x|z)] - KL(q(z|x) || p(z)).
Everything in this part is float64 and differentiable in its inputs (so a notebook can optimise q).
"""

from __future__ import annotations

import math
import numbers

import torch

from ._checks import as_float64, as_tensor, check_positive, check_spd, describe

__all__ = ["LinearGaussianModel", "gaussian_kl", "gaussian_kl_diag"]

_LOG_2PI = math.log(2 * math.pi)


def _check_count(n, name: str, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {describe(n)}")
    if int(n) < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {int(n)}")
    return int(n)


def _spd(cov, name: str) -> torch.Tensor:
    """check_spd on a detached view (its checks call float() on it), returning the float64 input with its graph."""
    checked = check_spd(cov.detach() if isinstance(cov, torch.Tensor) else cov, name)
    return cov.to(torch.float64) if isinstance(cov, torch.Tensor) else checked


def _logdet_from_cholesky(L: torch.Tensor) -> torch.Tensor:
    return 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)


# ====================================================================== Gaussian KL divergences
def gaussian_kl(mean_q, cov_q, mean_p, cov_p) -> torch.Tensor:
    """KL(N(mean_q, cov_q) || N(mean_p, cov_p)) = 1/2 [tr(P^-1 Q) + (m_p - m_q)' P^-1 (m_p - m_q) - k + log|P|/|Q|].

    Means of shape (..., k), covariances (..., k, k) symmetric positive definite; batch dimensions
    broadcast. Returns float64 of the broadcast batch shape (0-d for single distributions).
    """
    mq = as_float64(mean_q, "mean_q")
    mp = as_float64(mean_p, "mean_p")
    Sq = _spd(cov_q, "cov_q")
    Sp = _spd(cov_p, "cov_p")
    for m, name in ((mq, "mean_q"), (mp, "mean_p")):
        if m.ndim < 1:
            raise ValueError(f"{name}: expected a mean vector of shape (..., k), got a 0-d tensor")
    k = mq.shape[-1]
    for arr, name, got in ((mp, "mean_p", mp.shape[-1]), (Sq, "cov_q", Sq.shape[-1]), (Sp, "cov_p", Sp.shape[-1])):
        if got != k:
            raise ValueError(f"{name}: expected dimension k = {k} (from mean_q), got shape {tuple(arr.shape)}")
    try:
        batch = torch.broadcast_shapes(mq.shape[:-1], mp.shape[:-1], Sq.shape[:-2], Sp.shape[:-2])
    except RuntimeError:
        shapes = f"mean_q {tuple(mq.shape)}, cov_q {tuple(Sq.shape)}, mean_p {tuple(mp.shape)}, cov_p {tuple(Sp.shape)}"
        raise ValueError(f"mean_q, cov_q, mean_p, cov_p: batch dimensions do not broadcast: {shapes}") from None
    Lq = torch.linalg.cholesky(Sq).expand(batch + (k, k))
    Lp = torch.linalg.cholesky(Sp).expand(batch + (k, k))
    diff = (mp - mq).expand(batch + (k,)).unsqueeze(-1)
    # Cholesky solves rather than inverses: tr(P^-1 Q) = ||Lp^-1 Lq||_F^2 stays accurate when P is ill-conditioned
    A = torch.linalg.solve_triangular(Lp, Lq, upper=False)
    u = torch.linalg.solve_triangular(Lp, diff, upper=False)
    trace = (A**2).sum((-2, -1))
    maha = (u**2).sum((-2, -1))
    return 0.5 * (trace + maha - k + _logdet_from_cholesky(Lp) - _logdet_from_cholesky(Lq))


def gaussian_kl_diag(mu, log_sigma) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - 2 log sigma_j), over the last dim.

    mu, log_sigma: tensors of the same shape (..., k), any float dtype and device (the encoder's outputs);
    returns shape (...) in that dtype, differentiable. No NaN check here: it would synchronise a GPU every
    training step, and a NaN loss is visible anyway.
    """
    m = as_tensor(mu, "mu", dtype=None, finite=False)
    ls = as_tensor(log_sigma, "log_sigma", dtype=None, finite=False)
    for arr, name in ((m, "mu"), (ls, "log_sigma")):
        if not arr.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {describe(arr)}")
        if arr.ndim < 1:
            raise ValueError(f"{name}: expected shape (..., k), got a 0-d tensor")
    if m.shape != ls.shape:
        raise ValueError(f"log_sigma: expected the shape of mu, {tuple(m.shape)}, got {tuple(ls.shape)}")
    return 0.5 * (m**2 + torch.exp(2 * ls) - 1 - 2 * ls).sum(-1)


# ====================================================================== the exact linear-Gaussian model
class LinearGaussianModel:
    """z ~ N(0, I_k), x | z ~ N(W z + b, sigma^2 I_d); so x ~ N(b, W W' + sigma^2 I_d).

    W: shape (d, k); b: shape (d,); sigma: a number > 0. Stored as float64 tensors (``W``, ``b``) and a
    float (``sigma``). All methods take x of shape (n, d) and return float64.
    """

    def __init__(self, W, b, sigma):
        self.W = as_float64(W, "W", ndim=2)
        d, k = self.W.shape
        if d == 0 or k == 0:
            raise ValueError(f"W: expected shape (d, k) with d, k >= 1, got {tuple(self.W.shape)}")
        self.b = as_float64(b, "b", shape=(d,))
        self.sigma = check_positive(sigma, "sigma")

    def __repr__(self) -> str:
        return f"LinearGaussianModel(d={self.d}, k={self.k}, sigma={self.sigma:g})"

    @property
    def d(self) -> int:
        """Dimension of x."""
        return int(self.W.shape[0])

    @property
    def k(self) -> int:
        """Dimension of the latent z."""
        return int(self.W.shape[1])

    # ------------------------------------------------------------------ input checks
    def _x(self, x) -> torch.Tensor:
        return as_float64(x, "x", shape=(None, self.d))

    def _q(self, x: torch.Tensor, q_mean, q_cov) -> tuple[torch.Tensor, torch.Tensor]:
        n, k = x.shape[0], self.k
        m = as_float64(q_mean, "q_mean", ndim=(1, 2))
        if m.shape[-1] != k or (m.ndim == 2 and m.shape[0] != n):
            raise ValueError(f"q_mean: expected shape ({n}, {k}) or ({k},), got {tuple(m.shape)}")
        S = _spd(q_cov, "q_cov")
        if S.shape[-1] != k or S.ndim not in (2, 3) or (S.ndim == 3 and S.shape[0] != n):
            raise ValueError(f"q_cov: expected shape ({k}, {k}) or ({n}, {k}, {k}), got {tuple(S.shape)}")
        return m.expand(n, k), S

    def _marginal_cov(self) -> torch.Tensor:
        return self.W @ self.W.T + self.sigma**2 * torch.eye(self.d, dtype=torch.float64)

    # ------------------------------------------------------------------ sampling and exact densities
    def sample(self, n: int, generator: torch.Generator | None = None, return_z: bool = False):
        """Draw z ~ N(0, I_k) and x = W z + b + sigma eps. Returns x (n, d), or (x, z) with z (n, k)."""
        n = _check_count(n, "n")
        z = torch.randn(n, self.k, generator=generator, dtype=torch.float64)
        eps = torch.randn(n, self.d, generator=generator, dtype=torch.float64)
        x = z @ self.W.T + self.b + self.sigma * eps
        return (x, z) if return_z else x

    def log_marginal(self, x) -> torch.Tensor:
        """log p(x) = log N(x; b, W W' + sigma^2 I), exact. x: (n, d) -> (n,)."""
        x = self._x(x)
        L = torch.linalg.cholesky(self._marginal_cov())
        u = torch.linalg.solve_triangular(L, (x - self.b).T, upper=False)
        return -0.5 * (self.d * _LOG_2PI + _logdet_from_cholesky(L) + (u**2).sum(0))

    def posterior(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z | x) = N(mean, cov): cov = (I + W'W / sigma^2)^-1, mean = cov W'(x - b) / sigma^2.

        x: (n, d) -> mean (n, k), cov (k, k) (the same for every x).
        """
        x = self._x(x)
        s2 = self.sigma**2
        precision = torch.eye(self.k, dtype=torch.float64) + self.W.T @ self.W / s2
        cov = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        cov = 0.5 * (cov + cov.T)  # exactly symmetric, so check_spd accepts it as a q_cov
        mean = (x - self.b) @ self.W @ cov / s2
        return mean, cov

    def log_prior(self, z) -> torch.Tensor:
        """log p(z) = log N(z; 0, I_k). z: (..., k) -> (...)."""
        z = as_float64(z, "z")
        if z.ndim < 1 or z.shape[-1] != self.k:
            raise ValueError(f"z: expected shape (..., {self.k}), got {tuple(z.shape)}")
        return -0.5 * (self.k * _LOG_2PI + (z**2).sum(-1))

    def decoder_log_prob(self, x, z) -> torch.Tensor:
        """log p(x | z) = log N(x; W z + b, sigma^2 I). x: (n, d); z: (n, k) -> (n,), or (n, m, k) -> (n, m)."""
        x = self._x(x)
        n = x.shape[0]
        z = as_float64(z, "z", ndim=(2, 3))
        if z.shape[0] != n or z.shape[-1] != self.k:
            want = f"({n}, {self.k}) or ({n}, m, {self.k})"
            raise ValueError(f"z: expected shape {want} (one or m latents per row of x), got {tuple(z.shape)}")
        if z.ndim == 3:
            x = x.unsqueeze(1)
        resid = x - (z @ self.W.T + self.b)
        return -0.5 * self.d * math.log(2 * math.pi * self.sigma**2) - (resid**2).sum(-1) / (2 * self.sigma**2)

    # ------------------------------------------------------------------ the ELBO
    def elbo_terms(self, x, q_mean, q_cov) -> dict[str, torch.Tensor]:
        """Every term of log p(x) = ELBO + KL(q || p(z|x)) and ELBO = reconstruction - KL(q || p(z)), exact.

        q(z|x) = N(q_mean, q_cov). x: (n, d); q_mean: (n, k) or (k,); q_cov: (k, k) or (n, k, k), SPD.
        Returns a dict of (n,) float64 tensors: ``log_px``, ``elbo``, ``reconstruction``
        (E_q log p(x|z) = -d/2 log(2 pi sigma^2) - (|x - W m - b|^2 + tr(W S W')) / (2 sigma^2)),
        ``kl_prior`` and ``kl_posterior``. Each is computed from its own closed form, so the two identities
        are checks, not definitions.
        """
        x = self._x(x)
        m, S = self._q(x, q_mean, q_cov)
        s2 = self.sigma**2
        resid = x - m @ self.W.T - self.b
        # tr(W S W') without forming the (d, d) matrix
        spread = ((self.W @ S) * self.W).sum((-2, -1)).expand(x.shape[0])
        reconstruction = -0.5 * self.d * math.log(2 * math.pi * s2) - ((resid**2).sum(-1) + spread) / (2 * s2)
        eye = torch.eye(self.k, dtype=torch.float64)
        kl_prior = gaussian_kl(m, S, torch.zeros(self.k, dtype=torch.float64), eye)
        post_mean, post_cov = self.posterior(x)
        kl_posterior = gaussian_kl(m, S, post_mean, post_cov)
        return {
            "log_px": self.log_marginal(x),
            "elbo": reconstruction - kl_prior,
            "reconstruction": reconstruction,
            "kl_prior": kl_prior,
            "kl_posterior": kl_posterior,
        }

    def elbo_monte_carlo(
        self, x, q_mean, q_cov, n_samples: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised ELBO estimate: mean over j of log p(x|z_j) + log p(z_j) - log q(z_j|x), z_j = m + L eps_j.

        L is the Cholesky factor of q_cov and eps_j ~ N(0, I_k) (the lecture's "differentiable estimate").
        x: (n, d); q_mean: (n, k) or (k,); q_cov: (k, k) or (n, k, k); n_samples >= 2.
        Returns (estimate (n,), standard error (n,)); the estimate is differentiable in q_mean and q_cov,
        the standard error is detached.
        """
        x = self._x(x)
        m, S = self._q(x, q_mean, q_cov)
        n_samples = _check_count(n_samples, "n_samples", minimum=2)
        n, k = m.shape
        L = torch.linalg.cholesky(S)
        eps = torch.randn(n, n_samples, k, generator=generator, dtype=torch.float64)
        z = m.unsqueeze(1) + eps @ L.transpose(-1, -2)
        # log q(z|x) at z = m + L eps, written in eps so it needs no solve
        log_q = -0.5 * (k * _LOG_2PI + (eps**2).sum(-1)) - 0.5 * _logdet_from_cholesky(L).unsqueeze(-1)
        values = self.decoder_log_prob(x, z) + self.log_prior(z) - log_q
        estimate = values.mean(1)
        stderr = values.detach().std(1) / math.sqrt(n_samples)
        return estimate, stderr
