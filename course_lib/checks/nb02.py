"""Checks for notebook 02 (a VAE on toy data): the reparameterisation trick and the beta-VAE loss.

Each check runs the student's function on fixed inputs, compares with the library (``course_lib.vae``)
and names the likely mistake: a cut gradient, sigma where log sigma belongs, the KL summed over the
batch, beta on the wrong term.
"""

from __future__ import annotations

import math

import torch

from . import ExerciseError, diagnose, expect, passed

__all__ = ["check_negative_elbo", "check_reparameterize"]

# The library"s own answers to these exercises: a submission that calls one is flagged in the grader"s CSV.
REFERENCES = {
    "reparameterize": ("course_lib.vae.reparameterize",),
    "negative_elbo": ("course_lib.vae.gaussian_kl_diag", "course_lib.vae.log_normal_diag",
                      "course_lib.vae.VAE.elbo_terms"),
}

_LOG_2PI = math.log(2 * math.pi)


def _inputs(n: int = 4000, k: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, k, generator=g, dtype=torch.float64)
    # log sigma spread over [-1.5, 1] so sigma, sigma^2, sqrt(sigma) and log sigma all differ clearly
    log_sigma = -1.5 + 2.5 * torch.rand(n, k, generator=g, dtype=torch.float64)
    return mu, log_sigma


def check_reparameterize(fn) -> bool:
    """``fn(mu, log_sigma) -> z``: one draw z ~ N(mu, diag exp(log_sigma)^2) per row, with gradients to mu, log_sigma.

    mu, log_sigma: (n, k). Checks the shape, that z - mu = sigma * eps with eps standard normal and one
    eps per entry, and that autograd gives dz/dmu = 1 and dz/dlog_sigma = sigma * eps = z - mu.
    """
    mu, log_sigma = _inputs()
    mu.requires_grad_(True)
    log_sigma.requires_grad_(True)
    with torch.random.fork_rng(devices=[]):  # seeded for a reproducible check; the student's generator untouched
        torch.manual_seed(0)
        z = fn(mu, log_sigma)
    if z is None:
        raise ExerciseError("reparameterize: your function returned None — did you forget `return z`?")
    expect(isinstance(z, torch.Tensor), f"reparameterize: expected a tensor, got {type(z).__name__}")
    expect(tuple(z.shape) == tuple(mu.shape),
           f"reparameterize: z must have the shape of mu, {tuple(mu.shape)} (one draw per row), got {tuple(z.shape)}")
    expect(bool(torch.isfinite(z).all()), "reparameterize: z contains NaN or inf")
    zd = z.detach().to(torch.float64)
    resid = zd - mu.detach()
    expect(resid.abs().max() > 0, "reparameterize: z equals mu — you forgot the noise term sigma * eps")
    if not z.requires_grad:
        raise ExerciseError(
            "reparameterize: z carries no gradient — you sampled z without the reparameterisation (torch.normal, "
            "Normal(...).sample() or .detach() cut the graph). Write z = mu + sigma * eps with "
            "eps = torch.randn_like(mu), so that the gradient of the loss reaches the encoder")
    g_mu, g_ls = torch.autograd.grad(z.sum(), [mu, log_sigma], allow_unused=True)
    no_mu = g_mu is None or g_mu.abs().max() == 0
    no_ls = g_ls is None or g_ls.abs().max() == 0
    if no_mu and no_ls:
        raise ExerciseError(
            "reparameterize: the gradient of z with respect to mu and log_sigma is zero — you sampled z without the "
            "reparameterisation (torch.normal(mu, sigma) has no gradient). Write z = mu + sigma * eps with "
            "eps ~ N(0, I) drawn separately")
    expect(not no_mu and torch.allclose(g_mu, torch.ones_like(g_mu)),
           "reparameterize: dz/dmu should be 1 — z = mu + sigma * eps, with mu added exactly once")
    if no_ls:
        raise ExerciseError("reparameterize: no gradient reaches log_sigma — compute sigma = exp(log_sigma) from the "
                            "tensor you were given (no .detach(), no .item(), no new tensor)")
    # d/d log_sigma of mu + s(log_sigma) eps is s'(log_sigma) eps: = z - mu exactly when s = exp
    ls = log_sigma.detach()
    mistakes = {
        "you multiplied eps by log_sigma itself; the standard deviation is sigma = exp(log_sigma)": resid / ls,
        "you used the variance exp(2 log_sigma) where the standard deviation sigma = exp(log_sigma) belongs":
            2 * resid,
        "you treated log_sigma as a log-variance (exp(log_sigma / 2)); here it is the log standard deviation, "
        "so sigma = exp(log_sigma)": 0.5 * resid,
    }
    diagnose(g_ls, resid, what="reparameterize (the gradient dz/dlog_sigma)", mistakes=mistakes, rtol=1e-5, atol=1e-8)
    eps = resid / torch.exp(ls)
    rows_equal = bool((eps - eps[:1]).abs().max() < 1e-12)
    expect(not rows_equal, "reparameterize: every row got the same eps — draw one eps per example and coordinate, "
                           "shape (n, k) like mu (torch.randn_like(mu))")
    # 12,000 draws: the sample mean has sd 0.009, the sample sd about 0.0065; 5 sd tolerances
    m, s = float(eps.mean()), float(eps.std())
    expect(abs(m - 0.5) > 0.05 or abs(s - 0.2887) > 0.03,
           "reparameterize: eps looks uniform on [0, 1] — use torch.randn (standard normal), not torch.rand")
    expect(abs(m) < 0.05 and abs(s - 1) < 0.035,
           f"reparameterize: eps = (z - mu) / sigma should be standard normal, but has mean {m:.3f} and standard "
           f"deviation {s:.3f}")
    return passed("reparameterize: z = mu + exp(log_sigma) * eps, with gradients reaching mu and log_sigma")


def _reference(x, x_mean, x_log_sigma, mu, log_sigma):
    """(log p(x|z) per example, KL per example and per coordinate) from the closed forms."""
    log_lik = -(0.5 * _LOG_2PI + x_log_sigma + 0.5 * ((x - x_mean) / torch.exp(x_log_sigma)) ** 2).sum(-1)
    kl_terms = 0.5 * (mu**2 + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma)
    return log_lik, kl_terms


def check_negative_elbo(fn) -> bool:
    """``fn(x, x_mean, x_log_sigma, mu, log_sigma, beta) -> loss``: per-example -log p(x|z) + beta KL(q || p(z)).

    x, x_mean: (n, d); x_log_sigma: (d,) (the decoder's log standard deviation); mu, log_sigma: (n, k);
    beta: a number. The loss must have shape (n,): one number per example, in nats.
    """
    g = torch.Generator().manual_seed(3)
    n, d, k = 6, 2, 3
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x_mean = x + 0.4 * torch.randn(n, d, generator=g, dtype=torch.float64)
    x_log_sigma = torch.tensor([-0.7, 0.3], dtype=torch.float64)
    mu = torch.randn(n, k, generator=g, dtype=torch.float64)
    log_sigma = -1.0 + torch.rand(n, k, generator=g, dtype=torch.float64)
    for beta in (2.5, 1.0):
        log_lik, kl_terms = _reference(x, x_mean, x_log_sigma, mu, log_sigma)
        kl = kl_terms.sum(-1)
        want = -log_lik + beta * kl
        got = fn(x.clone(), x_mean.clone(), x_log_sigma.clone(), mu.clone(), log_sigma.clone(), beta)
        if isinstance(got, torch.Tensor) and got.ndim == 0:
            hint = (" (it equals the mean of the right per-example losses)"
                    if math.isclose(float(got), float(want.mean()), rel_tol=1e-6) else "")
            raise ExerciseError(f"negative ELBO: you returned one number for the whole batch{hint}; return one loss "
                                f"per example, shape ({n},) — the training loop takes the mean")
        sq = 0.5 * ((x - x_mean) / torch.exp(x_log_sigma)) ** 2
        kl_logvar = 0.5 * (mu**2 + torch.exp(log_sigma) - 1 - log_sigma).sum(-1)
        mistakes = {
            "you summed the KL over the batch instead of per example: sum over the latent coordinates only "
            "(dim=-1), one KL per example": -log_lik + beta * kl.sum(),
            "beta multiplies the wrong term: it weighs the prior-matching KL term, not the reconstruction":
                -beta * log_lik + kl,
            "sign: you returned the (beta-)ELBO; the loss to minimise is its negative": log_lik - beta * kl,
            "the KL enters the loss with a plus sign: loss = -log p(x|z) + beta * KL": -log_lik - beta * kl,
            "you forgot the 1/2 in the KL": -log_lik + 2 * beta * kl,
            "you forgot beta": -log_lik + kl,
            "your KL treats log_sigma as a log-variance; it is the log standard deviation (sigma^2 = exp(2 log_sigma))":
                -log_lik + beta * kl_logvar,
            "you dropped the Gaussian's normalising constant log(2 pi)/2 + log sigma_x per coordinate; the decoder's "
            "sigma is learned, so the log sigma_x part matters": sq.sum(-1) + beta * kl,
            "you dropped log(2 pi)/2 per coordinate from the Gaussian log-density (the ELBO in nats needs it)":
                -log_lik - d * 0.5 * _LOG_2PI + beta * kl,
            "you averaged the log-likelihood over the coordinates instead of summing": -log_lik / d + beta * kl,
            "you averaged the KL over the latent coordinates instead of summing": -log_lik + beta * kl / k,
            "your Gaussian log-density divides by sigma instead of sigma^2":
                -(log_lik + sq.sum(-1)) + (0.5 * (x - x_mean) ** 2 / torch.exp(x_log_sigma)).sum(-1) + beta * kl,
        }
        diagnose(got, want, what=f"negative ELBO (beta = {beta})", mistakes=mistakes)
    return passed("negative ELBO: -log N(x; x_mean, sigma_x^2) + beta * KL(q(z|x) || N(0, I)), one per example")
