"""``python -m course_lib gpu-check``: prove the MNIST models work on this machine's GPU, in one command.

For each shipped MNIST model (the registry's ``Shipped`` recipes in ``course_lib.prepare``):

1. **train** a fresh copy on the device for ``steps`` steps (the full config's batch size, learning rate, autocast),
   and check that the loss stays finite and falls; report steps per second;
2. **agree with the CPU**: load the shipped weights on the device and on the CPU, run both on the same batch and
   report the largest difference (float32 rounding, ~1e-4, is expected; bf16 autocast is off for this);
3. **sample** (denoisers): draw ``n_samples`` digits with 25 DDIM steps from the same x^T on both, report samples per
   second and the pixel mean and standard deviation of both sets (they must agree to ~1e-2), and that all are finite.

Without a GPU it says so and stops (exit status 2). ``--device cpu`` runs the same checks on the CPU against itself
(what the tests do, with a few steps), so the code path is proven before it meets a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

__all__ = ["MODELS", "gpu_check"]

MODELS = ("mnist_denoiser", "mnist_cond_denoiser", "mnist_classifier", "mnist_noisy_classifier")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _forward(key: str, model, x: torch.Tensor, t: torch.Tensor):
    if key in ("mnist_denoiser", "mnist_cond_denoiser", "mnist_noisy_classifier"):
        return model(x, t)
    return model(x)


def gpu_check(device: str | torch.device | None = None, *, steps: int = 300, n_samples: int = 256,
              models=MODELS, fast: bool = False, log: Callable[[str], None] = print) -> list[dict]:
    """Run the three checks of the module docstring on ``device`` (default: CUDA) for ``models``; returns one dict per
    model and prints a table. ``fast`` uses the tiny FAST configs (tests)."""
    from .checkpoints import load_or_train
    from .metrics import markdown_table
    from .prepare import shipped_entries
    from .samplers import ddim_sample

    if device is None:
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU is visible to PyTorch here (torch.cuda.is_available() is False); "
                               "`python -m course_lib gpu-check --device cpu` runs the same checks on the CPU")
        device = "cuda"
    dev = torch.device(device)
    entries = shipped_entries(log=None)
    rows = []
    for key in models:
        spec = entries[key].shipped
        cfg = dict(spec.config() if not fast else _fast(spec))
        cfg["steps"] = steps
        row = {"model": key, "device": str(dev)}
        # 1. training from scratch on the device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = spec.build(cfg).to(dev)
        _sync(dev)
        t0 = time.perf_counter()
        meta = spec.train(model, cfg, progress=False, dev=dev)
        _sync(dev)
        row["train steps/s"] = steps / (time.perf_counter() - t0)
        loss = meta.get("loss") or []
        row["loss first → last"] = f"{loss[0]:.3f} → {loss[-1]:.3f}" if loss else "-"
        row["loss ok"] = bool(loss) and all(v == v and abs(v) < float("inf") for v in loss) and loss[-1] < loss[0]
        # 2. the shipped (or FAST) weights on the device and on the CPU, same batch
        make = (lambda fast=False, s=spec: s.config()) if not fast else (lambda fast=False, s=spec: _fast(s))
        on_dev, _ = load_or_train(spec.name, make, spec.build, spec.train, fast=False, dev=dev, progress=False)
        on_cpu, _ = load_or_train(spec.name, make, spec.build, spec.train, fast=False, dev="cpu", progress=False)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(16, 1, 28, 28, generator=g)
        t = torch.randint(1, 501, (16,), generator=g)
        with torch.no_grad():
            a = _forward(key, on_dev, x.to(dev), t.to(dev)).float().cpu()
            b = _forward(key, on_cpu, x, t).float()
        row["max |device − CPU|"] = float((a - b).abs().max())
        # 3. sampling (denoisers): same x^T on both, DDIM 25 steps
        if "denoiser" in key:
            x_T = torch.randn(n_samples, 1, 28, 28, generator=torch.Generator().manual_seed(2))
            _sync(dev)
            t0 = time.perf_counter()
            s_dev = ddim_sample(on_dev, _schedule(on_dev), steps=25, x_T=x_T, clip_x0=1.0).float().cpu()
            _sync(dev)
            row["samples/s"] = n_samples / (time.perf_counter() - t0)
            s_cpu = ddim_sample(on_cpu, _schedule(on_cpu), steps=25, x_T=x_T, clip_x0=1.0).float()
            row["finite"] = bool(torch.isfinite(s_dev).all())
            row["mean, sd (device | CPU)"] = (f"{s_dev.mean():.3f}, {s_dev.std():.3f} | "
                                             f"{s_cpu.mean():.3f}, {s_cpu.std():.3f}")
            row["stats agree"] = abs(float(s_dev.mean() - s_cpu.mean())) < 0.02 and \
                abs(float(s_dev.std() - s_cpu.std())) < 0.02
        rows.append(row)
        log(f"{key}: {row}")
    columns = {k: k for k in ("model", "device", "train steps/s", "loss first → last", "loss ok", "max |device − CPU|",
                              "samples/s", "finite", "mean, sd (device | CPU)", "stats agree")}
    log(markdown_table(rows, columns, {"train steps/s": ".1f", "max |device − CPU|": ".1e", "samples/s": ".1f"}))
    return rows


def _fast(spec) -> dict:
    """The FAST config of a shipped recipe (its config function called with fast=True)."""
    import functools

    fn = spec.config
    if isinstance(fn, functools.partial):
        return fn.func(*fn.args, **{**fn.keywords, "fast": True})
    return fn(fast=True)


def _schedule(model):
    from .mnist_models import mnist_schedule

    return mnist_schedule(model.config)
