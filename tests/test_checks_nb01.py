"""The checks of notebook 01 pass correct code (several formulations) and name each known mistake in words."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib.checks import ExerciseError
from course_lib.checks.nb01 import check_elbo_estimate, check_kl_gaussian
from course_lib.vae import gaussian_kl_diag
from course_lib.widgets.elbo import reparameterised_elbo

LOG_2PI = math.log(2 * math.pi)
Normal = torch.distributions.Normal


# ====================================================================== the Gaussian KL
def kl_closed_form(mu, ls):
    return 0.5 * (mu**2 + torch.exp(2 * ls) - 1 - 2 * ls)


@pytest.mark.parametrize("fn", [
    kl_closed_form,
    lambda mu, ls: torch.distributions.kl_divergence(Normal(mu, torch.exp(ls)), Normal(0.0, 1.0)),
    lambda mu, ls: gaussian_kl_diag(mu.unsqueeze(-1), ls.unsqueeze(-1)),  # the library's, one coordinate
    lambda mu, ls: 0.5 * (mu**2 + torch.exp(ls) ** 2 - 1) - ls,
], ids=["closed-form", "torch.distributions", "library", "rearranged"])
def test_kl_passes_correct_code(fn, capsys):
    assert check_kl_gaussian(fn)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("fn, words", [
    (lambda mu, ls: mu**2 + torch.exp(2 * ls) - 1 - 2 * ls, "forgot the 1/2 in the KL"),
    (lambda mu, ls: 0.5 * (mu**2 + torch.exp(ls) - 1 - 2 * ls), "used sigma where sigma\\^2 belongs"),
    (lambda mu, ls: -kl_closed_form(mu, ls), "sign error: KL must be >= 0"),
    (lambda mu, ls: 0.5 * (mu**2 + torch.exp(2 * ls) - 1 + 2 * ls), "sign error"),
    (lambda mu, ls: 0.5 * (mu**2 + torch.exp(2 * ls) - 1 - ls), "log sigma where log sigma\\^2"),
    (lambda mu, ls: 0.5 * (mu**2 + torch.exp(2 * ls) - 2 * ls), "forgot the -1"),
    (lambda mu, ls: 0.5 * (mu + torch.exp(2 * ls) - 1 - 2 * ls), "mu where mu\\^2"),
    (lambda mu, ls: ls + (1 + mu**2) / (2 * torch.exp(2 * ls)) - 0.5, "other direction"),
    (lambda mu, ls: kl_closed_form(mu, ls).sum(), "summed or averaged over the entries"),
    (lambda mu, ls: kl_closed_form(mu, ls).mean(), "summed or averaged over the entries"),
    (lambda mu, ls: kl_closed_form(mu, ls).sum(-1), "wrong shape"),
    (lambda mu, ls: kl_closed_form(mu, ls) - 0.3, "sign error: KL must be >= 0"),  # negative, no known formula
    (lambda mu, ls: kl_closed_form(mu, ls) + 0.3, "not yet right"),
    (lambda mu, ls: torch.from_numpy(kl_closed_form(mu, ls).detach().numpy()), "no gradient"),
    (lambda mu, ls: None, "return"),
    (lambda mu, ls: mu + "one", "raised TypeError"),
])
def test_kl_names_each_mistake(fn, words):
    with pytest.raises(ExerciseError, match=words):
        check_kl_gaussian(fn)


# ====================================================================== the reparameterised ELBO estimator
def estimate_full(model, x, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    log_q = Normal(mu, torch.exp(log_sigma)).log_prob(z).sum(-1)
    return (model.decoder_log_prob(x.expand(len(z), -1), z) + model.log_prior(z) - log_q).mean()


def estimate_closed_kl(model, x, mu, log_sigma, eps):
    z = mu + torch.exp(log_sigma) * eps
    return model.decoder_log_prob(x.expand(len(z), -1), z).mean() - kl_closed_form(mu, log_sigma).sum()


def _parts(model, x, mu, ls, eps, scale=None):
    s = torch.exp(ls)
    z = mu + (s if scale is None else scale) * eps
    rec = model.decoder_log_prob(x.expand(len(z), -1), z)
    log_q = (-0.5 * LOG_2PI - ls - 0.5 * eps**2).sum(-1)
    return z, rec, model.log_prior(z), log_q


@pytest.mark.parametrize("fn", [
    estimate_full,
    estimate_closed_kl,
    lambda model, x, mu, ls, eps: reparameterised_elbo(model, x, mu, ls, eps)[0],  # the library's
    lambda model, x, mu, ls, eps: estimate_full(model, x, mu, ls, eps).reshape(1),  # shape (1,) is fine
], ids=["full-monte-carlo", "closed-form-kl", "library", "shape-1"])
def test_elbo_estimate_passes_correct_code(fn, capsys):
    assert check_elbo_estimate(fn)
    assert "✓" in capsys.readouterr().out


def _wrong(kind):
    def fn(model, x, mu, ls, eps):
        z, rec, prior, log_q = _parts(model, x, mu, ls, eps)
        if kind == "no_prior":
            return (rec - log_q).mean()
        if kind == "no_entropy":
            return (rec + prior).mean()
        if kind == "plus_log_q":
            return (rec + prior + log_q).mean()
        if kind == "loss":
            return -(rec + prior - log_q).mean()
        if kind == "variance":
            z, rec, prior, _ = _parts(model, x, mu, ls, eps, scale=torch.exp(2 * ls))
            return (rec + prior - log_q).mean()
        if kind == "log_sigma_as_sigma":
            z, rec, prior, _ = _parts(model, x, mu, ls, eps, scale=ls)
            return (rec + prior - log_q).mean()
        if kind == "no_normaliser":
            return (rec + prior - (log_q + ls.sum())).mean()
        if kind == "mean_over_k":
            return (rec + prior - (-0.5 * LOG_2PI - ls - 0.5 * eps**2).mean(-1)).mean()
        if kind == "kl_no_half":
            return rec.mean() - 2 * kl_closed_form(mu, ls).sum()
        if kind == "per_draw":
            return rec + prior - log_q
        if kind == "per_coordinate":
            return (rec[:, None] + prior[:, None] - (-0.5 * LOG_2PI - ls - 0.5 * eps**2)).mean(0)
        if kind == "detached":
            z = (mu + torch.exp(ls) * eps).detach()
            return (model.decoder_log_prob(x.expand(len(z), -1), z) + model.log_prior(z) - log_q).mean()
        if kind == "sample":
            z = Normal(mu, torch.exp(ls)).sample((len(eps),))
            return (model.decoder_log_prob(x.expand(len(z), -1), z) + model.log_prior(z)
                    - Normal(mu, torch.exp(ls)).log_prob(z).sum(-1)).mean()
        if kind == "fresh_noise":
            z = Normal(mu, torch.exp(ls)).rsample((len(eps),))
            return (model.decoder_log_prob(x.expand(len(z), -1), z) + model.log_prior(z)
                    - Normal(mu, torch.exp(ls)).log_prob(z).sum(-1)).mean()
        if kind == "sigma_detached":
            z = mu + torch.exp(ls.detach()) * eps
            return (model.decoder_log_prob(x.expand(len(z), -1), z) + model.log_prior(z)).mean() + 1.0
        if kind == "numpy":
            return float((rec + prior - log_q).mean())
        if kind == "none":
            return None
        raise AssertionError(kind)
    return fn


@pytest.mark.parametrize("kind, words", [
    ("no_prior", "left out log p\\(z\\)"),
    ("no_entropy", "left out - log q"),
    ("plus_log_q", "sign error"),
    ("loss", "sign error: you returned minus the ELBO"),
    ("variance", "sigma\\^2 where sigma belongs"),
    ("log_sigma_as_sigma", "multiplied eps by log_sigma"),
    ("no_normaliser", "missing - log sigma"),
    ("mean_over_k", "averaged the wrong dimension"),
    ("kl_no_half", "forgot the 1/2 in the KL"),
    ("per_draw", "averaged over the wrong dimension"),
    ("per_coordinate", "averaged over the wrong dimension"),
    ("detached", "without the reparameterisation, so no gradient reaches mu"),
    ("sample", "without the reparameterisation, so no gradient reaches mu"),
    ("fresh_noise", "drew new noise"),
    ("sigma_detached", "no gradient reaches log_sigma"),
    ("numpy", "expected a torch tensor"),
    ("none", "return"),
])
def test_elbo_estimate_names_each_mistake(kind, words):
    with pytest.raises(ExerciseError, match=words):
        check_elbo_estimate(_wrong(kind))


def test_every_known_elbo_mistake_is_distinguishable():
    """The mistakes must give different values on the check's inputs, else a hint could be the wrong one."""
    from course_lib.checks.nb01 import _elbo_case, _variants

    model, x, mu, ls = _elbo_case()
    eps = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    full, closed, mistakes = _variants(model, x, mu, ls, eps)
    values = np.array([float(full), float(closed)] + [float(v) for v in mistakes.values()])
    gaps = np.abs(values[:, None] - values[None, :]) + np.eye(len(values))
    assert gaps.min() > 1e-3, gaps.min()


# ====================================================================== the checks leave the student's RNG alone
def _elbo_with_fresh_noise(model, x, mu, log_sigma, eps):
    """Draws from the global generator (a wrong answer, but it must not move the student's generator)."""
    z = mu + torch.exp(log_sigma) * torch.randn_like(eps)
    return (model.decoder_log_prob(x.expand(len(z), -1), z) + model.log_prior(z)).mean()


@pytest.mark.parametrize("check, fn", [
    (check_kl_gaussian, lambda mu, ls: 0.5 * (mu**2 + torch.exp(2 * ls) - 1 - 2 * ls)),
    (check_elbo_estimate, lambda model, x, mu, ls, eps: reparameterised_elbo(model, x, mu, ls, eps)[0]),
    (check_elbo_estimate, _elbo_with_fresh_noise),
])
def test_checks_do_not_touch_the_global_generator(check, fn):
    """A check that seeds torch's global generator would change the student's next random numbers."""
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    try:
        check(fn)
    except ExerciseError:
        pass
    assert torch.equal(torch.random.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)
