"""The notebook-04 checks pass a correct solution and name each known mistake (course_lib.checks.nb04).

Every wrong implementation below is one a student is likely to write; the check must fail on it with a
message that names that mistake (matched on a phrase), never with the generic "not yet right".
The correct solutions are written from the formulas, independently of NoiseSchedule's own code.
"""

from __future__ import annotations

import math

import pytest
import torch
from _global_rng import assert_leaves_global_generators_alone

from course_lib.checks import ExerciseError
from course_lib.checks.nb04 import check_alpha_bar_from_betas, check_posterior_coefficients, check_q_sample


# ====================================================================== alpha_bar from betas
def ab_correct(betas):
    out = [1.0]
    for b in betas.tolist():
        out.append(out[-1] * (1.0 - b))
    return torch.tensor(out, dtype=torch.float64)


AB_MISTAKES = {
    "no leading one": (lambda b: torch.cumprod(1 - b, 0), "alpha_bar_0 must be 1"),
    "leading zero": (lambda b: torch.cat([torch.zeros(1, dtype=b.dtype), torch.cumprod(1 - b, 0)]),
                     "alpha_bar_0 must be 1"),
    "alpha_t": (lambda b: torch.cat([torch.ones(1, dtype=b.dtype), 1 - b]), "used alpha_t instead of alpha_bar_t"),
    "product of betas": (lambda b: torch.cat([torch.ones(1, dtype=b.dtype), torch.cumprod(b, 0)]),
                         "multiplied the betas"),
    "shifted product": (lambda b: torch.cat([torch.ones(2, dtype=b.dtype), torch.cumprod(1 - b, 0)[:-1]]),
                        "includes alpha_t itself"),
    "first order": (lambda b: torch.cat([torch.ones(1, dtype=b.dtype), 1 - torch.cumsum(b, 0)]), "first-order"),
    "cumsum": (lambda b: torch.cat([torch.ones(1, dtype=b.dtype), torch.cumsum(1 - b, 0)]), "summed the alphas"),
    "no return": (lambda b: None, "forget `return`"),
}


def test_alpha_bar_check_passes_a_correct_solution(capsys):
    assert check_alpha_bar_from_betas(ab_correct) is True
    assert "✓" in capsys.readouterr().out
    # a numpy or float32 answer is fine too
    assert check_alpha_bar_from_betas(lambda b: ab_correct(b).numpy())


@pytest.mark.parametrize("name", list(AB_MISTAKES))
def test_alpha_bar_check_names_the_mistake(name):
    fn, phrase = AB_MISTAKES[name]
    with pytest.raises(ExerciseError, match=phrase):
        check_alpha_bar_from_betas(fn)


def test_alpha_bar_check_reports_an_unknown_mistake_generically():
    with pytest.raises(ExerciseError, match="largest difference"):
        check_alpha_bar_from_betas(lambda b: ab_correct(b) * torch.linspace(1, 0.9, b.shape[0] + 1, dtype=b.dtype))


# ====================================================================== q_sample
def q_correct(x0, t, schedule, eps):
    ab = math.prod(1.0 - b for b in schedule.betas[1 : t + 1].tolist())
    return math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps


def _q(signal, noise, index=lambda t: t, table="alpha_bars"):
    def fn(x0, t, schedule, eps):
        v = getattr(schedule, table)[index(t)]
        return signal(v) * x0 + noise(v) * eps
    return fn


Q_MISTAKES = {
    "alpha_t": (_q(torch.sqrt, lambda v: (1 - v).sqrt(), table="alphas"), "used alpha_t instead of alpha_bar_t"),
    "no sqrt signal": (_q(lambda v: v, lambda v: (1 - v).sqrt()), "forgot the square root on alpha_bar"),
    "variance as scale": (_q(torch.sqrt, lambda v: 1 - v),
                          "used 1 - alpha_bar instead of its square root for the noise scale"),
    "no sqrt at all": (_q(lambda v: v, lambda v: 1 - v), "forgot both square roots"),
    "swapped": (_q(lambda v: (1 - v).sqrt(), torch.sqrt), "swapped the coefficients"),
    "beta_t noise": (lambda x0, t, s, eps: s.alpha_bars[t].sqrt() * x0 + s.betas[t].sqrt() * eps, "one step's noise"),
    "no shrink": (lambda x0, t, s, eps: x0 + (1 - s.alpha_bars[t]).sqrt() * eps, "forgot to shrink x0"),
    # alpha_bars[t - 1] at t = 0 wraps round to alpha_bar_T in Python: caught at the first t tried anyway
    "t - 1": (_q(torch.sqrt, lambda v: (1 - v).sqrt(), index=lambda t: t - 1), r"alpha_bar_\{t-1\}"),
    "t + 1": (_q(torch.sqrt, lambda v: (1 - v).sqrt(), index=lambda t: t + 1), r"alpha_bar_\{t\+1\}"),
    "fresh noise": (lambda x0, t, s, eps: q_correct(x0, t, s, torch.randn_like(x0)), "drawing new noise"),
    "no return": (lambda x0, t, s, eps: None, "forget `return`"),
    "wrong shape": (lambda x0, t, s, eps: q_correct(x0, t, s, eps).reshape(x0.shape[0], -1)[:, 0], "wrong shape"),
}


def test_q_sample_check_passes_a_correct_solution(capsys):
    assert check_q_sample(q_correct) is True
    assert "✓" in capsys.readouterr().out
    # the library's own q_sample, wrapped to the exercise's signature, passes too
    assert check_q_sample(lambda x0, t, s, eps: s.q_sample(x0, t, noise=eps))


@pytest.mark.parametrize("name", list(Q_MISTAKES))
def test_q_sample_check_names_the_mistake(name):
    fn, phrase = Q_MISTAKES[name]
    with pytest.raises(ExerciseError, match=phrase):
        check_q_sample(fn)


def test_q_sample_check_explains_an_index_error():
    def fn(x0, t, schedule, eps):
        ab = schedule.alpha_bars.tolist()[t + 1]  # a list raises IndexError at t = T
        return math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    with pytest.raises(ExerciseError, match=r"alpha_bar_\{t\+1\}|IndexError"):
        check_q_sample(fn)


# ====================================================================== a_t, b_t, c_t
def coef_correct(schedule, t):
    """Complete the square: precision 1/c = alpha_t / (1 - alpha_t) + 1 / (1 - alpha_bar_{t-1})."""
    alpha = 1.0 - schedule.betas[t].item()
    ab_prev = math.prod(1.0 - b for b in schedule.betas[1:t].tolist())
    if ab_prev == 1.0:
        return 1.0, 0.0, 0.0
    c = 1.0 / (alpha / (1 - alpha) + 1 / (1 - ab_prev))
    return c * math.sqrt(ab_prev) / (1 - ab_prev), c * math.sqrt(alpha) / (1 - alpha), c


def _coef(a=None, b=None, c=None):
    """The correct triple with one or more entries replaced by fn(alpha_t, alpha_bar_{t-1}, alpha_bar_t, correct)."""
    def fn(s, t):
        at, ab1, ab = s.alphas[t].item(), s.alpha_bars[t - 1].item(), s.alpha_bars[t].item()
        ok = coef_correct(s, t)
        return tuple(ok[i] if f is None else f(at, ab1, ab, ok) for i, f in enumerate((a, b, c)))
    return fn


COEF_MISTAKES = {
    "swapped": (_coef(a=lambda at, ab1, ab, ok: ok[1], b=lambda at, ab1, ab, ok: ok[0]), "swapped a_t and b_t"),
    "alpha_bar_t for alpha_bar_{t-1}": (
        _coef(a=lambda at, ab1, ab, ok: math.sqrt(ab) * (1 - at) / (1 - ab),
              b=lambda at, ab1, ab, ok: math.sqrt(at), c=lambda at, ab1, ab, ok: 1 - at),
        "used alpha_bar_t where alpha_bar_"),
    "a: no sqrt": (_coef(a=lambda at, ab1, ab, ok: ab1 * (1 - at) / (1 - ab)), "square root on alpha_bar_"),
    "a: wrong factor": (_coef(a=lambda at, ab1, ab, ok: math.sqrt(ab1) * (1 - ab1) / (1 - ab)),
                        r"a_t needs \(1 - alpha_t\)"),
    "b: no sqrt": (_coef(b=lambda at, ab1, ab, ok: at * (1 - ab1) / (1 - ab)), "square root on alpha_t in b_t"),
    "b: wrong factor": (_coef(b=lambda at, ab1, ab, ok: math.sqrt(at) * (1 - at) / (1 - ab)),
                        r"b_t needs \(1 - alpha_bar_"),
    "c = beta": (_coef(c=lambda at, ab1, ab, ok: 1 - at), "c_t is not beta_t"),
    "c = sd": (_coef(c=lambda at, ab1, ab, ok: math.sqrt(ok[2])), "standard deviation"),
    "c = prior variance": (_coef(c=lambda at, ab1, ab, ok: 1 - ab1), "given x\\^0 only"),
    "c = sum of variances": (_coef(c=lambda at, ab1, ab, ok: (1 - ab1) + (1 - at)), "precisions"),
    "off by one (index error)": (
        lambda s, t: (s.alpha_bars.tolist()[t + 1], 0.0, 0.0), "IndexError"),
    "two values": (lambda s, t: coef_correct(s, t)[:2], "three values"),
    "no return": (lambda s, t: None, "forget `return"),
}


def test_posterior_coefficients_check_passes_a_correct_solution(capsys):
    assert check_posterior_coefficients(coef_correct) is True
    assert "✓" in capsys.readouterr().out
    assert check_posterior_coefficients(lambda s, t: s.posterior_coefficients(t))


@pytest.mark.parametrize("name", list(COEF_MISTAKES))
def test_posterior_coefficients_check_names_the_mistake(name):
    fn, phrase = COEF_MISTAKES[name]
    with pytest.raises(ExerciseError, match=phrase):
        check_posterior_coefficients(fn)


def test_posterior_coefficients_check_catches_a_wrong_first_step():
    def fn(s, t):
        return (0.5, 0.5, 0.0) if t == 1 else coef_correct(s, t)
    with pytest.raises(ExerciseError, match="a_1 = 1, b_1 = 0, c_1 = 0"):
        check_posterior_coefficients(fn)


# ====================================================================== global generators
@pytest.mark.parametrize("check, fn", [(check_alpha_bar_from_betas, ab_correct), (check_q_sample, q_correct),
                                       (check_posterior_coefficients, coef_correct)])
def test_checks_leave_the_global_generators_alone(check, fn):
    """A check draws from generators of its own: the student's global generators continue where they were."""
    assert_leaves_global_generators_alone(lambda: check(fn))
