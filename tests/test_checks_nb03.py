"""The checks of notebook 03 pass correct code and name each known mistake in words."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.checks import ExerciseError
from course_lib.checks.nb03 import check_bernoulli_log_likelihood, check_kl_to_prior, check_log_mean_exp
from course_lib.vae import gaussian_kl_diag


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


# ====================================================================== KL to the prior
def test_kl_passes_correct_code():
    assert check_kl_to_prior(gaussian_kl_diag)
    assert check_kl_to_prior(lambda mu, ls: 0.5 * (mu**2 + torch.exp(2 * ls) - 1 - 2 * ls).sum(-1))


@pytest.mark.parametrize("fn, words", [
    (lambda mu, ls: 0.5 * (mu**2 + torch.exp(2 * ls) - 1 - 2 * ls).sum(), "summed the KL over the batch"),
    (lambda mu, ls: 0.5 * (mu**2 + torch.exp(2 * ls) - 1 - 2 * ls).sum().expand(mu.shape[0]), "summed the KL"),
    (lambda mu, ls: (mu**2 + torch.exp(2 * ls) - 1 - 2 * ls).sum(-1), "1/2"),
    (lambda mu, ls: 0.5 * (mu**2 + torch.exp(ls) - 1 - ls).sum(-1), "log-variance"),
    (lambda mu, ls: 0.5 * (mu**2 + torch.exp(2 * ls) - 1 - 2 * ls).mean(-1), "averaged"),
    (lambda mu, ls: 0.5 * (mu**2 + torch.exp(2 * ls) - 2 * ls).sum(-1), "must be 0"),
    (lambda mu, ls: 0.5 * (mu**2 + torch.exp(2 * ls) - 1 - ls).sum(-1), "-2 log sigma"),
    (lambda mu, ls: -0.5 * (mu**2 + torch.exp(2 * ls) - 1 - 2 * ls).sum(-1), "sign"),
])
def test_kl_names_each_mistake(fn, words):
    with pytest.raises(ExerciseError, match=words):
        check_kl_to_prior(fn)


# ====================================================================== log-mean-exp
def test_log_mean_exp_passes_correct_code():
    assert check_log_mean_exp(lambda lw: torch.logsumexp(lw, -1) - math.log(lw.shape[-1]))

    def by_hand(lw):
        m = lw.max(-1, keepdim=True).values
        return m.squeeze(-1) + torch.log(torch.exp(lw - m).mean(-1))
    assert check_log_mean_exp(by_hand)


@pytest.mark.parametrize("fn, words", [
    (lambda lw: lw.mean(-1), "mean of the log-weights"),
    (lambda lw: torch.logsumexp(lw, -1), "1/k"),
    (lambda lw: torch.logsumexp(lw, 0) - math.log(lw.shape[0]), "wrong dimension"),
    (lambda lw: torch.log(torch.exp(lw).mean(-1)), "underflow"),
])
def test_log_mean_exp_names_each_mistake(fn, words):
    with pytest.raises(ExerciseError, match=words):
        check_log_mean_exp(fn)
