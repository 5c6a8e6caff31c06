"""The registry of the kit's models, and the two commands that read it.

``python -m course_lib prepare`` loads or trains every model the notebooks use, before class;
``python -m course_lib train-pretrained [KEYS]`` retrains the weights that ship in ``course_lib/pretrained``
(``train_pretrained``: the entries with a ``Shipped`` recipe, keys such as ``mnist_denoiser`` or ``mnist_vae_k20``).

The models come from one registry of ``ModelEntry(name, notebook, loader, kind, shipped)``.
``loader(fast, progress)`` returns
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

__all__ = ["KINDS", "SOURCES", "ArtefactInfo", "ModelEntry", "Shipped", "prepare", "register", "registry",
           "shipped_entries", "train_pretrained"]

KINDS = ("model", "samples")
SOURCES = ("cache", "pretrained", "trained", "computed", "failed")


@dataclass(frozen=True)
class Shipped:
    """How a model whose weights ship with the kit is made again (``train_pretrained``).

    ``key``: the name ``train-pretrained`` takes; ``name``: the checkpoint name (file ``<name>-<config key>.pt``);
    ``config()``: the full config; ``build(config)``: the untrained model; ``train(model, config, progress=, dev=)``:
    the metadata; ``check(model, meta)``: a one-line summary of the float16 weights (it may add to ``meta``).
    """

    key: str
    name: str
    config: Callable[[], dict]
    build: Callable[[dict], object]
    train: Callable[..., dict]
    check: Callable[[object, dict], str] | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    notebook: str
    load: Callable[[bool, bool], object]   # (fast, progress) -> (model, CacheInfo), CacheInfo or ArtefactInfo
    kind: str = "model"                    # "model", or "samples": a cached artefact that is computed, not trained
    shipped: Shipped | None = None         # how its shipped weights are made, for models in course_lib/pretrained

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
    def check(model, meta) -> str:
        import torch

        x_test, _ = m.mnist_test_binarized()
        dev = next(model.parameters()).device
        meta["test_elbo_float16"] = m.evaluate_vae(model, x_test.to(dev), generator=torch.Generator().manual_seed(0))[
            "elbo"]
        return f"test ELBO {meta['test_elbo']:.2f} nats (float16 {meta['test_elbo_float16']:.2f})"

    return [ModelEntry(f"MNIST VAE, latent size {k}", "03",
                       lambda fast, progress, k=k: m.load_or_train_mnist_vae(k, fast=fast, progress=progress),
                       shipped=Shipped(f"mnist_vae_k{k}", m.MNIST_NAME, lambda k=k: m.mnist_vae_config(k),
                                       m.mnist_vae_build, m.train_mnist_vae, check))
            for k in m.MNIST_LATENT_DIMS]


def _mnist_entries(m) -> list[ModelEntry]:
    from functools import partial

    def check_classifier(model, meta) -> str:
        from .data import mnist_model_tensors

        xt, yt = mnist_model_tensors("test")
        meta["test_accuracy_float16"] = round(m.classifier_accuracy(model, xt, yt), 5)
        return f"test accuracy {meta['test_accuracy']:.4f} (float16 {meta['test_accuracy_float16']:.4f})"

    def check_denoiser(model, meta) -> str:
        return f"final loss {meta['final_loss']:.4f} per pixel"

    return [ModelEntry("MNIST U-Net denoiser", "07",
                       lambda fast, progress: m.load_or_train_mnist_denoiser(fast=fast, progress=progress),
                       shipped=Shipped("mnist_denoiser", m.DENOISER_NAME, m.mnist_diffusion_config, m.mnist_unet,
                                       m.train_mnist_denoiser, check_denoiser)),
            ModelEntry("MNIST feature classifier", "07",
                       lambda fast, progress: m.load_or_train_mnist_classifier(fast=fast, progress=progress),
                       shipped=Shipped("mnist_classifier", m.CLASSIFIER_NAME, m.mnist_classifier_config,
                                       m.mnist_classifier, m.train_mnist_classifier, check_classifier)),
            ModelEntry("MNIST conditional U-Net denoiser", "08",
                       lambda fast, progress: m.load_or_train_mnist_denoiser(conditional=True, fast=fast,
                                                                             progress=progress),
                       shipped=Shipped("mnist_cond_denoiser", m.COND_DENOISER_NAME,
                                       partial(m.mnist_diffusion_config, conditional=True), m.mnist_unet,
                                       m.train_mnist_denoiser, check_denoiser))]


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
    def check_noisy(model, meta) -> str:
        pairs = zip(meta["accuracy_t"], meta["accuracy"], strict=True)
        return "accuracy at t = " + ", ".join(f"{t}: {a:.3f}" for t, a in pairs)

    def toy(which):
        full, short = TOY_GUIDANCE_STEPS[which]
        fn = gm.cached_toy_classifier if which == "classifier" else gm.cached_toy_cond_denoiser
        return lambda fast, progress: fn(TOY_GUIDANCE_MIXTURE, steps=short if fast else full, seed=0,
                                         progress=progress)

    return [ModelEntry("toy noise-aware classifier", "08", toy("classifier")),
            ModelEntry("toy conditional denoiser", "08", toy("cond_denoiser")),
            ModelEntry("MNIST noise-aware classifier", "08",
                       lambda fast, progress: gm.load_or_train_noisy_classifier(fast=fast, progress=progress),
                       shipped=Shipped("mnist_noisy_classifier", gm.NOISY_CLASSIFIER_NAME, gm.noisy_classifier_config,
                                       gm.noisy_classifier, gm.train_noisy_classifier, check_noisy)),
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


def shipped_entries(log: Callable[[str], None] | None = print) -> dict[str, ModelEntry]:
    """The registry's entries whose weights ship with the kit, by ``Shipped.key``."""
    return {e.shipped.key: e for e in registry(log) if e.shipped is not None}


def train_pretrained(keys=None, *, dev=None, progress: bool = True, directory=None,
                     log: Callable[[str], None] = print) -> list[Path]:
    """Train the shipped models ``keys`` (default: all of ``shipped_entries``) and save them, float16, where
    ``checkpoints.cached_model`` finds shipped weights (``directory``, default ``course_lib/pretrained``).

    Each model starts from the same initial weights as ``cached_model`` would give it (torch seeded from the config's
    seed), is trained by its ``Shipped.train``, rounded to float16, checked (``Shipped.check`` on the rounded model)
    and saved with its config and metadata. Returns the paths written.
    """
    import torch

    from ._runtime import device
    from .checkpoints import PRETRAINED_DIR, checkpoint_path, float16_state, save_checkpoint

    entries = shipped_entries(log)
    keys = list(entries) if keys is None else list(keys)
    unknown = [k for k in keys if k not in entries]
    if unknown:
        raise ValueError(f"keys: unknown shipped model(s) {unknown}; expected some of {sorted(entries)}")
    dev = torch.device(dev) if dev is not None else device()
    paths = []
    for key in keys:
        spec = entries[key].shipped
        cfg = spec.config()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg.get("seed", 0)))
            model = spec.build(cfg)
        model = model.to(dev)
        meta = spec.train(model, cfg, progress=progress, dev=dev) or {}
        half = float16_state(model)
        model.load_state_dict(half)  # check what ships: the rounded weights
        model.eval()
        meta["storage"] = "float16"
        summary = spec.check(model, meta) if spec.check else ""
        path = save_checkpoint(checkpoint_path(spec.name, cfg, directory or PRETRAINED_DIR), half, name=spec.name,
                               config=cfg, meta=meta)
        log(f"{key}: {summary}; {meta.get('steps', '?')} steps in {meta.get('train_seconds', 0) / 60:.1f} min "
            f"({meta.get('cpu_seconds', 0) / 60:.1f} CPU-min) on {meta.get('device', dev)}; {path.name} "
            f"{path.stat().st_size / 2**20:.2f} MiB")
        paths.append(path)
    return paths
