"""Noise schedules: the fixed encoder of a diffusion model.

The forward chain is x^t | x^{t-1} ~ N(sqrt(alpha_t) x^{t-1}, (1 - alpha_t) I) with alpha_t = 1 - beta_t, so
x^t | x^0 ~ N(sqrt(alpha_bar_t) x^0, (1 - alpha_bar_t) I) with alpha_bar_t = alpha_1 ... alpha_t, and
x^{t-1} | x^0, x^t ~ N(a_t x^0 + b_t x^t, c_t I).

Index convention (the lecture's): every array has length T + 1 and index 0 is the clean data x^0, so
``betas[0] = 0``, ``alphas[0] = 1``, ``alpha_bars[0] = 1`` and ``alpha_bars[t]`` is alpha_bar_t.
The arrays are float64 CPU tensors; ``q_sample`` casts to the dtype and device of the data.
"""

from __future__ import annotations

import math
import numbers

import torch

from ._checks import as_float64, as_tensor, check_positive, check_timestep, describe

__all__ = ["NoiseSchedule"]


def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, numbers.Integral):
        raise TypeError(f"T: expected a positive integer number of steps, got {describe(T)}")
    if int(T) < 1:
        raise ValueError(f"T: expected a positive integer number of steps, got {int(T)}")
    return int(T)


class NoiseSchedule:
    """A variance-preserving noise schedule beta_1..beta_T with its derived quantities.

    ``NoiseSchedule(betas)``: betas for t = 1..T, shape (T,), each in (0, 1) (do not include beta_0).
    Usually built with ``NoiseSchedule.linear(T)`` or ``NoiseSchedule.cosine(T)``.

    Attributes (float64, CPU): ``T`` (int), ``name`` (str), ``betas``, ``alphas`` = 1 - betas,
    ``alpha_bars`` = cumulative product of alphas, all of shape (T + 1,) with index 0 = clean data.
    """

    def __init__(self, betas, name: str = "custom"):
        b = as_float64(betas, "betas", ndim=1)
        if b.shape[0] == 0:
            raise ValueError("betas: expected at least one beta (shape (T,) with T >= 1), got shape (0,)")
        bad = (b <= 0) | (b >= 1)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            hint = " (pass betas for t = 1..T only; beta_0 = 0 is added for you)" if i == 0 and b[0] == 0 else ""
            raise ValueError(f"betas: expected every beta in (0, 1), got {b[i].item()!r} at index {i}{hint}")
        self.T: int = int(b.shape[0])
        self.name: str = str(name)
        zero = torch.zeros(1, dtype=torch.float64)
        # clone: the schedule must not change if the caller later edits the array it passed in
        self.betas: torch.Tensor = torch.cat([zero, b.detach().cpu().clone()])
        self.alphas: torch.Tensor = 1.0 - self.betas
        self.alpha_bars: torch.Tensor = torch.cumprod(self.alphas, dim=0)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float | None = None, beta_end: float | None = None) -> NoiseSchedule:
        """DDPM's linear schedule (Ho et al. 2020): beta_t evenly spaced from beta_start (t=1) to beta_end (t=T).

        Defaults are DDPM's values rescaled to T ("scaled linear", as in improved-DDPM's code):
        beta_start = 1e-4 * 1000 / T and beta_end = 0.02 * 1000 / T. T = 1000 gives exactly DDPM's
        1e-4 .. 0.02 (alpha_bar_T ~ 4e-5); a smaller T gets larger betas, so x^T is still close to N(0, I)
        (alpha_bar_T <= 4e-5). Below T = 21 the scaled beta_end reaches 1: pass beta_start/beta_end yourself.
        """
        T = _check_T(T)
        scale = 1000.0 / T
        b0 = 1e-4 * scale if beta_start is None else check_positive(beta_start, "beta_start")
        b1 = 0.02 * scale if beta_end is None else check_positive(beta_end, "beta_end")
        for value, arg in ((b0, "beta_start"), (b1, "beta_end")):
            if value >= 1:
                default = " (the default scales DDPM's value by 1000 / T; pass a value < 1 or use cosine)"
                raise ValueError(f"{arg}: expected a value in (0, 1), got {value:g} for T = {T}" + default)
        # float64 linspace, as in DDPM's reference code
        return cls(torch.linspace(b0, b1, T, dtype=torch.float64), name="linear")

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal's (2021) cosine schedule: alpha_bar(t) = f(t) / f(0), f(t) = cos((t/T + s)/(1 + s) pi/2)^2.

        beta_t = min(1 - alpha_bar(t) / alpha_bar(t-1), max_beta); ``alpha_bars`` is then the cumulative
        product of 1 - beta_t, so it equals f(t)/f(0) except after a clipped step (in practice only t = T).
        """
        T = _check_T(T)
        s = check_positive(s, "s", allow_zero=True)
        max_beta = check_positive(max_beta, "max_beta")
        if max_beta >= 1:
            raise ValueError(f"max_beta: expected a value in (0, 1), got {max_beta:g}")
        t = torch.arange(T + 1, dtype=torch.float64)
        f = torch.cos((t / T + s) / (1 + s) * (math.pi / 2)) ** 2
        alpha_bar = f / f[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
        return cls(betas, name="cosine")

    # ------------------------------------------------------------------ derived quantities
    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio of x^t: alpha_bar_t / (1 - alpha_bar_t), shape (T + 1,); inf at t = 0."""
        return self.alpha_bars / (1.0 - self.alpha_bars)

    def posterior_coefficients(self, t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a_t, b_t, c_t) with q(x^{t-1} | x^0, x^t) = N(a_t x^0 + b_t x^t, c_t I), t in 1..T.

        a_t = sqrt(alpha_bar_{t-1}) (1 - alpha_t) / (1 - alpha_bar_t),
        b_t = sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t),
        c_t = (1 - alpha_bar_{t-1}) (1 - alpha_t) / (1 - alpha_bar_t).
        t: an int (returns 0-d tensors) or an integer tensor (returns tensors of t's shape). float64, CPU.
        """
        tt = check_timestep(t, self.T, "t").cpu()
        alpha = self.alphas[tt]
        ab, ab_prev = self.alpha_bars[tt], self.alpha_bars[tt - 1]
        a = ab_prev.sqrt() * (1 - alpha) / (1 - ab)
        b = alpha.sqrt() * (1 - ab_prev) / (1 - ab)
        c = (1 - ab_prev) * (1 - alpha) / (1 - ab)
        return a, b, c

    # ------------------------------------------------------------------ sampling
    def q_sample(self, x0, t, noise=None, generator: torch.Generator | None = None, return_noise: bool = False):
        """Draw x^t ~ q(x^t | x^0): x^t = sqrt(alpha_bar_t) x^0 + sqrt(1 - alpha_bar_t) noise, noise ~ N(0, I).

        x0: shape (n, ...). t: an int in 0..T (the same step for every row) or an integer tensor of shape (n,)
        (one step per row); t = 0 returns x0 itself. noise: optional, shape of x0 (then ``generator`` is
        unused). Returns x^t with the dtype and device of x0 (float tensors keep theirs, so float32 batches
        stay float32; other inputs become float64), or (x^t, noise) when ``return_noise`` is true.
        """
        x = as_tensor(x0, "x0", dtype=None)
        if not x.is_floating_point():
            x = x.to(torch.float64)
        if x.ndim == 0:
            raise ValueError(f"x0: expected a batch of shape (n, ...), got a 0-d {describe(x)}")
        tt = check_timestep(t, self.T, "t", allow_zero=True)
        if tt.ndim > 1 or (tt.ndim == 1 and tt.shape[0] != x.shape[0]):
            raise ValueError(
                f"t: expected an int or an integer tensor of shape ({x.shape[0]},) (one step per row of x0), "
                f"got shape {tuple(tt.shape)}"
            )
        if noise is None:
            # drawn where the generator lives (a CPU generator for CUDA data), then moved: the course's one rule
            where = generator.device if generator is not None else x.device
            eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=where).to(x.device)
        else:
            eps = as_tensor(noise, "noise", dtype=None)
            if tuple(eps.shape) != tuple(x.shape):
                raise ValueError(f"noise: expected the shape of x0, {tuple(x.shape)}, got {tuple(eps.shape)}")
            eps = eps.to(dtype=x.dtype, device=x.device)
        # coefficients in float64, cast only at the end (float32 would lose digits of 1 - alpha_bar near t = 0)
        tt = tt.to(x.device)
        signal = self.alpha_bars.sqrt().to(dtype=x.dtype, device=x.device)[tt]
        sd = (1.0 - self.alpha_bars).sqrt().to(dtype=x.dtype, device=x.device)[tt]
        if tt.ndim == 1:
            signal = signal.reshape((-1,) + (1,) * (x.ndim - 1))
            sd = sd.reshape((-1,) + (1,) * (x.ndim - 1))
        xt = signal * x + sd * eps
        return (xt, eps) if return_noise else xt

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(name={self.name!r}, T={self.T}, beta_1={self.betas[1].item():.3g}, "
            f"beta_T={self.betas[-1].item():.3g}, alpha_bar_T={self.alpha_bars[-1].item():.3g})"
        )
