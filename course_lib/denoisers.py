"""A learned denoiser for 2-D toy data: an MLP with a time embedding, its loss, its training, its error.

- ``ToyDenoiser(dim, hidden, layers, target, T)``: x^t (n, dim) and t (n,) -> a prediction of ``target``
  ("x0", "eps" or "score"); t enters through a sinusoidal embedding, added to every hidden layer.
- ``diffusion_loss(model, x0, schedule, target)``: t ~ U{1..T}, x^t = sqrt(ab_t) x^0 + sqrt(1 - ab_t) eps,
  loss = w_t |model(x^t, t) - y|^2 with y = x^0, eps, v or the score's conditional target -eps / sqrt(1 - ab_t)
  (summed over coordinates, averaged over the batch: comparable with ``GaussianMixture.mmse``).
- ``train_toy_denoiser`` / ``cached_toy_denoiser``: train with ``course_lib.training.training_loop`` (and cache).
- ``bayes_error`` and ``denoiser_error``: the Bayes-optimal error E|y - E[y | x^t]|^2 at each t, and a
  model's error split as MSE = Bayes error + excess, with excess = E|model - E[y | x^t]|^2.

About the score target. Its conditional target -eps / sqrt(1 - ab_t) has variance d / (1 - ab_t), which
explodes as t -> 0 (1 - ab_1 ~ 4e-5 for the cosine schedule with T = 1000): unweighted,
a few small t dominate every batch's loss and gradient, and training is slow and noisy (train with
``weighting="none"`` and compare ``denoiser_error`` to see it).
``weighting="auto"`` therefore weights the score loss by w_t = 1 - ab_t (Song et al. 2021's
lambda(t) = sigma_t^2): w_t |s_theta + eps / sigma_t|^2 = |sigma_t s_theta + eps|^2 is the eps loss of the
implied eps prediction -sigma_t s_theta. The minimiser is unchanged (for any positive w_t it is the
conditional mean, here the true score of p(x^t)); only the emphasis across t changes. The network still
outputs the score itself. ``weighting="eps"`` puts every target on that eps scale (x0: w_t = SNR_t), and
``weighting="none"`` regresses each target unweighted. ``weighting="min_snr"`` (Hang et al. 2023) is the eps
scale times min(1, kappa / SNR_t) with kappa = ``MIN_SNR_KAPPA`` = 5 (the paper's gamma; the course keeps gamma for
guidance): the nearly clean steps (SNR_t > 5), whose
noise is hard to predict and matters little for what a sample looks like, count less; the MNIST U-Nets use it.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ._checks import check_timestep, describe
from .diffusion import ALL_TARGETS, convert
from .nets import time_embedding
from .schedules import NoiseSchedule

__all__ = [
    "MIN_SNR_KAPPA",
    "WEIGHTINGS",
    "ToyDenoiser",
    "bayes_error",
    "cached_toy_denoiser",
    "denoiser_error",
    "diffusion_loss",
    "loss_weights",
    "make_schedule",
    "seeded_toy_denoiser",
    "target_scale",
    "time_embedding",
    "toy_data",
    "train_toy_denoiser",
]

WEIGHTINGS = ("auto", "none", "eps", "min_snr", "v_min_snr")
MIN_SNR_KAPPA = 5.0


# ---------------------------------------------------------------------------------------------- the network
class ToyDenoiser(nn.Module):
    """An MLP denoiser for points: (x^t (n, dim), t (n,) in 0..T) -> prediction of ``target``, shape (n, dim).

    h = SiLU(W_in x^t + E_0 e(t)); then ``layers - 1`` times h = SiLU(W h + E_l e(t)); output W_out h, with
    e(t) the sinusoidal ``time_embedding``. ``layers`` counts the hidden layers of width ``hidden``.
    Attributes ``dim``, ``target``, ``T`` let the samplers and losses read what the model predicts.

    ``num_classes=K`` makes it conditional (notebook 08): ``model(x_t, t, y)`` with y a long tensor (n,) in
    0..K, where K = ``null_label`` means "no label" (as does ``y=None``); a learned embedding of y is added
    to every layer's time term.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, layers: int = 3, target: str = "eps", T: int = 1000,
                 emb_dim: int = 32, num_classes: int | None = None):
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("layers", layers), ("T", T), ("emb_dim", emb_dim)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {describe(value)}")
        if target not in ALL_TARGETS:
            raise ValueError(f"target: expected one of {ALL_TARGETS}, got {target!r}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
                                        or num_classes < 1):
            raise ValueError(f"num_classes: expected None or a positive integer, got {describe(num_classes)}")
        self.dim, self.hidden, self.layers, self.target, self.T, self.emb_dim = dim, hidden, layers, target, T, emb_dim
        self.num_classes = num_classes
        self.inp = nn.Linear(dim, hidden)
        self.hidden_layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        # one linear projection of the embedding per hidden layer, computed in one matmul
        self.time = nn.Linear(emb_dim, hidden * layers)
        # conditional nets: one row per label plus the null label, added to the time term of every layer
        self.label = nn.Embedding(num_classes + 1, hidden * layers) if num_classes is not None else None
        self.out = nn.Linear(hidden, dim)

    @property
    def null_label(self) -> int | None:
        """The label meaning "no label" (= num_classes) for conditional nets; None for unconditional ones."""
        return self.num_classes

    def forward(self, x_t: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(x_t, torch.Tensor) or x_t.ndim != 2 or x_t.shape[1] != self.dim:
            got = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else describe(x_t)
            raise ValueError(f"x_t: expected shape (n, {self.dim}), got {got}")
        t = check_timestep(t, self.T, "t", allow_zero=True).to(x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        if t.shape != (x_t.shape[0],):
            raise ValueError(f"t: expected an int or shape ({x_t.shape[0]},) (one step per row), got {tuple(t.shape)}")
        dtype = self.inp.weight.dtype
        emb = self.time(time_embedding(t, self.T, self.emb_dim).to(dtype))
        if self.label is not None:
            emb = emb + self.label(self._labels(y, x_t.shape[0], x_t.device))
        elif y is not None:
            raise ValueError("y: this ToyDenoiser is unconditional (num_classes=None); build it with num_classes=K "
                             "to pass labels")
        emb = emb.chunk(self.layers, dim=-1)
        h = nn.functional.silu(self.inp(x_t.to(dtype)) + emb[0])
        for layer, e in zip(self.hidden_layers, emb[1:], strict=True):
            h = nn.functional.silu(layer(h) + e)
        return self.out(h)

    def _labels(self, y, n: int, device) -> torch.Tensor:
        if y is None:
            return torch.full((n,), self.num_classes, dtype=torch.long, device=device)
        if not isinstance(y, torch.Tensor) or y.shape != (n,) or y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"y: expected an integer tensor of shape ({n},), got {describe(y)}")
        if n and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(f"y: expected labels in 0..{self.num_classes} ({self.num_classes} = null label), "
                             f"got {int(y.min()) if int(y.min()) < 0 else int(y.max())}")
        return y.to(device=device, dtype=torch.long)

    def config(self) -> dict:
        """The constructor's arguments (plain values, for checkpoints)."""
        cfg = {"dim": self.dim, "hidden": self.hidden, "layers": self.layers, "target": self.target, "T": self.T,
               "emb_dim": self.emb_dim}
        if self.num_classes is not None:
            cfg["num_classes"] = self.num_classes
        return cfg


def seeded_toy_denoiser(seed: int = 0, **kw) -> ToyDenoiser:
    """``ToyDenoiser(**kw)`` whose initial weights depend on ``seed`` only (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyDenoiser(**kw)


# ---------------------------------------------------------------------------------------------- the loss
def target_scale(target: str, alpha_bar: torch.Tensor) -> torch.Tensor:
    """k_t with (prediction error in ``target`` space) = k_t (error in x0 space) at fixed x^t: x0 1, eps
    sqrt(ab / (1 - ab)), score sqrt(ab) / (1 - ab), v 1 / sqrt(1 - ab). Squared, it converts a Bayes error from
    x0 space."""
    if target not in ALL_TARGETS:
        raise ValueError(f"target: expected one of {ALL_TARGETS}, got {target!r}")
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return {"x0": torch.ones_like(ab), "eps": (ab / (1 - ab)).sqrt(), "score": ab.sqrt() / (1 - ab),
            "v": (1 - ab).rsqrt()}[target]


def loss_weights(schedule: NoiseSchedule, target: str, weighting: str = "auto") -> torch.Tensor:
    """w_t for t = 0..T (shape (T + 1,), float64) of ``diffusion_loss``; see the module docstring.

    Every weighting but "none" is a weight on the error in x0 space, divided by target_scale(target)^2:
    "eps": SNR_t = ab_t / (1 - ab_t), which makes the loss the eps loss of the implied eps prediction (x0 SNR_t,
    eps 1, score 1 - ab_t, v ab_t). "min_snr": min(SNR_t, MIN_SNR_KAPPA), "eps" with its nearly clean steps capped.
    "v_min_snr": min(1 + SNR_t, MIN_SNR_KAPPA), the plain v loss (whose x0 weight is 1 + SNR_t) capped the same
    way; unlike "min_snr" it keeps weight >= 1 on x0 at the noisiest steps, where SNR_t -> 0 and "min_snr" all
    but ignores how wrong x0_hat is. For target "v" it is min(1, MIN_SNR_KAPPA / (1 + SNR_t)) <= 1.
    "none": 1 (each target regressed unweighted).
    "auto": "none" for x0, eps and v, "eps" for score (whose unweighted loss has exploding variance).
    """
    if target not in ALL_TARGETS:
        raise ValueError(f"target: expected one of {ALL_TARGETS}, got {target!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "auto":
        weighting = "eps" if target == "score" else "none"
    ab = schedule.alpha_bars
    if weighting == "none":
        return torch.ones_like(ab)
    snr = ab[1:] / (1 - ab[1:])
    x0_weight = {"eps": snr, "min_snr": snr.clamp(max=MIN_SNR_KAPPA),
                 "v_min_snr": (1 + snr).clamp(max=MIN_SNR_KAPPA)}[weighting]
    w = x0_weight / target_scale(target, ab[1:]) ** 2
    return torch.cat([torch.ones(1, dtype=torch.float64), w])


def _regression_target(target, x0, eps, ab):
    if target == "x0":
        return x0
    if target == "eps":
        return eps
    if target == "v":
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0
    return -eps / (1 - ab).sqrt()


def diffusion_loss(model, x0: torch.Tensor, schedule: NoiseSchedule, target: str | None = None,
                   generator: torch.Generator | None = None, *, t=None, noise: torch.Tensor | None = None,
                   weighting: str = "auto", reduction: str = "mean") -> torch.Tensor:
    """w_t |model(x^t, t) - y|^2, y = x^0, eps, -eps / sqrt(1 - ab_t) or v; x^t = sqrt(ab_t) x^0 + sqrt(1 - ab_t) eps.

    model: callable (x_t (n, ...), t long (n,)) -> prediction; target defaults to ``model.target``.
    x0: a batch (n, ...). t: None (drawn uniformly from 1..T per row), an int, or shape (n,). noise: eps
    (default: drawn). The squared error is summed over the coordinates of one example; ``reduction``
    "mean" averages it over the batch (a scalar), "none" returns it per example, shape (n,).
    """
    if target is None:
        target = getattr(model, "target", None)
    if target not in ALL_TARGETS:
        raise ValueError(f"target: expected one of {ALL_TARGETS} (or a model with .target), got {target!r}")
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule: expected a NoiseSchedule, got {describe(schedule)}")
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point() or x0.ndim < 2:
        raise ValueError(f"x0: expected a floating-point batch of shape (n, ...), got {describe(x0)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")
    n = x0.shape[0]
    if t is None:
        t = torch.randint(1, schedule.T + 1, (n,), generator=generator)
    t = check_timestep(t, schedule.T, "t")
    t = (t.expand(n) if t.ndim == 0 else t).to(x0.device)
    if t.shape != (n,):
        raise ValueError(f"t: expected an int or shape ({n},), got {tuple(t.shape)}")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64).to(dtype=x0.dtype, device=x0.device)
    x_t, eps = schedule.q_sample(x0, t, noise=noise, return_noise=True)
    ab = schedule.alpha_bars.to(dtype=x0.dtype, device=x0.device)[t].reshape((n,) + (1,) * (x0.ndim - 1))
    y = _regression_target(target, x0, eps, ab)
    pred = model(x_t, t)
    if not isinstance(pred, torch.Tensor) or pred.shape != x0.shape:
        got = tuple(pred.shape) if isinstance(pred, torch.Tensor) else describe(pred)
        raise ValueError(f"model: expected a prediction of shape {tuple(x0.shape)}, got {got}")
    w = loss_weights(schedule, target, weighting).to(dtype=x0.dtype, device=x0.device)[t]
    per_example = w * (pred.to(x0.dtype) - y).pow(2).flatten(1).sum(1)
    return per_example.mean() if reduction == "mean" else per_example


# ---------------------------------------------------------------------------------------------- data and training
TOY_DATASETS = ("two_moons", "swiss_roll", "rings")


def toy_data(name: str, dtype: torch.dtype = torch.float32):
    """A data source ``data(batch_size, generator) -> (batch_size, d)`` for ``training.train``, sampled on the fly.

    name: a mixture of ``densities.MIXTURE_NAMES`` (then ``data.mixture`` is the exact GaussianMixture) or
    one of "two_moons", "swiss_roll", "rings" (``data.mixture`` is None). ``data.name``, ``data.dim`` are set.
    """
    from . import densities

    if name in densities.MIXTURE_NAMES:
        mixture = densities.named_mixture(name)

        def data(batch_size, generator=None):
            return mixture.sample(batch_size, generator=generator).to(dtype)
        data.mixture, data.dim = mixture, mixture.d
    elif name in TOY_DATASETS:
        fn = getattr(densities, name)

        def data(batch_size, generator=None):
            return fn(batch_size, generator=generator).to(dtype)
        data.mixture, data.dim = None, 2
    else:
        raise ValueError(f"name: expected one of {densities.MIXTURE_NAMES + TOY_DATASETS}, got {name!r}")
    data.name = name
    return data


def make_schedule(name: str = "cosine", T: int = 1000) -> NoiseSchedule:
    """``NoiseSchedule.cosine(T)`` or ``NoiseSchedule.linear(T)`` by name (for configs of plain values)."""
    if name not in ("cosine", "linear"):
        raise ValueError(f"name: expected 'cosine' or 'linear', got {name!r}")
    return getattr(NoiseSchedule, name)(T)


def train_toy_denoiser(data, schedule: NoiseSchedule, target: str = "eps", steps: int = 5000, *,
                       model: ToyDenoiser | None = None, batch_size: int = 512, lr: float = 2e-3,
                       lr_schedule: str = "cosine", weighting: str = "auto", hidden: int = 128, layers: int = 3,
                       seed: int = 0, progress: bool = True, log_every: int = 10, max_seconds: float | None = None):
    """Train a ``ToyDenoiser`` on ``data`` (a callable ``data(n, generator)`` or a tensor (N, d)) with Adam.

    Minimises ``diffusion_loss`` with ``course_lib.training.training_loop`` for ``steps`` steps (cosine lr decay
    by default), one CPU thread for the MLP (``threads_for``), a tqdm bar. ``max_seconds`` stops earlier (the lr
    schedule still assumes ``steps``). Returns (model, history): "step" and "loss" (the mean loss over the last
    ``log_every`` steps) every ``log_every`` steps, and the wall "seconds" and "cpu_seconds" of training. The
    model is returned in eval mode.
    """
    from .training import train

    if target not in ALL_TARGETS:
        raise ValueError(f"target: expected one of {ALL_TARGETS}, got {target!r}")
    # a tensor's .dim is the method Tensor.dim(), not the points' dimension: read the shape first
    dim = data.shape[1] if isinstance(data, torch.Tensor) and data.ndim == 2 else getattr(data, "dim", None)
    if dim is None:
        raise ValueError("data: expected a tensor (N, d) or a callable with a .dim attribute (see toy_data)")
    if model is None:
        model = seeded_toy_denoiser(seed, dim=dim, hidden=hidden, layers=layers, target=target, T=schedule.T)
    g_data, g_noise = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 2)

    def loss_fn(m, batch):
        return diffusion_loss(m, batch, schedule, target, g_noise, weighting=weighting)

    hist = train(model, loss_fn, data, steps=steps, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
                 generator=g_data, progress=progress, desc=f"{target} denoiser", log_every=log_every,
                 max_seconds=max_seconds)
    history = {"step": hist["step"], "loss": hist["loss"], "seconds": hist["seconds"],
               "cpu_seconds": hist["cpu_seconds"]}
    return model, history


def cached_toy_denoiser(dataset: str, target: str = "eps", *, steps: int = 5000, schedule: str = "cosine",
                        T: int = 1000, hidden: int = 128, layers: int = 3, batch_size: int = 512, lr: float = 2e-3,
                        weighting: str = "auto", seed: int = 0, retrain: bool = False, progress: bool = True):
    """``train_toy_denoiser`` on ``toy_data(dataset)``, cached by ``checkpoints.cached_model`` under its config.

    Returns (model, info); ``info.meta`` holds the loss history ("step", "loss"), "seconds" and "cpu_seconds"
    of training, also when the model came from the cache. The schedule is ``make_schedule(schedule, T)``.
    """
    from .checkpoints import cached_model

    config = {"dataset": dataset, "target": target, "steps": steps, "schedule": schedule, "T": T,
              "hidden": hidden, "layers": layers, "batch_size": batch_size, "lr": lr, "weighting": weighting,
              "seed": seed, "version": 2}
    data, sched = toy_data(dataset), make_schedule(schedule, T)

    def build(cfg):
        return seeded_toy_denoiser(seed, dim=data.dim, hidden=hidden, layers=layers, target=target, T=T)

    def fit(model):
        _, hist = train_toy_denoiser(data, sched, target, steps, model=model, batch_size=batch_size, lr=lr,
                                     weighting=weighting, seed=seed, progress=progress)
        return {k: hist[k] for k in ("step", "loss", "seconds", "cpu_seconds")}

    return cached_model(f"toy-denoiser-{dataset}-{target}", config, build, fit, retrain=retrain)


# ---------------------------------------------------------------------------------------------- errors vs Bayes
def bayes_error(mixture, schedule: NoiseSchedule, t, target: str = "x0", n: int = 20_000,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The Bayes-optimal error E|y - E[y | x^t]|^2 (summed over coordinates) at each step in ``t``, in ``target`` space.

    From ``mixture.mmse(alpha_bar_t)`` (Monte Carlo over n draws) times ``target_scale(target)^2``.
    t: a sequence of steps in 1..T. Returns (error, standard error), float64 tensors of shape (len(t),).
    """
    ts = check_timestep(torch.as_tensor(t), schedule.T, "t").reshape(-1)
    est, se = [], []
    for tt in ts.tolist():
        m, s = mixture.mmse(schedule.alpha_bars[tt], n=n, generator=generator)
        k2 = float(target_scale(target, schedule.alpha_bars[tt]) ** 2)
        est.append(m * k2)
        se.append(s * k2)
    return torch.tensor(est, dtype=torch.float64), torch.tensor(se, dtype=torch.float64)


@torch.no_grad()
def denoiser_error(model, mixture, schedule: NoiseSchedule, t, space: str = "eps", n: int = 4000,
                   generator: torch.Generator | None = None, target: str | None = None) -> dict:
    """A model's error at each step in ``t``, in ``space`` ("x0", "eps" or "score"), against the exact optimum.

    For each t: x^0 ~ mixture, x^t by q_sample; y = the conditional target in ``space``, y* = E[y | x^t]
    (exact, from ``mixture.posterior_mean``), f = the model's prediction converted to ``space``. Returns a dict of
    float64 tensors of shape (len(t),): "t", "mse" = E|f - y|^2, "excess" = E|f - y*|^2, "bayes" = E|y - y*|^2
    on the same draws (so mse ~ bayes + excess), and "excess_se", the standard error of "excess".
    """
    target = target or getattr(model, "target", None)
    if target not in ALL_TARGETS or space not in ALL_TARGETS:
        raise ValueError(f"target and space: expected one of {ALL_TARGETS}, got {target!r} and {space!r}")
    ts = check_timestep(torch.as_tensor(t), schedule.T, "t").reshape(-1)
    dtype, device = torch.float64, torch.device("cpu")  # plain callables (ExactDenoiser) get float64
    if isinstance(model, nn.Module):
        p = next(model.parameters(), None)
        if p is not None:
            dtype, device = p.dtype, p.device
    out = {k: [] for k in ("mse", "excess", "bayes", "excess_se")}
    for tt in ts.tolist():
        ab = float(schedule.alpha_bars[tt])
        x0 = mixture.sample(n, generator=generator)
        x_t, eps = schedule.q_sample(x0, tt, generator=generator, return_noise=True)
        y = _regression_target(space, x0, eps, torch.tensor(ab, dtype=torch.float64))
        y_star = convert(mixture.posterior_mean(x_t, ab), "x0", space, x_t, ab)
        pred = model(x_t.to(dtype=dtype, device=device), torch.full((n,), tt, dtype=torch.long, device=device))
        f = convert(pred.detach().to("cpu", torch.float64), target, space, x_t, ab)
        ex = (f - y_star).pow(2).sum(1)
        out["mse"].append(float((f - y).pow(2).sum(1).mean()))
        out["excess"].append(float(ex.mean()))
        out["excess_se"].append(float(ex.std()) / math.sqrt(n))
        out["bayes"].append(float((y - y_star).pow(2).sum(1).mean()))
    res = {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}
    res["t"] = ts
    return res
