"""A small U-Net denoiser for 28 x 28 images (MNIST), with a sinusoidal time embedding.

The network maps a noisy image and its time step to a prediction of one of the three targets of
``course_lib.diffusion`` (by default eps, the noise that was added):

    x^t (n, 1, 28, 28), t (n,) integers in 1..T  ->  eps_hat (n, 1, 28, 28)

Architecture (channels ``(32, 64, 64)``: 0.62M parameters, ~90M multiply-adds per image)::

    28x28  conv 1->32, ResBlock 32 --------------------------------- concat -> ResBlock 64->32 -> conv 32->1
             | stride-2 conv                                           ^ 1x1 conv 64->32, upsample x2
    14x14  ResBlock 32->64 ------------------------------ concat -> ResBlock 128->64
             | stride-2 conv                                ^ upsample x2
     7x7   ResBlock 64->64 -> ResBlock 64 (middle) -> concat -> ResBlock 128->64

Each ResBlock is GroupNorm -> SiLU -> 3x3 conv, plus the time embedding (projected to the block's
channels) added to every pixel, then GroupNorm -> SiLU -> 3x3 conv, and a skip connection. The time
embedding is ``course_lib.nets.time_embedding(t, T)`` (sines and cosines of 1000 t / T at geometric
frequencies, as in the Transformer and DDPM; the same one as the toy denoiser's) followed by a two-layer
MLP. With ``num_classes`` set, a learned label embedding
is added to it (label ``num_classes`` is the "null" label of classifier-free guidance).
"""

from __future__ import annotations

import numbers

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import describe, has_values
from .diffusion import ALL_TARGETS
from .nets import time_embedding

__all__ = ["ResBlock", "UNet"]


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 where possible (32 channels -> groups of 4), fewer for narrow layers."""
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))) + proj(temb); out = skip(x) + conv(SiLU(GN(h))). (n, c_in, H, W) -> (n, c_out, H, W)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        # start each residual branch at zero, so the untrained net is close to the identity path
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class UNet(nn.Module):
    """U-Net denoiser for (n, 1, 28, 28) images: ``model(x_t, t)`` -> prediction of ``model.target``.

    Arguments: ``channels`` (widths at full, half and quarter resolution; GroupNorm uses 8 groups where the
    width allows), ``emb_dim`` (time-embedding width, even), ``target`` ("eps", "x0" or "score"; only
    recorded here, for the samplers: the loss decides what the net learns), ``num_classes`` (None:
    unconditional; an int K: labels 0..K-1 plus the null label K, see ``forward``), ``in_channels``,
    ``image_size`` (divisible by 4), ``dropout``, ``T`` (the chain length the time embedding scales t
    by). Residual branches and the output layer start at zero,
    so the untrained net predicts 0 and ignores t (and y) until training moves them.

    ``forward(x_t, t, y=None)``: x_t (n, C, H, W) float; t an int or an integer tensor of shape (n,)
    (or (), broadcast); y (conditional nets only) a long tensor (n,) with values in 0..K, where K (=
    ``null_label``) means "no label"; ``y=None`` uses the null label for every row. Returns (n, C, H, W).
    """

    def __init__(self, channels=(32, 64, 64), emb_dim: int = 128, *, target: str = "eps",
                 num_classes: int | None = None, in_channels: int = 1, image_size: int = 28, dropout: float = 0.0,
                 T: int = 1000):
        super().__init__()
        if not isinstance(channels, (list, tuple)) or len(channels) != 3 or not all(
                isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 1 for c in channels):
            raise ValueError(f"channels: expected three positive widths such as (32, 64, 64), got {describe(channels)}")
        if isinstance(emb_dim, bool) or not isinstance(emb_dim, numbers.Integral) or emb_dim < 2 or emb_dim % 2:
            raise ValueError(f"emb_dim: expected an even integer >= 2, got {describe(emb_dim)}")
        if target not in ALL_TARGETS:
            raise ValueError(f"target: expected one of {ALL_TARGETS}, got {target!r}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
                                        or num_classes < 1):
            raise ValueError(f"num_classes: expected None or a positive integer, got {describe(num_classes)}")
        if image_size % 4:
            raise ValueError(f"image_size: expected a multiple of 4 (two halvings), got {image_size}")
        if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 1:
            raise ValueError(f"T: expected the chain length, a positive integer, got {describe(T)}")
        c0, c1, c2 = (int(c) for c in channels)
        self.channels, self.emb_dim, self.target, self.T = (c0, c1, c2), int(emb_dim), target, int(T)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.in_channels, self.image_size = int(in_channels), int(image_size)

        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # one extra row: the null label (classifier-free guidance drops labels to it during training)
        self.label_emb = nn.Embedding(self.num_classes + 1, emb_dim) if self.num_classes is not None else None

        self.conv_in = nn.Conv2d(in_channels, c0, 3, padding=1)
        self.down0 = ResBlock(c0, c0, emb_dim, dropout)
        self.pool0 = nn.Conv2d(c0, c0, 3, stride=2, padding=1)          # 28 -> 14
        self.down1 = ResBlock(c0, c1, emb_dim, dropout)
        self.pool1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)          # 14 -> 7
        self.down2 = ResBlock(c1, c2, emb_dim, dropout)
        self.mid = ResBlock(c2, c2, emb_dim, dropout)
        self.up2 = ResBlock(c2 + c2, c2, emb_dim, dropout)
        self.up1 = ResBlock(c2 + c1, c1, emb_dim, dropout)             # after 7 -> 14 nearest upsampling
        # narrow to c0 channels before upsampling: a conv at 28x28 costs 4x one at 14x14
        self.narrow0 = nn.Conv2d(c1, c0, 1)
        self.up0 = ResBlock(c0 + c0, c0, emb_dim, dropout)             # after 14 -> 28
        self.norm_out = nn.GroupNorm(_groups(c0), c0)
        self.conv_out = nn.Conv2d(c0, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # the untrained net predicts 0 (= E[eps]), a sane start
        nn.init.zeros_(self.conv_out.bias)

    @property
    def null_label(self) -> int | None:
        """The label meaning "no label" (= num_classes) for conditional nets; None for unconditional ones."""
        return self.num_classes

    def embedding(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Time embedding MLP(sinusoid(t)), plus the label embedding for conditional nets: (n,) -> (n, emb_dim)."""
        emb = self.time_mlp(time_embedding(t, self.T, self.emb_dim).to(self.conv_in.weight.dtype))
        if self.label_emb is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes)
            emb = emb + self.label_emb(y)
        return emb

    def forward(self, x_t: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        shape = (self.in_channels, self.image_size, self.image_size)
        if not isinstance(x_t, torch.Tensor) or x_t.ndim != 4 or tuple(x_t.shape[1:]) != shape:
            raise ValueError(f"x_t: expected a tensor of shape (n, {', '.join(map(str, shape))}), got {describe(x_t)}")
        n = x_t.shape[0]
        t = self._check_t(t, n, x_t.device)
        if y is not None:
            if self.label_emb is None:
                raise ValueError("y: this UNet is unconditional (num_classes=None); build it with num_classes=K "
                                 "to pass labels")
            if not isinstance(y, torch.Tensor) or y.shape != (n,) or y.is_floating_point():
                raise ValueError(f"y: expected an integer tensor of shape ({n},), got {describe(y)}")
            if n and has_values(y) and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
                raise ValueError(f"y: expected labels in 0..{self.num_classes} ({self.num_classes} = null label), "
                                 f"got {int(y.min()) if int(y.min()) < 0 else int(y.max())}")
            y = y.to(x_t.device).long()
        emb = self.embedding(t, y)
        h0 = self.down0(self.conv_in(x_t), emb)                         # (n, c0, 28, 28)
        h1 = self.down1(self.pool0(h0), emb)                            # (n, c1, 14, 14)
        h2 = self.down2(self.pool1(h1), emb)                            # (n, c2, 7, 7)
        u = self.up2(torch.cat([self.mid(h2, emb), h2], dim=1), emb)    # (n, c2, 7, 7)
        u = F.interpolate(u, scale_factor=2, mode="nearest")
        u = self.up1(torch.cat([u, h1], dim=1), emb)                    # (n, c1, 14, 14)
        u = F.interpolate(self.narrow0(u), scale_factor=2, mode="nearest")
        u = self.up0(torch.cat([u, h0], dim=1), emb)                    # (n, c0, 28, 28)
        return self.conv_out(F.silu(self.norm_out(u)))

    @staticmethod
    def _check_t(t, n: int, device) -> torch.Tensor:
        if isinstance(t, bool) or isinstance(t, float):
            raise TypeError(f"t: expected integer time steps, got {describe(t)}")
        t = torch.as_tensor(t, device=device)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"t: expected integer time steps, got {describe(t)}")
        if t.ndim == 0:
            t = t.expand(n)
        if t.shape != (n,):
            raise ValueError(f"t: expected an int or an integer tensor of shape ({n},), got shape {tuple(t.shape)}")
        return t.long()

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, emb_dim={self.emb_dim}, target={self.target!r}, "
                f"num_classes={self.num_classes}, T={self.T}")
