"""Exercise checks students run in the notebooks: one module per notebook (``nb01``, ``nb04``, ...).

A check calls the student's function on cases whose answer the exact core knows, and either prints
a short success line or raises ``ExerciseError`` with a diagnosis in a student's words: "wrong shape",
"sign error", "you forgot the 1/2 in the KL", "you used alpha_t where alpha_bar_t belongs".
``diagnose`` recognises such known mistakes by computing what each wrong formula would give.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["ExerciseError", "diagnose", "expect", "passed"]


class ExerciseError(AssertionError):
    """A check failed; the message says what is wrong and, where it can tell, why."""


def passed(message: str) -> bool:
    """Print the success line of a check; returns True so a cell can end with the check."""
    print(f"✓ {message}")
    return True


def expect(condition: bool, message: str) -> None:
    """Raise ``ExerciseError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ExerciseError(message)


def _as_tensor(x) -> torch.Tensor:
    return x.detach().to(torch.float64) if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float64)


def diagnose(got, want, *, what: str, mistakes: Mapping[str, object] | None = None,
             rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Compare a student's ``got`` with ``want``; on a mismatch name the likely mistake.

    ``mistakes`` maps a hint ("you forgot the 1/2") to the value that mistake would produce; the first
    one that ``got`` matches is reported. Shapes are checked first.
    """
    if got is None:
        raise ExerciseError(f"{what}: your function returned None — did you forget `return`?")
    try:
        g = _as_tensor(got)
    except Exception:
        raise ExerciseError(f"{what}: expected a tensor or number, got {type(got).__name__}") from None
    w = _as_tensor(want)
    if g.shape != w.shape:
        raise ExerciseError(f"{what}: wrong shape: expected {tuple(w.shape)}, got {tuple(g.shape)}")
    if not bool(torch.isfinite(g).all()):
        raise ExerciseError(f"{what}: contains NaN or inf — a log of a negative number, or a division by zero?")
    if torch.allclose(g, w, rtol=rtol, atol=atol):
        return
    for hint, value in (mistakes or {}).items():
        v = _as_tensor(value)
        if v.shape == g.shape and torch.allclose(g, v, rtol=rtol, atol=atol):
            raise ExerciseError(f"{what}: not yet right — {hint}")
    err = (g - w).abs().max().item()
    raise ExerciseError(f"{what}: not yet right (largest difference {err:.3g}); compare your formula with the "
                        "derivation above, term by term")
