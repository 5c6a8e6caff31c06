"""Argument checks shared by every public function.

Students will call the library wrong; the error message is part of the lesson. Every check raises
``ValueError`` (or ``TypeError``) that names the argument, says what was expected and what was given.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = [
    "as_float64",
    "as_tensor",
    "has_values",
    "check_alpha_bar",
    "check_count",
    "check_positive",
    "check_spd",
    "check_timestep",
    "check_weights",
    "describe",
]


def describe(x) -> str:
    """A short description of a value for error messages: type, shape and dtype."""
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"[:120]


def as_tensor(
    x,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    shape: tuple[int | None, ...] | None = None,
    dtype: torch.dtype | None = torch.float64,
    finite: bool = True,
) -> torch.Tensor:
    """Convert ``x`` (tensor, array, list or number) to a tensor and check it.

    ``ndim``: the allowed number(s) of dimensions. ``shape``: the expected shape, ``None`` entries
    match any size. ``dtype``: convert to this dtype (``None`` keeps the dtype of a tensor input).
    ``finite``: reject NaN and inf. Tensors keep their device.
    """
    if isinstance(x, torch.Tensor):
        t = x if dtype is None else x.to(dtype)
    else:
        if isinstance(x, (str, bytes)) or x is None:
            raise TypeError(f"{name}: expected an array of numbers, got {describe(x)}")
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name}: expected an array of numbers, got {describe(x)} ({exc})") from None
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{name}: expected an array of numbers, got {describe(x)}")
        t = torch.as_tensor(arr, dtype=dtype if dtype is not None else None)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name}: expected {want} dimension(s), got shape {tuple(t.shape)}")
    if shape is not None:
        if t.ndim != len(shape) or any(s is not None and s != g for s, g in zip(shape, t.shape, strict=True)):
            want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
    if finite and t.is_floating_point() and has_values(t) and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or inf entr{'y' if bad == 1 else 'ies'}")
    return t


def has_values(t: torch.Tensor) -> bool:
    """False for tensors on PyTorch's ``meta`` device (shapes only, no values): value checks are skipped there, so a
    computation can be traced on meta tensors, the tests' stand-in for a GPU (tests/test_devices.py)."""
    return t.device.type != "meta"


def as_float64(x, name: str, **kw) -> torch.Tensor:
    """``as_tensor`` with dtype float64 (the exact core's precision)."""
    return as_tensor(x, name, dtype=torch.float64, **kw)


def check_positive(x, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0); returns it as a float."""
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.item()
    if isinstance(x, np.ndarray) and x.size == 1:
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {describe(x)}")
    x = float(x)
    if not np.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        want = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {want}, got {x}")
    return x


def check_count(n, name: str, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (sample sizes, numbers of draws, steps); returns it as an int."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {describe(n)}")
    if int(n) < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {int(n)}")
    return int(n)


def check_timestep(t, T: int, name: str = "t", *, allow_zero: bool = False) -> torch.Tensor:
    """Integer time step(s) in 1..T (or 0..T); returns a long tensor of the same shape (0-d for an int)."""
    lo = 0 if allow_zero else 1
    if isinstance(t, bool):
        raise TypeError(f"{name}: expected an integer time step in {lo}..{T}, got {t!r}")
    if isinstance(t, numbers.Integral):
        tt = torch.tensor(int(t), dtype=torch.long)
    else:
        if isinstance(t, float):
            raise TypeError(f"{name}: expected an integer time step in {lo}..{T}, got the float {t!r}")
        if not isinstance(t, torch.Tensor):
            arr = np.asarray(t)
            if arr.dtype.kind not in "iu":
                raise TypeError(f"{name}: expected integer time steps in {lo}..{T}, got {describe(t)}")
            t = torch.as_tensor(arr)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name}: expected integer time steps in {lo}..{T}, got {describe(t)}")
        tt = t.long()
    if tt.numel() and has_values(tt) and (int(tt.min()) < lo or int(tt.max()) > T):
        got = int(tt.min()) if int(tt.min()) < lo else int(tt.max())
        raise ValueError(f"{name}: expected time steps in {lo}..{T}, got {got}")
    return tt


def check_alpha_bar(alpha_bar, name: str = "alpha_bar", *, n: int | None = None) -> torch.Tensor:
    """alpha_bar in (0, 1]: a number, or a tensor of shape (n,) (one per row). Returns float64."""
    ab = as_float64(alpha_bar, name, ndim=(0, 1))
    if ab.ndim == 1 and n is not None and ab.shape[0] != n:
        raise ValueError(f"{name}: expected a number or shape ({n},) (one per row of x), got {tuple(ab.shape)}")
    if ab.numel() and has_values(ab) and (bool((ab <= 0).any()) or bool((ab > 1).any())):
        bad = ab[(ab <= 0) | (ab > 1)].flatten()[0].item()
        raise ValueError(f"{name}: expected values in (0, 1], got {bad}")
    return ab


def check_weights(weights, name: str = "weights", *, atol: float = 1e-8) -> torch.Tensor:
    """Mixture weights: shape (K,), non-negative, summing to 1. Returns float64."""
    w = as_float64(weights, name, ndim=1)
    if w.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one weight, got shape (0,)")
    if bool((w < 0).any()):
        raise ValueError(f"{name}: expected non-negative weights, got {w.min().item()}")
    s = float(w.sum())
    if abs(s - 1.0) > atol:
        raise ValueError(f"{name}: expected weights that sum to 1, got sum {s:.6g}")
    return w


def check_spd(cov, name: str = "covs") -> torch.Tensor:
    """Symmetric positive definite matrices of shape (..., d, d). Returns float64."""
    c = as_float64(cov, name)
    if c.ndim < 2 or c.shape[-1] != c.shape[-2]:
        raise ValueError(f"{name}: expected square matrices of shape (..., d, d), got {tuple(c.shape)}")
    c_ = c.detach()
    scale = max(1.0, float(c_.abs().max())) if c_.numel() else 1.0
    if not torch.allclose(c_, c_.transpose(-1, -2), atol=1e-10 * scale, rtol=0):
        raise ValueError(f"{name}: expected symmetric matrices, got an asymmetric one")
    _, info = torch.linalg.cholesky_ex(c_)
    if bool((info != 0).any()):
        raise ValueError(f"{name}: expected positive definite matrices, got one with a non-positive eigenvalue")
    return c
