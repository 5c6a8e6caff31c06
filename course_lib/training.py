"""One explicit training loop.

``training_loop`` is a generator that yields its state after every step, so a notebook decides what
to record, what to plot and when to stop::

    for state in training_loop(model, loss_fn, data, steps=2000, batch_size=256):
        losses.append(state.loss)

``train`` wraps it with a tqdm progress bar (a widget in Jupyter, text elsewhere) and returns the
history. ``loss_fn(model, batch)`` returns a scalar loss, or ``(loss, logs)`` with a dict of extra
numbers to record (e.g. the ELBO's two terms).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ._runtime import threads_for

__all__ = ["TrainState", "minibatches", "train", "training_loop"]


@dataclass
class TrainState:
    """What the loop yields after each step. ``loss`` is a float; ``logs`` holds ``loss_fn``'s extras."""

    step: int
    loss: float
    logs: dict = field(default_factory=dict)
    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    seconds: float = 0.0


def minibatches(data, batch_size: int, *, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> Iterator:
    """Endless random mini-batches (reshuffled every epoch) from a tensor or a tuple of tensors.

    ``data``: a tensor of shape (n, ...), or a tuple/list of tensors sharing the first dimension; or a
    callable ``data(batch_size, generator)`` returning a fresh batch (for data sampled on the fly).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if callable(data) and not isinstance(data, torch.Tensor):
        while True:
            batch = data(batch_size, generator)
            yield _to(batch, device)
    tensors = (data,) if isinstance(data, torch.Tensor) else tuple(data) if isinstance(data, Sequence) else None
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError(f"data: expected a tensor, a tuple of tensors or a callable, got {type(data).__name__}")
    n = tensors[0].shape[0]
    if n == 0 or any(t.shape[0] != n for t in tensors):
        raise ValueError(f"data: expected tensors with the same, non-zero first dimension, got "
                         f"{[tuple(t.shape) for t in tensors]}")
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = order[start:start + batch_size]
            batch = tuple(t[idx] for t in tensors)
            yield _to(batch[0] if len(batch) == 1 else batch, device)


def _to(batch, device):
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return type(batch)(_to(b, device) for b in batch)


def training_loop(model: torch.nn.Module, loss_fn: Callable, data, *, steps: int, batch_size: int = 256,
                  lr: float = 1e-3, optimizer: torch.optim.Optimizer | None = None,
                  generator: torch.Generator | None = None, device: torch.device | str | None = None,
                  grad_clip: float | None = None, lr_schedule: str = "constant") -> Iterator[TrainState]:
    """Minimise ``loss_fn(model, batch)`` with Adam for ``steps`` steps, yielding a ``TrainState`` each step.

    ``lr_schedule``: "constant" or "cosine" (decays to 0 over ``steps``; often a free gain on toys).
    The model is put in train mode and left in it; the caller switches to ``model.eval()``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule: expected 'constant' or 'cosine', got {lr_schedule!r}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if lr_schedule == "cosine" else None
    batches = minibatches(data, batch_size, generator=generator, device=device)
    model.train()
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        out = loss_fn(model, next(batches))
        loss, logs = (out if isinstance(out, tuple) else (out, {}))
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise ValueError(f"loss_fn: expected a scalar tensor (or (loss, logs)), got {type(loss).__name__}"
                             + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else ""))
        value = loss.item()
        if not math.isfinite(value):  # before the step: the weights stay as they were, finite
            kind = "NaN" if value != value else "inf"
            raise FloatingPointError(f"loss became {kind} at step {step}; the weights are those before this step; "
                                     f"try a smaller lr (now {lr}) or grad_clip")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if sched is not None:
            sched.step()
        logs = {k: (v.item() if isinstance(v, torch.Tensor) else float(v)) for k, v in logs.items()}
        yield TrainState(step, value, logs, model, opt, time.perf_counter() - t0)


def train(model: torch.nn.Module, loss_fn: Callable, data, *, steps: int, progress: bool = True,
          desc: str = "training", log_every: int = 1, **loop_kw) -> dict[str, list[float]]:
    """Run ``training_loop`` to the end with a progress bar; returns the history.

    History: ``{"step": [...], "loss": [...], <each key of logs>: [...], "seconds": total}``, recorded
    every ``log_every`` steps. Uses ``recommended_threads(model)`` CPU threads while it runs.
    """
    from tqdm.auto import tqdm

    history: dict = {"step": [], "loss": []}
    with threads_for(model), tqdm(total=steps, desc=desc, disable=not progress, leave=False) as bar:
        state = None
        for state in training_loop(model, loss_fn, data, steps=steps, **loop_kw):
            if state.step % log_every == 0 or state.step == steps:
                history["step"].append(state.step)
                history["loss"].append(state.loss)
                for k, v in state.logs.items():
                    history.setdefault(k, []).append(v)
                bar.set_postfix(loss=f"{state.loss:.4g}", refresh=False)
            bar.update(1)
    history["seconds"] = state.seconds if state else 0.0
    return history
