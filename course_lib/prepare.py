"""Lecture mode: ``python -m course_lib prepare`` loads or trains every model the notebooks use, before class.

The models come from a small registry of ``(name, notebook, loader)``. ``loader(fast, progress)`` returns what
``checkpoints.cached_model`` returns, ``(model, CacheInfo)`` (or just the ``CacheInfo``): where the model came from
("cache", "pretrained" shipped weights, or "trained") and how long it took. The known model modules are
imported lazily and one that is absent (or fails to import) is reported and skipped; a module can add
models with ``register``. A model that fails to load or train is reported and the others go on.

For the lecture itself: ``COURSE_LECTURE=1`` (or ``course_lib.plotting.use_style(lecture=True)`` in a notebook)
switches every figure to large fonts and thick lines.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ModelEntry", "prepare", "register", "registry"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    notebook: str
    load: Callable[[bool, bool], object]   # (fast, progress) -> (model, CacheInfo) or CacheInfo


_EXTRA: list[ModelEntry] = []


def register(name: str, notebook: str, load: Callable[[bool, bool], object]) -> None:
    """Add a model to ``python -m course_lib prepare`` (replaces an entry of the same name)."""
    _EXTRA[:] = [e for e in _EXTRA if e.name != name]
    _EXTRA.append(ModelEntry(name, notebook, load))


# The notebooks' own settings (06_training_diffusion_on_toys: TRAIN_STEPS, TOY_STEPS, SEED): keep them in step.
TOY_DENOISERS = ([("eight_gaussians_2d", t, 5000, 300) for t in ("x0", "eps", "score")]
                 + [("swiss_roll", t, 4000, 300) for t in ("x0", "eps", "score")]
                 + [("two_moons", "eps", 4000, 300)])


def _vae_entries(m) -> list[ModelEntry]:
    return [ModelEntry(f"MNIST VAE, latent size {k}", "03",
                       lambda fast, progress, k=k: m.load_or_train_mnist_vae(k, fast=fast, progress=progress))
            for k in m.MNIST_LATENT_DIMS]


def _mnist_entries(m) -> list[ModelEntry]:
    return [ModelEntry("MNIST U-Net denoiser", "07",
                       lambda fast, progress: m.load_or_train_mnist_denoiser(fast=fast, progress=progress)),
            ModelEntry("MNIST feature classifier", "07",
                       lambda fast, progress: m.load_or_train_mnist_classifier(fast=fast, progress=progress))]


def _toy_entries(m) -> list[ModelEntry]:
    return [ModelEntry(f"toy denoiser {data}/{target}", "06",
                       lambda fast, progress, d=data, t=target, s=full, f=short: m.cached_toy_denoiser(
                           d, t, steps=f if fast else s, seed=0, progress=progress))
            for data, target, full, short in TOY_DENOISERS]


KNOWN = (("course_lib.vae_models", _vae_entries), ("course_lib.denoisers", _toy_entries),
         ("course_lib.mnist_models", _mnist_entries))


def registry(log: Callable[[str], None] | None = print) -> list[ModelEntry]:
    """Every registered model: those of the known model modules that import, then ``register``-ed ones."""
    entries: list[ModelEntry] = []
    for module, make in KNOWN:
        try:
            entries += make(importlib.import_module(module))
        except Exception as exc:  # an absent or broken module: the others are still prepared
            if log:
                log(f"skipped {module}: {type(exc).__name__}: {exc}")
    names = {e.name for e in _EXTRA}
    return [e for e in entries if e.name not in names] + list(_EXTRA)


def prepare(*, fast: bool = False, progress: bool = True, only: list[str] | None = None,
            entries: list[ModelEntry] | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Load or train each model (``only``: substrings of names); print and return a summary, one dict per model
    with name, notebook, source ("cache", "pretrained", "trained" or "failed"), seconds and a message."""
    entries = registry(log) if entries is None else entries
    if only:
        entries = [e for e in entries if any(s.lower() in e.name.lower() for s in only)]
    summary = []
    for i, entry in enumerate(entries, 1):
        log(f"[{i}/{len(entries)}] {entry.name} (notebook {entry.notebook}) ...")
        t0 = time.perf_counter()
        try:
            out = entry.load(fast, progress)
            info = out[1] if isinstance(out, tuple) else out
            source, message = getattr(info, "source", "loaded"), str(info)
        except Exception as exc:
            source, message = "failed", f"{type(exc).__name__}: {exc}"[:300]
        summary.append({"name": entry.name, "notebook": entry.notebook, "source": source,
                        "seconds": time.perf_counter() - t0, "message": message})
    log("")
    log(f"{'model':40s} {'nb':>3s} {'source':>10s} {'seconds':>8s}")
    for s in summary:
        log(f"{s['name']:40s} {s['notebook']:>3s} {s['source']:>10s} {s['seconds']:8.1f}")
    counts = {k: sum(s["source"] == k for s in summary) for k in ("cache", "pretrained", "trained", "failed")}
    log(f"{len(summary)} models: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        + f"; {sum(s['seconds'] for s in summary):.0f} s in all")
    for s in summary:
        if s["source"] == "failed":
            log(f"FAILED {s['name']}: {s['message']}")
    return summary
