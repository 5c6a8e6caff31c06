"""The checks of notebook 07: each passes a correct solution and names each known mistake in words.

The wrong solutions are written the way a student would write them (one slip each), not taken from the
check's own table, so a test fails if a diagnosis does not match the mistake it names.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from course_lib.checks import ExerciseError
from course_lib.checks.nb07 import check_ddim_step, check_predict_x0, check_time_embedding


def _raises(check, fn, hint):
    with pytest.raises(ExerciseError, match=re.escape(hint)):
        check(fn)


# ---------------------------------------------------------------------------------------------- time embedding
def emb_ok(t, dim):
    h = dim // 2
    w = torch.exp(-math.log(10000.0) * torch.arange(h) / h)
    a = t.float()[:, None] * w[None, :]
    return torch.cat([torch.cos(a), torch.sin(a)], dim=1)


def _emb(t, dim, *, freqs=None, order="cos-sin"):
    h = dim // 2
    w = 10000.0 ** (-torch.arange(h) / h) if freqs is None else freqs(torch.arange(h).float(), h, dim)
    a = t.float()[:, None] * w[None, :]
    if order == "half":
        return torch.cos(a)
    if order == "interleaved":
        return torch.stack([torch.cos(a), torch.sin(a)], dim=2).flatten(1)
    return torch.cat([torch.sin(a), torch.cos(a)] if order == "sin-cos" else [torch.cos(a), torch.sin(a)], dim=1)


EMB_MISTAKES = {
    "halves are swapped": lambda t, d: _emb(t, d, order="sin-cos"),
    "interleaved": lambda t, d: _emb(t, d, order="interleaved"),
    "k / dim": lambda t, d: _emb(t, d, freqs=lambda k, h, dim: 10000.0 ** (-k / dim)),
    "needs a minus sign": lambda t, d: _emb(t, d, freqs=lambda k, h, dim: 10000.0 ** (k / h)),
    "base e": lambda t, d: _emb(t, d, freqs=lambda k, h, dim: torch.exp(-k / h)),
    "one half only": lambda t, d: _emb(t, d, order="half"),
    "degrees": lambda t, d: _emb(t, d, freqs=lambda k, h, dim: 10000.0 ** (-k / h) * math.pi / 180),
}


def test_time_embedding_passes_a_correct_solution(capsys):
    assert check_time_embedding(emb_ok) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("hint", list(EMB_MISTAKES))
def test_time_embedding_names_each_mistake(hint):
    _raises(check_time_embedding, EMB_MISTAKES[hint], hint)


def test_an_unfinished_exercise_says_so():
    def todo(t, dim):
        raise NotImplementedError

    _raises(check_time_embedding, todo, "not implemented yet")
    _raises(check_time_embedding, lambda t, dim: None, "forget `return`")


# ---------------------------------------------------------------------------------------------- predict_x0
def x0_ok(x_t, eps_hat, t, schedule):
    ab = schedule.alpha_bars[t].view(-1, 1, 1, 1)
    return (x_t - torch.sqrt(1 - ab) * eps_hat) / torch.sqrt(ab)


def _x0(x_t, eps_hat, ab):
    return (x_t - torch.sqrt(1 - ab) * eps_hat) / torch.sqrt(ab)


X0_MISTAKES = {
    "broadcasts along the image width": lambda x, e, t, s: _x0(x, e, s.alpha_bars[t]),
    "broadcasts along the image height": lambda x, e, t, s: _x0(x, e, s.alpha_bars[t][:, None]),
    "one step t[0] for every image": lambda x, e, t, s: _x0(x, e, s.alpha_bars[t[0]]),
    "used alpha_t": lambda x, e, t, s: _x0(x, e, s.alphas[t].view(-1, 1, 1, 1)),
    "sign error on the noise term": lambda x, e, t, s: (x + torch.sqrt(1 - s.alpha_bars[t].view(-1, 1, 1, 1)) * e)
    / torch.sqrt(s.alpha_bars[t].view(-1, 1, 1, 1)),
    "forgot the square root on 1 - alpha_bar_t": lambda x, e, t, s: (x - (1 - s.alpha_bars[t].view(-1, 1, 1, 1)) * e)
    / torch.sqrt(s.alpha_bars[t].view(-1, 1, 1, 1)),
    "forgot the square root on alpha_bar_t": lambda x, e, t, s: (x - torch.sqrt(1 - s.alpha_bars[t].view(-1, 1, 1, 1))
                                                                  * e) / s.alpha_bars[t].view(-1, 1, 1, 1),
    "dropped the division": lambda x, e, t, s: x - torch.sqrt(1 - s.alpha_bars[t].view(-1, 1, 1, 1)) * e,
}


def test_predict_x0_passes_a_correct_solution_in_float32_too(capsys):
    assert check_predict_x0(x0_ok) is True
    assert check_predict_x0(lambda x, e, t, s: x0_ok(x.float(), e.float(), t, s).float()) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("hint", list(X0_MISTAKES))
def test_predict_x0_names_each_mistake(hint):
    _raises(check_predict_x0, X0_MISTAKES[hint], hint)


def test_predict_x0_explains_a_broadcasting_error():
    def unsqueezed_once(x_t, eps_hat, t, schedule):
        ab = schedule.alpha_bars[t][:, None]  # (n, 1): broadcasts against (n, 1, 28, 28) wrongly
        return (x_t - torch.sqrt(1 - ab) * eps_hat) / torch.sqrt(ab)

    _raises(check_predict_x0, unsqueezed_once, "(n, 1, 1, 1)")


# ---------------------------------------------------------------------------------------------- ddim_step
def ddim_ok(x_t, x0_hat, t, s, schedule):
    ab_t, ab_s = schedule.alpha_bars[t], schedule.alpha_bars[s]
    eps_hat = (x_t - ab_t.sqrt() * x0_hat) / (1 - ab_t).sqrt()
    return ab_s.sqrt() * x0_hat + (1 - ab_s).sqrt() * eps_hat


def _ddim(x_t, x0, ab_t, ab_s, *, noise_ab=None, sq=True):
    if not sq:
        return ab_s * x0 + (1 - ab_s) * (x_t - ab_t * x0) / (1 - ab_t)
    eps = (x_t - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
    return ab_s.sqrt() * x0 + (1 - (ab_s if noise_ab is None else noise_ab)).sqrt() * eps


DDIM_MISTAKES = {
    "re-noising uses sqrt(1 - alpha_bar_t)":
        lambda x, x0, t, s, S: _ddim(x, x0, S.alpha_bars[t], S.alpha_bars[s], noise_ab=S.alpha_bars[t]),
    "forgot the square roots": lambda x, x0, t, s, S: _ddim(x, x0, S.alpha_bars[t], S.alpha_bars[s], sq=False),
    "schedule.alphas": lambda x, x0, t, s, S: _ddim(x, x0, S.alphas[t], S.alphas[s]),
    "swapped t and s": lambda x, x0, t, s, S: _ddim(x, x0, S.alpha_bars[s], S.alpha_bars[t]),
    "you returned x0_hat": lambda x, x0, t, s, S: x0,
    "dropped the noise term": lambda x, x0, t, s, S: S.alpha_bars[s].sqrt() * x0,
    "not x^t itself": lambda x, x0, t, s, S: S.alpha_bars[s].sqrt() * x0 + (1 - S.alpha_bars[s]).sqrt() * x,
    "sign error in eps_hat": lambda x, x0, t, s, S: S.alpha_bars[s].sqrt() * x0
    + (1 - S.alpha_bars[s]).sqrt() * (S.alpha_bars[t].sqrt() * x0 - x) / (1 - S.alpha_bars[t]).sqrt(),
    "deterministic": lambda x, x0, t, s, S: ddim_ok(x, x0, t, s, S) + 0.1 * torch.randn_like(x),
}


def test_ddim_step_passes_a_correct_solution(capsys):
    assert check_ddim_step(ddim_ok) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("hint", list(DDIM_MISTAKES))
def test_ddim_step_names_each_mistake(hint):
    _raises(check_ddim_step, DDIM_MISTAKES[hint], hint)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_ddim_step_iterated_is_the_library_sampler(clip):
    """The solution the check accepts, fed x0_hat (clipped or not), is the library's DDIM (eta = 0) on the same grid."""
    from course_lib.diffusion import convert
    from course_lib.samplers import ddim_sample, timesteps
    from course_lib.schedules import NoiseSchedule

    s = NoiseSchedule.cosine(500)

    def denoiser(x, t):  # any smooth function of (x, t) will do
        return 0.9 * torch.tanh(x) + 1e-3 * t.to(x.dtype).view(-1, 1, 1, 1)

    x_T = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = timesteps(500, 10).tolist()
    x = x_T
    for t, t_next in zip(ts[:-1], ts[1:], strict=True):
        x0_hat = convert(denoiser(x, torch.full((3,), t)), "eps", "x0", x, float(s.alpha_bars[t]))
        if clip is not None:
            x0_hat = x0_hat.clamp(-clip, clip)
        x = ddim_ok(x, x0_hat, t, t_next, s)
    ref = ddim_sample(denoiser, s, target="eps", steps=10, x_T=x_T, clip_x0=clip)
    assert torch.allclose(x, ref, atol=1e-8)
