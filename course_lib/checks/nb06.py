"""Checks for notebook 06 (training diffusion on toys): the exercises' functions against the exact answers.

Each ``check_...(fn)`` calls the student's function on a few cases (the notebook's cosine schedule, T = 1000),
prints one success line, or raises ``ExerciseError`` naming the likely mistake: alpha_t where alpha_bar_t
belongs, a missing square root, a sign error, a forgotten noise term sqrt(c_t) xi, noise added at the last
step, a loss averaged over the wrong axis, ...

The student functions:
- ``eps_loss(model, x0, t, noise, schedule)``        mean over the batch of |model(x^t, t) - eps|^2 (summed over
  coordinates), x^t = sqrt(alpha_bar_t) x^0 + sqrt(1 - alpha_bar_t) eps, one step per row (t of shape (n,))
- ``ancestral_step(x_t, eps_hat, t, schedule, xi)``   x^{t-1} = a_t x0_hat + b_t x^t + sqrt(c_t) xi, with x0_hat
  from eps_hat, for one integer step t
- ``ddim_step(x_t, x0_hat, t, s, schedule, eta, xi)`` x^s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps_hat
  + sigma xi, sigma^2 = eta^2 (1 - ab_s)/(1 - ab_t) (1 - ab_t/ab_s), eps_hat = (x^t - sqrt(ab_t) x0_hat)/sqrt(1 - ab_t)

The step checks also run the student's step as a whole sampler and compare it with ``course_lib.samplers``.
"""

from __future__ import annotations

from functools import partial

import torch

from ..densities import named_mixture
from ..diffusion import ExactDenoiser
from ..schedules import NoiseSchedule
from . import ExerciseError, call_student, diagnose, passed

__all__ = ["check_ancestral_step", "check_ddim_step", "check_eps_loss"]

# The library"s own answers to these exercises: a submission that calls one is flagged in the grader"s CSV.
REFERENCES = {
    "eps_loss": ("course_lib.denoisers.diffusion_loss",),
    "ancestral_step": ("course_lib.samplers.step_coefficients", "course_lib.samplers.sample"),
    "ddim_step": ("course_lib.samplers.step_coefficients", "course_lib.samplers.sample"),
}

_TOL = {"rtol": 1e-5, "atol": 1e-6}  # float32 rounding passes; every known mistake is off by far more


def _schedule() -> NoiseSchedule:
    return NoiseSchedule.cosine(1000)  # the notebook's schedule


_call = partial(
    call_student,
    on_broadcast_error="alpha_bar_t has one value per row, shape (n,): reshape it to (n, 1), e.g. "
    "schedule.alpha_bars[t][:, None], so it scales each row of x0")


def _randn(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- exercise 1
class _ProbeModel(torch.nn.Module):
    """A fixed, differentiable stand-in for a denoiser: f(x, t) = W x + u t / T (float64)."""

    target = "eps"

    def __init__(self, T: int):
        super().__init__()
        self.T = T
        self.W = torch.nn.Parameter(torch.tensor([[0.7, -0.2], [0.3, 0.5]], dtype=torch.float64))
        self.u = torch.nn.Parameter(torch.tensor([0.4, -0.6], dtype=torch.float64))

    def forward(self, x, t):
        return x @ self.W.T + self.u * (t.to(x.dtype)[:, None] / self.T)


def check_eps_loss(fn) -> bool:
    """Exercise: ``fn(model, x0, t, noise, schedule)`` -> mean_i |model(x^t_i, t_i) - eps_i|^2, a scalar tensor."""
    s = _schedule()
    model = _ProbeModel(s.T)
    n, d = 6, 2
    x0 = _randn((n, d), 1) * 1.3
    noise = _randn((n, d), 2)
    t = torch.tensor([150, 600, 150, 600, 40, 900])
    what = "eps_loss"

    def loss(xt_coef, eps_coef, *, inp=None, target=noise, reduce="batch", power=2):
        xt = xt_coef[:, None] * x0 + eps_coef[:, None] * noise
        err = (model(xt if inp is None else inp, t) - target).abs() ** power
        if reduce == "coords":
            return err.mean()
        if reduce == "sum":
            return err.sum()
        return err.sum(-1).mean()

    ab, al, ab_prev = s.alpha_bars[t], s.alphas[t], s.alpha_bars[t - 1]
    with torch.no_grad():
        want = loss(ab.sqrt(), (1 - ab).sqrt())
        mistakes = {
            "you used alpha_t (schedule.alphas[t]) where alpha_bar_t (schedule.alpha_bars[t]) belongs":
                loss(al.sqrt(), (1 - al).sqrt()),
            "you forgot the square roots: x^t = sqrt(alpha_bar_t) x^0 + sqrt(1 - alpha_bar_t) eps": loss(ab, 1 - ab),
            "you forgot the square root on 1 - alpha_bar_t (the noise's standard deviation, not its variance)":
                loss(ab.sqrt(), 1 - ab),
            "you forgot the square root on alpha_bar_t": loss(ab, (1 - ab).sqrt()),
            "sign error: x^t = sqrt(alpha_bar_t) x^0 + sqrt(1 - alpha_bar_t) eps, with a plus":
                loss(ab.sqrt(), -(1 - ab).sqrt()),
            "you swapped the coefficients: x^0 gets sqrt(alpha_bar_t), the noise sqrt(1 - alpha_bar_t)":
                loss((1 - ab).sqrt(), ab.sqrt()),
            "you used alpha_bar_{t-1} (schedule.alpha_bars[t - 1]); x^t needs alpha_bar_t":
                loss(ab_prev.sqrt(), (1 - ab_prev).sqrt()),
            "you regressed x^0; the eps target is the noise you added": loss(ab.sqrt(), (1 - ab).sqrt(), target=x0),
            "you fed the model the clean x^0; it must see the noisy x^t": loss(ab.sqrt(), (1 - ab).sqrt(), inp=x0),
            "you averaged over the coordinates too: sum the squared error over the d coordinates of each example, "
            "then average over the batch": loss(ab.sqrt(), (1 - ab).sqrt(), reduce="coords"),
            "you summed over the batch: average over the examples": loss(ab.sqrt(), (1 - ab).sqrt(), reduce="sum"),
            "you forgot to square the error": loss(ab.sqrt(), (1 - ab).sqrt(), power=1),
        }
    got = _call(fn, what, model, x0.clone(), t.clone(), noise.clone(), s)
    if isinstance(got, torch.Tensor) and got.numel() == n and got.ndim == 1:
        raise ExerciseError(f"{what}: got one loss per example, shape {tuple(got.shape)}; average over the batch "
                            "(.mean()) to return one number")
    diagnose(got, want, what=what, mistakes=mistakes, **_TOL)
    if not (isinstance(got, torch.Tensor) and got.requires_grad):
        raise ExerciseError(f"{what}: the value is right but it carries no gradient — keep it a torch tensor "
                            "(no .item(), .detach() or NumPy) so that loss.backward() can train the model")
    return passed("eps_loss is the DDPM loss E|eps_theta(x^t, t) - eps|^2, and gradients reach the model")


# ---------------------------------------------------------------------------------------------- exercise 2
def _ancestral_want(s, x_t, eps, t, xi):
    ab = s.alpha_bars[t]
    x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    a, b, c = s.posterior_coefficients(t)
    return x0, a, b, c, a * x0 + b * x_t + c.sqrt() * xi


def check_ancestral_step(fn) -> bool:
    """Exercise: ``fn(x_t, eps_hat, t, schedule, xi)`` -> x^{t-1} = a_t x0_hat + b_t x^t + sqrt(c_t) xi.

    Checked at t = 150, 600 and at the last step t = 1 (where c_1 = 0: no noise), then iterated from
    t = T to 1 with the exact denoiser of a mixture: it must reproduce ``course_lib.samplers.ancestral_sample``.
    """
    s = _schedule()
    for t in (150, 600, 1):
        x_t, eps, xi = _randn((5, 2), t), _randn((5, 2), t + 1), _randn((5, 2), t + 2)
        ab, al, beta = s.alpha_bars[t], s.alphas[t], s.betas[t]
        x0, a, b, c, want = _ancestral_want(s, x_t, eps, t, xi)
        mean = a * x0 + b * x_t
        x0_al = (x_t - (1 - al).sqrt() * eps) / al.sqrt()
        x0_sign = (x_t + (1 - ab).sqrt() * eps) / ab.sqrt()
        al_p = s.alphas[t - 1]
        # alpha_t and alpha_{t-1} where alpha_bar_t and alpha_bar_{t-1} belong in a_t, b_t and c_t
        abc_al = (al_p.sqrt() * (1 - al) / (1 - al), al.sqrt() * (1 - al_p) / (1 - al),
                  (1 - al_p) * (1 - al) / (1 - al))
        what = f"ancestral_step at t = {t}"
        got = _call(fn, what, x_t.clone(), eps.clone(), t, s, xi.clone())
        mistakes = {
            "you forgot the noise term sqrt(c_t) xi": mean,
            "you added c_t xi; the noise's standard deviation is sqrt(c_t)": mean + c * xi,
            "you used beta_t as the variance (DDPM's other choice, sigma_t^2 = beta_t); use the posterior variance "
            "c_t, which is 0 at t = 1": mean + beta.sqrt() * xi,
            "you used alpha_t (schedule.alphas[t]) where alpha_bar_t belongs in x0_hat":
                a * x0_al + b * x_t + c.sqrt() * xi,
            "sign error in x0_hat = (x^t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)":
                a * x0_sign + b * x_t + c.sqrt() * xi,
            "you plugged eps_hat where x0_hat belongs: convert the prediction to x0_hat first":
                a * eps + b * x_t + c.sqrt() * xi,
            "you swapped a_t and b_t: a_t multiplies x0_hat, b_t multiplies x^t": b * x0 + a * x_t + c.sqrt() * xi,
            "you forgot the square root on alpha_bar_t in x0_hat": (x_t - (1 - ab).sqrt() * eps) / ab * a
                + b * x_t + c.sqrt() * xi,
            "you used alpha_t where alpha_bar belongs in a_t, b_t, c_t (alpha_bar_{t-1} and alpha_bar_t)":
                abc_al[0] * x0 + abc_al[1] * x_t + abc_al[2].sqrt() * xi,
            "you used alpha_bar_t where alpha_bar_{t-1} belongs in a_t": ab.sqrt() * (1 - al) / (1 - ab) * x0
                + b * x_t + c.sqrt() * xi,
        }
        if t == 1:
            mistakes = {"you added noise at the last step: at t = 1, c_1 = 0 (alpha_bar_0 = 1), so x^0 = x0_hat"
                        if k.startswith("you used beta_t") else k: v for k, v in mistakes.items()}
        _diagnose_with_noise(got, want, xi, what, mistakes, last=(t == 1))
    _iterate_check(lambda x, e, t, sch, noise: fn(x, e, t, sch, noise), "ancestral_step", eta=1.0)
    return passed("ancestral_step is DDPM's x^{t-1} = a_t x0_hat + b_t x^t + sqrt(c_t) xi, and iterated from T to 1 "
                  "it is course_lib.samplers.ancestral_sample")


def _diagnose_with_noise(got, want, xi, what, mistakes, *, last: bool):
    """``diagnose``, plus: at the last step, any multiple of xi added to the right answer is named."""
    try:
        diagnose(got, want, what=what, mistakes=mistakes, **_TOL)
    except ExerciseError:
        if last and isinstance(got, torch.Tensor) and got.shape == want.shape:
            r = got.detach().to(torch.float64) - want
            k = float((r * xi).sum() / (xi * xi).sum())
            if abs(k) > 1e-8 and torch.allclose(r, k * xi, rtol=1e-4, atol=1e-7):
                raise ExerciseError(f"{what}: not yet right — you added noise at the last step ({k:.3g} xi): at t = 1 "
                                    "there is no noise, c_1 = 0 because alpha_bar_0 = 1, and x^0 = x0_hat") from None
        raise


# ---------------------------------------------------------------------------------------------- exercise 3
def _ddim_want(s, x_t, x0, t, u, eta, xi, *, bar=True, eta_power=2, subtract=True, sd_noise=True, sign=1.0):
    A = s.alpha_bars if bar else s.alphas
    ab_t, ab_s = A[t], A[u]
    sigma2 = eta**eta_power * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
    eps = (x_t - sign * ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
    direction = (1 - ab_s - (sigma2 if subtract else 0)).clamp(min=0).sqrt()
    noise = sigma2.sqrt() if sd_noise else sigma2
    return ab_s.sqrt() * x0 + direction * eps + noise * xi


def check_ddim_step(fn) -> bool:
    """Exercise: ``fn(x_t, x0_hat, t, s, schedule, eta, xi)`` -> DDIM's x^s (Song et al. 2021, eq. 12).

    Checked for eta = 0 (deterministic), 0.5 and 1, for a jump t -> s and for s = t - 1 with eta = 1 (which
    must be the ancestral step), then iterated on a 10-step grid against ``course_lib.samplers.ddim_sample``.
    """
    s = _schedule()
    cases = [(600, 400, 0.0), (600, 400, 0.5), (600, 400, 1.0), (151, 150, 1.0), (150, 0, 0.5)]
    for t, u, eta in cases:
        seed = 10 * t + u
        x_t, x0, xi = _randn((5, 2), seed), _randn((5, 2), seed + 1), _randn((5, 2), seed + 2)
        want = _ddim_want(s, x_t, x0, t, u, eta, xi)
        what = f"ddim_step from t = {t} to s = {u} with eta = {eta}"
        got = _call(fn, what, x_t.clone(), x0.clone(), t, u, s, eta, xi.clone())
        mistakes = {
            "you forgot the noise term sigma xi": _ddim_want(s, x_t, x0, t, u, eta, 0 * xi),
            "you used eta where eta^2 belongs in sigma^2 = eta^2 (1 - ab_s)/(1 - ab_t) (1 - ab_t/ab_s)":
                _ddim_want(s, x_t, x0, t, u, eta, xi, eta_power=1),
            "the direction term is sqrt(1 - alpha_bar_s - sigma^2) eps_hat: you forgot to subtract sigma^2, so "
            "the noise is counted twice": _ddim_want(s, x_t, x0, t, u, eta, xi, subtract=False),
            "you added sigma^2 xi; the noise's standard deviation is sigma":
                _ddim_want(s, x_t, x0, t, u, eta, xi, sd_noise=False),
            "you used alpha_t and alpha_s (schedule.alphas) where alpha_bar_t and alpha_bar_s belong":
                _ddim_want(s, x_t, x0, t, u, eta, xi, bar=False),
            "sign error in eps_hat = (x^t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t)":
                _ddim_want(s, x_t, x0, t, u, eta, xi, sign=-1.0),
            "you returned x0_hat; the step goes to x^s, which still carries noise at level s": x0,
        }
        diagnose(got, want, what=what, mistakes=mistakes, **_TOL)
    _iterate_check(lambda x, x0, t, u, sch, noise: fn(x, x0, t, u, sch, 0.5, noise), "ddim_step", eta=0.5, steps=10)
    return passed("ddim_step is DDIM's update for every eta (eta = 1 and s = t - 1: the ancestral step), and "
                  "iterated it is course_lib.samplers.ddim_sample")


# ---------------------------------------------------------------------------------------------- whole samplers
def _iterate_check(step, name: str, *, eta: float, steps: int | None = None):
    """Run the student's step from x^T to x^0 with the exact denoiser and the library's noise; compare."""
    from ..samplers import sample, timesteps

    s = NoiseSchedule.cosine(50)
    mix = named_mixture("two_blobs_2d")
    den = ExactDenoiser(mix, s, "eps")
    n = 8
    g = torch.Generator().manual_seed(0)
    want = sample(den, s, n, steps=steps, eta=eta, generator=torch.Generator().manual_seed(0))
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    ts = timesteps(s.T, steps).tolist()
    for t, u in zip(ts[:-1], ts[1:], strict=True):
        eps = den(x, torch.full((n,), t))
        last = u == 0
        # the library draws no noise for the last step; pass an unrelated xi there, which must be ignored
        xi = _randn((n, 2), 99) if last else torch.randn(n, 2, generator=g, dtype=torch.float64)
        if name == "ancestral_step":
            x_new = step(x.clone(), eps, t, s, xi)
        else:
            x0 = mix.posterior_mean(x, s.alpha_bars[t])
            x_new = step(x.clone(), x0, t, u, s, xi)
        if not isinstance(x_new, torch.Tensor) or x_new.shape != x.shape:
            raise ExerciseError(f"{name}: inside a sampler loop it returned {type(x_new).__name__} "
                                f"{tuple(getattr(x_new, 'shape', ()))}, expected shape {tuple(x.shape)}")
        x = x_new.detach().to(torch.float64)
    if not torch.allclose(x, want, rtol=1e-5, atol=1e-6):
        raise ExerciseError(f"{name}: each single step is right, but iterated from T to 0 it does not reproduce "
                            "course_lib's sampler with the same noise — does your function change x_t in place, or "
                            "add noise at the last step?")
