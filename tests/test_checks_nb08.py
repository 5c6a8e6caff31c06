"""The checks of notebook 08: each passes a correct solution and names each known mistake in words.

The wrong solutions are written the way a student would write them (one slip each), not taken from the
check's own table, so a test fails if a diagnosis does not match the mistake it names.
"""

from __future__ import annotations

import contextlib
import re

import pytest
import torch
from torch.nn import functional as F

from course_lib.checks import ExerciseError
from course_lib.checks.nb08 import check_cfg_eps, check_guided_eps, check_log_prob_grad


def _raises(check, fn, hint):
    with pytest.raises(ExerciseError, match=re.escape(hint)):
        check(fn)


# ---------------------------------------------------------------------------------------------- log_prob_grad
def grad_ok(classifier, x_t, t, y):
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        logp = torch.log_softmax(classifier(x, t), dim=-1)
        chosen = logp[torch.arange(x.shape[0]), y]
        (grad,) = torch.autograd.grad(chosen.sum(), x)
    return grad


def grad_ok_gather(classifier, x_t, t, y):  # another correct way: gather, and a float32 classifier input
    with torch.enable_grad():
        x = x_t.detach().float().requires_grad_(True)
        logp = F.log_softmax(classifier(x.double(), t), dim=1).gather(1, y[:, None]).squeeze(1)
        return torch.autograd.grad(logp.sum(), x)[0]


def _grad(objective, *, enable=True, detach=False):
    """A solution with one slip: the objective differentiated, the input detached, or no enable_grad."""
    def fn(classifier, x_t, t, y):
        with torch.enable_grad() if enable else contextlib.nullcontext():
            x = x_t.detach() if detach else x_t.detach().requires_grad_(True)
            return torch.autograd.grad(objective(classifier(x, t), y, x.shape[0]), x)[0]
    return fn


def _rows(n):
    return torch.arange(n)


GRAD_MISTAKES = {
    "softmax": _grad(lambda lg, y, n: torch.softmax(lg, -1)[_rows(n), y].sum()),
    "raw logit of y": _grad(lambda lg, y, n: lg[_rows(n), y].sum()),
    "summed the log-probabilities of all classes": _grad(lambda lg, y, n: torch.log_softmax(lg, -1).sum()),
    "n x n table": _grad(lambda lg, y, n: torch.log_softmax(lg, -1)[:, y].sum()),
    "sign error": _grad(lambda lg, y, n: F.cross_entropy(lg, y, reduction="sum")),
    "averaged over the batch (.mean()": _grad(lambda lg, y, n: torch.log_softmax(lg, -1)[_rows(n), y].mean()),
    "with F.cross_entropy (its default reduction is the mean)": _grad(lambda lg, y, n: F.cross_entropy(lg, y)),
    "must require gradients": _grad(lambda lg, y, n: torch.log_softmax(lg, -1)[_rows(n), y].sum(), detach=True),
    "torch.enable_grad()": _grad(lambda lg, y, n: torch.log_softmax(lg, -1)[_rows(n), y].sum(), enable=False),
}


def test_log_prob_grad_passes_correct_solutions(capsys):
    assert check_log_prob_grad(grad_ok) is True
    assert check_log_prob_grad(grad_ok_gather) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("hint", list(GRAD_MISTAKES))
def test_log_prob_grad_names_each_mistake(hint):
    _raises(check_log_prob_grad, GRAD_MISTAKES[hint], hint)


def test_log_prob_grad_explains_returning_the_tuple_or_the_log_probability():
    def tuple_back(classifier, x_t, t, y):
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            return torch.autograd.grad(torch.log_softmax(classifier(x, t), -1)[torch.arange(len(y)), y].sum(), x)

    def log_prob_back(classifier, x_t, t, y):
        return torch.log_softmax(classifier(x_t, t), -1)[torch.arange(len(y)), y].detach()

    _raises(check_log_prob_grad, tuple_back, "[0]")
    _raises(check_log_prob_grad, log_prob_back, "that is log p(y | x^t) itself")


def test_an_unfinished_exercise_says_so():
    def todo(*args):
        raise NotImplementedError

    _raises(check_log_prob_grad, todo, "not implemented yet")
    _raises(check_cfg_eps, lambda c, u, w: None, "forget `return`")


# ---------------------------------------------------------------------------------------------- cfg_eps
def cfg_ok(eps_cond, eps_uncond, w):
    return (1 + w) * eps_cond - w * eps_uncond


CFG_MISTAKES = {
    "swapped the two predictions": lambda c, u, w: (1 + w) * u - w * c,
    "you used w like gamma": lambda c, u, w: u + w * (c - u),
    "the 1 + is missing": lambda c, u, w: w * c - w * u,
    "needs the weight 1 + w, not 1": lambda c, u, w: c - w * u,
    "sign error": lambda c, u, w: (1 + w) * c + w * u,
    "interpolation": lambda c, u, w: (1 - w) * c + w * u,
    "forgot the unconditional prediction": lambda c, u, w: (1 + w) * c,
}


def test_cfg_eps_passes_a_correct_solution_in_float32_too(capsys):
    assert check_cfg_eps(cfg_ok) is True
    assert check_cfg_eps(lambda c, u, w: c.float() + w * (c.float() - u.float())) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("hint", list(CFG_MISTAKES))
def test_cfg_eps_names_each_mistake(hint):
    _raises(check_cfg_eps, CFG_MISTAKES[hint], hint)


def test_cfg_eps_is_plain_conditioning_at_w_zero():
    def uncond_at_zero(c, u, w):  # right for w > 0, wrong at w = 0
        return u if w == 0 else cfg_ok(c, u, w)

    _raises(check_cfg_eps, uncond_at_zero, "plain conditioning")


# ---------------------------------------------------------------------------------------------- guided_eps
def guided_ok(eps_hat, grad_log_p_y, t, schedule, gamma):
    alpha_bar = schedule.alpha_bars[t].view(-1, 1, 1, 1)
    return eps_hat - gamma * torch.sqrt(1 - alpha_bar) * grad_log_p_y


def _guided(e, g, t, s, gamma, *, ab=None, form=None):
    ab = s.alpha_bars[t].view(-1, 1, 1, 1) if ab is None else ab
    sd = torch.sqrt(1 - ab)
    if form == "sign":
        return e + gamma * sd * g
    if form == "nosqrt":
        return e - gamma * (1 - ab) * g
    if form == "nogamma":
        return e - sd * g
    if form == "divide":
        return e - gamma * g / sd
    if form == "sqrt_ab":
        return e - gamma * torch.sqrt(ab) * g
    if form == "gamma_both":
        return gamma * (e - sd * g)
    if form == "score":
        return -e / sd + gamma * g
    return e - gamma * sd * g


GUIDED_MISTAKES = {
    "broadcasts along the image width": lambda e, g, t, s, gm: _guided(e, g, t, s, gm, ab=s.alpha_bars[t]),
    "broadcasts along the image height": lambda e, g, t, s, gm: _guided(e, g, t, s, gm, ab=s.alpha_bars[t][:, None]),
    "one step t[0] for every image": lambda e, g, t, s, gm: _guided(e, g, t, s, gm, ab=s.alpha_bars[t[0]]),
    "used alpha_t": lambda e, g, t, s, gm: _guided(e, g, t, s, gm, ab=s.alphas[t].view(-1, 1, 1, 1)),
    "sign error": lambda e, g, t, s, gm: _guided(e, g, t, s, gm, form="sign"),
    "forgot the square root": lambda e, g, t, s, gm: _guided(e, g, t, s, gm, form="nosqrt"),
    "forgot gamma": lambda e, g, t, s, gm: _guided(e, g, t, s, gm, form="nogamma"),
    "divided by sqrt(1 - alpha_bar_t)": lambda e, g, t, s, gm: _guided(e, g, t, s, gm, form="divide"),
    "you used sqrt(alpha_bar_t)": lambda e, g, t, s, gm: _guided(e, g, t, s, gm, form="sqrt_ab"),
    "gamma multiplies the classifier's term only": lambda e, g, t, s, gm: _guided(e, g, t, s, gm, form="gamma_both"),
    "returned the guided score": lambda e, g, t, s, gm: _guided(e, g, t, s, gm, form="score"),
}


def test_guided_eps_passes_a_correct_solution_in_float32_too(capsys):
    assert check_guided_eps(guided_ok) is True
    assert check_guided_eps(lambda e, g, t, s, gm: guided_ok(e.float(), g.float(), t, s, gm).float()) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("hint", list(GUIDED_MISTAKES))
def test_guided_eps_names_each_mistake(hint):
    _raises(check_guided_eps, GUIDED_MISTAKES[hint], hint)


def test_guided_eps_explains_a_broadcasting_error():
    def unsqueezed_once(eps_hat, grad, t, schedule, gamma):
        ab = schedule.alpha_bars[t][:, None]  # (n, 1): breaks for n = 5 images
        return eps_hat - gamma * torch.sqrt(1 - ab) * grad

    _raises(check_guided_eps, unsqueezed_once, "(n, 1, 1, 1)")


def test_guided_eps_is_the_library_guidance():
    """The formula the check accepts is what ``ClassifierGuidance`` does with a denoiser and a classifier."""
    from course_lib.guidance import ClassifierGuidance, classifier_log_prob_grad
    from course_lib.schedules import NoiseSchedule

    s = NoiseSchedule.cosine(500)

    def denoiser(x, t):  # any smooth function of (x, t) will do
        return 0.9 * torch.tanh(x) + 1e-3 * t.to(x.dtype).view(-1, 1, 1, 1)

    def classifier(x, t):  # logits (n, 10) from a fixed linear map of the image
        w = torch.linspace(-1, 1, 784 * 10, dtype=x.dtype).reshape(784, 10)
        return x.reshape(x.shape[0], -1) @ w * (1 + t.to(x.dtype)[:, None] / 500)

    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([3, 100, 250, 499])
    y = torch.tensor([1, 7, 3, 0])
    want = ClassifierGuidance(denoiser, classifier, s, y, gamma=2.5)(x, t)
    got = guided_ok(denoiser(x, t), classifier_log_prob_grad(classifier, x, t, y)[1], t, s, 2.5)
    assert torch.allclose(got, want, atol=1e-12)
