"""VAEs: the exact linear-Gaussian model, then neural ones.

The linear-Gaussian model z ~ N(0, I_k), x | z ~ N(W z + b, sigma^2 I_d) is the one latent-variable model
where every term of the lecture's decomposition has a closed form:
log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)) and ELBO(q) = E_q[log p(x|z)] - KL(q(z|x) || p(z)).
Everything in this part is float64 and differentiable in its inputs (so a notebook can optimise q).

Then: log-mean-exp, also over chunks that arrive one at a time (``RunningLogMeanExp``, ``log_mean_exp_chunks``), and
means with standard errors over examples (``mean_stderr``, ``elbo_summary``, ``bernoulli_baselines``); the neural
VAE (``VAE``) with the importance-weighted bounds L_K computed in chunks of the K draws (``VAE.log_weight_chunks``,
``VAE.iwae_bounds``, ``iwae_summary``, ``plot_iwae_bounds``), so memory does not grow with K; and the two gradient
estimators of notebook 02.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator

import torch

from ._checks import as_float64, as_tensor, check_count, check_positive, check_spd, describe

__all__ = ["LinearGaussianModel", "gaussian_kl", "gaussian_kl_diag"]

_LOG_2PI = math.log(2 * math.pi)



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
        n = check_count(n, "n")
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
        n_samples = check_count(n_samples, "n_samples", minimum=2)
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


# ================================================================ log-mean-exp in chunks; means with standard errors
__all__ += ["RunningLogMeanExp", "bernoulli_baselines", "elbo_summary", "log_mean_exp", "log_mean_exp_chunks",
            "mean_stderr"]

#: Numbers in one chunk of decoder outputs (chunk * n * x_dim) when no chunk size is given: 16 MiB in float32.
_CHUNK_NUMBERS = 1 << 22


def log_mean_exp(log_w, dim: int = -1) -> torch.Tensor:
    """log((1/K) sum_j exp(log_w_j)) over ``dim``, stably (logsumexp - log K). log_w: (n, K) -> (n,).

    With log_w the log importance weights log r_j of K draws from q(z|x), this is one estimate of L_K.
    """
    lw = as_tensor(log_w, "log_w", dtype=None, finite=False)
    if lw.ndim < 1 or lw.shape[dim] == 0:
        raise ValueError(f"log_w: expected at least one value along dim {dim}, got shape {tuple(lw.shape)}")
    return torch.logsumexp(lw, dim=dim) - math.log(lw.shape[dim])


class RunningLogMeanExp:
    """log((1/K) sum_j exp(a_j)) over values a_j that arrive in chunks, without keeping them (a streaming reduction).

    State per row: ``total`` = log sum_j exp(a_j) over the columns seen so far, shape (n,), and ``count`` = K.
    ``add(chunk)``, chunk (n, c): total <- logaddexp(total, logsumexp(chunk, -1)), count += c (log-sum-exp is
    associative, so the chunks may have any sizes). ``value()`` = total - log count, shape (n,): exactly the
    log-mean-exp of all columns side by side, up to float round-off.
    """

    def __init__(self):
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, chunk) -> RunningLogMeanExp:
        c = as_tensor(chunk, "chunk", dtype=None, finite=False)
        if c.ndim != 2 or c.shape[1] == 0:
            raise ValueError(f"chunk: expected log-weights of shape (n, c) with c >= 1, got {tuple(c.shape)}")
        if self.total is not None and c.shape[0] != self.total.shape[0]:
            raise ValueError(f"chunk: expected {self.total.shape[0]} rows (as the chunks before), got {c.shape[0]}")
        lse = torch.logsumexp(c, dim=-1)
        self.total = lse if self.total is None else torch.logaddexp(self.total, lse)
        self.count += c.shape[1]
        return self

    def value(self) -> torch.Tensor:
        if self.total is None:
            raise ValueError("RunningLogMeanExp: no chunk added yet")
        return self.total - math.log(self.count)


def log_mean_exp_chunks(chunks: Iterable) -> torch.Tensor:
    """log((1/K) sum_j exp(a_j)) over all columns of the chunks (n, c_1), (n, c_2), ..., K = sum_i c_i: shape (n,).

    Goes through ``chunks`` (any iterable, e.g. ``VAE.log_weight_chunks``) once, keeping one chunk at a time
    (``RunningLogMeanExp``); equals ``log_mean_exp(torch.cat(chunks, dim=1))``.
    """
    running = RunningLogMeanExp()
    for chunk in chunks:
        running.add(chunk)
    return running.value()


def mean_stderr(values) -> tuple[float, float]:
    """(mean, standard error) of n numbers: the sample mean and sd / sqrt(n), sd with n - 1. values: (n,), n >= 2.

    For per-image estimates (an ELBO, a bound L_K, a difference of two of them on the same images) the standard
    error covers both the spread between images and the Monte Carlo noise of each estimate.
    """
    v = as_tensor(values, "values", dtype=None).detach().to(torch.float64).reshape(-1)
    if v.numel() < 2:
        raise ValueError(f"values: expected at least 2 numbers for a standard error, got {v.numel()}")
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def elbo_summary(model, x, *, n_samples: int = 1, batch_size: int = 2000,
                 generator: torch.Generator | None = None) -> dict[str, tuple[float, float]]:
    """The ELBO's terms on x as (mean, standard error) over the examples, in nats per example.

    x: (n, *x_shape), n >= 2. Evaluates ``model.elbo_terms`` (``n_samples`` draws of z per example) in batches of
    ``batch_size``, in eval mode, without gradients. Returns {"elbo", "reconstruction", "kl_prior": (mean, se)}
    (the means are those of ``vae_models.evaluate_vae`` with the same generator and batch size).
    """
    if not isinstance(model, VAE):
        raise TypeError(f"model: expected a VAE, got {describe(model)}")
    batch_size = check_count(batch_size, "batch_size")
    was_training = model.training
    model.eval()
    parts: dict[str, list] = {"elbo": [], "reconstruction": [], "kl_prior": []}
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                terms = model.elbo_terms(x[i:i + batch_size], n_samples=n_samples, generator=generator)
                for key, values in parts.items():
                    values.append(terms[key].to(torch.float64).cpu())
    finally:
        model.train(was_training)
    return {key: mean_stderr(torch.cat(values)) for key, values in parts.items()}


def bernoulli_baselines(x_train, x_test) -> dict[str, tuple[float, float]]:
    """-log p(x) of two models that ignore z, in nats per test image, as (mean, standard error) over the images.

    ``"pixel_means"``: independent pixels, Bernoulli(p_i) with p_i the average of pixel i over x_train (grey levels
    in [0, 1], or bits), smoothed as (sum + 1) / (n + 2) so no p_i is 0 or 1; ``"coin_flip"``: p_i = 1/2,
    -log p(x) = d log 2 for every image. x_train: (n, ...) in [0, 1]; x_test: (m, ...) binary, same pixels.
    """
    tr = as_tensor(x_train, "x_train", dtype=None).detach().to(torch.float64).cpu()
    te = as_tensor(x_test, "x_test", dtype=None).detach().to(torch.float64).cpu()
    tr, te = tr.reshape(tr.shape[0], -1), te.reshape(te.shape[0], -1)
    if tr.shape[1] != te.shape[1]:
        raise ValueError(f"x_test: expected {tr.shape[1]} pixels per image (as x_train), got {te.shape[1]}")
    if bool(((te != 0) & (te != 1)).any()):
        raise ValueError("x_test: expected binarised images (0 or 1), got other values")
    p = (tr.sum(0) + 1) / (tr.shape[0] + 2)
    nll = -(te * torch.log(p) + (1 - te) * torch.log1p(-p)).sum(-1)
    d = te.shape[1]
    return {"pixel_means": mean_stderr(nll), "coin_flip": (d * math.log(2.0), 0.0)}


# ====================================================================== neural VAEs
# Everything below is float32-friendly: modules keep the dtype and device of their parameters, inputs
# are converted to them. Points are rows: x has shape (n, *x_shape), z has shape (n, k).
from .nets import MLP  # noqa: E402

__all__ += [
    "VAE",
    "BernoulliDecoder",
    "GaussianDecoder",
    "GaussianEncoder",
    "log_normal_diag",
    "reparameterize",
]

_F = torch.nn.functional


def _check_latent(mu, log_sigma) -> None:
    for arr, name in ((mu, "mu"), (log_sigma, "log_sigma")):
        if not isinstance(arr, torch.Tensor) or not arr.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {describe(arr)}")
        if arr.ndim < 1:
            raise ValueError(f"{name}: expected shape (..., k), got a 0-d tensor")
    if mu.shape != log_sigma.shape:
        raise ValueError(f"log_sigma: expected the shape of mu, {tuple(mu.shape)}, got {tuple(log_sigma.shape)}")


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # A CPU generator drives a GPU model too: draw where the generator lives, then move.
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)


def reparameterize(mu, log_sigma, n_samples: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I): a draw from N(mu, diag sigma^2) that is differentiable in mu, log_sigma.

    mu, log_sigma: (n, k) (any leading shape). ``n_samples=None`` returns one draw per row, shape (n, k);
    ``n_samples=m`` returns m draws per row, shape (n, m, k). This is the lecture's
    z_j = mu_phi(x) + Sigma_phi(x)^{1/2} eps_j with a diagonal Sigma.
    """
    _check_latent(mu, log_sigma)
    if n_samples is None:
        return mu + torch.exp(log_sigma) * _randn(mu.shape, mu, generator)
    m = check_count(n_samples, "n_samples")
    mu, log_sigma = mu.unsqueeze(-2), log_sigma.unsqueeze(-2)
    eps = _randn(mu.shape[:-2] + (m, mu.shape[-1]), mu, generator)
    return mu + torch.exp(log_sigma) * eps


def log_normal_diag(z, mu, log_sigma) -> torch.Tensor:
    """log N(z; mu, diag sigma^2) = -sum_j [log(2 pi)/2 + log sigma_j + (z_j - mu_j)^2 / (2 sigma_j^2)] (last dim).

    Shapes broadcast: e.g. z (n, m, k) with mu, log_sigma (n, 1, k) -> (n, m). mu = 0, log_sigma = 0 gives log p(z).
    """
    return -(0.5 * _LOG_2PI + log_sigma + 0.5 * ((z - mu) * torch.exp(-log_sigma)) ** 2).sum(-1)


class GaussianEncoder(torch.nn.Module):
    """q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2): one MLP outputs (mu, log sigma), the amortised posterior.

    x: (n, x_dim) -> (mu, log_sigma), each (n, z_dim). ``hidden=()`` makes both linear in x.
    """

    def __init__(self, x_dim: int, z_dim: int, hidden=(256, 256), activation: str = "relu"):
        super().__init__()
        self.net = MLP(x_dim, 2 * z_dim, hidden, activation)
        self.x_dim, self.z_dim = int(x_dim), int(z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = self.net(x).chunk(2, dim=-1)
        return mu, log_sigma


class _Decoder(torch.nn.Module):
    """p_theta(x | z): an MLP from z (..., z_dim) to the parameters (..., x_dim) of a factorised distribution."""

    def __init__(self, z_dim: int, x_dim: int, hidden, activation: str):
        super().__init__()
        self.net = MLP(z_dim, x_dim, hidden, activation)
        self.z_dim, self.x_dim = int(z_dim), int(x_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The distribution's parameters (Gaussian: the mean; Bernoulli: the logits), shape (..., x_dim)."""
        return self.net(z)

    @staticmethod
    def _align(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # x (n, d) against z (n, k) or (n, m, k): insert the sample axis into x
        return x.unsqueeze(-2) if z.ndim == x.ndim + 1 else x

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z), summed over the x_dim coordinates: x (n, x_dim), z (n, k) -> (n,); z (n, m, k) -> (n, m)."""
        raise NotImplementedError

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z], shape (..., x_dim)."""
        raise NotImplementedError

    def sample(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw x ~ p(x | z), shape (..., x_dim)."""
        raise NotImplementedError


class GaussianDecoder(_Decoder):
    """p_theta(x | z) = N(x; f_theta(z), diag sigma^2), for real-valued x (the toy data).

    ``sigma=None`` learns one standard deviation per coordinate (a parameter ``log_sigma``, started at
    ``init_sigma``); a number fixes it (a buffer, so it is saved but not trained). With a fixed sigma,
    the reconstruction term is -|x - f(z)|^2 / (2 sigma^2) + const: a weight 1/sigma^2 against the KL.
    """

    def __init__(self, z_dim: int, x_dim: int, hidden=(256, 256), activation: str = "relu",
                 sigma: float | None = None, init_sigma: float = 0.5):
        super().__init__(z_dim, x_dim, hidden, activation)
        if sigma is None:
            log_sigma = math.log(check_positive(init_sigma, "init_sigma"))
            self.log_sigma = torch.nn.Parameter(torch.full((self.x_dim,), log_sigma))
        else:
            self.register_buffer("log_sigma", torch.full((self.x_dim,), math.log(check_positive(sigma, "sigma"))))
        self.learn_sigma = sigma is None

    def log_prob(self, x, z):
        return log_normal_diag(self._align(x, z), self.net(z), self.log_sigma)

    def mean(self, z):
        return self.net(z)

    def sample(self, z, generator=None):
        mean = self.net(z)
        return mean + torch.exp(self.log_sigma) * _randn(mean.shape, mean, generator)


class BernoulliDecoder(_Decoder):
    """p_theta(x | z) = prod_i Bernoulli(x_i; sigmoid(l_i)), l = f_theta(z) the logits, for binary pixels.

    log p(x | z) = sum_i [x_i l_i - softplus(l_i)] (= minus binary cross-entropy with logits), computed
    from the logits so it never takes log(0) however confident the decoder is.
    """

    def __init__(self, z_dim: int, x_dim: int, hidden=(256, 256), activation: str = "relu"):
        super().__init__(z_dim, x_dim, hidden, activation)

    def log_prob(self, x, z):
        logits = self.net(z)
        x = self._align(x, z)
        # sum_i x_i l_i - softplus(l_i): the same numbers as -binary_cross_entropy_with_logits, 2-3x faster on a CPU
        # and without expanding x to one copy per draw
        return (x * logits).sum(-1) - _F.softplus(logits).sum(-1)

    def mean(self, z):
        return torch.sigmoid(self.net(z))

    def sample(self, z, generator=None):
        p = torch.sigmoid(self.net(z))
        if generator is None:
            return torch.bernoulli(p)
        return torch.bernoulli(p.to(generator.device), generator=generator).to(p.device)


class VAE(torch.nn.Module):
    """A VAE: prior p(z) = N(0, I_k), encoder q_phi(z | x), decoder p_theta(x | z).

    ``encoder``: a ``GaussianEncoder``; ``decoder``: a ``GaussianDecoder`` or ``BernoulliDecoder``;
    ``x_shape``: the shape of one data point, e.g. (2,) or (1, 28, 28) (default (x_dim,)). Methods take
    x of shape (n, *x_shape) or flattened (n, x_dim), convert it to the parameters' dtype and device,
    and return per-example values in nats (natural-log units).
    """

    def __init__(self, encoder: GaussianEncoder, decoder: _Decoder, x_shape: tuple[int, ...] | None = None):
        super().__init__()
        if not isinstance(encoder, GaussianEncoder):
            raise TypeError(f"encoder: expected a GaussianEncoder, got {describe(encoder)}")
        if not isinstance(decoder, _Decoder):
            raise TypeError(f"decoder: expected a GaussianDecoder or BernoulliDecoder, got {describe(decoder)}")
        if decoder.z_dim != encoder.z_dim or decoder.x_dim != encoder.x_dim:
            raise ValueError(f"decoder: expected z_dim {encoder.z_dim} and x_dim {encoder.x_dim} (the encoder's), "
                             f"got z_dim {decoder.z_dim} and x_dim {decoder.x_dim}")
        x_shape = (encoder.x_dim,) if x_shape is None else tuple(int(s) for s in x_shape)
        if math.prod(x_shape) != encoder.x_dim:
            raise ValueError(f"x_shape: expected a shape with {encoder.x_dim} entries (the encoder's x_dim), "
                             f"got {x_shape}")
        self.encoder, self.decoder, self.x_shape = encoder, decoder, x_shape

    @property
    def latent_dim(self) -> int:
        """k, the dimension of z."""
        return self.encoder.z_dim

    @property
    def x_dim(self) -> int:
        return self.encoder.x_dim

    def _param(self) -> torch.Tensor:
        return next(self.parameters())

    def _flat(self, x, name: str = "x") -> torch.Tensor:
        """Check x and return it as (n, x_dim) in the parameters' dtype and device."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor of shape (n, {', '.join(map(str, self.x_shape))}), "
                            f"got {describe(x)}")
        if x.ndim < 1 or (tuple(x.shape[1:]) != self.x_shape and tuple(x.shape[1:]) != (self.x_dim,)):
            want = f"(n, {', '.join(map(str, self.x_shape))})" + (f" or (n, {self.x_dim})" if len(self.x_shape) > 1
                                                                      else "")
            raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name}: expected at least one example, got shape {tuple(x.shape)}")
        if not (x.is_floating_point() or x.dtype in (torch.bool, torch.uint8, torch.int64, torch.int32)):
            raise TypeError(f"{name}: expected real numbers, got {describe(x)}")
        p = self._param()
        x = x.reshape(x.shape[0], self.x_dim).to(device=p.device, dtype=p.dtype)
        if isinstance(self.decoder, BernoulliDecoder) and bool(((x < 0) | (x > 1)).any()):
            lo, hi = float(x.min()), float(x.max())
            raise ValueError(f"{name}: the Bernoulli decoder needs pixels in [0, 1] (binarised), got values in "
                             f"[{lo:g}, {hi:g}]; divide uint8 images by 255")
        return x

    def _unflat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[:-1] + self.x_shape)

    # ------------------------------------------------------------------ the encoder and decoder
    def encode(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x) = N(mu, diag sigma^2). x: (n, *x_shape) -> mu, log_sigma: (n, k)."""
        return self.encoder(self._flat(x))

    def decode(self, z, mean: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """E[x | z] (``mean=True``) or a draw from p(x | z). z: (n, k) -> (n, *x_shape)."""
        z = self._z(z)
        out = self.decoder.mean(z) if mean else self.decoder.sample(z, generator)
        return self._unflat(out)

    def _z(self, z) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z: expected a tensor of shape (n, {self.latent_dim}), got {describe(z)}")
        p = self._param()
        return z.to(device=p.device, dtype=p.dtype)

    # ------------------------------------------------------------------ the ELBO
    def elbo_terms(self, x, n_samples: int = 1, beta: float = 1.0,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)), per example, in nats; differentiable (reparameterised).

        x: (n, *x_shape). Returns a dict of (n,) tensors:
        ``reconstruction`` = (1/m) sum_j log p(x | z_j), z_j = mu + sigma eps_j (a Monte Carlo estimate, m = n_samples),
        ``kl_prior`` = KL(N(mu, diag sigma^2) || N(0, I)) (exact: ``gaussian_kl_diag``),
        ``elbo`` = reconstruction - kl_prior, and
        ``loss`` = -(reconstruction - beta * kl_prior), the beta-VAE objective to minimise (beta = 1: -ELBO).
        With n_samples >= 2 also ``reconstruction_stderr``: the Monte Carlo standard error of ``reconstruction``
        (sd over the m draws / sqrt(m), detached) — the only random part of the ELBO estimate.
        Train on ``terms["loss"].mean()``: the mean over the batch of per-example losses.
        """
        x = self._flat(x)
        n_samples = check_count(n_samples, "n_samples")
        beta = check_positive(beta, "beta", allow_zero=True)
        mu, log_sigma = self.encoder(x)
        z = reparameterize(mu, log_sigma, n_samples, generator)  # (n, m, k)
        log_px_z = self.decoder.log_prob(x, z)                   # (n, m)
        reconstruction = log_px_z.mean(-1)
        kl_prior = gaussian_kl_diag(mu, log_sigma)
        out = {
            "reconstruction": reconstruction,
            "kl_prior": kl_prior,
            "elbo": reconstruction - kl_prior,
            "loss": beta * kl_prior - reconstruction,
        }
        if n_samples >= 2:
            out["reconstruction_stderr"] = log_px_z.detach().std(-1) / math.sqrt(n_samples)
        return out

    def log_weights(self, x, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """log r_j = log p(x | z_j) + log p(z_j) - log q(z_j | x), z_j ~ q(z | x), j = 1..k: shape (n, k).

        E_q[r] = p(x), so mean_j log r_j estimates the ELBO and log mean_j r_j the importance-weighted bound.
        The noise is drawn one sample index j at a time (eps_j of shape (n, latent)), so these are the very
        draws ``log_weight_chunks`` and ``iwae_bounds`` make with the same generator, whatever their chunk size.
        Memory: n * k decoder outputs at once; for large k use ``log_weight_chunks``.
        """
        x = self._flat(x)
        k = check_count(k, "k")
        return torch.cat(list(self._log_weight_chunks(x, k, k, generator)), dim=1)

    def _log_weight_chunks(self, x: torch.Tensor, k: int, chunk: int, generator, stops=()):
        """Yield (n, c) log-weights, c <= chunk, splitting also at the sample counts in ``stops``. x: (n, x_dim)."""
        mu, log_sigma = self.encoder(x)
        mu, sigma, log_sigma = mu.unsqueeze(1), torch.exp(log_sigma).unsqueeze(1), log_sigma.unsqueeze(1)
        n, latent = x.shape[0], self.latent_dim
        zeros = torch.zeros((), dtype=mu.dtype, device=mu.device)
        cuts = sorted({min(j, k) for j in range(chunk, k, chunk)} | {s for s in stops if 0 < s < k} | {k})
        start = 0
        for stop in cuts:
            # one draw of (n, latent) per sample index: the same numbers however the k draws are chunked
            eps = torch.stack([_randn((n, latent), mu, generator) for _ in range(stop - start)], dim=1)
            z = mu + sigma * eps  # (n, c, latent)
            yield (self.decoder.log_prob(x, z) + log_normal_diag(z, zeros, zeros)
                   - log_normal_diag(z, mu, log_sigma))
            start = stop

    def _chunk_size(self, n: int, chunk: int | None) -> int:
        if chunk is None:
            return max(1, _CHUNK_NUMBERS // (n * self.x_dim))
        return check_count(chunk, "chunk")

    def log_weight_chunks(self, x, k: int, chunk: int | None = None,
                          generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """The log-weights of ``log_weights(x, k, generator)``, made and handed out ``chunk`` draws at a time.

        x: (n, *x_shape). Yields tensors of shape (n, c_i), c_i = ``chunk`` (the last one may be shorter),
        sum_i c_i = k; concatenated along dim 1 they equal ``log_weights(x, k, generator)`` (same draws, same
        order). Only one chunk exists at a time: memory is about n * chunk * (x_dim + hidden) numbers, whatever
        k. Default ``chunk``: about 2^22 / (n * x_dim) draws.
        """
        x = self._flat(x)
        k = check_count(k, "k")
        return self._log_weight_chunks(x, k, self._chunk_size(x.shape[0], chunk), generator)

    def iwae_bounds(self, x, ks, chunk: int | None = None,
                    generator: torch.Generator | None = None) -> dict[int, torch.Tensor]:
        """L_K = log (1/K) sum_{j=1}^K r_j for every K in ``ks``, per example: {K: tensor (n,)}, in one pass.

        Draws max(ks) samples ``chunk`` at a time (``log_weight_chunks``) and folds each chunk into a running
        log-sum-exp (``RunningLogMeanExp``), reading off L_K when K draws are in: L_K uses the first K draws
        (the estimates for different K share draws). Memory does not grow with K (see ``log_weight_chunks``);
        the result equals log_mean_exp(log_weights(x, K, generator)) for the same generator, up to float
        round-off. ELBO = L_1 <= L_K <= L_{K+1} <= log p(x) in expectation (Burda et al. 2016).
        Differentiable unless called under ``torch.no_grad()`` (then nothing is kept between chunks).
        """
        x = self._flat(x)
        if isinstance(ks, int | numbers.Integral):
            ks = [ks]
        ks = sorted({check_count(k, "ks") for k in ks})
        if not ks:
            raise ValueError("ks: expected at least one number of importance samples, got an empty list")
        running, out = RunningLogMeanExp(), {}
        for c in self._log_weight_chunks(x, ks[-1], self._chunk_size(x.shape[0], chunk), generator, stops=ks):
            running.add(c)
            if running.count in ks:
                out[running.count] = running.value()
        return out

    def iwae_bound(self, x, k: int = 1000, chunk: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """L_k = E[log (1/k) sum_{j=1}^k r_j], r_j = p(x|z_j) p(z_j) / q(z_j|x): one estimate per example, (n,).

        ELBO = L_1 <= L_k <= L_{k+1} <= log p(x), and L_k -> log p(x) as k grows (Burda et al. 2016).
        ``chunk``: importance samples drawn at a time (``iwae_bounds``), so memory stays about
        n * chunk * (x_dim + hidden) numbers whatever k. Differentiable unless called under ``torch.no_grad()``.
        """
        k = check_count(k, "k")
        return self.iwae_bounds(x, [k], chunk, generator)[k]

    # ------------------------------------------------------------------ generating
    def sample(self, n: int, mean: bool = False, generator: torch.Generator | None = None,
               return_z: bool = False):
        """z ~ N(0, I_k), then x ~ p(x | z) (or x = E[x | z] with ``mean=True``). Returns (n, *x_shape) [, z (n, k)].

        For images, ``mean=True`` shows the pixel probabilities, the usual way to display Bernoulli samples.
        """
        n = check_count(n, "n")
        p = self._param()
        z = _randn((n, self.latent_dim), p, generator)
        x = self.decode(z, mean=mean, generator=generator)
        return (x, z) if return_z else x

    def reconstruct(self, x, mean: bool = True, sample_z: bool = False,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode, then decode: z = mu(x) (a draw from q with ``sample_z``), then E[x | z] (a draw: ``mean=False``).

        x: (n, *x_shape) -> (n, *x_shape).
        """
        mu, log_sigma = self.encode(x)
        z = reparameterize(mu, log_sigma, generator=generator) if sample_z else mu
        return self.decode(z, mean=mean, generator=generator)


# ====================================================================== the bound L_K on a test set
__all__ += ["iwae_summary", "plot_iwae_bounds"]


def iwae_summary(model, x, ks, *, chunk: int | None = None, generator: torch.Generator | None = None) -> dict:
    """L_K on the examples x for each K in ``ks`` (``VAE.iwae_bounds``: one pass, in chunks), summarised over x.

    x: (n, *x_shape), n >= 2; run without gradients. Returns a dict of lists over the sorted ``ks``: ``k``; ``mean``
    and ``stderr`` (the average of the per-example L_K and its standard error over the examples, ``mean_stderr``);
    ``gain`` and ``gain_stderr`` (the same for the per-example L_K - L_{K_min}, K_min = min(ks), usually 1: a paired
    difference on the same examples, so its standard error is far smaller than that of either bound); and the number
    ``n`` of examples. Nats per example.
    """
    if not isinstance(model, VAE):
        raise TypeError(f"model: expected a VAE, got {describe(model)}")
    with torch.no_grad():
        bounds = model.iwae_bounds(x, ks, chunk=chunk, generator=generator)
    ks = sorted(bounds)
    base = bounds[ks[0]].to(torch.float64)
    out: dict = {"k": ks, "mean": [], "stderr": [], "gain": [], "gain_stderr": [], "n": int(base.shape[0])}
    for k in ks:
        b = bounds[k].to(torch.float64)
        mean, se = mean_stderr(b)
        gain, gain_se = mean_stderr(b - base) if k != ks[0] else (0.0, 0.0)
        out["mean"].append(mean)
        out["stderr"].append(se)
        out["gain"].append(gain)
        out["gain_stderr"].append(gain_se)
    return out


def plot_iwae_bounds(summaries, z: float = 2.0):
    """-L_K against K for each model (one panel each), and the gains L_K - L_1 of all models on a last panel.

    ``summaries``: name -> ``iwae_summary(...)``. Error bars: +- ``z`` standard errors over the test images (on the
    gains: of the paired differences). The dotted line is -L_1 = -ELBO estimate. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    from .plotting import COLORS

    names = list(summaries)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(5.2 * (len(names) + 1), 4.5))
    for ax, name in zip(axes, names, strict=False):
        s = summaries[name]
        neg = [-m for m in s["mean"]]
        ax.errorbar(s["k"], neg, yerr=[z * e for e in s["stderr"]], fmt="o-", color=COLORS["model"], capsize=4,
                    label=rf"$-L_K$ $\pm$ {z:g} SE over the {s['n']} images")
        ax.axhline(neg[0], color=COLORS["truth"], ls=":", lw=1.2, label=rf"$-L_{{{s['k'][0]}}}$" +
                   (" (the ELBO estimate)" if s["k"][0] == 1 else ""))
        ax.set_xscale("log")
        ax.set_xlabel("number of importance samples $K$")
        ax.set_ylabel("nats per image (lower = better)")
        ax.set_title(name)
        ax.legend(loc="best", fontsize="small")
    ax = axes[-1]
    for i, name in enumerate(names):
        s = summaries[name]
        dodge = 1.0 + 0.07 * (i - (len(names) - 1) / 2)  # side by side on the log axis, so the bars do not overlap
        ax.errorbar([k * dodge for k in s["k"]], s["gain"], yerr=[z * e for e in s["gain_stderr"]], fmt="o-",
                    capsize=4, color=f"C{i}", label=name)
    ax.axhline(0.0, color=COLORS["truth"], ls=":", lw=1.2, label=r"no gain ($K = 1$)")
    ax.set_xscale("log")
    ax.set_xlabel("number of importance samples $K$")
    ax.set_ylabel(r"$L_K - L_1$, nats per image")
    ax.set_title(rf"gain over the ELBO ($\pm$ {z:g} SE, paired)")
    ax.legend(loc="best", fontsize="small")
    return fig


# ====================================================================== two gradient estimators
# d/dmu E_{z ~ N(mu, sigma^2)}[f(z)] for a scalar mu, by Monte Carlo with n draws, two ways:
#   score function (likelihood ratio, REINFORCE): mean_j f(z_j) d/dmu log q(z_j), needs only values of f;
#   pathwise (reparameterisation):               mean_j f'(mu + sigma eps_j),      needs f differentiable.
# Both are unbiased; notebook 02 compares their variances. Everything here is float64.
__all__ += ["gradient_estimator_variance", "pathwise_grad", "quadratic_grad_moments", "score_function_grad"]


def _estimator_draws(mu, log_sigma, n_draws, repeats, generator):
    mu = float(as_float64(mu, "mu"))
    log_sigma = float(as_float64(log_sigma, "log_sigma"))
    n = check_count(n_draws, "n_draws")
    r = check_count(repeats, "repeats")
    eps = torch.randn((r, n), generator=generator, dtype=torch.float64)
    m = torch.full((r, 1), mu, dtype=torch.float64, requires_grad=True)
    return m, torch.tensor(log_sigma, dtype=torch.float64), eps


def score_function_grad(f, mu, log_sigma, n_draws: int, repeats: int = 1,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Score-function estimate of d/dmu E_{z ~ N(mu, sigma^2)}[f(z)]: (1/n) sum_j f(z_j) d/dmu log N(z_j; mu, sigma^2).

    ``f`` maps a float64 tensor elementwise to one of the same shape; it is only evaluated, never differentiated.
    ``mu``, ``log_sigma``: numbers. Returns ``repeats`` independent estimates, each from ``n_draws`` draws,
    shape (repeats,). d/dmu log N(z; mu, sigma^2) = (z - mu) / sigma^2 is taken by autograd on the surrogate
    mean_j f(z_j).detach() * log q(z_j) with z_j held fixed, as in REINFORCE.
    """
    m, ls, eps = _estimator_draws(mu, log_sigma, n_draws, repeats, generator)
    z = (m + ls.exp() * eps).detach()                      # a plain draw: no path from z back to mu
    log_q = -(0.5 * _LOG_2PI + ls + 0.5 * ((z - m) / ls.exp()) ** 2)
    (f(z).detach() * log_q).mean(-1).sum().backward()
    return m.grad[:, 0]


def pathwise_grad(f, mu, log_sigma, n_draws: int, repeats: int = 1,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Pathwise (reparameterisation) estimate of d/dmu E[f(z)]: (1/n) sum_j f'(mu + sigma eps_j), eps_j ~ N(0, 1).

    ``f`` must be differentiable by autograd (elementwise, float64). Returns shape (repeats,) like
    ``score_function_grad``.
    """
    m, ls, eps = _estimator_draws(mu, log_sigma, n_draws, repeats, generator)
    z = m + ls.exp() * eps                                 # the reparameterised draw: dz/dmu = 1
    f(z).mean(-1).sum().backward()
    return m.grad[:, 0]


def quadratic_grad_moments(mu, log_sigma, c: float = 0.0) -> dict[str, float]:
    """Closed forms for f(z) = (z - c)^2, z ~ N(mu, sigma^2), a = mu - c.

    ``true_grad`` = d/dmu E[f(z)] = 2a; per-draw variances (an n-draw estimate has 1/n of them):
    ``pathwise`` = Var[2(z - c)] = 4 sigma^2; ``score_function`` = Var[(z - c)^2 (z - mu) / sigma^2]
    = a^4 / sigma^2 + 14 a^2 + 15 sigma^2 (from E eps^2 = 1, E eps^4 = 3, E eps^6 = 15).
    """
    a = float(mu) - float(c)
    s2 = math.exp(2 * float(log_sigma))
    return {"true_grad": 2 * a, "pathwise": 4 * s2, "score_function": a**4 / s2 + 14 * a**2 + 15 * s2}


def gradient_estimator_variance(mu=1.0, log_sigma=0.0, n_draws=(1, 4, 16, 64, 256, 1024), repeats: int = 2000,
                                c: float = 0.0, generator: torch.Generator | None = None) -> dict:
    """Both estimators of d/dmu E[(z - c)^2], z ~ N(mu, sigma^2), for each n in ``n_draws``, ``repeats`` times each.

    Returns a dict of lists over ``n_draws``: ``n``; ``score_function`` and ``pathwise`` (the variance of the
    ``repeats`` estimates), ``score_function_mean`` and ``pathwise_mean`` (their means); the exact variances
    ``exact_score_function`` and ``exact_pathwise`` (per-draw variance / n); the numbers ``true_grad`` = 2(mu - c),
    ``mu``, ``sigma`` and ``c``.
    """
    f = lambda z: (z - c) ** 2  # noqa: E731
    exact = quadratic_grad_moments(mu, log_sigma, c)
    out: dict = {key: [] for key in ("n", "score_function", "pathwise", "score_function_mean", "pathwise_mean",
                                     "exact_score_function", "exact_pathwise")}
    for n in n_draws:
        n = check_count(n, "n_draws")
        for name, estimator in (("score_function", score_function_grad), ("pathwise", pathwise_grad)):
            g = estimator(f, mu, log_sigma, n, repeats, generator)
            out[name].append(float(g.var()))
            out[f"{name}_mean"].append(float(g.mean()))
            out[f"exact_{name}"].append(exact[name] / n)
        out["n"].append(n)
    out.update(true_grad=exact["true_grad"], mu=float(mu), sigma=math.exp(float(log_sigma)), c=float(c))
    return out
