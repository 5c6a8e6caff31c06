"""The VAEs of notebooks 02 and 03: named configs, training with held-out ELBO curves, the MNIST models.

Toy VAEs (notebook 02) train in seconds and are not cached. The MNIST VAEs (notebook 03) are an MLP
784-512-256-k with a Bernoulli decoder on dynamically binarised MNIST (a fresh Bernoulli draw of the
grey levels at every batch; the test set binarised once with ``TEST_BINARIZE_SEED``). Their weights
ship with the package for k = 2, 10, 20; reproduce them (the training time of each is in its checkpoint's
metadata, which notebook 03 prints; the result depends on the machine's floating-point details) with

    python -m course_lib train-pretrained mnist_vae_k2 mnist_vae_k10 mnist_vae_k20

which writes ``course_lib/pretrained/mnist_vae-<config key>.pt`` (float16 weights, a few MB in all).
``load_or_train_mnist_vae(k)`` finds a model in the user cache, else the shipped weights, else trains it
(``checkpoints.load_or_train``). The figures are in ``vae_figures`` (re-exported here).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ._runtime import FAST, seed
from .checkpoints import CacheInfo, describe_source, load_or_train
from .densities import named_mixture, swiss_roll, two_moons
from .training import train, training_meta
from .vae import VAE, BernoulliDecoder, GaussianDecoder, GaussianEncoder
from .vae_figures import (
    plot_beta_sweep,
    plot_elbo_history,
    plot_latent_codes,
    plot_latent_grid,
    plot_latent_scatter,
    plot_reconstructions,
    plot_samples,
    plot_toy_data,
    show_images,
)

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
    "mnist_vae_build",
    "mnist_vae_config",
    "plot_beta_sweep",
    "plot_elbo_history",
    "plot_latent_codes",
    "plot_latent_grid",
    "plot_latent_scatter",
    "plot_reconstructions",
    "plot_samples",
    "plot_toy_data",
    "show_images",
    "toy_data",
    "toy_vae",
    "train_mnist_vae",
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

    sigma = 0.1 is twice the toy data's noise (0.05). A learned sigma starts large while the
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
    eval_every = eval_every or max(1, steps // 50)
    hist: dict = {"step": [], "epoch": []}
    window = {"elbo": [], "reconstruction": [], "kl_prior": []}
    eval_seconds = 0.0

    def record(state) -> None:  # the training terms since the last record, and the held-out terms
        nonlocal eval_seconds
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
            eval_seconds += time.perf_counter() - te

    run = train(model, _vae_loss(beta, binarize), x_train, steps=steps, batch_size=batch_size, lr=lr,
                generator=generator, lr_schedule=lr_schedule, progress=progress, desc=desc, threads=threads,
                log_every=eval_every, on_step=record)
    hist["seconds"] = run["seconds"]
    hist["cpu_seconds"] = run["cpu_seconds"]
    hist["step_seconds"] = hist["seconds"] - eval_seconds
    hist["threads"] = run["threads"]
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


def mnist_vae_build(cfg: dict) -> VAE:
    """The untrained MNIST VAE that ``cfg`` (``mnist_vae_config``) describes (``model.config`` is set to it)."""
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
    meta = training_meta({**hist, "loss": [-v for v in hist["train_elbo"]], "steps": steps, "device": str(dev),
                          "autocast": "off"}, model)
    for key in ("loss_steps", "loss", "final_loss", "autocast"):  # the ELBO history below says it all
        meta.pop(key)
    meta.update(seconds_per_epoch=round(hist["step_seconds"] / cfg["epochs"], 2), epochs=cfg["epochs"],
                test_elbo=final["elbo"], test_reconstruction=final["reconstruction"], test_kl_prior=final["kl_prior"],
                history={k: [round(float(v), 4) for v in hist[k]] for k in hist if isinstance(hist[k], list)})
    return meta


def load_or_train_mnist_vae(latent_dim: int = 20, *, fast: bool = FAST, retrain: bool = False,
                            dev: torch.device | str | None = None, progress: bool = True) -> tuple[VAE, CacheInfo]:
    """The MNIST VAE with latent size ``latent_dim``, and where it came from.

    Always asks for the full-mode model first (``mnist_vae_config(latent_dim)``), which the user cache or
    the shipped weights provide without training. Only if neither has it: trains the full model, or in
    FAST mode (``fast=True``) the tiny one of ``mnist_vae_config(latent_dim, fast=True)``. ``retrain``
    trains afresh (FAST-ness as given). The model is in eval mode on ``dev`` (default ``device()``);
    ``model.config`` is its config, ``info.source`` one of "cache", "pretrained", "trained".
    """
    return load_or_train(MNIST_NAME, lambda fast=False: mnist_vae_config(latent_dim, fast=fast), mnist_vae_build,
                         train_mnist_vae, fast=fast, retrain=retrain, dev=dev, progress=progress)


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
