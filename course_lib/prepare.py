"""Lecture mode: ``python -m course_lib prepare`` loads or trains every model the notebooks use, before class.

The models come from a small registry of ``(name, notebook, loader, kind)``. ``loader(fast, progress)`` returns
what ``checkpoints.cached_model`` returns, ``(model, CacheInfo)`` (or just the ``CacheInfo``): where the model came
from ("cache", "pretrained" shipped weights, or "trained") and how long it took. ``kind`` is "model", or
"samples" for a cached artefact that is computed rather than trained (notebook 08's guided MNIST sample sets,
whose loader returns an ``ArtefactInfo`` with source "cache" or "computed"). The known model modules are
imported lazily and one that is absent (or fails to import) is reported and skipped; a module can add
entries with ``register``. An entry that fails to load or train is reported and the others go on.

For the lecture itself: ``COURSE_LECTURE=1`` (or ``course_lib.plotting.use_style(lecture=True)`` in a notebook)
switches every figure to large fonts and thick lines.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KINDS", "SOURCES", "ArtefactInfo", "ModelEntry", "prepare", "register", "registry"]

KINDS = ("model", "samples")
SOURCES = ("cache", "pretrained", "trained", "computed", "failed")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    notebook: str
    load: Callable[[bool, bool], object]   # (fast, progress) -> (model, CacheInfo), CacheInfo or ArtefactInfo
    kind: str = "model"                    # "model", or "samples": a cached artefact that is computed, not trained

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")


@dataclass
class ArtefactInfo:
    """Where a cached artefact (not a model) came from: ``source`` "cache" or "computed", its file, the seconds."""

    source: str
    path: Path
    seconds: float
    meta: dict = field(default_factory=dict)

    def __str__(self) -> str:
        verb = {"cache": "loaded from the cache", "computed": "computed and cached"}.get(self.source, self.source)
        return f"{self.path.name}: {verb} in {self.seconds:.1f} s"


_EXTRA: list[ModelEntry] = []


def register(name: str, notebook: str, load: Callable[[bool, bool], object], kind: str = "model") -> None:
    """Add a model (or, ``kind="samples"``, a cached artefact) to ``python -m course_lib prepare`` (replaces an
    entry of the same name)."""
    entry = ModelEntry(name, notebook, load, kind)
    _EXTRA[:] = [e for e in _EXTRA if e.name != name]
    _EXTRA.append(entry)


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


# Notebook 08's toy models (08_conditioning_and_guidance: CLF_STEPS, COND_STEPS, MIXTURE, SEED = 0): (full, FAST)
# steps; keep them in step.
TOY_GUIDANCE_STEPS = {"classifier": (3000, 600), "cond_denoiser": (5000, 1000)}
TOY_GUIDANCE_MIXTURE = "three_classes_2d"


def _guided_sample_sets(gm, fast: bool, progress: bool) -> ArtefactInfo:
    """Notebook 08's guided MNIST sample sets, computed once with the models of ``load_guidance_models``."""
    from ._runtime import cache_dir
    from .checkpoints import config_key

    t0 = time.perf_counter()
    models = gm.load_guidance_models(fast=fast, progress=progress)
    # the file guidance_sample_sets reads or writes (tests/test_prepare.py checks it is there afterwards)
    path = cache_dir() / "samples" / f"guidance-{config_key(gm.sample_set_config(fast=fast, models=models))}.npz"
    existed = path.is_file()
    sets = gm.guidance_sample_sets(models, fast=fast, progress=progress)
    n = sum(int(x.shape[0] * x.shape[1]) for per_kind in sets.values() for x in per_kind.values())
    return ArtefactInfo("cache" if existed else "computed", path, time.perf_counter() - t0,
                        {"images": n, "strengths": {k: list(v) for k, v in sets.items()}})


def _guidance_entries(gm) -> list[ModelEntry]:
    def toy(which):
        full, short = TOY_GUIDANCE_STEPS[which]
        fn = gm.cached_toy_classifier if which == "classifier" else gm.cached_toy_cond_denoiser
        return lambda fast, progress: fn(TOY_GUIDANCE_MIXTURE, steps=short if fast else full, seed=0,
                                         progress=progress)

    return [ModelEntry("toy noise-aware classifier", "08", toy("classifier")),
            ModelEntry("toy conditional denoiser", "08", toy("cond_denoiser")),
            ModelEntry("MNIST conditional U-Net denoiser", "08",
                       lambda fast, progress: gm.load_or_train_mnist_denoiser(conditional=True, fast=fast,
                                                                              progress=progress)),
            ModelEntry("MNIST noise-aware classifier", "08",
                       lambda fast, progress: gm.load_or_train_noisy_classifier(fast=fast, progress=progress)),
            ModelEntry("MNIST guided sample sets", "08",
                       lambda fast, progress: _guided_sample_sets(gm, fast, progress), kind="samples")]


KNOWN = (("course_lib.vae_models", _vae_entries), ("course_lib.denoisers", _toy_entries),
         ("course_lib.mnist_models", _mnist_entries), ("course_lib.guidance_models", _guidance_entries))


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
    """Load or train each model (``only``: substrings of names); print and return a summary, one dict per entry
    with name, notebook, kind ("model" or "samples"), source ("cache", "pretrained", "trained", "computed" or
    "failed"), seconds and a message."""
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
        summary.append({"name": entry.name, "notebook": entry.notebook, "kind": entry.kind, "source": source,
                        "seconds": time.perf_counter() - t0, "message": message})
    log("")
    log(f"{'model':40s} {'nb':>3s} {'kind':>7s} {'source':>10s} {'seconds':>8s}")
    for s in summary:
        log(f"{s['name']:40s} {s['notebook']:>3s} {s['kind']:>7s} {s['source']:>10s} {s['seconds']:8.1f}")
    counts = {k: sum(s["source"] == k for s in summary) for k in SOURCES}
    n_samples = sum(s["kind"] == "samples" for s in summary)
    n_models = len(summary) - n_samples
    what = " and ".join([f"{n_models} model{'' if n_models == 1 else 's'}"] * (n_models > 0 or not n_samples)
                        + [f"{n_samples} sample set{'' if n_samples == 1 else 's'}"] * (n_samples > 0))
    log(f"{what}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        + f"; {sum(s['seconds'] for s in summary):.0f} s in all")
    for s in summary:
        if s["source"] == "failed":
            log(f"FAILED {s['name']}: {s['message']}")
    return summary
