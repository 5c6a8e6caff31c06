"""The VAEs of notebooks 02 and 03: named configs, training with held-out ELBO curves, the MNIST models.

Toy VAEs (notebook 02) train in seconds and are not cached. The MNIST VAEs (notebook 03) are an MLP
784-512-256-k with a Bernoulli decoder on dynamically binarised MNIST (a fresh Bernoulli draw of the
grey levels at every batch; the test set binarised once with ``TEST_BINARIZE_SEED``). Their weights
ship with the package for k = 2, 10, 20; reproduce them (5-10 minutes per model on 2 idle CPU cores; far
longer on a busy machine, and the result depends on the machine's floating-point details) with

    python -m course_lib.vae_models --train-pretrained          # all three; --latent 20 for one

which writes ``course_lib/pretrained/mnist_vae-<config key>.pt`` (float16 weights, a few MB in all).
``load_or_train_mnist_vae(k)`` finds a model in the user cache, else the shipped weights, else trains it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

import torch

from ._runtime import FAST, device, recommended_threads, seed
from .checkpoints import PRETRAINED_DIR, CacheInfo, cached_model, checkpoint_path, save_checkpoint
from .densities import named_mixture, swiss_roll, two_moons
from .training import training_loop
from .vae import VAE, BernoulliDecoder, GaussianDecoder, GaussianEncoder

__all__ = [
    "MNIST_LATENT_DIMS",
    "MNIST_NAME",
    "TEST_BINARIZE_SEED",
    "TOY_DATASETS",
    "beta_sweep",
    "describe_source",
    "evaluate_vae",
    "fit_vae",
    "iwae_curve",
    "load_or_train_mnist_vae",
    "mnist_test_binarized",
    "mnist_vae",
    "mnist_vae_config",
    "plot_beta_sweep",
    "plot_elbo_history",
    "plot_latent_codes",
    "plot_latent_grid",
    "plot_latent_scatter",
    "plot_reconstructions",
    "plot_samples",
    "plot_toy_data",
    "prepare",
    "show_images",
    "toy_data",
    "toy_vae",
    "train_mnist_vae",
    "train_pretrained",
]

MNIST_NAME = "mnist_vae"
#: The latent sizes whose weights ship with the package (notebook 03 uses 2 and 20; the bench all three).
MNIST_LATENT_DIMS = (2, 10, 20)
#: The seed of the one Bernoulli draw that binarises the MNIST test set, so every evaluation sees the same bits.
TEST_BINARIZE_SEED = 1234


# ====================================================================== toy data and toy VAEs
TOY_DATASETS = ("two_moons", "eight_gaussians", "swiss_roll")


def toy_data(name: str, n: int, generator: torch.Generator | None = None, noise: float = 0.05):
    """A 2-D toy data set as float32 ``(x (n, 2), colour (n,))``.

    ``"two_moons"``: points near two arcs, a 1-D curve in two pieces; colour = position in [0, 1] along
    them ([0, 1/2) the upper moon). ``"eight_gaussians"``: ``named_mixture("eight_gaussians_2d")``;
    colour = the component 0..7 (as a float). ``"swiss_roll"``: near a spiral; colour = position along it
    (a harder curve: a small VAE rarely unrolls it). ``noise``: for the curves (standard deviation per coordinate).
    """
    if name == "two_moons":
        x, u = two_moons(n, noise=noise, generator=generator, return_position=True)
    elif name == "swiss_roll":
        x, u = swiss_roll(n, noise=noise, generator=generator, return_position=True)
    elif name == "eight_gaussians":
        x, u = named_mixture("eight_gaussians_2d").sample(n, generator=generator, return_labels=True)
    else:
        raise ValueError(f"name: expected one of {', '.join(TOY_DATASETS)}, got {name!r}")
    return x.float(), u.float()


def toy_vae(latent_dim: int = 1, hidden=(128, 128), activation: str = "silu", sigma: float | None = 0.1) -> VAE:
    """A VAE for 2-D points: MLP encoder, Gaussian decoder N(f(z), sigma^2 I) with sigma fixed (``None``: learned).

    sigma = 0.1 sits a little above the toy data's noise (0.05). A learned sigma starts large while the
    decoder is still poor, and often stays large: a blurrier optimum (try it in notebook 02).
    """
    return VAE(GaussianEncoder(2, latent_dim, hidden, activation),
               GaussianDecoder(latent_dim, 2, hidden, activation, sigma=sigma))


# ====================================================================== training with held-out curves
def _vae_loss(beta: float, binarize: bool) -> Callable:
    def loss_fn(model: VAE, batch: torch.Tensor):
        # dynamic binarisation: a fresh Bernoulli draw of the grey levels at every batch (less over-fitting)
        x = torch.bernoulli(batch) if binarize else batch
        terms = model.elbo_terms(x, beta=beta)
        return terms["loss"].mean(), {"elbo": terms["elbo"].mean().detach(),
                                      "reconstruction": terms["reconstruction"].mean().detach(),
                                      "kl_prior": terms["kl_prior"].mean().detach()}
    return loss_fn


@torch.no_grad()
def evaluate_vae(model: VAE, x: torch.Tensor, *, n_samples: int = 1, batch_size: int = 2000,
                 generator: torch.Generator | None = None) -> dict[str, float]:
    """Mean ``elbo``, ``reconstruction``, ``kl_prior`` (nats per example) over x, in batches, in eval mode."""
    was_training = model.training
    model.eval()
    sums = {"elbo": 0.0, "reconstruction": 0.0, "kl_prior": 0.0}
    for i in range(0, x.shape[0], batch_size):
        terms = model.elbo_terms(x[i:i + batch_size], n_samples=n_samples, generator=generator)
        for key in sums:
            sums[key] += float(terms[key].sum())
    model.train(was_training)
    return {k: v / x.shape[0] for k, v in sums.items()}


def fit_vae(model: VAE, x_train: torch.Tensor, x_test: torch.Tensor | None = None, *, steps: int,
            batch_size: int = 256, lr: float = 1e-3, beta: float = 1.0, binarize: bool = False,
            eval_every: int | None = None, lr_schedule: str = "constant", generator: torch.Generator | None = None,
            progress: bool = True, desc: str = "training VAE", threads: int | None = None) -> dict:
    """Train ``model`` on ``terms["loss"].mean()`` (the beta-VAE objective) and record the ELBO's terms.

    Every ``eval_every`` steps (default: steps // 50) the history gets the training terms averaged over
    the steps since the last record (``train_elbo``, ``train_reconstruction``, ``train_kl_prior``) and,
    if ``x_test`` is given, the same on x_test (``test_...``, one draw of z per example). ``binarize``:
    draw x ~ Bernoulli(grey levels) afresh for every training batch (x_test must be binarised already).
    Returns ``{"step", "epoch", "train_*", "test_*": lists; "seconds": wall time, "step_seconds": time
    in training steps only; "threads"}``. Uses ``threads`` CPU threads (default ``recommended_threads``).
    """
    from tqdm.auto import tqdm

    eval_every = eval_every or max(1, steps // 50)
    hist: dict = {"step": [], "epoch": []}
    window = {"elbo": [], "reconstruction": [], "kl_prior": []}
    threads = threads or recommended_threads(model)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    eval_seconds = 0.0
    try:
        loop = training_loop(model, _vae_loss(beta, binarize), x_train, steps=steps, batch_size=batch_size,
                             lr=lr, generator=generator, lr_schedule=lr_schedule)
        with tqdm(total=steps, desc=desc, disable=not progress, leave=False) as bar:
            for state in loop:
                for key in window:
                    window[key].append(state.logs[key])
                if state.step % eval_every == 0 or state.step == steps:
                    te = time.perf_counter()
                    hist["step"].append(state.step)
                    hist["epoch"].append(state.step * batch_size / x_train.shape[0])
                    for key, values in window.items():
                        hist.setdefault(f"train_{key}", []).append(sum(values) / len(values))
                        values.clear()
                    if x_test is not None:
                        for key, value in evaluate_vae(model, x_test).items():
                            hist.setdefault(f"test_{key}", []).append(value)
                    model.train()
                    bar.set_postfix(elbo=f"{hist['train_elbo'][-1]:.4g}", refresh=False)
                    eval_seconds += time.perf_counter() - te
                bar.update(1)
    finally:
        torch.set_num_threads(before)
    model.eval()
    hist["seconds"] = time.perf_counter() - t0
    hist["step_seconds"] = hist["seconds"] - eval_seconds
    hist["threads"] = threads
    return hist


# ====================================================================== the MNIST VAEs
def mnist_vae_config(latent_dim: int = 20, *, fast: bool = False) -> dict:
    """Everything that changes an MNIST VAE's weights (the cache key). ``fast``: a tiny run for CI.

    Full: 784-512-256-k MLPs (ReLU), Bernoulli decoder, dynamic binarisation, Adam lr 1e-3 with cosine
    decay, batch 128, 50 epochs of the 60,000 training images, seed 0.
    FAST: the same model trained for 5 epochs on the first 2,000 training images (seconds; a sketch).
    """
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim: expected a positive integer, got {latent_dim!r}")
    cfg = {"arch": "mlp", "likelihood": "bernoulli", "binarize": "dynamic", "latent_dim": latent_dim,
           "hidden": [512, 256], "activation": "relu", "epochs": 50, "batch_size": 128, "lr": 1e-3,
           "lr_schedule": "cosine", "train_limit": None, "seed": 0, "fast": False, "version": 1}
    if fast:
        cfg.update(epochs=5, train_limit=2000, fast=True)
    return cfg


def mnist_vae(latent_dim: int = 20, hidden=(512, 256), activation: str = "relu") -> VAE:
    """An MLP VAE for 28 x 28 binarised images: encoder 784-hidden-2k, Bernoulli decoder k-reversed(hidden)-784."""
    hidden = tuple(hidden)
    return VAE(GaussianEncoder(784, latent_dim, hidden, activation),
               BernoulliDecoder(latent_dim, 784, hidden[::-1], activation), x_shape=(1, 28, 28))


def _build(cfg: dict) -> VAE:
    model = mnist_vae(cfg["latent_dim"], cfg["hidden"], cfg["activation"])
    model.config = dict(cfg)
    return model


def mnist_test_binarized(limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST test set binarised once, x ~ Bernoulli(grey level) with seed ``TEST_BINARIZE_SEED``.

    Returns x float32 (n, 1, 28, 28) in {0, 1} and labels (n,); ``limit`` keeps the first ``limit``
    (the same bits as in the full set).
    """
    from .data import mnist_tensors

    x, y = mnist_tensors("test", binarize="dynamic", generator=torch.Generator().manual_seed(TEST_BINARIZE_SEED))
    return (x, y) if limit is None else (x[:limit], y[:limit])


def train_mnist_vae(model: VAE, cfg: dict, *, progress: bool = True, dev: torch.device | None = None) -> dict:
    """Train an MNIST VAE as ``cfg`` says; returns the checkpoint metadata (times, test ELBO, history)."""
    from .data import mnist_tensors

    dev = dev or next(model.parameters()).device
    gen = seed(cfg["seed"])
    x_train, _ = mnist_tensors("train", limit=cfg["train_limit"])
    x_test, _ = mnist_test_binarized(limit=2000 if cfg["fast"] else None)
    x_train, x_test = x_train.to(dev), x_test.to(dev)
    steps_per_epoch = x_train.shape[0] // cfg["batch_size"]
    steps = cfg["epochs"] * steps_per_epoch
    hist = fit_vae(model, x_train, x_test, steps=steps, batch_size=cfg["batch_size"], lr=cfg["lr"],
                   binarize=cfg["binarize"] == "dynamic", eval_every=steps_per_epoch,
                   lr_schedule=cfg["lr_schedule"], generator=gen, progress=progress,
                   desc=f"MNIST VAE, k = {cfg['latent_dim']}")
    final = {k[5:]: v[-1] for k, v in hist.items() if k.startswith("test_")}
    return {
        "train_seconds": round(hist["seconds"], 1),
        "seconds_per_epoch": round(hist["step_seconds"] / cfg["epochs"], 2),
        "epochs": cfg["epochs"], "steps": steps, "threads": hist["threads"], "device": str(dev),
        "cpu_count": os.cpu_count() or 1, "machine": platform.machine(), "torch": str(torch.__version__),
        "params": sum(p.numel() for p in model.parameters()),
        "test_elbo": final["elbo"], "test_reconstruction": final["reconstruction"],
        "test_kl_prior": final["kl_prior"],
        "history": {k: [round(float(v), 4) for v in hist[k]] for k in hist if isinstance(hist[k], list)},
    }


def _available(cfg: dict) -> bool:
    return checkpoint_path(MNIST_NAME, cfg).is_file() or checkpoint_path(MNIST_NAME, cfg, PRETRAINED_DIR).is_file()


def load_or_train_mnist_vae(latent_dim: int = 20, *, fast: bool = FAST, retrain: bool = False,
                            dev: torch.device | str | None = None, progress: bool = True) -> tuple[VAE, CacheInfo]:
    """The MNIST VAE with latent size ``latent_dim``, and where it came from.

    Always asks for the full-mode model first (``mnist_vae_config(latent_dim)``), which the user cache or
    the shipped weights provide without training. Only if neither has it: trains the full model, or in
    FAST mode (``fast=True``) the tiny one of ``mnist_vae_config(latent_dim, fast=True)``. ``retrain``
    trains afresh (FAST-ness as given). The model is in eval mode on ``dev`` (default ``device()``);
    ``model.config`` is its config, ``info.source`` one of "cache", "pretrained", "trained".
    """
    dev = torch.device(dev) if dev is not None else device()
    full = mnist_vae_config(latent_dim)
    cfg = full if (not fast or (_available(full) and not retrain)) else mnist_vae_config(latent_dim, fast=True)
    return cached_model(MNIST_NAME, cfg, lambda c: _build(c).to(dev),
                        lambda m: train_mnist_vae(m, cfg, progress=progress, dev=dev),
                        retrain=retrain, map_location=dev)


def describe_source(model: VAE, info: CacheInfo) -> str:
    """One line for the notebook: which model was loaded (or trained), from where, and how long it trained."""
    cfg = getattr(model, "config", {})
    what = (f"latent size {cfg.get('latent_dim')}, {cfg.get('epochs')} epochs on "
            f"{cfg.get('train_limit') or 60000} images" + (" (the tiny FAST model)" if cfg.get("fast") else ""))
    meta = info.meta
    trained = (f"; trained in {meta['train_seconds'] / 60:.1f} min on {meta.get('device', '?')}"
               if "train_seconds" in meta else "")
    return f"{what} — {info}{trained}"


def prepare(fast: bool = FAST, progress: bool = True) -> None:
    """Make sure every MNIST VAE of notebook 03 is available (cache or shipped), training what is missing."""
    for k in MNIST_LATENT_DIMS:
        model, info = load_or_train_mnist_vae(k, fast=fast, progress=progress)
        print(f"MNIST VAE k={k}: {describe_source(model, info)}")


def train_pretrained(latent_dims=MNIST_LATENT_DIMS, *, dev: torch.device | str | None = None,
                     progress: bool = True, directory=PRETRAINED_DIR) -> list:
    """Train the full-mode MNIST VAEs and save them, float16, where ``cached_model`` looks for shipped weights."""
    dev = torch.device(dev) if dev is not None else device()
    paths = []
    for k in latent_dims:
        cfg = mnist_vae_config(k)
        model = _build(cfg).to(dev)
        meta = train_mnist_vae(model, cfg, progress=progress, dev=dev)
        # float16 storage halves the files; load_state_dict casts back to float32. Evaluate the rounded model.
        half = {name: v.detach().cpu().half() for name, v in model.state_dict().items()}
        model.load_state_dict(half)
        x_test, _ = mnist_test_binarized()
        final = evaluate_vae(model, x_test.to(dev), generator=torch.Generator().manual_seed(0))
        meta.update(storage="float16", test_elbo_float16=final["elbo"])
        path = save_checkpoint(checkpoint_path(MNIST_NAME, cfg, directory), half, name=MNIST_NAME, config=cfg,
                               meta=meta)
        size = path.stat().st_size / 2**20
        print(f"k={k}: test ELBO {meta['test_elbo']:.2f} nats (float16: {final['elbo']:.2f}), "
              f"{meta['train_seconds'] / 60:.1f} min ({meta['seconds_per_epoch']:.1f} s/epoch), "
              f"{path.name} {size:.2f} MiB", flush=True)
        paths.append(path)
    return paths


# ====================================================================== experiments
def beta_sweep(x_train: torch.Tensor, x_test: torch.Tensor, betas, *, steps: int, latent_dim: int = 1,
               seed_value: int = 0, progress: bool = True, **fit_kw) -> list[dict]:
    """Train one toy VAE per beta (same data, same initialisation seed) and measure the held-out terms.

    Returns one dict per beta: ``beta``, ``model``, ``reconstruction``, ``kl_prior``, ``elbo`` (nats per
    example on x_test, 16 draws of z) and ``code_spread``: Var_x[mu(x)] summed over z's coordinates,
    which falls to 0 under posterior collapse (every x gets the same code).
    """
    results = []
    for beta in betas:
        seed(seed_value)
        model = toy_vae(latent_dim)
        fit_vae(model, x_train, None, steps=steps, beta=float(beta), progress=progress,
                desc=f"beta = {beta:g}", generator=torch.Generator().manual_seed(seed_value), **fit_kw)
        terms = evaluate_vae(model, x_test, n_samples=16)
        with torch.no_grad():
            mu, _ = model.encode(x_test)
        results.append({"beta": float(beta), "model": model, **terms, "code_spread": float(mu.var(0).sum())})
    return results


def iwae_curve(model: VAE, x: torch.Tensor, ks=(1, 10, 100, 1000), generator: torch.Generator | None = None
               ) -> dict[int, float]:
    """The importance-weighted bound L_k averaged over x (nats per example), for each k in ``ks``."""
    with torch.no_grad():
        return {int(k): float(model.iwae_bound(x, k=int(k), generator=generator).mean()) for k in ks}


# ====================================================================== figures
def _axes(ax, figsize=(7.0, 4.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_elbo_history(hist: dict, ax=None, x: str = "step"):
    """The deepul-style ELBO figure: -ELBO, -reconstruction and KL, train (dashed) and held-out (solid).

    ``hist``: from ``fit_vae`` (or a checkpoint's ``meta["history"]``). All in nats per example.
    """
    from .plotting import COLORS

    ax = _axes(ax, (8, 4.5))
    series = [("elbo", "−ELBO", COLORS["truth"], -1),
              ("reconstruction", "−reconstruction", COLORS["reconstruction"], -1),
              ("kl_prior", "KL(q(z|x) ‖ p(z))", COLORS["prior_matching"], 1)]
    for key, name, colour, sign in series:
        for split, style in (("train", "--"), ("test", "-")):
            values = hist.get(f"{split}_{key}")
            if values:
                where = "held-out" if split == "test" else "train"
                ax.plot(hist[x], [sign * v for v in values], style, color=colour, label=f"{name} ({where})")
    ax.set_xlabel({"step": "training step", "epoch": "epoch"}.get(x, x))
    ax.set_ylabel("nats per example")
    ax.legend(ncol=1, loc="best")
    return ax


def plot_toy_data(x, colour=None, ax=None, title: str = "data", cmap: str = "viridis", s: float = 6):
    """A scatter of 2-D points, optionally coloured (position along a curve, or component)."""
    from .plotting import COLORS, to_numpy

    ax = _axes(ax, (5, 5))
    x = to_numpy(x)
    if colour is None:
        ax.scatter(x[:, 0], x[:, 1], s=s, color=COLORS["data"], alpha=0.6, lw=0)
    else:
        ax.scatter(x[:, 0], x[:, 1], s=s, c=to_numpy(colour), cmap=cmap, alpha=0.8, lw=0)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    return ax


def plot_latent_codes(model: VAE, x, colour, ax=None, colour_label: str = "position along the curve",
                      cmap: str = "viridis"):
    """Where the encoder puts each x. 1-D latent: mu(x) ± sigma(x) against ``colour``; 2-D: mu(x) scattered.

    For a 2-D latent the circles are the prior's 1 and 2 standard deviations.
    """
    import numpy as np

    from .plotting import COLORS, to_numpy

    with torch.no_grad():
        mu, log_sigma = model.encode(x)
    mu, sd, c = to_numpy(mu), to_numpy(log_sigma.exp()), to_numpy(colour)
    if model.latent_dim == 1:
        ax = _axes(ax, (7, 4.5))
        order = np.argsort(c)
        ax.fill_between(c[order], (mu - sd)[order, 0], (mu + sd)[order, 0], color=COLORS["encoder"], alpha=0.2,
                        lw=0, label="μ(x) ± σ(x)")
        ax.scatter(c, mu[:, 0], c=c, cmap=cmap, s=6, lw=0)
        ax.plot([], [], "o", color=COLORS["encoder"], label="posterior mean μ(x)")
        ax.set_xlabel(colour_label)
        ax.set_ylabel("latent code z")
        ax.legend(loc="best")
        return ax
    ax = _axes(ax, (5.5, 5))
    t = np.linspace(0, 2 * np.pi, 200)
    for r in (1, 2):
        ax.plot(r * np.cos(t), r * np.sin(t), color=COLORS["prior"], lw=1.2, ls=":",
                label="prior N(0, I): 1 and 2 sd" if r == 1 else None)
    if np.allclose(c, np.round(c)) and len(np.unique(c)) <= 10:
        # discrete labels (mixture components): one colour each, in a legend
        import matplotlib.pyplot as plt

        colours = plt.get_cmap("tab10")
        for j, value in enumerate(np.unique(c)):
            m = c == value
            ax.scatter(mu[m, 0], mu[m, 1], s=6, lw=0, color=colours(j), label=f"{colour_label} {value:g}")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3)
    else:
        points = ax.scatter(mu[:, 0], mu[:, 1], c=c, cmap=cmap, s=6, lw=0)
        ax.figure.colorbar(points, ax=ax, label=colour_label)
        ax.legend(loc="upper right")
    ax.set_xlabel("$z_1$ (posterior mean)")
    ax.set_ylabel("$z_2$ (posterior mean)")
    ax.set_aspect("equal", adjustable="datalim")
    return ax


def plot_reconstructions(model: VAE, x, ax=None, n_lines: int = 80):
    """Data points and their reconstructions E[x | z = mu(x)], with a line from each of ``n_lines`` to its own."""
    from .plotting import COLORS, to_numpy

    ax = _axes(ax, (5.5, 5))
    with torch.no_grad():
        r = to_numpy(model.reconstruct(x))
    x = to_numpy(x)
    for i in range(min(n_lines, len(x))):
        ax.plot([x[i, 0], r[i, 0]], [x[i, 1], r[i, 1]], color="0.6", lw=0.7)
    ax.scatter(x[:, 0], x[:, 1], s=6, color=COLORS["data"], alpha=0.5, lw=0, label="data x")
    ax.scatter(r[:, 0], r[:, 1], s=6, color=COLORS["reconstruction"], lw=0, label="reconstruction E[x | μ(x)]")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title("reconstructions")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", markerscale=3)
    return ax


def plot_samples(model: VAE, x, ax=None, n: int = 2000, generator: torch.Generator | None = None,
                 title: str = "samples from the model"):
    """Draws z ~ N(0, I), x ~ p(x | z) (blue) over the data (green); for a 1-D latent also the decoder's
    mean curve f(z), z from -3 to 3."""
    from .plotting import COLORS, to_numpy

    ax = _axes(ax, (5.5, 5))
    with torch.no_grad():
        s = to_numpy(model.sample(n, generator=generator))
    x = to_numpy(x)
    ax.scatter(x[:, 0], x[:, 1], s=6, color=COLORS["data"], alpha=0.4, lw=0, label="data")
    ax.scatter(s[:, 0], s[:, 1], s=6, color=COLORS["samples"], alpha=0.6, lw=0, label="samples x ~ p(x|z), z ~ p(z)")
    if model.latent_dim == 1:
        with torch.no_grad():
            z = torch.linspace(-3, 3, 400).unsqueeze(1)
            curve = to_numpy(model.decode(z))
        ax.plot(curve[:, 0], curve[:, 1], color=COLORS["model"], lw=2, label="decoder mean f(z), |z| ≤ 3")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", markerscale=3)
    return ax


def plot_beta_sweep(results: list[dict], x_test, fig=None):
    """The beta trade-off: held-out rate (KL) and distortion (-reconstruction) against beta, and each model's samples.

    Left column: KL on top, -reconstruction below (log beta axis). Right: samples of each model over the data,
    two rows. Returns the figure.
    """
    import math as _math

    import matplotlib.pyplot as plt

    from .plotting import COLORS, to_numpy

    n = len(results)
    ncols = _math.ceil(n / 2)
    fig = fig or plt.figure(figsize=(5.5 + 3.6 * ncols, 7.5))
    grid = fig.add_gridspec(2, ncols + 2)
    rate, distortion = fig.add_subplot(grid[0, :2]), fig.add_subplot(grid[1, :2])
    betas = [r["beta"] for r in results]
    rate.plot(betas, [r["kl_prior"] for r in results], "s-", color=COLORS["prior_matching"], label="KL (rate)")
    rate.set_ylabel("KL(q(z|x) ‖ p(z)), nats")
    rate.set_title("held-out, per example")
    distortion.plot(betas, [-r["reconstruction"] for r in results], "o-", color=COLORS["reconstruction"],
                    label="−reconstruction (distortion)")
    distortion.set_ylabel("−E_q log p(x|z), nats")
    for ax in (rate, distortion):
        ax.set_xscale("log")
        ax.set_xlabel("β (weight of the KL term)")
        ax.axvline(1.0, color=COLORS["truth"], lw=1, ls=":")
        ax.legend(loc="best")
    x = to_numpy(x_test)
    for i, r in enumerate(results):
        ax = fig.add_subplot(grid[i // ncols, 2 + i % ncols])
        with torch.no_grad():
            s = to_numpy(r["model"].sample(1000, generator=torch.Generator().manual_seed(0)))
        ax.scatter(x[:, 0], x[:, 1], s=4, color=COLORS["data"], alpha=0.3, lw=0)
        ax.scatter(s[:, 0], s[:, 1], s=4, color=COLORS["samples"], alpha=0.6, lw=0)
        ax.set_title(f"β = {r['beta']:g}: KL {r['kl_prior']:.2f}")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
    return fig


def show_images(images, ax=None, nrow: int | None = None, title: str | None = None):
    """A grid of (n, 1, 28, 28) images in [0, 1] (black = 0), without axes."""
    from .plotting import image_grid

    ax = _axes(ax, (6, 6))
    # light grey gaps between the images (0 = white, 1 = black in gray_r)
    ax.imshow(image_grid(images.detach().cpu().clamp(0, 1), nrow=nrow, value=0.25), cmap="gray_r", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def plot_latent_scatter(model: VAE, x, labels, ax=None):
    """The posterior means mu(x) of a 2-D latent model, coloured by digit."""
    import matplotlib.pyplot as plt
    import numpy as np

    from .plotting import to_numpy

    ax = _axes(ax, (6.5, 5.5))
    with torch.no_grad():
        mu = torch.cat([model.encode(x[i:i + 2000])[0] for i in range(0, len(x), 2000)])
    mu, labels = to_numpy(mu), to_numpy(labels)
    cmap = plt.get_cmap("tab10")
    for d in range(10):
        m = labels == d
        ax.scatter(mu[m, 0], mu[m, 1], s=3, color=cmap(d), lw=0, label=str(d))
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(2 * np.cos(t), 2 * np.sin(t), ":", color="k", lw=1.2, label="prior 2 sd")
    ax.set_xlabel("$z_1$ (posterior mean)")
    ax.set_ylabel("$z_2$ (posterior mean)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(title="digit", markerscale=4, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax


def plot_latent_grid(model: VAE, n: int = 15, ax=None, quantile: float = 0.95):
    """Decode a grid of z in 2-D: z_i = Phi^{-1}(p_i), p_i evenly spaced in [1 - quantile, quantile].

    Equal steps in p are equal prior mass, so the grid covers the prior as the decoder sees it.
    """
    from scipy.stats import norm

    if model.latent_dim != 2:
        raise ValueError(f"model: expected a 2-D latent for a latent grid, got latent_dim = {model.latent_dim}")
    ax = _axes(ax, (7, 7))
    q = torch.as_tensor(norm.ppf(torch.linspace(1 - quantile, quantile, n).numpy()), dtype=torch.float32)
    z1, z2 = torch.meshgrid(q, q.flip(0), indexing="xy")  # z2 grows upwards on the page
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)
    with torch.no_grad():
        images = model.decode(z).cpu()
    show_images(images, ax=ax, nrow=n)
    ticks = [0, n // 2, n - 1]
    ax.set_xticks([29 * i + 13.5 for i in ticks], [f"{float(q[i]):.2f}" for i in ticks])
    ax.set_yticks([29 * i + 13.5 for i in ticks], [f"{float(q.flip(0)[i]):.2f}" for i in ticks])
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    return ax


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.vae_models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-pretrained", action="store_true",
                        help="train the full-mode MNIST VAEs and write them into course_lib/pretrained/")
    parser.add_argument("--prepare", action="store_true", help="load or train every model notebook 03 needs")
    parser.add_argument("--latent", type=int, nargs="*", default=list(MNIST_LATENT_DIMS), help="latent sizes")
    parser.add_argument("--device", default=None, help="e.g. cpu or cuda (default: the best available)")
    args = parser.parse_args(argv)
    if args.train_pretrained:
        train_pretrained(tuple(args.latent), dev=args.device)
    elif args.prepare:
        prepare()
    else:
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(_main())

