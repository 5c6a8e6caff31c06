"""Small neural networks shared by the notebooks' models (VAE encoders and decoders) and the one time embedding.

Every network here is a plain ``torch.nn.Module`` built from explicit sizes, so a model's config dict
(the checkpoint cache key) describes it completely. Points are rows: inputs have shape (n, in_dim).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ._checks import describe

__all__ = ["ACTIVATIONS", "MLP", "time_embedding"]

#: Activation functions by name (names, not classes, so they can sit in a config dict).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
}


def _check_dim(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) < 1:
        raise ValueError(f"{name}: expected a positive integer, got {describe(n)}")
    return int(n)


def _check_hidden(hidden) -> tuple[int, ...]:
    if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if not isinstance(hidden, (list, tuple)):
        raise TypeError(f"hidden: expected a list of layer widths such as (256, 256), or (), got {describe(hidden)}")
    return tuple(_check_dim(h, f"hidden[{i}]") for i, h in enumerate(hidden))


class MLP(nn.Sequential):
    """x -> Linear -> act -> ... -> Linear: maps (n, in_dim) to (n, out_dim).

    ``hidden``: the widths of the hidden layers, e.g. (512, 256); ``()`` gives a single linear map
    (used by the tests that compare a neural VAE with the exact linear-Gaussian model).
    ``activation``: a name in ``ACTIVATIONS``. Leading dimensions broadcast: (..., in_dim) -> (..., out_dim).
    PyTorch's default initialisation; ``zero_last=True`` starts the last layer at zero (output = 0).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden=(256, 256), activation: str = "relu",
                 zero_last: bool = False):
        in_dim, out_dim = _check_dim(in_dim, "in_dim"), _check_dim(out_dim, "out_dim")
        hidden = _check_hidden(hidden)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        layers: list[nn.Module] = []
        widths = (in_dim, *hidden)
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(widths[-1], out_dim))
        super().__init__(*layers)
        if zero_last:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
        self.in_dim, self.out_dim, self.hidden, self.activation = in_dim, out_dim, hidden, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[-1] != self.in_dim:
            raise ValueError(f"x: expected a tensor of shape (..., {self.in_dim}), got {describe(x)}")
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, hidden={self.hidden}, activation={self.activation!r}"

    @property
    def last(self) -> nn.Linear:
        """The output layer (e.g. to initialise it)."""
        return self[-1]


def time_embedding(t, T: int, dim: int = 32) -> torch.Tensor:
    """Sinusoidal embedding of time steps, the one every denoiser and noise-aware classifier of the course uses.

    e(t) = [sin(u omega_0), ..., sin(u omega_{h-1}), cos(u omega_0), ..., cos(u omega_{h-1})] with u = 1000 t / T,
    h = dim / 2 and omega_i = 10000^(-i / h): frequencies run geometrically from 1 down to ~1/10000, so nearby t
    differ in the fast coordinates and distant t in the slow ones (as in the Transformer and DDPM). Scaling t to
    0..1000 makes the features the same for every chain length T.
    t: a number or a tensor of shape (n,) (integer or float). T: the chain length (> 0). dim: an even size >= 2.
    Returns (n, dim), float32 (or t's float dtype), on t's device.
    """
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 2 or dim % 2:
        raise ValueError(f"dim: expected an even integer >= 2, got {describe(dim)}")
    if isinstance(T, bool) or not isinstance(T, numbers.Real) or not T > 0:
        raise ValueError(f"T: expected the chain length, a positive number, got {describe(T)}")
    t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ValueError(f"t: expected a number or a tensor of shape (n,), got shape {tuple(t.shape)}")
    dtype = t.dtype if t.is_floating_point() else torch.float32
    half = int(dim) // 2
    k = torch.arange(half, dtype=torch.float64, device=t.device)
    freqs = torch.exp(-math.log(10_000.0) * k / half) * (1000.0 / float(T))
    u = t.to(torch.float64)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(u), torch.cos(u)], dim=1).to(dtype)
