"""The checks of notebook 05: each passes a correct solution and names each known mistake in words.

The wrong solutions below are written the way a student would write them (one typo each), not taken
from the check's own table, so a test fails if a check's diagnosis does not match the mistake it names.
"""

from __future__ import annotations

import pytest
import torch
from _global_rng import assert_leaves_global_generators_alone

from course_lib.checks import ExerciseError
from course_lib.checks.nb05 import check_kl_step, check_mean_prev, check_tweedie_x0, check_x0_from_eps


# ---------------------------------------------------------------------------------------------- x0_from_eps
def x0_from_eps_ok(x_t, eps, schedule, t):
    ab = schedule.alpha_bars[t]
    return (x_t - torch.sqrt(1 - ab) * eps) / torch.sqrt(ab)


X0_FROM_EPS_MISTAKES = {
    "dropped the division by sqrt(alpha_bar_t)":
        lambda x_t, eps, s, t: x_t - torch.sqrt(1 - s.alpha_bars[t]) * eps,
    "sign error on the noise term": lambda x_t, eps, s, t: (x_t + torch.sqrt(1 - s.alpha_bars[t]) * eps)
    / torch.sqrt(s.alpha_bars[t]),
    "used alpha_t": lambda x_t, eps, s, t: (x_t - torch.sqrt(1 - s.alphas[t]) * eps) / torch.sqrt(s.alphas[t]),
    "forgot the square root on 1 - alpha_bar_t": lambda x_t, eps, s, t: (x_t - (1 - s.alpha_bars[t]) * eps)
    / torch.sqrt(s.alpha_bars[t]),
    "forgot the square root on alpha_bar_t in the division":
        lambda x_t, eps, s, t: (x_t - torch.sqrt(1 - s.alpha_bars[t]) * eps) / s.alpha_bars[t],
    "multiplied by sqrt(alpha_bar_t) instead of dividing":
        lambda x_t, eps, s, t: (x_t - torch.sqrt(1 - s.alpha_bars[t]) * eps) * torch.sqrt(s.alpha_bars[t]),
}


def test_x0_from_eps_passes_a_correct_solution(capsys):
    assert check_x0_from_eps(x0_from_eps_ok) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("hint", list(X0_FROM_EPS_MISTAKES))
def test_x0_from_eps_names_each_mistake(hint):
    with pytest.raises(ExerciseError, match=hint.replace("(", r"\(").replace(")", r"\)")):
        check_x0_from_eps(X0_FROM_EPS_MISTAKES[hint])


# ---------------------------------------------------------------------------------------------- tweedie_x0
def tweedie_ok(x_t, score, schedule, t):
    ab = schedule.alpha_bars[t]
    return (x_t + (1 - ab) * score) / ab.sqrt()


TWEEDIE_MISTAKES = {
    "ERRATA 1": lambda x_t, sc, s, t: x_t + (1 - s.alpha_bars[t]) * sc,
    "sign error on the score term": lambda x_t, sc, s, t: (x_t - (1 - s.alpha_bars[t]) * sc) / s.alpha_bars[t].sqrt(),
    "used alpha_t": lambda x_t, sc, s, t: (x_t + (1 - s.alphas[t]) * sc) / s.alphas[t].sqrt(),
    "used sqrt(1 - alpha_bar_t) where the variance": lambda x_t, sc, s, t: (x_t + (1 - s.alpha_bars[t]).sqrt() * sc)
    / s.alpha_bars[t].sqrt(),
    "divided by alpha_bar_t instead of sqrt":
        lambda x_t, sc, s, t: (x_t + (1 - s.alpha_bars[t]) * sc) / s.alpha_bars[t],
}


def test_tweedie_passes_a_correct_solution():
    assert check_tweedie_x0(tweedie_ok) is True


@pytest.mark.parametrize("hint", list(TWEEDIE_MISTAKES))
def test_tweedie_names_each_mistake(hint):
    with pytest.raises(ExerciseError, match=hint.replace("(", r"\(").replace(")", r"\)")):
        check_tweedie_x0(TWEEDIE_MISTAKES[hint])


# ---------------------------------------------------------------------------------------------- mean_prev
def _coefs(s, t):
    ab, ab_prev, alpha = s.alpha_bars[t], s.alpha_bars[t - 1], s.alphas[t]
    return ab, ab_prev, alpha


def mean_prev_ok(x_t, x0_hat, schedule, t):
    ab, ab_prev, alpha = _coefs(schedule, t)
    a = ab_prev.sqrt() * (1 - alpha) / (1 - ab)
    b = alpha.sqrt() * (1 - ab_prev) / (1 - ab)
    return a * x0_hat + b * x_t


def _mean_prev_wrong(kind):
    def fn(x_t, x0_hat, s, t):
        ab, ab_prev, alpha = _coefs(s, t)
        if kind == "off by one":
            ab_prev = ab
        if kind == "alpha_bar for alpha":
            alpha = ab
        a = ab_prev.sqrt() * (1 - alpha) / (1 - ab)
        b = alpha.sqrt() * (1 - ab_prev) / (1 - ab)
        if kind == "no sqrt in a":
            a = ab_prev * (1 - alpha) / (1 - ab)
        if kind in ("no sqrt in b", "no sqrt at all"):
            b = alpha * (1 - ab_prev) / (1 - ab)
        if kind == "no sqrt at all":
            a = ab_prev * (1 - alpha) / (1 - ab)
        if kind == "swapped":
            a, b = b, a
        if kind == "no b term":
            b = 0.0
        return a * x0_hat + b * x_t
    return fn


MEAN_PREV_MISTAKES = {
    "swapped": "swapped a_t and b_t",
    "off by one": "off by one step",
    "alpha_bar for alpha": "used alpha_bar where alpha_t belongs",
    "no sqrt in a": r"forgot the square root in a_t",
    "no sqrt in b": r"forgot the square root in b_t",
    "no b term": "dropped the b_t x\\^t term",
    "no sqrt at all": "forgot a square root: a_t has",
}


def test_mean_prev_passes_a_correct_solution():
    assert check_mean_prev(mean_prev_ok) is True


@pytest.mark.parametrize("kind", list(MEAN_PREV_MISTAKES))
def test_mean_prev_names_each_mistake(kind):
    with pytest.raises(ExerciseError, match=MEAN_PREV_MISTAKES[kind]):
        check_mean_prev(_mean_prev_wrong(kind))


# ---------------------------------------------------------------------------------------------- kl_step
def kl_step_ok(x0, x_t, mean, schedule, t):
    a, b, c = schedule.posterior_coefficients(t)
    return ((a * x0 + b * x_t - mean) ** 2).sum(dim=-1) / (2 * c)


def _kl_wrong(kind):
    def fn(x0, x_t, mean, s, t):
        a, b, c = s.posterior_coefficients(t)
        diff = a * x0 + b * x_t - mean
        if kind == "no half":
            return (diff**2).sum(-1) / c
        if kind == "sd":
            return (diff**2).sum(-1) / (2 * c.sqrt())
        if kind == "beta":
            return (diff**2).sum(-1) / (2 * s.betas[t])
        if kind == "no square":
            return diff.abs().sum(-1) / (2 * c)
        if kind == "norm":
            return diff.norm(dim=-1) / (2 * c)
        if kind == "no sum":
            return diff**2 / (2 * c)
        if kind == "notebook 01":  # KL(N(mu_q, c_t) || N(0, 1)), per coordinate, summed
            mu_q = a * x0 + b * x_t
            return 0.5 * (mu_q**2 + c - 1 - torch.log(c)).sum(-1)
        if kind == "unit variance":  # the general formula with the model's variance set to 1
            return 0.5 * (c / 1.0 + diff**2 / 1.0 - 1 + torch.log(1.0 / c)).sum(-1)
        raise AssertionError(kind)
    return fn


KL_MISTAKES = {
    "no half": "forgot the 1/2",
    "sd": "divided by the standard deviation",
    "beta": "used beta_t",
    "no square": "forgot to square",
    "norm": "took the norm, not the squared norm",
    "no sum": "sum the squares over the coordinates",
    "notebook 01": "notebook 01's KL against N\\(0, I\\)",
    "unit variance": "variance 1 instead of c_t",
}


def test_kl_step_passes_a_correct_solution():
    assert check_kl_step(kl_step_ok) is True


def test_kl_step_passes_the_general_gaussian_kl_with_equal_variances():
    """A student who writes the whole KL of notebook 01's kind, with both variances c_t, is right."""
    def general(x0, x_t, mean, s, t):
        a, b, c = s.posterior_coefficients(t)
        mu_q = a * x0 + b * x_t
        return 0.5 * (c / c + (mu_q - mean) ** 2 / c - 1 + torch.log(c / c)).sum(-1)

    assert check_kl_step(general) is True


@pytest.mark.parametrize("kind", list(KL_MISTAKES))
def test_kl_step_names_each_mistake(kind):
    with pytest.raises(ExerciseError, match=KL_MISTAKES[kind]):
        check_kl_step(_kl_wrong(kind))


# ---------------------------------------------------------------------------------------------- generic failures
@pytest.mark.parametrize("check", [check_x0_from_eps, check_tweedie_x0, check_mean_prev])
def test_common_failures_are_explained(check):
    with pytest.raises(ExerciseError, match="forget `return`"):
        check(lambda *args: None)
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(lambda *args: (_ for _ in ()).throw(NotImplementedError()))
    with pytest.raises(ExerciseError, match="wrong shape"):
        check(lambda x, *args: x[:, :1])
    with pytest.raises(ExerciseError, match="largest difference"):
        check(lambda x, *args: x + 0.5)
    with pytest.raises(ExerciseError, match="pass your function itself"):
        check(torch.zeros(3))
    with pytest.raises(ExerciseError, match="raised IndexError"):
        check(lambda x, *args: x[100])


def test_a_float32_solution_passes():
    # float32 rounding (about 1e-7 relative) is not a mistake
    def x0_from_eps_f32(x_t, eps, s, t):
        ab = s.alpha_bars[t].float()
        return (x_t.float() - (1 - ab).sqrt() * eps.float()) / ab.sqrt()

    def kl_step_f32(x0, x_t, mean, s, t):
        a, b, c = (v.float() for v in s.posterior_coefficients(t))
        return ((a * x0.float() + b * x_t.float() - mean.float()) ** 2).sum(-1) / (2 * c)

    assert check_x0_from_eps(x0_from_eps_f32) and check_kl_step(kl_step_f32)


# ---------------------------------------------------------------------------------------------- global generators
@pytest.mark.parametrize("check, fn", [(check_x0_from_eps, x0_from_eps_ok), (check_tweedie_x0, tweedie_ok),
                                       (check_mean_prev, mean_prev_ok), (check_kl_step, kl_step_ok)])
def test_checks_leave_the_global_generators_alone(check, fn):
    """A check draws from generators of its own: the student's global generators continue where they were."""
    assert_leaves_global_generators_alone(lambda: check(fn))
