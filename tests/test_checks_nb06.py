"""The checks of notebook 06: the reference solutions pass, and each typical mistake is named in words.

Each wrong solution below is a plausible student's function with exactly one mistake; the check must raise
``ExerciseError`` whose message contains the diagnosis we expect for it.
"""

from __future__ import annotations

import math

import pytest
import torch
from _global_rng import assert_leaves_global_generators_alone

from course_lib.checks import ExerciseError
from course_lib.checks.nb06 import check_ancestral_step, check_ddim_step, check_eps_loss


def _raises(check, fn, hint):
    with pytest.raises(ExerciseError) as info:
        check(fn)
    assert hint in str(info.value), str(info.value)


# ---------------------------------------------------------------------------------------------- eps loss
def eps_loss_ok(model, x0, t, noise, schedule):
    ab = schedule.alpha_bars[t][:, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    return (model(x_t, t) - noise).pow(2).sum(-1).mean()


def _eps_loss(*, coef="bar", sqrt=True, sign=1.0, target="eps", inp="xt", reduce="batch", detach=False):
    def fn(model, x0, t, noise, schedule):
        a = {"bar": schedule.alpha_bars[t], "alpha": schedule.alphas[t], "prev": schedule.alpha_bars[t - 1]}[coef]
        a = a[:, None]
        x_t = (a.sqrt() * x0 + sign * (1 - a).sqrt() * noise) if sqrt else (a * x0 + (1 - a) * noise)
        err = (model(x_t if inp == "xt" else x0, t) - (noise if target == "eps" else x0)).pow(2)
        out = {"batch": err.sum(-1).mean(), "coords": err.mean(), "sum": err.sum(), "none": err.sum(-1)}[reduce]
        return out.detach() if detach else out
    return fn


EPS_LOSS_MISTAKES = {
    "alpha_t (schedule.alphas[t]) where alpha_bar_t": _eps_loss(coef="alpha"),
    "you forgot the square roots": _eps_loss(sqrt=False),
    "sign error": _eps_loss(sign=-1.0),
    "alpha_bar_{t-1}": _eps_loss(coef="prev"),
    "you regressed x^0": _eps_loss(target="x0"),
    "clean x^0": _eps_loss(inp="x0"),
    "averaged over the coordinates": _eps_loss(reduce="coords"),
    "summed over the batch": _eps_loss(reduce="sum"),
    "one loss per example": _eps_loss(reduce="none"),
    "carries no gradient": _eps_loss(detach=True),
}


def test_eps_loss_passes_a_correct_solution(capsys):
    assert check_eps_loss(eps_loss_ok) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("hint", list(EPS_LOSS_MISTAKES))
def test_eps_loss_names_each_mistake(hint):
    _raises(check_eps_loss, EPS_LOSS_MISTAKES[hint], hint)


def test_eps_loss_explains_a_broadcasting_error():
    def no_reshape(model, x0, t, noise, schedule):
        ab = schedule.alpha_bars[t]  # shape (n,) times (n, d): fails to broadcast
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        return (model(x_t, t) - noise).pow(2).sum(-1).mean()
    _raises(check_eps_loss, no_reshape, "reshape it to (n, 1)")


def test_checks_explain_unfinished_and_uncalled_functions():
    def todo(*args):
        raise NotImplementedError
    _raises(check_eps_loss, todo, "not implemented yet")
    _raises(check_eps_loss, lambda *a: None, "did you forget `return`")
    _raises(check_ancestral_step, torch.zeros(2), "pass your function itself")


# ---------------------------------------------------------------------------------------------- ancestral step
def ancestral_ok(x_t, eps_hat, t, schedule, xi):
    ab = schedule.alpha_bars[t]
    x0_hat = (x_t - torch.sqrt(1 - ab) * eps_hat) / torch.sqrt(ab)
    a, b, c = schedule.posterior_coefficients(t)
    return a * x0_hat + b * x_t + torch.sqrt(c) * xi


def ancestral_written_out(x_t, eps_hat, t, schedule, xi):
    al, ab, ab_prev = schedule.alphas[t], schedule.alpha_bars[t], schedule.alpha_bars[t - 1]
    x0_hat = (x_t - math.sqrt(1 - ab) * eps_hat) / math.sqrt(ab)
    a = math.sqrt(ab_prev) * (1 - al) / (1 - ab)
    b = math.sqrt(al) * (1 - ab_prev) / (1 - ab)
    c = (1 - ab_prev) * (1 - al) / (1 - ab)
    return a * x0_hat + b * x_t + math.sqrt(c) * xi


def _ancestral(*, noise="sqrt_c", x0="ok", swap=False, last_noise=False):
    def fn(x_t, eps_hat, t, schedule, xi):
        ab, al = schedule.alpha_bars[t], schedule.alphas[t]
        if x0 == "alpha":
            x0_hat = (x_t - (1 - al).sqrt() * eps_hat) / al.sqrt()
        elif x0 == "sign":
            x0_hat = (x_t + (1 - ab).sqrt() * eps_hat) / ab.sqrt()
        elif x0 == "eps":
            x0_hat = eps_hat
        else:
            x0_hat = (x_t - (1 - ab).sqrt() * eps_hat) / ab.sqrt()
        a, b, c = schedule.posterior_coefficients(t)
        if swap:
            a, b = b, a
        sd = {"sqrt_c": c.sqrt(), "c": c, "none": 0.0, "beta": schedule.betas[t].sqrt()}[noise]
        if last_noise and t == 1:
            sd = 0.01
        return a * x0_hat + b * x_t + sd * xi
    return fn


ANCESTRAL_MISTAKES = {
    "forgot the noise term sqrt(c_t) xi": _ancestral(noise="none"),
    "you added c_t xi": _ancestral(noise="c"),
    "beta_t as the variance": _ancestral(noise="beta"),
    "alpha_t (schedule.alphas[t]) where alpha_bar_t belongs in x0_hat": _ancestral(x0="alpha"),
    "sign error in x0_hat": _ancestral(x0="sign"),
    "plugged eps_hat where x0_hat belongs": _ancestral(x0="eps"),
    "swapped a_t and b_t": _ancestral(swap=True),
    "added noise at the last step": _ancestral(last_noise=True),
}


@pytest.mark.parametrize("fn", [ancestral_ok, ancestral_written_out])
def test_ancestral_step_passes_correct_solutions(fn, capsys):
    assert check_ancestral_step(fn) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("hint", list(ANCESTRAL_MISTAKES))
def test_ancestral_step_names_each_mistake(hint):
    _raises(check_ancestral_step, ANCESTRAL_MISTAKES[hint], hint)


def test_ancestral_step_with_beta_noise_at_t_1_is_called_noise_at_the_last_step():
    # DDPM's sigma_t^2 = beta_t adds noise at t = 1 too: at t = 150 the check names beta_t, at t = 1 the last step
    def beta_only_at_end(x_t, eps_hat, t, schedule, xi):
        out = ancestral_ok(x_t, eps_hat, t, schedule, xi)
        return out + (schedule.betas[1].sqrt() * xi if t == 1 else 0.0)
    _raises(check_ancestral_step, beta_only_at_end, "added noise at the last step")


# ---------------------------------------------------------------------------------------------- DDIM step
def ddim_ok(x_t, x0_hat, t, s, schedule, eta, xi):
    ab_t, ab_s = schedule.alpha_bars[t], schedule.alpha_bars[s]
    sigma2 = eta**2 * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
    eps_hat = (x_t - ab_t.sqrt() * x0_hat) / (1 - ab_t).sqrt()
    return ab_s.sqrt() * x0_hat + (1 - ab_s - sigma2).sqrt() * eps_hat + sigma2.sqrt() * xi


def _ddim(*, noise=True, eta_power=2, subtract=True, sd=True, bar=True, sign=1.0, return_x0=False):
    def fn(x_t, x0_hat, t, s, schedule, eta, xi):
        A = schedule.alpha_bars if bar else schedule.alphas
        ab_t, ab_s = A[t], A[s]
        sigma2 = eta**eta_power * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
        eps_hat = (x_t - sign * ab_t.sqrt() * x0_hat) / (1 - ab_t).sqrt()
        if return_x0:
            return x0_hat
        direction = (1 - ab_s - (sigma2 if subtract else 0.0)).clamp(min=0).sqrt()
        out = ab_s.sqrt() * x0_hat + direction * eps_hat
        if noise:
            out = out + (sigma2.sqrt() if sd else sigma2) * xi
        return out
    return fn


DDIM_MISTAKES = {
    "forgot the noise term sigma xi": _ddim(noise=False),
    "you used eta where eta^2 belongs": _ddim(eta_power=1),
    "you forgot to subtract sigma^2": _ddim(subtract=False),
    "you added sigma^2 xi": _ddim(sd=False),
    "alpha_t and alpha_s (schedule.alphas)": _ddim(bar=False),
    "sign error in eps_hat": _ddim(sign=-1.0),
    "you returned x0_hat": _ddim(return_x0=True),
}


def test_ddim_step_passes_a_correct_solution(capsys):
    assert check_ddim_step(ddim_ok) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("hint", list(DDIM_MISTAKES))
def test_ddim_step_names_each_mistake(hint):
    _raises(check_ddim_step, DDIM_MISTAKES[hint], hint)


def test_the_accepted_steps_are_the_library_samplers():
    """The solutions the checks accept, iterated, are course_lib's samplers (an independent cross-check)."""
    from course_lib import NoiseSchedule, named_mixture
    from course_lib.diffusion import ExactDenoiser
    from course_lib.samplers import ancestral_sample, ddim_sample, timesteps

    s = NoiseSchedule.cosine(40)
    mix = named_mixture("trimodal_1d")
    den = ExactDenoiser(mix, s, "eps")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 1, generator=g, dtype=torch.float64)
    for t in range(s.T, 0, -1):
        xi = torch.randn(6, 1, generator=g, dtype=torch.float64) if t > 1 else torch.zeros(6, 1, dtype=torch.float64)
        x = ancestral_ok(x, den(x, torch.full((6,), t)), t, s, xi)
    torch.testing.assert_close(x, ancestral_sample(den, s, 6, generator=torch.Generator().manual_seed(3)))

    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 1, generator=g, dtype=torch.float64)
    ts = timesteps(s.T, 8).tolist()
    for t, u in zip(ts[:-1], ts[1:], strict=True):
        xi = torch.randn(6, 1, generator=g, dtype=torch.float64) if u > 0 else torch.zeros(6, 1, dtype=torch.float64)
        x = ddim_ok(x, mix.posterior_mean(x, s.alpha_bars[t]), t, u, s, 0.3, xi)
    torch.testing.assert_close(x, ddim_sample(den, s, 6, steps=8, eta=0.3, generator=torch.Generator().manual_seed(4)))


# ---------------------------------------------------------------------------------------------- the student's RNG
@pytest.mark.parametrize("check, fn", [(check_eps_loss, eps_loss_ok), (check_ancestral_step, ancestral_ok),
                                       (check_ddim_step, ddim_ok)], ids=["eps_loss", "ancestral_step", "ddim_step"])
def test_checks_leave_the_global_generators_alone(check, fn):
    """A check draws from generators of its own: the student's global generators continue where they were."""
    assert_leaves_global_generators_alone(lambda: check(fn))


def test_a_check_gives_the_same_verdict_twice():
    """The checks' cases come from fixed local seeds: the same wrong function gets the same message every time."""
    messages = []
    for _ in range(2):
        with pytest.raises(ExerciseError) as info:
            check_ddim_step(DDIM_MISTAKES["you used eta where eta^2 belongs"])
        messages.append(str(info.value))
    assert messages[0] == messages[1]
