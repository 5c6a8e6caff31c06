"""Checks for notebook 03 (a VAE on MNIST): the Bernoulli log-likelihood, the KL to the prior, log-mean-exp.

Each check compares with an independent reference (``torch.distributions``, the closed-form KL, a
float64 log-sum-exp) and names the likely mistake: probabilities where logits belong, the sigmoid
applied twice, the KL summed over the batch, the mean of the log instead of the log of the mean.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from . import ExerciseError, diagnose, expect, passed

__all__ = ["check_bernoulli_log_likelihood", "check_kl_to_prior", "check_log_mean_exp"]

# The library"s own answers to these exercises: a submission that calls one is flagged in the grader"s CSV.
REFERENCES = {
    "bernoulli_log_likelihood": ("course_lib.vae.BernoulliDecoder.log_prob",),
    "kl_to_prior": ("course_lib.vae.gaussian_kl_diag", "course_lib.vae.gaussian_kl"),
}


def _call(fn, what: str, *args):
    try:
        return fn(*(a.clone() for a in args))
    except (ValueError, RuntimeError) as exc:
        text = str(exc)
        if "between 0 and 1" in text or "probs" in text or "0 <= " in text or "interval" in text.lower():
            raise ExerciseError(
                f"{what}: your function failed with “{text[:160]}” — your Bernoulli log-likelihood uses probabilities "
                "where logits belong: the decoder outputs logits l (any real number), p = sigmoid(l). Use "
                "F.binary_cross_entropy_with_logits or x * l - softplus(l)") from None
        raise


def check_bernoulli_log_likelihood(fn) -> bool:
    """``fn(x, logits) -> log p(x | z)``: sum over pixels of log Bernoulli(x_i; sigmoid(logits_i)), shape (n,).

    x: (n, 784) in {0, 1}; logits: (n, 784) real (the decoder's output before any sigmoid).
    """
    g = torch.Generator().manual_seed(0)
    n, d = 5, 784
    x = torch.bernoulli(torch.full((n, d), 0.3, dtype=torch.float64), generator=g)
    cases = {
        # logits inside (0, 1) first, so "probabilities used as logits" gives finite numbers it can be told by
        "logits in (0, 1)": 0.05 + 0.9 * torch.rand(n, d, generator=g, dtype=torch.float64),
        "logits of a typical decoder": 3.0 * torch.randn(n, d, generator=g, dtype=torch.float64),
    }
    for name, logits in cases.items():
        want = Bernoulli(logits=logits).log_prob(x).sum(-1)
        got = _call(fn, "Bernoulli log-likelihood", x, logits)
        if isinstance(got, torch.Tensor) and got.ndim == 0:
            raise ExerciseError("Bernoulli log-likelihood: you returned one number for the whole batch; return one "
                                f"log-likelihood per image, shape ({n},) — sum over the pixels only (dim=-1)")
        p = torch.sigmoid(logits)
        probs_as_logits = (x * torch.log(logits) + (1 - x) * torch.log1p(-logits)).sum(-1)
        twice = Bernoulli(logits=p).log_prob(x).sum(-1)
        mistakes = {
            "your Bernoulli log-likelihood uses probabilities where logits belong: the decoder outputs logits l, "
            "p = sigmoid(l); log p(x|z) = sum_i [x_i l_i - softplus(l_i)]": probs_as_logits,
            "you applied the sigmoid and then a function that expects logits (the sigmoid twice): pass the raw "
            "logits to binary_cross_entropy_with_logits": twice,
            "sign: that is the binary cross-entropy, the NEGATIVE log-likelihood": -want,
            "you averaged over the pixels; the log-likelihood of an image is the sum over its 784 pixels": want / d,
            "x and 1 - x are swapped: the log-probability of a pixel x_i = 1 is log sigmoid(l_i)":
                Bernoulli(logits=logits).log_prob(1 - x).sum(-1),
        }
        diagnose(got, want, what=f"Bernoulli log-likelihood ({name})", mistakes=mistakes, rtol=1e-5, atol=1e-6)
    # a confident decoder: log(sigmoid(60)) underflows to log(1) fine, but log(1 - sigmoid(60)) = log(0) = -inf
    logits = torch.tensor([[60.0, -60.0, 60.0, -60.0]], dtype=torch.float32)
    x4 = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    got = fn(x4.clone(), logits.clone())
    expect(got is not None and bool(torch.isfinite(torch.as_tensor(got)).all()),
           "Bernoulli log-likelihood: gives -inf or NaN for a confident decoder (logits ±60 in float32): "
           "log(sigmoid(l)) and log(1 - sigmoid(l)) round to log(0). Compute from the logits: "
           "x * l - softplus(l), or -F.binary_cross_entropy_with_logits(l, x, reduction='none').sum(-1)")
    diagnose(got, Bernoulli(logits=logits.double()).log_prob(x4).sum(-1),
             what="Bernoulli log-likelihood (confident decoder, logits ±60)", rtol=1e-4)
    return passed("Bernoulli log-likelihood: sum_i [x_i l_i - softplus(l_i)] from the logits, stable")


def check_kl_to_prior(fn) -> bool:
    """``fn(mu, log_sigma) -> KL(N(mu, diag sigma^2) || N(0, I))`` per example, shape (n,). log_sigma = log std."""
    g = torch.Generator().manual_seed(1)
    n, k = 6, 4
    mu = torch.randn(n, k, generator=g, dtype=torch.float64)
    log_sigma = -1.2 + 1.6 * torch.rand(n, k, generator=g, dtype=torch.float64)
    zero = _call(fn, "KL to the prior", torch.zeros(2, k, dtype=torch.float64), torch.zeros(2, k, dtype=torch.float64))
    if zero is not None and isinstance(zero, torch.Tensor) and zero.shape == (2,) and zero.abs().max() > 1e-9:
        raise ExerciseError(f"KL to the prior: KL(N(0, I) || N(0, I)) must be 0, got {zero.tolist()} — check the "
                            "constant -1 per coordinate")
    want = kl_divergence(Normal(mu, torch.exp(log_sigma)), Normal(0.0, 1.0)).sum(-1)
    got = fn(mu.clone(), log_sigma.clone())
    if isinstance(got, torch.Tensor) and got.ndim == 0:
        summed = math.isclose(float(got), float(want.sum()), rel_tol=1e-6)
        hint = " — it equals the sum over the batch" if summed else ""
        raise ExerciseError(f"KL to the prior: you summed the KL over the batch instead of per example{hint}; "
                            f"sum over the latent coordinates only (dim=-1), shape ({n},)")
    terms = 0.5 * (mu**2 + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma)
    mistakes = {
        "you summed the KL over the batch instead of per example: sum over dim=-1 only": want.sum().expand(n),
        "you forgot the 1/2": 2 * want,
        "you treated log_sigma as a log-variance: here sigma^2 = exp(2 * log_sigma)":
            0.5 * (mu**2 + torch.exp(log_sigma) - 1 - log_sigma).sum(-1),
        "you averaged over the latent coordinates instead of summing": terms.mean(-1),
        "sign error: KL >= 0 always": -want,
        "the log term is -2 log sigma per coordinate (log sigma^2), not -log sigma": (terms + 0.5 * log_sigma).sum(-1),
    }
    diagnose(got, want, what="KL to the prior", mistakes=mistakes)
    return passed("KL to the prior: 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - 2 log sigma_j), one per example")


def check_log_mean_exp(fn) -> bool:
    """``fn(log_w) -> log((1/k) sum_j exp(log_w[:, j]))``: shape (n, k) -> (n,), stable for very negative log_w.

    With log_w the log importance weights of k draws from q(z|x), this is the importance-weighted bound L_k.
    """
    g = torch.Generator().manual_seed(2)
    n, k = 5, 7
    log_w = -90.0 + 3.0 * torch.randn(n, k, generator=g, dtype=torch.float64)
    want = torch.logsumexp(log_w, -1) - math.log(k)
    got = fn(log_w.clone())
    if isinstance(got, torch.Tensor) and tuple(got.shape) == (k,):
        raise ExerciseError(f"log-mean-exp: you reduced over the wrong dimension: log_w has shape (n, k) = ({n}, {k}) "
                            "with the k draws in the columns; reduce over dim=-1 to get shape (n,)")
    mistakes = {
        "that is the mean of the log-weights — the ELBO (L_1 averaged) — not the log of the mean weight":
            log_w.mean(-1),
        "you forgot the 1/k: log mean = logsumexp - log k": torch.logsumexp(log_w, -1),
    }
    diagnose(got, want, what="log-mean-exp", mistakes=mistakes)
    # log-weights of an image are -(tens to hundreds of nats): exp(-800) underflows to 0 even in float64
    log_w = torch.tensor([[-800.0, -805.0, -1000.0], [-90.0, -91.0, -89.0]], dtype=torch.float64)
    got = fn(log_w.clone())
    expect(got is not None and bool(torch.isfinite(torch.as_tensor(got)).all()),
           "log-mean-exp: -inf for log-weights near -800 (an image the model fits poorly): exp underflows. "
           "Subtract the maximum first, m + log(mean(exp(log_w - m))), or use torch.logsumexp(log_w, dim=-1) - log(k)")
    diagnose(got, torch.logsumexp(log_w, -1) - math.log(3), what="log-mean-exp (log-weights near -800)")
    return passed("log-mean-exp: logsumexp(log_w) - log k, stable — the importance-weighted bound")
