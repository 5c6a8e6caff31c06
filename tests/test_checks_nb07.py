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
from course_lib.checks.nb07 import check_min_snr_weights, check_time_embedding


def _raises(check, fn, hint):
    with pytest.raises(ExerciseError, match=re.escape(hint)):
        check(fn)


# ---------------------------------------------------------------------------------------------- time embedding
def emb_ok(t, T, dim):
    h = dim // 2
    w = torch.exp(-math.log(10000.0) * torch.arange(h) / h)
    a = (1000.0 * t.float() / T)[:, None] * w[None, :]
    return torch.cat([torch.sin(a), torch.cos(a)], dim=1)


def _emb(t, T, dim, *, freqs=None, order="sin-cos", scale=True):
    h = dim // 2
    w = 10000.0 ** (-torch.arange(h) / h) if freqs is None else freqs(torch.arange(h).float(), h, dim)
    u = 1000.0 * t.float() / T if scale else t.float()
    a = u[:, None] * w[None, :]
    if order == "half":
        return torch.sin(a)
    if order == "interleaved":
        return torch.stack([torch.sin(a), torch.cos(a)], dim=2).flatten(1)
    return torch.cat([torch.cos(a), torch.sin(a)] if order == "cos-sin" else [torch.sin(a), torch.cos(a)], dim=1)


EMB_MISTAKES = {
    "halves are swapped": lambda t, T, d: _emb(t, T, d, order="cos-sin"),
    "interleaved": lambda t, T, d: _emb(t, T, d, order="interleaved"),
    "u = 1000 t / T": lambda t, T, d: _emb(t, T, d, scale=False),
    "k / dim": lambda t, T, d: _emb(t, T, d, freqs=lambda k, h, dim: 10000.0 ** (-k / dim)),
    "needs a minus sign": lambda t, T, d: _emb(t, T, d, freqs=lambda k, h, dim: 10000.0 ** (k / h)),
    "base e": lambda t, T, d: _emb(t, T, d, freqs=lambda k, h, dim: torch.exp(-k / h)),
    "one half only": lambda t, T, d: _emb(t, T, d, order="half"),
    "degrees": lambda t, T, d: _emb(t, T, d, freqs=lambda k, h, dim: 10000.0 ** (-k / h) * math.pi / 180),
}


def test_time_embedding_passes_a_correct_solution(capsys):
    assert check_time_embedding(emb_ok) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("hint", list(EMB_MISTAKES))
def test_time_embedding_names_each_mistake(hint):
    _raises(check_time_embedding, EMB_MISTAKES[hint], hint)


def test_an_unfinished_exercise_says_so():
    def todo(t, T, dim):
        raise NotImplementedError

    _raises(check_time_embedding, todo, "not implemented yet")
    _raises(check_time_embedding, lambda t, T, dim: None, "forget `return`")


# ---------------------------------------------------------------------------------------------- min-SNR weights
def weights_ok(alpha_bar, gamma):
    snr = alpha_bar / (1 - alpha_bar)
    return torch.minimum(torch.ones_like(snr), gamma / snr)


WEIGHT_MISTAKES = {
    "min(SNR, kappa)": lambda ab, g: torch.clamp(ab / (1 - ab), max=g),
    "you took the maximum": lambda ab, g: torch.maximum(torch.ones_like(ab), g * (1 - ab) / ab),
    "not (1 - alpha_bar) / alpha_bar": lambda ab, g: torch.clamp(g * ab / (1 - ab), max=1.0),
    "forgot the cap at 1": lambda ab, g: g * (1 - ab) / ab,
    "not sqrt(alpha_bar)": lambda ab, g: torch.clamp(g * torch.sqrt(1 - ab) / torch.sqrt(ab), max=1.0),
}


def test_min_snr_weights_pass_a_correct_solution(capsys):
    assert check_min_snr_weights(weights_ok) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("hint", list(WEIGHT_MISTAKES))
def test_min_snr_weights_name_each_mistake(hint):
    _raises(check_min_snr_weights, WEIGHT_MISTAKES[hint], hint)


def test_the_checked_weights_are_the_ones_the_unet_trains_with():
    """The check's answer is the library's loss weighting, and it equals min(1, 5 / SNR) written out here."""
    from course_lib.denoisers import loss_weights
    from course_lib.schedules import NoiseSchedule

    s = NoiseSchedule.cosine(500)
    ab = s.alpha_bars[1:]
    torch.testing.assert_close(loss_weights(s, "eps", "min_snr")[1:], weights_ok(ab, 5.0))
    w = weights_ok(ab, 5.0)
    assert float(w[-1]) == 1.0 and float(w[0]) < 1e-3  # full weight at pure noise, almost none when nearly clean
