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

``python -m course_lib prepare --check`` (``check_widgets``) times, on the lecturer's own machine, each widget's
answer to a slider move (kernel side: built headless with its notebook's arguments, compute + full draw + PNG
frame), with a warning above ``WIDGET_WARN_SECONDS``; ``bench/browser_latency.py`` measures the whole way in a browser.

For the lecture itself: ``COURSE_LECTURE=1`` (or ``course_lib.plotting.use_style(lecture=True)`` in a notebook)
switches every figure to large fonts and thick lines.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KINDS", "SOURCES", "ArtefactInfo", "ModelEntry", "Shipped", "check_widgets", "prepare", "register",
           "registry", "shipped_entries", "train_pretrained"]

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


# ============================================================================================ widget check
#: a slider move whose kernel-side work (compute, full draw, frame encode) takes longer than this is reported
WIDGET_WARN_SECONDS = 0.100


def _widget_builders() -> list[tuple[str, str, Callable[[], tuple[object, dict]]]]:
    """(name, notebook, build) for every widget the notebooks show; ``build()`` returns (view, {slider: values}),
    the view made with the notebook's own arguments (FAST where it has two), the values a sweep of each slider."""
    import numpy as np
    import torch

    def elbo():
        from .widgets.elbo import ElboView

        view = ElboView(x=1.5, q_mean=-0.5, q_log_std=0.3, W=1.0, sigma=0.7, n_draws=16, seed=0)
        return view, {"q_mean": np.linspace(-0.6, -0.2, 9), "q_log_std": np.linspace(0.2, 0.4, 9),
                      "W": np.linspace(0.9, 1.1, 9), "sigma": np.linspace(0.6, 0.8, 9), "n_draws": range(16, 25)}

    def noising(kind):
        def build():
            from .densities import named_mixture, two_moons
            from .widgets import noising as nz

            if kind == "1d":
                view = nz.noising_widget(named_mixture("trimodal_1d"), T=1000, n_samples=1000, t=150)
            elif kind == "2d":
                view = nz.noising_widget(named_mixture("eight_gaussians_2d"), T=1000, t=50)
            elif kind == "moons":
                view = nz.noising_widget(two_moons(1000, generator=torch.Generator().manual_seed(0)), T=1000, t=50)
            else:  # eight MNIST-sized images (the notebook's test digits; the timing does not depend on them)
                images = torch.rand(8, 28, 28, generator=torch.Generator().manual_seed(0))
                view = nz.noising_widget(images, T=1000, t=150)
            t0 = view.controls["t"].value
            return view, {"t": range(t0, t0 + 9)}
        return build

    def posterior(d):
        def build():
            from .densities import GaussianMixture, named_mixture
            from .diffusion import ExactDenoiser
            from .schedules import NoiseSchedule
            from .widgets.posterior import PosteriorMeanView

            schedule = NoiseSchedule.linear(1000)
            mixture = named_mixture("bimodal_1d" if d == 1 else "eight_gaussians_2d")
            fit = GaussianMixture([1.0], mixture.mixture_mean()[None], mixture.mixture_cov()[None])
            view = PosteriorMeanView(mixture, schedule, denoiser=ExactDenoiser(fit, schedule, "eps"),
                                     denoiser_label="best linear denoiser", t=250 if d == 1 else 150,
                                     x=-0.4 if d == 1 else [0.5, 0.9])
            sweeps = {"t": range(view.t0, view.t0 + 9), "x": np.linspace(-0.4, -0.24, 9) if d == 1 else
                      np.linspace(0.5, 0.66, 9)}
            if d == 2:
                sweeps["y"] = np.linspace(0.9, 1.06, 9)
            return view, sweeps
        return build

    def toy_guidance():
        from .denoisers import make_schedule
        from .densities import named_mixture
        from .widgets.guidance import ToyGuidanceView

        # three strengths and steps=10 (the notebook: seven, 100): its construction costs seconds per strength,
        # and a move's cost does not depend on either
        view = ToyGuidanceView(named_mixture("three_classes_2d"), make_schedule("cosine", 1000), n=150, seed=0, y=2,
                               steps=10, gammas=(0.0, 1.0, 3.0))
        gammas = [v for _, v in view.controls["gamma"].options]
        return view, {"gamma": (gammas * 3)[:9]}

    def mnist_guidance():
        # synthetic sample sets of the FAST shape and strengths (the real ones need the trained models): the
        # timing depends on the image grid's size, not on its pixels
        from .widgets.guidance import MnistGuidanceView

        g = torch.Generator().manual_seed(0)
        gammas = {"classifier": [0.0, 1.0, 5.0], "cfg": [1.0, 3.0, 8.0]}
        sets = {k: {gm: torch.rand(10, 16, 1, 28, 28, generator=g) * 2 - 1 for gm in gs} for k, gs in gammas.items()}
        rows = [{"kind": k, "gamma": gm, "recognised": 0.5, "diversity": 0.8} for k, gs in gammas.items() for gm in gs]
        view = MnistGuidanceView(sets, rows, kind="classifier", digit=3)
        return view, {"gamma": [1.0, 5.0, 1.0, 0.0, 1.0, 5.0, 1.0, 0.0, 1.0]}

    return [("ElboView", "01", elbo),
            ("NoisingView1D (trimodal)", "04", noising("1d")),
            ("NoisingView2D (eight Gaussians)", "04", noising("2d")),
            ("NoisingView2D (two moons)", "04", noising("moons")),
            ("NoisingViewImages (8 images)", "04", noising("images")),
            ("PosteriorMeanView 1-D", "05", posterior(1)),
            ("PosteriorMeanView 2-D", "05", posterior(2)),
            ("ToyGuidanceView", "08", toy_guidance),
            ("MnistGuidanceView", "08", mnist_guidance)]


def _time_moves(view, sweeps: dict, n: int) -> list[float]:
    """Seconds of ``n`` slider moves, round robin over the sliders: the view's update (compute, artists) and what
    a connected front end then costs the kernel, a full Agg draw and the frame's PNG encode (ipympl's diff)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = view.fig.canvas
    encode = getattr(canvas, "get_diff_image", None)
    if encode is not None:
        FigureCanvasAgg.draw(canvas)
        canvas._png_is_old = True
        encode()  # the first (full) frame, as when the view is shown
    names = list(sweeps)
    values = {k: list(v) for k, v in sweeps.items()}
    times = []
    for i in range(n + len(names)):  # the first move of each slider warms up (caches), not timed
        name = names[i % len(names)]
        seq = values[name]
        v = seq[(i // len(names)) % len(seq)]
        if hasattr(v, "item"):
            v = v.item()
        t0 = time.perf_counter()
        view.update(**{name: v})
        FigureCanvasAgg.draw(canvas)
        if encode is not None:
            canvas._png_is_old = True
            encode()
        if i >= len(names):
            times.append(time.perf_counter() - t0)
    return times


def check_widgets(n: int = 12, *, log: Callable[[str], None] = print, only: list[str] | None = None,
                  warn_seconds: float = WIDGET_WARN_SECONDS) -> list[dict]:
    """How fast each widget answers a slider move on this machine (``python -m course_lib prepare --check``).

    Each widget is built headless with its notebook's arguments and ``n`` slider moves are timed (round robin over
    its sliders), each the kernel's whole share of a move: the compute and artist updates, a full draw and the
    PNG frame. A browser adds its own share (~20-50 ms: the key press, the websocket, decoding and painting the
    frame). Prints median and 95th percentile per widget and a warning above ``warn_seconds``; returns one dict per
    widget (name, notebook, median, p95, n, build_seconds, warn, and error when it could not be built).
    """
    import statistics

    import matplotlib

    builders = _widget_builders()
    if only:
        builders = [b for b in builders if any(s.lower() in b[0].lower() for s in only)]
    rows = []
    log(f"widget response on this machine (kernel side: compute + full draw + PNG frame; {n} slider moves each; "
        f"load average {' '.join(f'{x:.2f}' for x in _load())})")
    log(f"{'widget':34s} {'nb':>3s} {'median':>9s} {'p95':>9s} {'build':>7s}")
    with matplotlib.rc_context():
        for name, notebook, build in builders:
            row = {"name": name, "notebook": notebook}
            try:
                t0 = time.perf_counter()
                view, sweeps = build()
                row["build_seconds"] = time.perf_counter() - t0
                times = sorted(_time_moves(view, sweeps, n))
                row.update(n=len(times), median=statistics.median(times),
                           p95=times[min(len(times) - 1, round(0.95 * (len(times) - 1)))])
                row["warn"] = row["p95"] > warn_seconds
                view.fig.clear()
                log(f"{name:34s} {notebook:>3s} {row['median'] * 1e3:6.1f} ms {row['p95'] * 1e3:6.1f} ms "
                    f"{row['build_seconds']:5.1f} s" + ("  WARNING: slow" if row["warn"] else ""))
            except Exception as exc:  # report and go on with the others
                row.update(error=f"{type(exc).__name__}: {exc}"[:300], warn=True)
                log(f"{name:34s} {notebook:>3s}  FAILED: {row['error']}")
            rows.append(row)
    slow = [r for r in rows if r.get("warn")]
    if slow:
        log(f"WARNING: {len(slow)} widget(s) above {warn_seconds * 1e3:.0f} ms per slider move (95th percentile) or "
            f"failed: {', '.join(r['name'] for r in slow)}. On a busy machine close other programs; students see "
            "this plus the browser's share.")
    else:
        log(f"every widget under {warn_seconds * 1e3:.0f} ms per slider move (95th percentile), kernel side")
    return rows


def _load() -> tuple[float, ...]:
    import os

    try:
        return os.getloadavg()
    except OSError:
        return ()
