"""Checks for notebook 01 (latent variables and the ELBO): the Gaussian KL and the reparameterised ELBO estimator.

Each check runs the student's function on fixed inputs, compares with an independent reference
(``torch.distributions`` for the KL; ``LinearGaussianModel.elbo_monte_carlo`` with the same draws for the
estimator) and names the likely mistake: the missing 1/2, sigma where sigma^2 belongs, a sign, a cut
gradient, an average over the wrong dimension.
"""

from __future__ import annotations

import math

import torch

from ..vae import LinearGaussianModel
from . import ExerciseError, call_student, diagnose, expect, passed

__all__ = ["check_elbo_estimate", "check_kl_gaussian"]

# The library"s own answers to these exercises: a submission that calls one is flagged in the grader"s CSV.
REFERENCES = {
    "kl_gaussian": ("course_lib.vae.gaussian_kl_diag", "course_lib.vae.gaussian_kl"),
    "elbo_estimate": ("course_lib.vae.LinearGaussianModel.elbo_monte_carlo",
                      "course_lib.vae.LinearGaussianModel.elbo_terms"),
}

_LOG_2PI = math.log(2 * math.pi)


_call = call_student


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-6, atol: float = 1e-8) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))


# ====================================================================== the Gaussian KL
def _kl_cases():
    # mu = 0, log sigma = 0 first (the KL must be 0 there); sigma, sigma^2 and log sigma all differ elsewhere
    mu = torch.tensor([0.0, 1.5, -0.7, 0.3, 2.0, -1.2], dtype=torch.float64)
    log_sigma = torch.tensor([0.0, -0.5, 0.4, 1.0, -1.2, 0.25], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    mu2 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    log_sigma2 = -1.0 + 1.8 * torch.rand(3, 4, generator=g, dtype=torch.float64)
    return [(mu, log_sigma), (mu2, log_sigma2)]


def check_kl_gaussian(fn) -> bool:
    """``fn(mu, log_sigma) -> kl``: KL(N(mu, sigma^2) || N(0, 1)) with sigma = exp(log_sigma), entry by entry.

    mu, log_sigma: tensors of the same shape; the result has that shape too (no sum, no mean) and is
    differentiable in mu and log_sigma. Reference: ``torch.distributions.kl_divergence`` of two Normals.
    """
    what = "kl_gaussian"
    for mu0, ls0 in _kl_cases():
        mu, ls = mu0.clone().requires_grad_(True), ls0.clone().requires_grad_(True)
        got = _call(fn, what, mu, ls)
        want = torch.distributions.kl_divergence(torch.distributions.Normal(mu0, torch.exp(ls0)),
                                                 torch.distributions.Normal(0.0, 1.0))
        if got is None:
            raise ExerciseError(f"{what}: your function returned None — did you forget `return`?")
        g = torch.as_tensor(got.detach() if isinstance(got, torch.Tensor) else got, dtype=torch.float64)
        if g.shape != want.shape:
            if g.numel() == 1 and (math.isclose(float(g), float(want.sum()), rel_tol=1e-6)
                                   or math.isclose(float(g), float(want.mean()), rel_tol=1e-6)):
                raise ExerciseError(f"{what}: you summed or averaged over the entries — wrong shape: return one KL "
                                    f"per entry, the shape of mu {tuple(mu0.shape)}, got {tuple(g.shape)}")
            raise ExerciseError(f"{what}: wrong shape: expected one KL per entry, the shape of mu "
                                f"{tuple(mu0.shape)}, got {tuple(g.shape)}")
        s, m = torch.exp(ls0), mu0
        kl = want
        mistakes = {
            "you forgot the 1/2 in the KL": 2 * kl,
            "sign error: KL must be >= 0 (you returned minus the KL)": -kl,
            "you used sigma where sigma^2 belongs (the variance term is sigma^2 = exp(2 log_sigma))":
                0.5 * (m**2 + s - 1 - 2 * ls0),
            "you used log sigma where log sigma^2 = 2 log_sigma belongs": 0.5 * (m**2 + s**2 - 1 - ls0),
            "sign error in the log term: the KL has - log sigma^2 (KL must be >= 0)": 0.5 * (m**2 + s**2 - 1 + 2 * ls0),
            "you forgot the -1: KL(N(0, 1) || N(0, 1)) must be 0": 0.5 * (m**2 + s**2 - 2 * ls0),
            "you used mu where mu^2 belongs": 0.5 * (m + s**2 - 1 - 2 * ls0),
            "you computed KL(N(0, 1) || N(mu, sigma^2)), the other direction; the ELBO needs KL(q || p(z))":
                ls0 + (1 + m**2) / (2 * s**2) - 0.5,
        }
        if bool(torch.isfinite(g).all()) and not _close(g, kl) and (g < -1e-9).any() \
                and not any(_close(g, v) for v in mistakes.values()):
            i = int(torch.argmin(g.reshape(-1)))
            raise ExerciseError(f"{what}: sign error: KL must be >= 0, but your function gives "
                                f"{float(g.reshape(-1)[i]):.4g} at mu = {float(mu0.reshape(-1)[i]):.3g}, "
                                f"log_sigma = {float(ls0.reshape(-1)[i]):.3g}")
        diagnose(g, kl, what=what, mistakes=mistakes)
        if not (isinstance(got, torch.Tensor) and got.requires_grad):
            raise ExerciseError(f"{what}: the values are right but carry no gradient — use torch operations "
                                "(torch.exp, not math.exp or numpy, no .item()), so the KL can be a training loss")
        g_mu, g_ls = torch.autograd.grad(got.sum(), [mu, ls], allow_unused=True)
        expect(g_mu is not None and g_ls is not None,
               f"{what}: no gradient reaches mu or log_sigma — compute the KL from the tensors you were given")
    return passed("kl_gaussian: KL(N(mu, sigma^2) || N(0, 1)) = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2)")


# ====================================================================== the reparameterised ELBO estimator
def _elbo_case(seed: int = 0):
    # n = 5 draws, k = 2 latents, d = 3 observed: every wrong averaging gives a different shape
    g = torch.Generator().manual_seed(seed)
    model = LinearGaussianModel(torch.randn(3, 2, generator=g, dtype=torch.float64),
                                torch.randn(3, generator=g, dtype=torch.float64), 0.6)
    x = model.sample(1, generator=g)
    mu = torch.tensor([0.4, -0.3], dtype=torch.float64)
    log_sigma = torch.tensor([-0.6, 0.2], dtype=torch.float64)
    return model, x, mu, log_sigma


def _variants(model, x, mu, ls, eps) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(the full Monte Carlo value, the closed-form-KL value, {hint: value of that mistake}), all 0-d."""
    k = mu.shape[-1]
    s = torch.exp(ls)

    def log_px_z(z):
        return model.decoder_log_prob(x.expand(z.shape[0], -1), z)

    z = mu + s * eps
    rec, prior = log_px_z(z), model.log_prior(z)
    log_q = -0.5 * (k * _LOG_2PI + (eps**2).sum(-1)) - ls.sum()
    kl = 0.5 * (mu**2 + s**2 - 1 - 2 * ls).sum()
    z_var = mu + s**2 * eps
    z_log = mu + ls * eps
    log_q_mean = (-0.5 * (_LOG_2PI + eps**2) - ls).mean(-1)
    mistakes = {
        "you left out log p(z): average log p(x|z_j) + log p(z_j) - log q(z_j|x)": (rec - log_q).mean(),
        "you left out - log q(z_j|x) (the entropy of q); the ELBO averages log p(x|z_j) + log p(z_j) - log q(z_j|x)":
            (rec + prior).mean(),
        "sign error: log q(z_j|x) is subtracted, not added": (rec + prior + log_q).mean(),
        "sign error: you returned minus the ELBO (the loss); return the ELBO itself": -(rec + prior - log_q).mean(),
        "you used sigma^2 where sigma belongs: z_j = mu + sigma * eps_j with sigma = exp(log_sigma)":
            (log_px_z(z_var) + model.log_prior(z_var) - log_q).mean(),
        "you used sigma^2 where sigma belongs: z_j = mu + sigma * eps_j, and log q is log N(z_j; mu, sigma^2)":
            (log_px_z(z_var) + model.log_prior(z_var)
             - torch.distributions.Normal(mu, s).log_prob(z_var).sum(-1)).mean(),
        "you multiplied eps by log_sigma; the standard deviation is sigma = exp(log_sigma)":
            (log_px_z(z_log) + model.log_prior(z_log) - log_q).mean(),
        "log q(z|x) is missing - log sigma (the normalising constant of N(mu, sigma^2))":
            (rec + prior - (log_q + ls.sum())).mean(),
        "you averaged the wrong dimension: log q(z|x) sums over the k latent coordinates (a product of densities)":
            (rec + prior - log_q_mean).mean(),
        "you forgot the 1/2 in the KL": (rec.mean() - 2 * kl),
    }
    return (rec + prior - log_q).mean(), rec.mean() - kl, mistakes


def _seeded(fn, what: str, seed: int, *args):
    """Call fn with torch's global generator seeded (and restored after), so fresh noise is reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _call(fn, what, *args)


def _scalar(got, what: str, n: int, k: int) -> torch.Tensor:
    if got is None:
        raise ExerciseError(f"{what}: your function returned None — did you forget `return`?")
    if not isinstance(got, torch.Tensor):
        raise ExerciseError(f"{what}: expected a torch tensor (so the gradient can flow), got {type(got).__name__}")
    shape = tuple(got.shape)
    if shape == (n,):
        raise ExerciseError(f"{what}: you averaged over the wrong dimension — you returned one value per draw, "
                            f"shape {shape}: average over the n = {n} draws (dim 0) to get one number")
    if shape in {(k,), (n, k), (1, k)}:
        raise ExerciseError(f"{what}: you averaged over the wrong dimension — shape {shape} keeps one value per latent "
                            f"coordinate; sum log-densities over the k coordinates, average over the draws, and "
                            "return a single number (0-d tensor)")
    if got.numel() != 1:
        raise ExerciseError(f"{what}: wrong shape: expected a single number (0-d tensor), got shape {shape}")
    if not bool(torch.isfinite(got).all()):
        raise ExerciseError(f"{what}: the estimate is NaN or inf — a log of a negative number, or exp overflowing?")
    return got.reshape(())


def check_elbo_estimate(fn) -> bool:
    """``fn(model, x, mu, log_sigma, eps) -> elbo``: the reparameterised estimate of the ELBO for fixed draws eps.

    model: a ``LinearGaussianModel`` (here d = 3, k = 2); x: one observation, shape (1, d); mu, log_sigma:
    q's mean and log standard deviation, shape (k,); eps: standard-normal draws, shape (n, k), n = 5.
    Expected: the 0-d tensor 1/n sum_j [log p(x|z_j) + log p(z_j) - log q(z_j|x)] with z_j = mu + sigma eps_j,
    equal to ``model.elbo_monte_carlo`` with the same draws, and differentiable in mu and log_sigma. Also
    accepted: 1/n sum_j log p(x|z_j) - KL(q || p(z)) with the KL in closed form (lower variance, same mean).

    The gradient test compares autograd with finite differences under the same random state: a z drawn
    without the reparameterisation still moves with mu, but autograd cannot see it.
    """
    what = "elbo_estimate"
    model, x, mu0, ls0 = _elbo_case()
    n, k = 5, mu0.shape[0]
    seed = 3
    eps = torch.randn(1, n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)[0]
    # the reference: the library's estimator, which draws exactly these eps from a generator seeded alike
    want, _ = model.elbo_monte_carlo(x, mu0, torch.diag(torch.exp(2 * ls0)), n,
                                     generator=torch.Generator().manual_seed(seed))
    want = want[0]
    full, closed_kl, mistakes = _variants(model, x, mu0, ls0, eps)
    expect(math.isclose(float(full), float(want), rel_tol=1e-9, abs_tol=1e-9), "internal: reference mismatch")

    def value_at(mu, ls, rng_seed=0, grad=False):
        mu, ls = mu.clone().requires_grad_(grad), ls.clone().requires_grad_(grad)
        out = _scalar(_seeded(fn, what, rng_seed, model, x.clone(), mu, ls, eps.clone()), what, n, k)
        return out, mu, ls

    value, mu, ls = value_at(mu0, ls0, grad=True)
    g_mu = g_ls = None
    if value.requires_grad:
        g_mu, g_ls = torch.autograd.grad(value, [mu, ls], allow_unused=True)
    g_mu = torch.zeros(k, dtype=torch.float64) if g_mu is None else g_mu.detach().to(torch.float64)
    g_ls = torch.zeros(k, dtype=torch.float64) if g_ls is None else g_ls.detach().to(torch.float64)
    # central differences with the same random state: what the gradient should be, however z was drawn
    h = 1e-6
    basis = torch.eye(k, dtype=torch.float64)
    fd_mu = torch.stack([(value_at(mu0 + h * e, ls0)[0] - value_at(mu0 - h * e, ls0)[0]).detach() / (2 * h)
                         for e in basis])
    fd_ls = torch.stack([(value_at(mu0, ls0 + h * e)[0] - value_at(mu0, ls0 - h * e)[0]).detach() / (2 * h)
                         for e in basis])
    if not torch.allclose(g_mu, fd_mu.to(torch.float64), rtol=1e-4, atol=1e-5):
        raise ExerciseError(
            f"{what}: you drew z without the reparameterisation, so no gradient reaches mu through z (a fresh "
            "torch.normal, Normal(...).sample(), .detach(), .item() or numpy cuts the graph). Write "
            "z = mu + torch.exp(log_sigma) * eps with the eps you were given, so the gradient reaches the encoder")
    again = value_at(mu0, ls0, rng_seed=1)[0]
    if not math.isclose(float(again.detach()), float(value.detach()), rel_tol=1e-12, abs_tol=1e-12):
        raise ExerciseError(f"{what}: two calls with the same eps gave different values — you drew new noise; use the "
                            "eps passed in (fixed draws: the common random numbers that make the estimate smooth)")
    if not torch.allclose(g_ls, fd_ls.to(torch.float64), rtol=1e-4, atol=1e-5):
        raise ExerciseError(f"{what}: no gradient reaches log_sigma — compute sigma = torch.exp(log_sigma) from the "
                            "tensor you were given (no .detach(), no .item())")
    v = value.detach().to(torch.float64)
    if math.isclose(float(v), float(closed_kl), rel_tol=1e-9, abs_tol=1e-9):
        return passed(f"{what}: mean_j log p(x|z_j) - KL(q || p(z)) with the closed-form KL (also right: the same "
                      f"mean as the full Monte Carlo estimate, with less variance): {float(v):.4f}")
    diagnose(v, want, what=what, mistakes=mistakes, rtol=1e-9, atol=1e-9)
    return passed(f"{what}: mean over the draws of log p(x|z_j) + log p(z_j) - log q(z_j|x), z_j = mu + sigma * "
                  f"eps_j, equal to model.elbo_monte_carlo with the same draws: {float(v):.4f}")
