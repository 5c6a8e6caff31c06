"""Checks for notebook 03 (a VAE on MNIST): the Bernoulli log-likelihood, log-mean-exp, and log-mean-exp over chunks.

Each check compares with an independent reference (``torch.distributions``, a float64 log-sum-exp of all the
values side by side) and names the likely mistake: probabilities where logits belong, the sigmoid applied twice,
the mean of the log instead of the log of the mean, chunks averaged or weighted equally instead of combined.
(The KL to the prior is notebook 01's exercise, ``checks.nb01.check_kl_gaussian``; notebook 03 uses the library's
``course_lib.vae.gaussian_kl_diag``.)
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Bernoulli

from . import ExerciseError, call_student, diagnose, expect, passed

__all__ = ["check_bernoulli_log_likelihood", "check_log_mean_exp", "check_log_mean_exp_chunks"]

# The library's own answers to these exercises: a submission that calls one is flagged in the grader's CSV.
REFERENCES = {
    "bernoulli_log_likelihood": ("course_lib.vae.BernoulliDecoder.log_prob",),
    "log_mean_exp": ("course_lib.vae.log_mean_exp",),
    "log_mean_exp_chunks": ("course_lib.vae.log_mean_exp_chunks", "course_lib.vae.RunningLogMeanExp.add",
                            "course_lib.vae.log_mean_exp", "course_lib.vae.VAE.iwae_bounds"),
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


def check_log_mean_exp(fn) -> bool:
    """``fn(log_w) -> log((1/K) sum_j exp(log_w[:, j]))``: shape (n, K) -> (n,), stable for very negative log_w.

    With log_w the log importance weights of K draws from q(z|x), this is the importance-weighted bound L_K.
    """
    g = torch.Generator().manual_seed(2)
    n, k = 5, 7
    log_w = -90.0 + 3.0 * torch.randn(n, k, generator=g, dtype=torch.float64)
    want = torch.logsumexp(log_w, -1) - math.log(k)
    got = fn(log_w.clone())
    if isinstance(got, torch.Tensor) and tuple(got.shape) == (k,):
        raise ExerciseError(f"log-mean-exp: you reduced over the wrong dimension: log_w has shape (n, K) = ({n}, {k}) "
                            "with the K draws in the columns; reduce over dim=-1 to get shape (n,)")
    mistakes = {
        "that is the mean of the log-weights — the ELBO (L_1 averaged) — not the log of the mean weight":
            log_w.mean(-1),
        "you forgot the 1/K: log mean = logsumexp - log K": torch.logsumexp(log_w, -1),
    }
    diagnose(got, want, what="log-mean-exp", mistakes=mistakes)
    # log-weights of an image are -(tens to hundreds of nats): exp(-800) underflows to 0 even in float64
    log_w = torch.tensor([[-800.0, -805.0, -1000.0], [-90.0, -91.0, -89.0]], dtype=torch.float64)
    got = fn(log_w.clone())
    expect(got is not None and bool(torch.isfinite(torch.as_tensor(got)).all()),
           "log-mean-exp: -inf for log-weights near -800 (an image the model fits poorly): exp underflows. "
           "Subtract the maximum first, m + log(mean(exp(log_w - m))), or use torch.logsumexp(log_w, dim=-1) - log(K)")
    diagnose(got, torch.logsumexp(log_w, -1) - math.log(3), what="log-mean-exp (log-weights near -800)")
    return passed("log-mean-exp: logsumexp(log_w) - log K, stable — the importance-weighted bound L_K")


# ====================================================================== log-mean-exp over chunks
def _lme(t: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(t, -1) - math.log(t.shape[-1])


def _chunk_mistakes(chunks: list[torch.Tensor]) -> dict:
    """{hint: what that mistake returns} for log-weights in chunks (n, c_i) of different sizes."""
    whole = torch.cat(chunks, dim=1)
    K, n_chunks = whole.shape[1], len(chunks)
    lmes = torch.stack([_lme(c) for c in chunks])            # (n_chunks, n)
    lses = torch.stack([torch.logsumexp(c, -1) for c in chunks])
    return {
        "you averaged the chunks' log-mean-exps: a mean of logs is not the log of a mean (that is the average of "
        "bounds L_c with c draws each, lower than L_K). Combine the chunks' sums of weights, then take the log once":
            lmes.mean(0),
        "you gave every chunk the same weight (log of the mean of the chunks' mean weights), but the chunks have "
        "different sizes: a chunk of c draws holds c weights. Add up sums of weights (log-sum-exp), divide by the "
        "total K once": torch.logsumexp(lmes, 0) - math.log(n_chunks),
        "you forgot the 1/K: log-mean-exp = log-sum-exp over all draws - log K": torch.logsumexp(whole, -1),
        "you divided by the number of chunks; K is the number of draws, the total of the chunk sizes":
            torch.logsumexp(whole, -1) - math.log(n_chunks),
        "you divided by the size of the last chunk only; K is the total of all the chunk sizes":
            torch.logsumexp(whole, -1) - math.log(chunks[-1].shape[1]),
        "you divided by the size of the first chunk only; K is the total of all the chunk sizes":
            torch.logsumexp(whole, -1) - math.log(chunks[0].shape[1]),
        "only the last chunk counts: you replaced the running value by each new chunk's instead of combining them":
            lmes[-1],
        "only the first chunk counts: the later chunks were not added in": lmes[0],
        "you kept the largest chunk's value (max), but log(a + b) is not max(log a, log b): use torch.logaddexp":
            lses.max(0).values - math.log(K),
        "you kept the best chunk's log-mean-exp (max): every chunk's weights add to the sum": lmes.max(0).values,
        "you added the chunks' log-sums (logs of sums multiply the sums): add the sums themselves, "
        "log(e^a + e^b) = torch.logaddexp(a, b)": lses.sum(0) - math.log(K),
        "you added the chunks' log-mean-exps: logs of different chunks do not add, their sums of weights do":
            lmes.sum(0),
        "that is the mean of the log-weights — the ELBO (L_1 averaged) — not the log of the mean weight":
            whole.mean(-1),
    }


def _call_chunks(fn, chunks, what: str):
    try:
        return call_student(fn, what, chunks)
    except ExerciseError as exc:
        text = str(exc)
        if "TypeError" in text and any(s in text for s in ("subscriptable", "len()", "has no len", "not reversible",
                                                             "object is not", "iterator")):
            raise ExerciseError(
                f"{what}: your function indexes the chunks or asks for their number ({text.split(': ', 2)[-1][:120]})."
                " `chunks` may be a generator (log_weight_chunks hands out one chunk at a time, so all K draws are "
                "never in memory): go through it once, `for chunk in chunks:`, and count the draws as you go") \
                from None
        raise


def check_log_mean_exp_chunks(fn) -> bool:
    """``fn(chunks) -> log((1/K) sum_j exp(a_j))`` over all columns of the chunks, per row: shape (n,).

    chunks: an iterable (list, iterator or generator) of tensors (n, c_i) with c_i >= 1 columns each, K = sum_i c_i;
    the chunks must be gone through once, one at a time. Reference: float64 log-sum-exp of all the columns side by
    side (``torch.cat``), minus log K.
    """
    what = "log_mean_exp_chunks"
    g = torch.Generator().manual_seed(3)
    n = 4
    # chunks of different sizes and levels: every wrong way of combining them gives a different number
    sizes, shifts = (2, 5, 1), (0.0, 4.0, -2.0)
    chunks = [-90.0 + s + 3.0 * torch.randn(n, c, generator=g, dtype=torch.float64) for c, s in zip(sizes, shifts,
                                                                                                    strict=True)]
    want = _lme(torch.cat(chunks, dim=1))
    got = _call_chunks(fn, [c.clone() for c in chunks], what)
    if isinstance(got, torch.Tensor) and got.ndim == 0:
        raise ExerciseError(f"{what}: you returned one number for all the images; return one value per row, "
                            f"shape ({n},): reduce over the draws (dim=-1) only")
    if isinstance(got, torch.Tensor) and tuple(got.shape) in {(len(sizes), n), (n, len(sizes))}:
        raise ExerciseError(f"{what}: you returned one value per chunk, shape {tuple(got.shape)}; combine the chunks "
                            f"into one value per row, shape ({n},)")
    diagnose(got, want, what=f"{what} (chunks of {', '.join(map(str, sizes))} draws)",
             mistakes=_chunk_mistakes(chunks), rtol=1e-9, atol=1e-9)
    # one chunk: the plain log-mean-exp (after the chunks of different sizes, where every mistake has its own value)
    one = [-90.0 + 3.0 * torch.randn(n, 6, generator=g, dtype=torch.float64)]
    got = _call_chunks(fn, [c.clone() for c in one], what)
    diagnose(got, _lme(one[0]), what=f"{what} (one chunk of 6 draws)", mistakes=_chunk_mistakes(one))
    # handed out one at a time, as log_weight_chunks does: no len(), no indexing
    got = _call_chunks(fn, iter([c.clone() for c in chunks]), what)
    diagnose(got, want, what=f"{what} (the same chunks from an iterator)", rtol=1e-9, atol=1e-9)
    # an image the model fits poorly: log-weights near -800, and a later chunk far above the first one
    stiff = [torch.tensor([[-900.0, -905.0], [-800.0, -801.0]], dtype=torch.float64),
             torch.tensor([[-100.0, -103.0, -101.0], [-799.0, -802.0, -800.5]], dtype=torch.float64),
             torch.tensor([[-850.0], [-1000.0]], dtype=torch.float64)]
    got = _call_chunks(fn, [c.clone() for c in stiff], what)
    if got is not None:
        t = torch.as_tensor(got.detach() if isinstance(got, torch.Tensor) else got, dtype=torch.float64)
        if bool(torch.isneginf(t).any()):
            raise ExerciseError(f"{what}: -inf for log-weights near -800 (an image the model fits poorly): exp "
                                "underflows to 0. Never exponentiate a log-weight directly: combine log-sums with "
                                "torch.logsumexp per chunk and torch.logaddexp between chunks")
        if not bool(torch.isfinite(t).all()):
            raise ExerciseError(f"{what}: inf or NaN when a later chunk's log-weights (-100) lie far above the first "
                                "chunk's (-900): shifting every chunk by the first chunk's maximum makes exp(800) "
                                "overflow. Let the shift grow with the running maximum — or use torch.logsumexp per "
                                "chunk and torch.logaddexp to combine")
    diagnose(got, _lme(torch.cat(stiff, dim=1)), what=f"{what} (log-weights near -800)",
             mistakes=_chunk_mistakes(stiff), rtol=1e-9, atol=1e-9)
    return passed(f"{what}: log-sum-exp of each chunk, combined with logaddexp, minus log K — the importance-weighted "
                  "bound without holding all K draws")
