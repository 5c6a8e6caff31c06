"""The checks of notebook 03 pass correct code and name each known mistake in words."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.checks import ExerciseError
from course_lib.checks.nb03 import (
    REFERENCES,
    check_bernoulli_log_likelihood,
    check_log_mean_exp,
    check_log_mean_exp_chunks,
)
from course_lib.vae import log_mean_exp, log_mean_exp_chunks


# ====================================================================== Bernoulli log-likelihood
@pytest.mark.parametrize("fn", [
    lambda x, l: -F.binary_cross_entropy_with_logits(l, x, reduction="none").sum(-1),
    lambda x, l: (x * l - F.softplus(l)).sum(-1),
    lambda x, l: torch.distributions.Bernoulli(logits=l).log_prob(x).sum(-1),
])
def test_bernoulli_passes_correct_code(fn):
    assert check_bernoulli_log_likelihood(fn)


@pytest.mark.parametrize("fn, words", [
    (lambda x, l: (x * torch.log(l) + (1 - x) * torch.log(1 - l)).sum(-1), "probabilities where logits belong"),
    (lambda x, l: -F.binary_cross_entropy(l, x, reduction="none").sum(-1), "probabilities where logits belong"),
    (lambda x, l: torch.distributions.Bernoulli(probs=l).log_prob(x).sum(-1), "probabilities where logits belong"),
    (lambda x, l: -F.binary_cross_entropy_with_logits(torch.sigmoid(l), x, reduction="none").sum(-1), "twice"),
    (lambda x, l: F.binary_cross_entropy_with_logits(l, x, reduction="none").sum(-1), "NEGATIVE"),
    (lambda x, l: -F.binary_cross_entropy_with_logits(l, x, reduction="none").mean(-1), "averaged over the pixels"),
    (lambda x, l: -F.binary_cross_entropy_with_logits(l, x, reduction="sum"), "whole batch"),
    (lambda x, l: -F.binary_cross_entropy_with_logits(l, 1 - x, reduction="none").sum(-1), "swapped"),
    (lambda x, l: (x * torch.log(torch.sigmoid(l)) + (1 - x) * torch.log(1 - torch.sigmoid(l))).sum(-1),
     "confident decoder"),
])
def test_bernoulli_names_each_mistake(fn, words):
    with pytest.raises(ExerciseError, match=words):
        check_bernoulli_log_likelihood(fn)


# ====================================================================== log-mean-exp
def test_log_mean_exp_passes_correct_code():
    assert check_log_mean_exp(lambda lw: torch.logsumexp(lw, -1) - math.log(lw.shape[-1]))
    assert check_log_mean_exp(log_mean_exp)

    def by_hand(lw):
        m = lw.max(-1, keepdim=True).values
        return m.squeeze(-1) + torch.log(torch.exp(lw - m).mean(-1))
    assert check_log_mean_exp(by_hand)


@pytest.mark.parametrize("fn, words", [
    (lambda lw: lw.mean(-1), "mean of the log-weights"),
    (lambda lw: torch.logsumexp(lw, -1), "1/K"),
    (lambda lw: torch.logsumexp(lw, 0) - math.log(lw.shape[0]), "wrong dimension"),
    (lambda lw: torch.log(torch.exp(lw).mean(-1)), "underflow"),
])
def test_log_mean_exp_names_each_mistake(fn, words):
    with pytest.raises(ExerciseError, match=words):
        check_log_mean_exp(fn)


# ====================================================================== log-mean-exp over chunks
def _running(chunks):
    """The master's solution: a running log-sum-exp and a count."""
    total, count = None, 0
    for chunk in chunks:
        lse = torch.logsumexp(chunk, dim=-1)
        total = lse if total is None else torch.logaddexp(total, lse)
        count += chunk.shape[-1]
    return total - math.log(count)


def _running_max(chunks):
    """By hand: a running maximum and a sum of exp(a - max), rescaled when the maximum grows."""
    m = s = None
    count = 0
    for chunk in chunks:
        cm = chunk.max(-1).values
        new = cm if m is None else torch.maximum(m, cm)
        part = torch.exp(chunk - new.unsqueeze(-1)).sum(-1)
        s = part if s is None else s * torch.exp(m - new) + part
        m, count = new, count + chunk.shape[-1]
    return m + torch.log(s) - math.log(count)


def _concatenated(chunks):
    chunks = list(chunks)
    return torch.logsumexp(torch.cat(chunks, dim=1), -1) - math.log(sum(c.shape[1] for c in chunks))


@pytest.mark.parametrize("fn", [_running, _running_max, _concatenated, log_mean_exp_chunks])
def test_log_mean_exp_chunks_passes_correct_code(fn):
    assert check_log_mean_exp_chunks(fn)


def _per_chunk(chunks):
    return [torch.logsumexp(c, -1) - math.log(c.shape[1]) for c in chunks]


def _first_max_shift(chunks):
    """Shifts every chunk by the first chunk's maximum: overflows when a later chunk lies far above."""
    m, s, count = None, 0.0, 0
    for chunk in chunks:
        if m is None:
            m = chunk.max(-1).values
        s = s + torch.exp(chunk - m.unsqueeze(-1)).sum(-1)
        count += chunk.shape[1]
    return m + torch.log(s) - math.log(count)


def _last_only(chunks):
    out = None
    for c in chunks:
        out = torch.logsumexp(c, -1) - math.log(c.shape[1])
    return out


def _count_chunks(chunks):
    total, n = None, 0
    for c in chunks:
        lse = torch.logsumexp(c, -1)
        total = lse if total is None else torch.logaddexp(total, lse)
        n += 1
    return total - math.log(n)


@pytest.mark.parametrize("fn, words", [
    (lambda ch: torch.stack(_per_chunk(ch)).mean(0), "averaged the chunks' log-mean-exps"),
    (lambda ch: torch.logsumexp(torch.stack(_per_chunk(ch)), 0) - math.log(len(ch)), "same weight"),
    (lambda ch: torch.logsumexp(torch.cat(list(ch), 1), -1), "1/K"),
    (_count_chunks, "number of chunks"),
    (_last_only, "only the last chunk"),
    (lambda ch: torch.stack([torch.logsumexp(c, -1) for c in ch]).sum(0) - math.log(sum(c.shape[1] for c in ch)),
     "logaddexp"),
    (lambda ch: torch.stack([torch.logsumexp(c, -1) for c in ch]).max(0).values
     - math.log(sum(c.shape[1] for c in ch)), "max"),
    (lambda ch: torch.cat(list(ch), 1).mean(-1), "mean of the log-weights"),
    (lambda ch: torch.stack(_per_chunk(ch)), "one value per chunk"),
    (lambda ch: torch.logsumexp(torch.cat(list(ch), 1), -1).sum() - math.log(sum(c.shape[1] for c in ch)),
     "one number for all the images"),
    (lambda ch: torch.logsumexp(torch.cat([ch[i] for i in range(len(ch))], 1), -1)
     - math.log(sum(c.shape[1] for c in ch)), "generator"),
    (lambda ch: (lambda ch: torch.log(torch.cat([torch.exp(c) for c in ch], 1).mean(-1)))(list(ch)), "underflows"),
    (_first_max_shift, "overflow"),
])
def test_log_mean_exp_chunks_names_each_mistake(fn, words):
    with pytest.raises(ExerciseError, match=words):
        check_log_mean_exp_chunks(fn)


# ====================================================================== the checks leave the student's RNG alone
@pytest.mark.parametrize("check, fn", [
    (check_bernoulli_log_likelihood, lambda x, l: (x * l - F.softplus(l)).sum(-1)),
    (check_log_mean_exp, log_mean_exp),
    (check_log_mean_exp_chunks, _running),
])
def test_checks_do_not_touch_the_global_generator(check, fn):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    check(fn)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_references_name_the_librarys_answers():
    assert set(REFERENCES) == {"bernoulli_log_likelihood", "log_mean_exp", "log_mean_exp_chunks"}
    # the library's answers pass their own checks
    assert check_log_mean_exp(log_mean_exp) and check_log_mean_exp_chunks(log_mean_exp_chunks)
