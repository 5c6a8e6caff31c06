"""Checks for notebook 04 (forward noising): alpha_bar from betas, q_sample, and a_t, b_t, c_t.

Each ``check_*`` calls the student's function on cases the exact core (``NoiseSchedule``) knows, prints a
success line, or raises ``ExerciseError`` naming the likely mistake (see ``course_lib.checks.diagnose``).

The contracts (also stated in the notebook):

- ``alpha_bar_from_betas(betas) -> alpha_bars``: betas of shape (T,) for t = 1..T; returns shape (T + 1,)
  with alpha_bars[0] = 1 and alpha_bars[t] = (1 - beta_1) ... (1 - beta_t).
- ``q_sample(x0, t, schedule, eps) -> x_t``: x0 and eps of shape (n, ...), t an int in 0..T, ``schedule`` a
  NoiseSchedule; returns sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, of the shape of x0.
- ``posterior_coefficients(schedule, t) -> (a_t, b_t, c_t)``: t an int in 1..T; three numbers (or 0-d tensors).
"""

from __future__ import annotations

import torch

from ..schedules import NoiseSchedule
from . import ExerciseError, call_student, diagnose, expect, passed

__all__ = ["check_alpha_bar_from_betas", "check_posterior_coefficients", "check_q_sample"]

# The library"s own answers to these exercises: a submission that calls one is flagged in the grader"s CSV.
REFERENCES = {
    "alpha_bar_from_betas": ("course_lib.schedules.NoiseSchedule.__init__",),
    "q_sample": ("course_lib.schedules.NoiseSchedule.q_sample",),
    "posterior_coefficients": ("course_lib.schedules.NoiseSchedule.posterior_coefficients",),
}


def _call(fn, *args, what: str):
    """Call the student's function; turn an exception into a diagnosis that says where it happened."""
    return call_student(fn, what, *args, on_index_error="Off by one? alpha_bars has T + 1 entries, index t = 0..T, "
                        "and alpha_bar_t is alpha_bars[t]")


def _f64(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    return torch.as_tensor(x, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------- alpha_bar
def _alpha_bar_cases() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(40)
    return [
        torch.tensor([0.1, 0.2, 0.5], dtype=torch.float64),  # alpha_bar = 1, 0.9, 0.72, 0.36
        NoiseSchedule.linear(50).betas[1:],
        0.01 + 0.3 * torch.rand(7, generator=gen, dtype=torch.float64),
    ]


def check_alpha_bar_from_betas(fn) -> bool:
    """Check ``fn(betas) -> alpha_bars`` (shape (T + 1,), alpha_bars[0] = 1) on three sets of betas."""
    what = "alpha_bar_from_betas"
    for betas in _alpha_bar_cases():
        T = betas.shape[0]
        got = _call(fn, betas.clone(), what=what)
        expect(got is not None, f"{what}: your function returned None — did you forget `return`?")
        g = _f64(got)
        alphas = 1.0 - betas
        want = NoiseSchedule(betas).alpha_bars
        if g.shape == (T,):
            hint = ("off by one: alpha_bar_0 must be 1 — your array has T entries (alpha_bar_1..alpha_bar_T); "
                    "put a 1 in front (index t must hold alpha_bar_t, and x^0 is the clean data)")
            if torch.allclose(g, torch.cumprod(alphas, 0), rtol=1e-6, atol=1e-10):
                raise ExerciseError(f"{what}: not yet right — {hint}")
            raise ExerciseError(f"{what}: wrong shape: expected (T + 1,) = ({T + 1},) with alpha_bar_0 = 1 first, "
                                f"got ({T},)")
        if g.shape == (T + 1,) and bool(torch.isfinite(g).all()) and abs(float(g[0]) - 1.0) > 1e-9:
            raise ExerciseError(f"{what}: not yet right — off by one: alpha_bar_0 must be 1 (x^0 is the clean data, "
                                f"and alpha_bar_0 is an empty product), got {float(g[0]):.4g} at index 0")
        one = torch.ones(1, dtype=torch.float64)
        mistakes = {
            "used alpha_t instead of alpha_bar_t: alpha_bar_t is the product alpha_1 alpha_2 ... alpha_t "
            "(torch.cumprod), not the single alpha_t":
                torch.cat([one, alphas]),
            "multiplied the betas: alpha_bar_t is the product of the alphas, alpha_s = 1 - beta_s":
                torch.cat([one, torch.cumprod(betas, 0)]),
            "off by one: alpha_bar_t includes alpha_t itself (the product runs over s = 1..t, not s = 1..t-1)":
                torch.cat([one, one, torch.cumprod(alphas, 0)[:-1]]),
            "1 - (beta_1 + ... + beta_t) is only the first-order approximation of the product of (1 - beta_s)":
                torch.cat([one, 1 - torch.cumsum(betas, 0)]),
            "summed the alphas: alpha_bar_t is a product, use torch.cumprod rather than torch.cumsum":
                torch.cat([one, torch.cumsum(alphas, 0)]),
        }
        diagnose(g, want, what=what, mistakes=mistakes, rtol=1e-8, atol=1e-12)
    return passed(f"{what}: alpha_bar_0 = 1 and alpha_bar_t = alpha_1 ... alpha_t on {len(_alpha_bar_cases())} "
                  "schedules")


# ----------------------------------------------------------------------------------------------- q_sample
def _q_mistakes(x0, eps, s: NoiseSchedule, t: int) -> dict[str, torch.Tensor]:
    ab, a, beta = s.alpha_bars, s.alphas, s.betas
    abt, at = ab[t], a[t]
    m = {
        "used alpha_t instead of alpha_bar_t: one step of the chain uses alpha_t, but jumping from x^0 straight "
        "to x^t needs alpha_bar_t = alpha_1 ... alpha_t (schedule.alpha_bars[t])":
            at.sqrt() * x0 + (1 - at).sqrt() * eps,
        "forgot the square root on alpha_bar: the signal coefficient is sqrt(alpha_bar_t), not alpha_bar_t":
            abt * x0 + (1 - abt).sqrt() * eps,
        "used 1 - alpha_bar instead of its square root for the noise scale: 1 - alpha_bar_t is the variance, "
        "multiply eps by the standard deviation sqrt(1 - alpha_bar_t)":
            abt.sqrt() * x0 + (1 - abt) * eps,
        "forgot both square roots: alpha_bar_t and 1 - alpha_bar_t are the squared coefficients (variances)":
            abt * x0 + (1 - abt) * eps,
        "swapped the coefficients: x0 gets sqrt(alpha_bar_t) and the noise gets sqrt(1 - alpha_bar_t)":
            (1 - abt).sqrt() * x0 + abt.sqrt() * eps,
        "the noise scale sqrt(beta_t) is one step's noise; after t steps the accumulated noise has "
        "standard deviation sqrt(1 - alpha_bar_t)":
            abt.sqrt() * x0 + beta[t].sqrt() * eps,
        "forgot to shrink x0: x^t = sqrt(alpha_bar_t) x^0 + ..., so the signal fades while the noise grows "
        "(the total variance stays 1)":
            x0 + (1 - abt).sqrt() * eps,
    }
    if t >= 1:
        m["off by one: used alpha_bar_{t-1} (alpha_bars[t - 1]); alpha_bars[t] is alpha_bar_t"] = (
            ab[t - 1].sqrt() * x0 + (1 - ab[t - 1]).sqrt() * eps)
    if t < s.T:
        m["off by one: used alpha_bar_{t+1} (alpha_bars[t + 1]); alpha_bars[t] is alpha_bar_t"] = (
            ab[t + 1].sqrt() * x0 + (1 - ab[t + 1]).sqrt() * eps)
    return m


def check_q_sample(fn) -> bool:
    """Check ``fn(x0, t, schedule, eps) -> x_t`` = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps on several t."""
    what = "q_sample"
    gen = torch.Generator().manual_seed(41)
    s = NoiseSchedule.linear(100)
    cases = [(torch.randn(5, 2, generator=gen, dtype=torch.float64), t) for t in (37, 5, 80)]
    cases.append((torch.rand(3, 1, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1, 50))  # an image batch
    for x0, t in cases:
        eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        got = _call(fn, x0.clone(), t, s, eps.clone(), what=what)
        if got is not None and torch.is_tensor(got) and got.shape == x0.shape:
            again = _call(fn, x0.clone(), t, s, eps.clone(), what=what)
            expect(torch.equal(_f64(got), _f64(again)),
                   f"{what}: two calls with the same x0 and eps gave different x^t: use the eps passed in "
                   "rather than drawing new noise (torch.randn) inside the function")
        want = s.alpha_bars[t].sqrt() * x0 + (1 - s.alpha_bars[t]).sqrt() * eps
        diagnose(got, want, what=f"{what} at t = {t}, x0 of shape {tuple(x0.shape)}",
                 mistakes=_q_mistakes(x0, eps, s, t), rtol=1e-6, atol=1e-9)
    # the ends of the chain: no noise at t = 0, (almost) pure noise at t = T
    x0 = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    got = _call(fn, x0.clone(), 0, s, eps.clone(), what=what)
    diagnose(got, x0, what=f"{what} at t = 0 (alpha_bar_0 = 1, so x^0 must come back unchanged)",
             mistakes=_q_mistakes(x0, eps, s, 0), rtol=1e-6, atol=1e-9)
    got = _call(fn, x0.clone(), s.T, s, eps.clone(), what=what)
    want = s.alpha_bars[-1].sqrt() * x0 + (1 - s.alpha_bars[-1]).sqrt() * eps
    diagnose(got, want, what=f"{what} at t = T = {s.T}", mistakes=_q_mistakes(x0, eps, s, s.T), rtol=1e-6, atol=1e-9)
    return passed(f"{what}: x^t = sqrt(alpha_bar_t) x^0 + sqrt(1 - alpha_bar_t) eps at t = 0, 5, 37, 50, 80, "
                  f"{s.T}, for vectors and images")


# ----------------------------------------------------------------------------------------------- a_t, b_t, c_t
def _coef_mistakes(s: NoiseSchedule, ts: torch.Tensor):
    """What (a, b, c) each known mistake gives at the steps ``ts``: whole-triple mistakes and per-coefficient ones."""
    a_t, ab, ab1 = s.alphas[ts], s.alpha_bars[ts], s.alpha_bars[ts - 1]
    a, b, c = s.posterior_coefficients(ts)
    swapped = ("swapped a_t and b_t: a_t multiplies x^0 and carries sqrt(alpha_bar_{t-1}) (1 - alpha_t); b_t "
               "multiplies x^t and carries sqrt(alpha_t) (1 - alpha_bar_{t-1})")
    shifted = ("used alpha_bar_t where alpha_bar_{t-1} belongs: the prior of x^{t-1} given x^0 is "
               "N(sqrt(alpha_bar_{t-1}) x^0, (1 - alpha_bar_{t-1}) I), i.e. alpha_bars[t - 1]")
    whole = {
        swapped: (b, a, c),
        shifted: (ab.sqrt() * (1 - a_t) / (1 - ab), a_t.sqrt(), 1 - a_t),
    }
    per = (
        {  # a_t
            swapped: b,
            shifted: ab.sqrt() * (1 - a_t) / (1 - ab),
            "forgot the square root on alpha_bar_{t-1} in a_t": ab1 * (1 - a_t) / (1 - ab),
            "a_t needs (1 - alpha_t) / (1 - alpha_bar_t), not (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)":
                ab1.sqrt() * (1 - ab1) / (1 - ab),
        },
        {  # b_t
            swapped: a,
            "forgot the square root on alpha_t in b_t": a_t * (1 - ab1) / (1 - ab),
            shifted: a_t.sqrt(),
            "b_t needs (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), not (1 - alpha_t) / (1 - alpha_bar_t)":
                a_t.sqrt() * (1 - a_t) / (1 - ab),
        },
        {  # c_t
            "c_t is not beta_t = 1 - alpha_t: knowing x^0 shrinks the variance by the factor "
            "(1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)": 1 - a_t,
            "returned the standard deviation sqrt(c_t): c_t is the variance of x^{t-1} given x^0 and x^t": c.sqrt(),
            "used the variance 1 - alpha_bar_{t-1} of x^{t-1} given x^0 only: conditioning on x^t as well shrinks "
            "it by the factor (1 - alpha_t) / (1 - alpha_bar_t)": 1 - ab1,
            "c_t is a product over a ratio, (1 - alpha_bar_{t-1}) (1 - alpha_t) / (1 - alpha_bar_t): the precisions "
            "add, 1 / c_t = alpha_t / (1 - alpha_t) + 1 / (1 - alpha_bar_{t-1})": (1 - ab1) + (1 - a_t),
        },
    )
    return whole, per


def _triple(out, t: int, what: str) -> torch.Tensor:
    """The student's (a_t, b_t, c_t) as a float64 tensor of shape (3,), or a diagnosis of what came back."""
    expect(out is not None, f"{what}: your function returned None — did you forget `return a, b, c`?")
    try:
        parts = list(out)
    except TypeError:
        raise ExerciseError(f"{what}: expected three values (a_t, b_t, c_t), got {type(out).__name__}") from None
    expect(len(parts) == 3, f"{what}: expected three values (a_t, b_t, c_t), got {len(parts)}")
    vals = []
    for v, name in zip(parts, ("a_t", "b_t", "c_t"), strict=True):
        try:
            vt = _f64(v)
        except (TypeError, ValueError, RuntimeError):
            raise ExerciseError(f"{what}: {name} at t = {t} should be a number, got {type(v).__name__}") from None
        expect(vt.numel() == 1, f"{what}: {name} at t = {t} should be a single number, got shape {tuple(vt.shape)}")
        vals.append(vt.reshape(()))
    return torch.stack(vals)


def check_posterior_coefficients(fn) -> bool:
    """Check ``fn(schedule, t) -> (a_t, b_t, c_t)`` against ``NoiseSchedule.posterior_coefficients`` on several t."""
    what = "posterior_coefficients"
    for s in (NoiseSchedule.linear(100), NoiseSchedule.cosine(50)):
        ts = [2, 7, s.T // 2, s.T]
        got = torch.stack([_triple(_call(fn, s, t, what=what), t, what) for t in ts])  # (len(ts), 3)
        tt = torch.tensor(ts)
        want = torch.stack(s.posterior_coefficients(tt), dim=1)
        if torch.allclose(got, want, rtol=1e-6, atol=1e-10):
            continue
        whole, per = _coef_mistakes(s, tt)
        for hint, m in whole.items():
            if torch.allclose(got, torch.stack(m, dim=1), rtol=1e-6, atol=1e-10):
                raise ExerciseError(f"{what} ({s.name} schedule, t in {ts}): not yet right — {hint}")
        for j, name in enumerate(("a_t", "b_t", "c_t")):
            diagnose(got[:, j], want[:, j], what=f"{what}: {name} ({s.name} schedule, t in {ts})",
                     mistakes=per[j], rtol=1e-6, atol=1e-10)
    # t = 1: alpha_bar_0 = 1, so x^{t-1} = x^0 is known exactly
    s = NoiseSchedule.linear(100)
    got = _triple(_call(fn, s, 1, what=what), 1, what)
    diagnose(got, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
             what=f"{what} at t = 1 (alpha_bar_0 = 1: x^{{t-1}} = x^0 is known, so a_1 = 1, b_1 = 0, c_1 = 0)",
             rtol=1e-6, atol=1e-10)
    return passed(f"{what}: a_t, b_t, c_t match the Gaussian conditioning for the linear and cosine schedules, "
                  "and a_1 = 1, b_1 = 0, c_1 = 0")
