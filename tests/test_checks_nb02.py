"""The checks of notebook 02 pass correct code and name each known mistake in words."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.checks import ExerciseError
from course_lib.checks.nb02 import check_negative_elbo, check_reparameterize
from course_lib.vae import gaussian_kl_diag, reparameterize

LOG_2PI = math.log(2 * math.pi)


# ====================================================================== reparameterisation
def test_reparameterize_passes_correct_code(capsys):
    assert check_reparameterize(lambda mu, ls: mu + torch.exp(ls) * torch.randn_like(mu))
    assert check_reparameterize(reparameterize)  # the library's own
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("fn, words", [
    (lambda mu, ls: torch.normal(mu, torch.exp(ls)), "without the reparameterisation"),
    (lambda mu, ls: torch.distributions.Normal(mu, torch.exp(ls)).sample(), "without the reparameterisation"),
    (lambda mu, ls: (mu + torch.exp(ls) * torch.randn_like(mu)).detach(), "without the reparameterisation"),
    (lambda mu, ls: mu + ls * torch.randn_like(mu), "multiplied eps by log_sigma"),
    (lambda mu, ls: mu + torch.exp(2 * ls) * torch.randn_like(mu), "variance"),
    (lambda mu, ls: mu + torch.exp(ls / 2) * torch.randn_like(mu), "log-variance"),
    (lambda mu, ls: mu + torch.exp(ls.detach()) * torch.randn_like(mu), "no gradient reaches log_sigma"),
    (lambda mu, ls: mu + torch.exp(ls) * torch.randn(mu.shape[-1], dtype=mu.dtype), "same eps"),
    (lambda mu, ls: mu + torch.exp(ls) * torch.rand_like(mu), "torch.rand"),
    (lambda mu, ls: mu.clone(), "forgot the noise"),
    (lambda mu, ls: (mu + torch.exp(ls) * torch.randn_like(mu)).T, "shape"),
    (lambda mu, ls: None, "return"),
])
def test_reparameterize_names_each_mistake(fn, words):
    with pytest.raises(ExerciseError, match=words):
        check_reparameterize(fn)


# ====================================================================== the beta-VAE loss
def correct_loss(x, x_mean, x_log_sigma, mu, log_sigma, beta):
    log_lik = -(0.5 * LOG_2PI + x_log_sigma + 0.5 * ((x - x_mean) / torch.exp(x_log_sigma)) ** 2).sum(-1)
    return -log_lik + beta * gaussian_kl_diag(mu, log_sigma)


def _log_lik(x, m, ls):
    return torch.distributions.Normal(m, torch.exp(ls)).log_prob(x).sum(-1)


def _kl(mu, ls):
    return 0.5 * (mu**2 + torch.exp(2 * ls) - 1 - 2 * ls)


def test_negative_elbo_passes_correct_code():
    assert check_negative_elbo(correct_loss)
    # an independent formulation through torch.distributions
    def with_distributions(x, m, xls, mu, ls, beta):
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, torch.exp(ls)),
                                               torch.distributions.Normal(0.0, 1.0))
        return -_log_lik(x, m, xls) + beta * kl.sum(-1)
    assert check_negative_elbo(with_distributions)


@pytest.mark.parametrize("fn, words", [
    (lambda x, m, xls, mu, ls, b: -_log_lik(x, m, xls) + b * _kl(mu, ls).sum(), "summed the KL over the batch"),
    (lambda x, m, xls, mu, ls, b: -b * _log_lik(x, m, xls) + _kl(mu, ls).sum(-1), "beta multiplies the wrong term"),
    (lambda x, m, xls, mu, ls, b: _log_lik(x, m, xls) - b * _kl(mu, ls).sum(-1), "sign"),
    (lambda x, m, xls, mu, ls, b: (-_log_lik(x, m, xls) + b * _kl(mu, ls).sum(-1)).mean(), "one number for the whole"),
    (lambda x, m, xls, mu, ls, b: -_log_lik(x, m, xls) + 2 * b * _kl(mu, ls).sum(-1), "1/2"),
    (lambda x, m, xls, mu, ls, b: -_log_lik(x, m, xls) + _kl(mu, ls).sum(-1), "forgot beta"),
    (lambda x, m, xls, mu, ls, b: -_log_lik(x, m, xls) + b * 0.5 * (mu**2 + ls.exp() - 1 - ls).sum(-1), "log-variance"),
    (lambda x, m, xls, mu, ls, b: (0.5 * ((x - m) / xls.exp()) ** 2).sum(-1) + b * _kl(mu, ls).sum(-1),
     "normalising constant"),
    (lambda x, m, xls, mu, ls, b: -_log_lik(x, m, xls) + b * _kl(mu, ls).mean(-1), "averaged the KL"),
    (lambda x, m, xls, mu, ls, b: -_log_lik(x, m, xls) / 2 + b * _kl(mu, ls).sum(-1), "averaged the log-likelihood"),
])
def test_negative_elbo_names_each_mistake(fn, words):
    with pytest.raises(ExerciseError, match=words):
        check_negative_elbo(fn)


def test_negative_elbo_unknown_mistake_gets_a_generic_message():
    with pytest.raises(ExerciseError, match="largest difference"):
        check_negative_elbo(lambda x, m, xls, mu, ls, b: correct_loss(x, m, xls, mu, ls, b) + 0.123)


def test_the_check_leaves_the_students_generator_alone():
    """The check seeds its own draws; the notebook's next torch.randn is what it would have been without it."""
    torch.manual_seed(123)
    want = torch.randn(3)
    torch.manual_seed(123)
    check_reparameterize(lambda mu, ls: mu + torch.exp(ls) * torch.randn_like(mu))
    assert torch.equal(torch.randn(3), want)


# ====================================================================== the checks leave the student's RNG alone
@pytest.mark.parametrize("check, fn", [
    (check_reparameterize, lambda mu, ls: mu + torch.exp(ls) * torch.randn_like(mu)),
    (check_negative_elbo, lambda x, xm, xls, mu, ls, beta:
        (0.5 * math.log(2 * math.pi) + xls + 0.5 * ((x - xm) / torch.exp(xls)) ** 2).sum(-1)
        + beta * gaussian_kl_diag(mu, ls)),
])
def test_checks_do_not_touch_the_global_generator(check, fn):
    """The reparameterisation check draws through the student's function from a seeded, forked generator: the
    student's own stream continues where it was."""
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    assert check(fn)
    assert torch.equal(torch.random.get_rng_state(), state)
