"""The guidance-strength widget (notebook 08): what the strength gamma does to guided samples, on a toy and on MNIST.

Classifier guidance samples with the score grad log p(x^t) + gamma grad log p(y | x^t). At gamma = 0 it is the
unconditional model, at gamma = 1 exactly p(x | y); the density it is usually pictured as drawing from is the
tilted p(x) p(y | x)^gamma (``course_lib.guidance.tilted_density_grid``). For gamma other than 0 and 1 guided
*sampling* does not draw from that density: the noised tilt is not the tilt of the noised density. The toy view
puts the two side by side (samples in blue, the tilted density and its statistics in black).

Pure compute (tested headlessly against the exact core, timed in bench/section_guidance.py):
- ``guided_toy_samples(mixture, schedule, gamma, ...)``: guided samples of every class at one strength, (K, n, d);
- ``sample_statistics(mixture, samples, y)``: what the toy view reports of samples: the exact classifier's mean
  confidence p(y | x), the share it assigns to y, the mean and the spread sqrt(tr Cov);
- ``tilted_statistics(mixture, y, gamma)``: the same quantities under p(x) p(y | x)^gamma, by quadrature;
- ``probability_ellipse(cov, mass)``: (width, height, angle) of the ellipse holding ``mass`` of a 2-D Gaussian;
- ``toy_guidance_data(mixture, schedule, ...)``: everything the toy view draws, for every (y, gamma);
- ``check_sample_sets`` / ``tradeoff_curve`` / ``sample_grid``: the MNIST view's inputs, one kind's trade-off
  curve from ``guidance_models.tradeoff_table`` rows, and one (kind, gamma, digit) set tiled into one image.

Views (``WidgetView``; everything precomputed, a move only swaps arrays):
- ``ToyGuidanceView(mixture, schedule, ...)``: controls ``y`` (class) and ``gamma``;
- ``MnistGuidanceView(sample_sets, tradeoff_rows, ...)``: controls ``kind``, ``digit`` and ``gamma``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .._checks import check_count, describe
from ..densities import GaussianMixture
from ..guidance import ClassifierGuidance, ExactClassifier, check_strength, tilted_density_grid
from ..plotting import COLORS, image_grid, to_numpy
from ..schedules import NoiseSchedule
from ._base import WidgetView, cache_axes_rasters, cache_raster

__all__ = [
    "DEFAULT_GAMMAS",
    "KIND_LABELS",
    "MnistGuidanceView",
    "ToyGuidanceView",
    "check_sample_sets",
    "guided_toy_samples",
    "probability_ellipse",
    "sample_grid",
    "sample_statistics",
    "tilted_statistics",
    "toy_guidance_data",
    "tradeoff_curve",
]

DEFAULT_GAMMAS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0)
#: the ellipses of p(x | y) drawn by the toy view hold these probability masses
MASSES = (0.5, 0.9)
#: the share of samples recognised as the prompt when the prompt is ignored (ten digits)
CHANCE = 0.1
#: how the MNIST view names the kinds of ``guidance_models.guidance_sample_sets``
KIND_LABELS = {"classifier": "classifier guidance", "cfg": "classifier-free"}


# ============================================================================================ checks
def _check_mixture(mixture) -> GaussianMixture:
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture: expected a labelled 2-D course_lib.GaussianMixture (label = component), "
                        f"got {describe(mixture)}")
    if mixture.d != 2:
        raise ValueError(f"mixture: expected a 2-D mixture (d = 2), got d = {mixture.d}")
    if mixture.K < 2:
        raise ValueError(f"mixture: expected at least 2 components (the classes), got K = {mixture.K}")
    return mixture


def _check_schedule(schedule) -> NoiseSchedule:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule: expected a NoiseSchedule (e.g. NoiseSchedule.cosine(1000)), "
                        f"got {describe(schedule)}")
    return schedule


def _check_gammas(gammas, name: str = "gammas") -> tuple[float, ...]:
    if isinstance(gammas, (str, bytes)) or not hasattr(gammas, "__iter__"):
        raise TypeError(f"{name}: expected a sequence of guidance strengths >= 0, got {describe(gammas)}")
    out = []
    for g in gammas:
        try:
            out.append(check_strength(g.item() if isinstance(g, (torch.Tensor, np.ndarray)) else g, name))
        except TypeError:
            raise TypeError(f"{name}: expected guidance strengths (finite numbers >= 0), got {describe(g)}") from None
    if not out:
        raise ValueError(f"{name}: expected at least one guidance strength, got none")
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: expected distinct strengths, got {out}")
    return tuple(sorted(out))


def _check_label(y, K: int, name: str = "y") -> int:
    if isinstance(y, bool) or not isinstance(y, numbers.Integral) or not 0 <= int(y) < K:
        raise ValueError(f"{name}: expected a class label in 0..{K - 1}, got {describe(y)}")
    return int(y)


def _check_steps(steps, T: int) -> int:
    if steps is None:
        return min(100, T)
    steps = check_count(steps, "steps")
    if steps > T:
        raise ValueError(f"steps: expected an integer in 1..{T} (the schedule's T), got {steps}")
    return steps


def _param_dtype(model) -> torch.dtype | None:
    if isinstance(model, torch.nn.Module):
        p = next(iter(model.parameters()), None)
        if p is not None and p.is_floating_point():
            return p.dtype
    return None


class _Cast:
    """Call a network in its own dtype and hand the answer back in the caller's (autograd flows through)."""

    def __init__(self, model, dtype: torch.dtype):
        self.model, self.dtype = model, dtype
        self.target = getattr(model, "target", "eps")
        self.dim = getattr(model, "dim", None)

    def __call__(self, x_t, t):
        return self.model(x_t.to(self.dtype), t).to(x_t.dtype)


def _resolve_models(mixture, schedule, classifier, denoiser):
    from ..diffusion import ExactDenoiser

    if classifier is None:
        classifier = ExactClassifier(mixture, schedule)
    elif not callable(classifier):
        raise TypeError(f"classifier: expected a callable classifier(x_t, t) -> logits (n, K), "
                        f"got {describe(classifier)}")
    if denoiser is None:
        denoiser = ExactDenoiser(mixture, schedule, "eps")
    elif not callable(denoiser):
        raise TypeError(f"denoiser: expected a callable denoiser(x_t, t) with a .target, got {describe(denoiser)}")
    dtype = _param_dtype(denoiser) or torch.float64
    if _param_dtype(classifier) not in (None, dtype):
        classifier = _Cast(classifier, _param_dtype(classifier))
    # one look at the classifier: one logit per class of the mixture
    with torch.no_grad():
        logits = classifier(mixture.means.to(dtype), torch.ones(mixture.K, dtype=torch.long))
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (mixture.K, mixture.K):
        raise ValueError(f"classifier: expected logits of shape (n, {mixture.K}) (one per class of the mixture), got "
                         f"{describe(logits)} for n = {mixture.K} points")
    return classifier, denoiser, dtype


# ============================================================================================ toy compute
def guided_toy_samples(mixture, schedule, gamma: float, *, classifier=None, denoiser=None, n: int = 400,
                       seed: int = 0, steps: int | None = None) -> torch.Tensor:
    """Classifier-guided samples of every class at strength gamma: float64 (K, n, d), row y = class y's samples.

    One ancestral (eta = 1) run of K n chains on ``timesteps(T, steps)`` with ``ClassifierGuidance(denoiser,
    classifier, schedule, y, gamma)``, y = the class of each chain. ``classifier``: ``classifier(x_t, t)`` -> logits
    (n, K) of a noise-aware classifier (default: the exact ``ExactClassifier``); ``denoiser``: (x_t, t) -> its
    ``.target`` (default: the exact eps ``ExactDenoiser``). ``steps``: default min(100, T). The noise comes from
    ``torch.Generator().manual_seed(seed)``, so every gamma starts from the same x^T and noise (common random numbers).
    """
    mixture = _check_mixture(mixture)
    schedule = _check_schedule(schedule)
    gamma = check_strength(gamma)
    n = check_count(n, "n")
    steps = _check_steps(steps, schedule.T)
    classifier, denoiser, dtype = _resolve_models(mixture, schedule, classifier, denoiser)
    return _guided(mixture, schedule, gamma, classifier, denoiser, dtype, n, int(seed), steps)


def _guided(mixture, schedule, gamma, classifier, denoiser, dtype, n, seed, steps) -> torch.Tensor:
    from ..samplers import ancestral_sample

    K, d = mixture.K, mixture.d
    y = torch.arange(K).repeat_interleave(n)
    guided = ClassifierGuidance(denoiser, classifier, schedule, y, gamma)
    x = ancestral_sample(guided, schedule, (K * n, d), steps=steps, generator=torch.Generator().manual_seed(seed),
                         dtype=dtype)
    return x.detach().to(torch.float64).cpu().reshape(K, n, d)


def sample_statistics(mixture, samples, y: int) -> dict:
    """What the toy view reports of samples x (n, d) meant for class y, judged by the *exact* p(y | x) of the mixture.

    Returns floats ``confidence`` = mean p(y | x), ``share`` = fraction of samples whose most probable class is y,
    ``spread`` = sqrt(tr Cov) of the samples, and ``mean`` (d,) numpy.
    """
    mixture = _check_mixture(mixture)
    x = mixture._points(samples, "samples")
    y = _check_label(y, mixture.K)
    post = mixture.class_posterior(x, 1.0)
    spread = math.sqrt(float(torch.cov(x.T).trace())) if x.shape[0] > 1 else float("nan")
    return {"confidence": float(post[:, y].mean()), "share": float((post.argmax(1) == y).double().mean()),
            "spread": spread, "mean": to_numpy(x.mean(0))}


def tilted_statistics(mixture, y: int, gamma: float, *, lim: float = 6.0, n: int = 241) -> dict:
    """``sample_statistics``' quantities under the tilted density p(x) p(y | x)^gamma / Z, by quadrature.

    The density is ``tilted_density_grid`` on an n x n grid over [-lim, lim]^2 (wide enough to hold its mass).
    Returns floats ``confidence`` (E p(y | x)), ``share`` (P(argmax_k p(k | x) = y)), ``spread`` (sqrt(tr Cov)) and
    ``mean`` (d,). gamma = 0 gives the mixture's (confidence = the weight w_y), gamma = 1 component y's.
    """
    mixture = _check_mixture(mixture)
    y = _check_label(y, mixture.K)
    gamma = check_strength(gamma)
    xs, ys, dens = tilted_density_grid(mixture, y, gamma, (-lim, lim), (-lim, lim), n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    w = dens.reshape(-1) / dens.sum()
    post = mixture.class_posterior(pts, 1.0)
    mean = w @ pts
    dev = pts - mean
    cov = dev.T @ (dev * w[:, None])
    return {"confidence": float(w @ post[:, y]), "share": float(w @ (post.argmax(1) == y).double()),
            "spread": math.sqrt(float(cov.trace())), "mean": to_numpy(mean)}


def probability_ellipse(cov, mass: float) -> tuple[float, float, float]:
    """(width, height, angle in degrees) of the ellipse {x : (x - mu)^T cov^{-1} (x - mu) <= r^2} holding ``mass``.

    For a 2-D Gaussian the Mahalanobis radius r of mass p is sqrt(-2 log(1 - p)). cov: (2, 2); mass in (0, 1).
    """
    c = np.asarray(to_numpy(cov), dtype=np.float64)
    if c.shape != (2, 2):
        raise ValueError(f"cov: expected a 2 x 2 covariance, got shape {c.shape}")
    if isinstance(mass, bool) or not isinstance(mass, numbers.Real) or not 0.0 < float(mass) < 1.0:
        raise ValueError(f"mass: expected a probability strictly between 0 and 1, got {describe(mass)}")
    r = math.sqrt(-2.0 * math.log1p(-float(mass)))
    vals, vecs = np.linalg.eigh(c)
    vals = np.clip(vals, 0.0, None)
    angle = float(np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1])))  # direction of the major axis
    return 2.0 * r * float(np.sqrt(vals[1])), 2.0 * r * float(np.sqrt(vals[0])), angle


def toy_guidance_data(mixture, schedule, *, classifier=None, denoiser=None, gammas=DEFAULT_GAMMAS, n: int = 400,
                      seed: int = 0, steps: int | None = None, lim: float = 3.0, grid_n: int = 121) -> dict:
    """Everything ``ToyGuidanceView`` draws, for every class y and strength gamma (numpy arrays, float64).

    K = mixture.K classes, G = len(gammas) strengths (sorted), m = grid_n. Keys:
    ``gammas`` (G,); ``samples`` (K, G, n, 2): ``guided_toy_samples`` (same seed for every gamma);
    ``xs``, ``ys`` (m,) and ``density`` (K, G, m, m): ``tilted_density_grid(mixture, y, gamma, (-lim, lim),
    (-lim, lim), m)`` (rows = y coordinate); per (y, gamma) from the samples (``sample_statistics``): ``confidence``,
    ``share``, ``spread`` (K, G), and under the tilted density (``tilted_statistics``): ``exact_confidence``,
    ``exact_share``, ``exact_spread`` (K, G); the classes: ``means`` (K, 2), ``weights`` (K,), ``ellipses``
    (K, len(MASSES), 3) = ``probability_ellipse(cov_y, mass)`` for mass in ``MASSES`` (0.5, 0.9); ``masses``;
    ``steps`` (int) and ``lim`` (float).
    """
    mixture = _check_mixture(mixture)
    schedule = _check_schedule(schedule)
    gammas = _check_gammas(gammas)
    n = check_count(n, "n", 2)
    steps = _check_steps(steps, schedule.T)
    lim = float(lim)
    if not math.isfinite(lim) or lim <= 0:
        raise ValueError(f"lim: expected a positive number (the plotted range is [-lim, lim]^2), got {lim}")
    grid_n = check_count(grid_n, "grid_n", 2)
    classifier, denoiser, dtype = _resolve_models(mixture, schedule, classifier, denoiser)
    K, G = mixture.K, len(gammas)
    samples = np.empty((K, G, n, 2))
    density = np.empty((K, G, grid_n, grid_n))
    stats = {k: np.empty((K, G)) for k in ("confidence", "share", "spread", "exact_confidence", "exact_share",
                                            "exact_spread")}
    xs = ys = None
    for j, g in enumerate(gammas):
        x = _guided(mixture, schedule, g, classifier, denoiser, dtype, n, int(seed), steps)
        samples[:, j] = to_numpy(x)
        for y in range(K):
            xs, ys, dens = tilted_density_grid(mixture, y, g, (-lim, lim), (-lim, lim), grid_n)
            density[y, j] = to_numpy(dens)
            got, exact = sample_statistics(mixture, x[y], y), tilted_statistics(mixture, y, g)
            for key in ("confidence", "share", "spread"):
                stats[key][y, j] = got[key]
                stats["exact_" + key][y, j] = exact[key]
    covs = to_numpy(mixture.covs)
    ellipses = np.array([[probability_ellipse(covs[y], m) for m in MASSES] for y in range(K)])
    return {"gammas": np.asarray(gammas), "samples": samples, "xs": to_numpy(xs), "ys": to_numpy(ys),
            "density": density, **stats, "means": to_numpy(mixture.means), "weights": to_numpy(mixture.weights),
            "ellipses": ellipses, "masses": MASSES, "steps": steps, "lim": lim}


# ============================================================================================ MNIST compute
def check_sample_sets(sample_sets) -> dict:
    """``guidance_models.guidance_sample_sets`` output, checked: {kind: {gamma (float): (10, per_digit, 1, 28, 28)}}.

    Every set must have the same shape (10 digits, the same number per digit, images H x W, one channel or none).
    Returns {kind: {float(gamma): float32 numpy array (10, per_digit, H, W)}}, strengths sorted.
    """
    if not isinstance(sample_sets, dict) or not sample_sets:
        raise TypeError("sample_sets: expected guidance_sample_sets(...) output, a non-empty dict "
                        f"{{kind: {{gamma: tensor (10, per_digit, 1, 28, 28)}}}}, got {describe(sample_sets)}")
    out, shape = {}, None
    for kind, sets in sample_sets.items():
        if not isinstance(kind, str):
            raise TypeError(f"sample_sets: expected kinds as strings ('classifier', 'cfg'), got {describe(kind)}")
        if not isinstance(sets, dict) or not sets:
            raise TypeError(f"sample_sets: expected a non-empty dict {{gamma: images}} for kind {kind!r}, "
                            f"got {describe(sets)}")
        out[kind] = {}
        for g in sorted(sets, key=float):
            gamma = check_strength(g, f"sample_sets[{kind!r}] key")
            x = to_numpy(sets[g]).astype(np.float32, copy=False)
            if x.ndim == 5 and x.shape[2] == 1:
                x = x[:, :, 0]
            if x.ndim != 4 or x.shape[0] != 10 or x.shape[1] < 1:
                raise ValueError(f"sample_sets: expected images of shape (10, per_digit, 1, H, W) for kind {kind!r}, "
                                 f"gamma {gamma:g}, got shape {tuple(np.shape(sets[g]))}")
            if shape is not None and x.shape != shape:
                raise ValueError(f"sample_sets: expected every set of shape {shape}, got {x.shape} for kind "
                                 f"{kind!r}, gamma {gamma:g}")
            if not np.isfinite(x).all():
                raise ValueError(f"sample_sets: expected finite pixel values, got NaN or inf for kind {kind!r}, "
                                 f"gamma {gamma:g}")
            shape = x.shape
            out[kind][gamma] = x
    return out


def tradeoff_curve(tradeoff_rows, kind: str) -> dict:
    """One kind's rows of ``guidance_models.tradeoff_table``, sorted by gamma: numpy arrays (G,).

    Keys ``gamma``, ``recognised`` (share of samples the held-out judge reads as the prompt digit), ``diversity``
    (NaN where a row has none: ``tradeoff_table`` without ``reference``) and ``unconditional`` (bool: the prompt
    cannot matter there, so ``recognised`` is the chance level; False where a row does not say).
    """
    rows = _check_rows(tradeoff_rows)
    mine = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["gamma"])
    if not mine:
        kinds = sorted({r["kind"] for r in rows})
        raise ValueError(f"kind: expected one of the rows' kinds {kinds}, got {kind!r}")
    return {"gamma": np.array([r["gamma"] for r in mine], dtype=np.float64),
            "recognised": np.array([r["recognised"] for r in mine], dtype=np.float64),
            "diversity": np.array([r.get("diversity", np.nan) for r in mine], dtype=np.float64),
            "unconditional": np.array([r.get("unconditional", False) for r in mine], dtype=bool)}


def _check_rows(rows) -> list[dict]:
    if isinstance(rows, dict) or not hasattr(rows, "__iter__"):
        raise TypeError(f"tradeoff_rows: expected tradeoff_table(...) output, a list of dicts, got {describe(rows)}")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not {"kind", "gamma", "recognised"} <= set(r):
            raise ValueError("tradeoff_rows: expected dicts with keys 'kind', 'gamma', 'recognised' (and "
                             f"'diversity'), got {describe(r)} in row {i}")
        rec = float(r["recognised"])
        if not 0.0 <= rec <= 1.0:
            raise ValueError(f"tradeoff_rows: expected 'recognised' in [0, 1] (a share), got {rec} in row {i}")
        row = {"kind": r["kind"], "gamma": check_strength(r["gamma"], f"tradeoff_rows[{i}]['gamma']"),
               "recognised": rec}
        if r.get("diversity") is not None:
            row["diversity"] = float(r["diversity"])
        row["unconditional"] = bool(r.get("unconditional", False))
        out.append(row)
    if not out:
        raise ValueError("tradeoff_rows: expected at least one row, got none")
    return out


def sample_grid(sample_sets, kind: str, gamma: float, digit: int, nrow: int | None = None) -> np.ndarray:
    """The samples of one (kind, gamma, digit) tiled for ``imshow`` (``plotting.image_grid``, light grey gaps).

    sample_sets: ``check_sample_sets`` output (or raw ``guidance_sample_sets`` output). nrow: images per row
    (default ceil(sqrt(per_digit))). Returns float numpy (rows (H + 1) - 1, nrow (W + 1) - 1), pixels in [-1, 1].
    """
    sets = sample_sets if _is_checked(sample_sets) else check_sample_sets(sample_sets)
    if kind not in sets:
        raise ValueError(f"kind: expected one of {sorted(sets)}, got {kind!r}")
    digit = _check_label(digit, 10, "digit")
    gamma = check_strength(gamma)
    if gamma not in sets[kind]:
        raise ValueError(f"gamma: expected one of kind {kind!r}'s strengths {sorted(sets[kind])}, got {gamma:g}")
    # ink dark on white (gray_r) like the kit's other digit grids; -0.4 draws the gaps light grey
    return image_grid(sets[kind][gamma][digit], nrow=nrow, value=-0.4)


def _is_checked(sets) -> bool:
    return isinstance(sets, dict) and all(isinstance(v, dict) and all(isinstance(g, float) and isinstance(x, np.ndarray)
                                                                       and x.ndim == 4 for g, x in v.items())
                                          for v in sets.values())


# ============================================================================================ views
def _nearest(options, value: float) -> float:
    return min(options, key=lambda g: (abs(g - value), g))


def _gamma_options(gammas) -> list[tuple[str, float]]:
    return [(f"{g:g}", float(g)) for g in gammas]


class ToyGuidanceView(WidgetView):
    """Classifier guidance on a labelled 2-D mixture: choose the class y and the strength gamma.

    ``mixture``: a 2-D ``GaussianMixture`` whose components are the classes (default ``named_mixture(
    "three_classes_2d")``); ``schedule`` (default ``NoiseSchedule.cosine(1000)``). ``classifier``: a noise-aware
    classifier ``classifier(x_t, t)`` -> logits (n, K) (default the exact ``ExactClassifier``); ``denoiser``: an
    unconditional denoiser with a ``.target`` (default the exact eps ``ExactDenoiser``); trained toy models work
    too. ``gammas``: the strengths on the slider; ``n`` guided samples per class and strength, drawn by ancestral
    sampling in ``steps`` steps (default min(100, T)), all from the same seed; ``lim``: the plot shows
    [-lim, lim]^2; ``y``, ``gamma``: the initial class and strength.

    Left: the tilted density p(x) p(y | x)^gamma (shaded, on a ``grid_n`` x ``grid_n`` grid, normalised), the
    guided samples for (y, gamma) and the 50% / 90% ellipses of the exact p(x | y). Right, against gamma: the mean
    exact p(y | x) of the samples and their spread sqrt(tr Cov), with the same quantities under the tilted density
    in black: they agree at gamma = 0 and 1 only. Everything is precomputed at construction (``toy_guidance_data``,
    in ``data``); a move only swaps arrays. ``artists`` names every artist that moves.
    """

    figsize = (11.0, 5.4)

    def __init__(self, mixture=None, schedule=None, *, classifier=None, denoiser=None, gammas=DEFAULT_GAMMAS,
                 n: int = 400, seed: int = 0, steps: int | None = None, lim: float = 3.0, grid_n: int = 121,
                 y: int = 0, gamma: float | None = None):
        from ..densities import named_mixture

        self.mixture = _check_mixture(named_mixture("three_classes_2d") if mixture is None else mixture)
        self.schedule = _check_schedule(NoiseSchedule.cosine(1000) if schedule is None else schedule)
        self.gammas = _check_gammas(gammas)
        self.trained = classifier is not None or denoiser is not None
        self.y0 = _check_label(y, self.mixture.K)
        g0 = (1.0 if 1.0 in self.gammas else self.gammas[len(self.gammas) // 2]) if gamma is None else gamma
        g0 = check_strength(g0)
        if g0 not in self.gammas:
            raise ValueError(f"gamma: expected one of gammas {list(self.gammas)}, got {g0:g}")
        self.gamma0 = g0
        self.data = toy_guidance_data(self.mixture, self.schedule, classifier=classifier, denoiser=denoiser,
                                      gammas=self.gammas, n=n, seed=seed, steps=steps, lim=lim, grid_n=grid_n)
        self._index = {g: j for j, g in enumerate(self.gammas)}
        self._shown_y = None
        self.artists: dict = {}
        super().__init__()  # lays the figure out once, then freezes it

    # -- controls --------------------------------------------------------------------------------
    def _controls(self) -> dict:
        import ipywidgets as W

        K = self.mixture.K
        w = to_numpy(self.mixture.weights)
        options = [(f"{k}", k) for k in range(K)]
        tips = [f"class {k}, weight p(y = {k}) = {w[k]:.2f}" for k in range(K)]
        if K <= 6:
            ycontrol = W.ToggleButtons(options=options, value=self.y0, description="class y", tooltips=tips,
                                       style={"button_width": "44px", "description_width": "initial"})
        else:
            ycontrol = W.Dropdown(options=options, value=self.y0, description="class y",
                                  layout=W.Layout(width="180px"))
        return {
            "y": ycontrol,
            "gamma": W.SelectionSlider(options=_gamma_options(self.gammas), value=self.gamma0,
                                       description="guidance strength γ", continuous_update=True,
                                       style={"description_width": "initial"}, layout=W.Layout(width="380px")),
        }

    # -- build -----------------------------------------------------------------------------------
    def _build(self, fig) -> None:
        from matplotlib.colors import LinearSegmentedColormap, PowerNorm
        from matplotlib.lines import Line2D
        from matplotlib.patches import Ellipse, Patch
        from matplotlib.ticker import MaxNLocator, MultipleLocator

        d, a = self.data, self.artists
        lim = d["lim"]
        gs = fig.add_gridspec(2, 2, width_ratios=[1.2, 1.0])
        ax = fig.add_subplot(gs[:, 0])
        axc = fig.add_subplot(gs[0, 1])
        axs = fig.add_subplot(gs[1, 1], sharex=axc)
        self.axes = (ax, axc, axs)

        # left: tilted density (image), samples, ellipses of p(x | y)
        xs, ys = d["xs"], d["ys"]
        dx, dy = xs[1] - xs[0], ys[1] - ys[0]
        cmap = LinearSegmentedColormap.from_list("guidance_density", ["#ffffff", COLORS["data"]])
        a["density"] = ax.imshow(d["density"][0, 0], origin="lower", cmap=cmap, interpolation="bilinear",
                                 norm=PowerNorm(0.5, vmin=0.0, vmax=1.0),
                                 extent=(xs[0] - dx / 2, xs[-1] + dx / 2, ys[0] - dy / 2, ys[-1] + dy / 2))
        a["samples"] = ax.scatter(np.zeros(d["samples"].shape[2]), np.zeros(d["samples"].shape[2]), s=7,
                                  color=COLORS["samples"], alpha=0.6, linewidths=0, zorder=3)
        from .noising import hdr_levels

        data_density = to_numpy(self.mixture.prob(torch.as_tensor(
            np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)))).reshape(len(ys), len(xs))
        data_contours = ax.contour(xs, ys, data_density, levels=hdr_levels(data_density, dx * dy, MASSES),
                                   colors=COLORS["prior"], linewidths=1.0, zorder=2)
        styles = ("-", "--")
        a["ellipses"] = []
        for ls in styles[:len(d["masses"])]:
            e = Ellipse((0.0, 0.0), 0.1, 0.1, angle=0.0, fill=False, edgecolor=COLORS["truth"], lw=1.8, ls=ls,
                        zorder=4)
            ax.add_patch(e)
            a["ellipses"].append(e)
        # class names just outside each class's 90% region, away from the centre of the data
        centre = d["weights"] @ d["means"]
        covs = to_numpy(self.mixture.covs)
        for k, m in enumerate(d["means"]):
            u = m - centre
            u = u / np.linalg.norm(u) if np.linalg.norm(u) > 1e-9 else np.array([0.0, 1.0])
            r = math.sqrt(-2.0 * math.log1p(-MASSES[-1])) * math.sqrt(float(u @ covs[k] @ u)) + 0.3
            ax.annotate(f"y = {k}", m + r * u, ha="center", va="center", fontsize=11, color=COLORS["truth"],
                        zorder=5, annotation_clip=False)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        step = 1.0 if lim <= 3.0 else 2.0
        ax.xaxis.set_major_locator(MultipleLocator(step))
        ax.yaxis.set_major_locator(MultipleLocator(step))
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
        a["title"] = ax.set_title(" ")

        # right: the samples' statistics against gamma, the tilted density's in black
        g = d["gammas"]
        a["current"] = []
        for axis, key, ylabel in ((axc, "confidence", "mean p(y | x)"), (axs, "spread", "spread √tr Cov")):
            (a[f"exact_{key}"],) = axis.plot(g, np.zeros_like(g), color=COLORS["truth"], lw=1.8)
            (a[key],) = axis.plot(g, np.zeros_like(g), "o-", color=COLORS["samples"], ms=5, lw=1.6)
            (a[f"{key}_now"],) = axis.plot([0.0], [0.0], "o", ms=11, mfc="none", mec=COLORS["gap"], mew=2.2)
            a["current"].append(axis.axvline(self.gamma0, color=COLORS["gap"], lw=1.5, zorder=0))
            axis.set_ylabel(ylabel)
            axis.yaxis.set_major_locator(MaxNLocator(4))
        axc.set_ylim(0.0, 1.05)
        axc.set_yticks([0.0, 0.5, 1.0])
        top = max(float(np.nanmax(d["spread"])), float(np.nanmax(d["exact_spread"])))
        axs.set_ylim(0.0, 1.1 * top)
        span = g[-1] - g[0] if len(g) > 1 else 1.0
        axc.set_xlim(g[0] - 0.04 * span - 1e-9, g[-1] + 0.04 * span + 1e-9)
        axc.tick_params(labelbottom=False)
        axs.set_xlabel("guidance strength γ")
        axc.set_title("judged by the exact classifier p(y | x)", fontsize=12)

        axc.legend(handles=[Line2D([], [], color=COLORS["samples"], marker="o", ms=5, lw=1.6, label="guided samples"),
                            Line2D([], [], color=COLORS["truth"], lw=1.8,
                                   label=r"exact, under $p(x)\,p(y \mid x)^\gamma$"),
                            Line2D([], [], color=COLORS["gap"], lw=1.5, label="current γ")],
                   loc="lower right", fontsize=10)
        what = "trained" if self.trained else "exact"
        handles = [Patch(facecolor=COLORS["data"], alpha=0.6,
                         label=r"$p(x)\,p(y \mid x)^\gamma$, normalised (darker = denser)"),
                   Line2D([], [], ls="none", marker="o", color=COLORS["samples"], ms=6,
                          label=f"guided samples ({what} models, {d['steps']} steps)"),
                   Line2D([], [], color=COLORS["truth"], lw=1.8, label=r"$p(x \mid y)$: 50% (solid), 90% (dashed)"),
                   Line2D([], [], color=COLORS["prior"], lw=1.0, label=r"data $p(x)$: 50% and 90% regions")]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=10)
        # legends, axes (ticks, labels) and static texts from cached pictures: most of a full draw
        cache_axes_rasters(fig, axc.title, *ax.texts)
        # the data's contours (static); the shading (resampled and colour-mapped on every draw) per (y, gamma); the
        # exact curves per class
        cache_raster(data_contours)
        self._shown_density = None
        cache_raster(a["density"], key=lambda: self._shown_density, max_entries=32)
        for key in ("confidence", "spread"):
            cache_raster(a[f"exact_{key}"], key=lambda: self._shown_y)

    # -- update ----------------------------------------------------------------------------------
    def _update(self, y: int, gamma: float) -> None:
        d, a = self.data, self.artists
        y, j = int(y), self._index[float(gamma)]
        dens = d["density"][y, j]
        self._shown_density = (y, j)
        a["density"].set_data(dens)
        a["density"].set_clim(0.0, float(dens.max()))
        a["samples"].set_offsets(d["samples"][y, j])
        if y != self._shown_y:
            for e, (w, h, ang) in zip(a["ellipses"], d["ellipses"][y], strict=True):
                e.set_center(d["means"][y])
                e.set_width(w)
                e.set_height(h)
                e.set_angle(ang)
            for key in ("confidence", "spread"):
                a[key].set_ydata(d[key][y])
                a[f"exact_{key}"].set_ydata(d[f"exact_{key}"][y])
            self._shown_y = y
        g = d["gammas"][j]
        for line in a["current"]:
            line.set_xdata([g, g])
        a["confidence_now"].set_data([g], [d["confidence"][y, j]])
        a["spread_now"].set_data([g], [d["spread"][y, j]])
        note = {0.0: "unconditional p(x)", 1.0: "≈ p(x | y)" if self.trained else "exactly p(x | y)"}.get(g)
        if note is None:  # what the right-hand panels show: blue and black part for every other gamma
            note = "samples not drawn from the shading"
        a["title"].set_text(f"class y = {y},  γ = {g:g}:  {note}")


class MnistGuidanceView(WidgetView):
    """Guided MNIST samples against the guidance strength: choose the kind, the digit and gamma.

    ``sample_sets``: ``guidance_models.guidance_sample_sets`` output, {kind: {gamma: (10, per_digit, 1, 28, 28) in
    [-1, 1]}} with kinds "classifier" (classifier guidance of the unconditional U-Net) and "cfg" (classifier-free,
    gamma = 1 + w). ``tradeoff_rows``: ``guidance_models.tradeoff_table`` output, one row {"kind", "gamma",
    "recognised", "diversity", "unconditional"} per set. ``kind``, ``digit``, ``gamma``: the initial choice (gamma
    default: the middle strength of that kind).

    Left: the per_digit samples of (kind, gamma, digit), tiled. Right, against gamma for the current kind (the
    other kind in grey): the share of samples that the held-out classifier recognises as the prompt digit (with
    the chance level, 10%: where a row is ``unconditional`` the prompt is ignored and that is all it can be), and
    their diversity (1 = as varied as real digits), the current gamma marked. Switching the kind re-populates the
    gamma slider with that kind's strengths (keeping the nearest one). All precomputed; ``artists`` names what moves.
    """

    figsize = (11.0, 5.0)

    def __init__(self, sample_sets, tradeoff_rows, *, kind: str = "classifier", digit: int = 0,
                 gamma: float | None = None):
        self.sets = check_sample_sets(sample_sets)
        rows = _check_rows(tradeoff_rows)
        for r in rows:
            if r["kind"] not in self.sets:
                raise ValueError(f"tradeoff_rows: a row has kind {r['kind']!r}, which sample_sets does not have "
                                 f"(kinds: {sorted(self.sets)})")
        self.curves = {k: tradeoff_curve(rows, k) for k in self.sets if any(r["kind"] == k for r in rows)}
        for k, sets in self.sets.items():
            have = set(self.curves[k]["gamma"].tolist()) if k in self.curves else set()
            missing = [g for g in sets if g not in have]
            if missing:
                raise ValueError(f"tradeoff_rows: no row for kind {k!r}, gamma {missing[0]:g} (pass "
                                 "tradeoff_table(sample_sets, judge, reference))")
            if len(self.curves[k]["gamma"]) != len(set(self.curves[k]["gamma"].tolist())):
                raise ValueError(f"tradeoff_rows: expected one row per (kind, gamma), got repeated rows for kind {k!r}")
        if kind not in self.sets:
            raise ValueError(f"kind: expected one of {sorted(self.sets)}, got {kind!r}")
        self.kind0 = kind
        self.digit0 = _check_label(digit, 10, "digit")
        options = list(self.sets[kind])
        g0 = options[len(options) // 2] if gamma is None else check_strength(gamma)
        if g0 not in self.sets[kind]:
            raise ValueError(f"gamma: expected one of kind {kind!r}'s strengths {options}, got {g0:g}")
        self.gamma0 = g0
        self.per_digit = next(iter(next(iter(self.sets.values())).values())).shape[1]
        self.nrow = int(math.ceil(math.sqrt(self.per_digit)))
        self.artists: dict = {}
        super().__init__()  # lays the figure out once, then freezes it

    def update(self, **values) -> float:
        """As ``WidgetView.update``; a new ``kind`` is set first, so its strengths are on the slider for ``gamma``."""
        if "kind" in values:
            values = {"kind": values.pop("kind"), **values}
        return super().update(**values)

    # -- controls --------------------------------------------------------------------------------
    def _controls(self) -> dict:
        import ipywidgets as W

        kinds = [(KIND_LABELS.get(k, k), k) for k in self.sets]
        c = {
            "kind": W.ToggleButtons(options=kinds, value=self.kind0, description="kind",
                                    style={"button_width": "150px"}),
            "digit": W.ToggleButtons(options=[(str(i), i) for i in range(10)], value=self.digit0,
                                     description="digit", style={"button_width": "30px"}),
            "gamma": W.SelectionSlider(options=_gamma_options(self.sets[self.kind0]), value=self.gamma0,
                                       description="guidance strength γ", continuous_update=True,
                                       style={"description_width": "initial"}, layout=W.Layout(width="380px")),
        }
        c["kind"].observe(self._on_kind, names="value")  # registered first: runs before the redraw
        return c

    def _on_kind(self, change) -> None:
        """A new kind: put its strengths on the gamma slider, keeping the nearest one, without a redraw of its own."""
        slider = self.controls["gamma"] if hasattr(self, "controls") else None
        if slider is None:
            return
        options = list(self.sets[change["new"]])
        if [v for _, v in slider.options] == options:
            return
        value = _nearest(options, float(slider.value))
        try:
            slider.unobserve(self._on_change, names="value")
            observed = True
        except ValueError:  # during construction: nothing observes the slider yet
            observed = False
        try:
            slider.options = _gamma_options(options)
            slider.value = value
        finally:
            if observed:
                slider.observe(self._on_change, names="value")

    # -- build -----------------------------------------------------------------------------------
    def _build(self, fig) -> None:
        from matplotlib.lines import Line2D

        a = self.artists
        gs = fig.add_gridspec(2, 2, width_ratios=[1.0, 1.15])
        ax = fig.add_subplot(gs[:, 0])
        axr = fig.add_subplot(gs[0, 1])
        axd = fig.add_subplot(gs[1, 1], sharex=axr)
        self.axes = (ax, axr, axd)
        first = sample_grid(self.sets, self.kind0, self.gamma0, self.digit0, self.nrow)
        a["images"] = ax.imshow(first, cmap="gray_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{self.per_digit} samples, one starting noise xᵀ each\n(the same noises at every γ)")
        a["title"] = ax.set_title(" ")

        all_g = np.concatenate([c["gamma"] for c in self.curves.values()])
        top_div = max([1.2] + [float(np.nanmax(c["diversity"])) * 1.1 for c in self.curves.values()
                               if np.isfinite(c["diversity"]).any()])
        a["current"] = []
        for axis, key, ylabel in ((axr, "recognised", "recognised as\nthe prompt digit"),
                                  (axd, "diversity", "diversity\n(real digits = 1)")):
            (a[f"other_{key}"],) = axis.plot([], [], "o--", color=COLORS["prior"], ms=4, lw=1.2, alpha=0.8)
            (a[key],) = axis.plot([], [], "o-", color=COLORS["samples"], ms=6, lw=2.0)
            (a[f"{key}_now"],) = axis.plot([0.0], [0.0], "o", ms=13, mfc="none", mec=COLORS["gap"], mew=2.4)
            a["current"].append(axis.axvline(self.gamma0, color=COLORS["gap"], lw=1.5, zorder=0))
            axis.set_ylabel(ylabel)
        real_line = axd.axhline(1.0, color=COLORS["truth"], ls=":", lw=1.5)
        chance_line = axr.axhline(CHANCE, color=COLORS["prior"], ls=":", lw=1.5, zorder=0)
        a["no_diversity"] = axd.text(0.5, 0.5, "diversity not computed\n(tradeoff_table without reference)",
                                     transform=axd.transAxes, ha="center", va="center", fontsize=10,
                                     color=COLORS["prior"], visible=False)
        axr.set_ylim(0.0, 1.05)
        axr.set_yticks([0.0, 0.5, 1.0])
        axd.set_ylim(0.0, top_div)
        span = float(all_g.max() - all_g.min()) or 1.0
        axr.set_xlim(float(all_g.min()) - 0.04 * span, float(all_g.max()) + 0.04 * span)
        axr.tick_params(labelbottom=False)
        axd.set_xlabel("guidance strength γ   (classifier-free: γ = 1 + w)")
        axr.set_title("all ten digits, judged by a held-out clean classifier", fontsize=12)
        handles = [Line2D([], [], color=COLORS["samples"], marker="o", ms=6, lw=2.0, label="this kind"),
                   Line2D([], [], color=COLORS["prior"], marker="o", ms=4, lw=1.2, ls="--", label="the other kind"),
                   Line2D([], [], color=COLORS["truth"], ls=":", lw=1.5, label="real digits"),
                   Line2D([], [], color=COLORS["prior"], ls=":", lw=1.5, label="chance (10%)"),
                   Line2D([], [], color=COLORS["gap"], lw=1.5, label="current γ")]
        fig.legend(handles=handles, loc="outside lower right", ncols=5, fontsize=10)
        cache_axes_rasters(fig, ax.xaxis.label, axr.title)
        self._shown_kind = None
        # static lines, and the curves that change with the kind only
        for line in (real_line, chance_line):
            cache_raster(line)
        for key in ("recognised", "diversity"):
            for name in (key, f"other_{key}"):
                cache_raster(a[name], key=lambda: self._shown_kind)

    # -- update ----------------------------------------------------------------------------------
    def _update(self, kind: str, digit: int, gamma: float) -> None:
        a = self.artists
        gamma = float(gamma)
        if gamma not in self.sets[kind]:  # a kind set without its slider (should not happen): nearest strength
            gamma = _nearest(list(self.sets[kind]), gamma)
        a["images"].set_data(sample_grid(self.sets, kind, gamma, int(digit), self.nrow))
        curve = self.curves[kind]
        if kind != self._shown_kind:
            others = [k for k in self.curves if k != kind]
            for key in ("recognised", "diversity"):
                a[key].set_data(curve["gamma"], curve[key])
                if others:
                    o = self.curves[others[0]]
                    a[f"other_{key}"].set_data(o["gamma"], o[key])
            a["no_diversity"].set_visible(not np.isfinite(curve["diversity"]).any())
            self._shown_kind = kind
        i = int(np.flatnonzero(curve["gamma"] == gamma)[0])
        for line in a["current"]:
            line.set_xdata([gamma, gamma])
        a["recognised_now"].set_data([gamma], [curve["recognised"][i]])
        a["diversity_now"].set_data([gamma], [curve["diversity"][i]])
        what = " ignored (unconditional)" if curve["unconditional"][i] else ""
        a["title"].set_text(f"{KIND_LABELS.get(kind, kind)}, γ = {gamma:g}:  prompt digit {int(digit)}{what}")
