"""Diffusion on MNIST (notebook 07): the U-Net denoiser, its training, and a classifier that measures samples.

- ``mnist_diffusion_config(fast=...)``: everything that changes the denoiser's weights (the cache key).
  Full: ``UNet(channels=(32, 64, 64))`` (0.62M parameters) predicting eps, cosine schedule with T = 500,
  Adam lr 1e-3 with cosine decay, batch 64, 4,000 steps over the 60,000 training digits scaled to [-1, 1],
  gradient clipping at 1, bfloat16 autocast for the forward pass (2x faster on CPUs with AMX/AVX-512 bf16;
  float32 where bf16 is not native), and an exponential moving average (EMA) of the weights with decay
  0.999 (the EMA weights are the model). FAST (``fast=True``): a tiny U-Net (0.16M parameters), 40 float32
  steps on 1,000 digits — a sketch that shows the code path, not digits.
- ``load_or_train_mnist_denoiser(fast=...)``: the model for the full config from the user cache or the
  shipped weights (``course_lib/pretrained``); only when neither has it, trains the full model or, in
  FAST mode, the tiny one. ``mnist_schedule(config)`` is the matching ``NoiseSchedule``.
- ``mnist_diffusion_loss``: the eps loss of ``course_lib.denoisers.diffusion_loss`` per pixel (its sum over
  the 784 pixels divided by 784), so the numbers read as a mean squared error per pixel.
- ``MNISTClassifier``: a small CNN (0.46M parameters, 99.1% test accuracy after 1,400 steps, 3 epochs); ``features(x)``
  is its 128-dimensional penultimate layer, the feature space of ``mnist_frechet_distance`` (an FID for
  MNIST: the Frechet distance of ``course_lib.fid`` between Gaussians fitted to the two feature sets).
- ``python -m course_lib.mnist_models --train-pretrained`` trains both and writes the shipped weights.

Images are (n, 1, 28, 28) float32 in [-1, 1] (``to_model_scale``); plots map them back with ``to_unit``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._checks import describe
from ._runtime import FAST, device, seed, threads_for
from .checkpoints import PRETRAINED_DIR, CacheInfo, cached_model, checkpoint_path, save_checkpoint
from .schedules import NoiseSchedule
from .unet import UNet

__all__ = [
    "CLASSIFIER_NAME",
    "COND_DENOISER_NAME",
    "DENOISER_NAME",
    "EMA",
    "MNISTClassifier",
    "classifier_accuracy",
    "classifier_features",
    "describe_source",
    "load_or_train_mnist_classifier",
    "load_or_train_mnist_denoiser",
    "mnist_classifier_config",
    "mnist_diffusion_config",
    "mnist_diffusion_loss",
    "mnist_frechet_distance",
    "mnist_schedule",
    "mnist_unet",
    "to_model_scale",
    "to_unit",
    "train_mnist_classifier",
    "train_mnist_denoiser",
    "train_pretrained",
]

DENOISER_NAME = "mnist_denoiser"
COND_DENOISER_NAME = "mnist_cond_denoiser"
CLASSIFIER_NAME = "mnist_classifier"
LOSS_POINTS = 200  # the loss history stored in a checkpoint: block means, at most this many points


# ====================================================================== data scale
def to_model_scale(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] (``mnist_tensors``) -> [-1, 1], the scale the diffusion model works in: 2 x - 1."""
    return x * 2.0 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] for display, clamped (samples can overshoot): (x + 1) / 2."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def _mnist_train(limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    from .data import mnist_tensors

    x, y = mnist_tensors("train", limit=limit)
    return to_model_scale(x), y


# ====================================================================== EMA
class EMA:
    """Exponential moving average of a model's parameters: theta_ema <- d theta_ema + (1 - d) theta.

    The decay warms up as min(decay, (1 + k) / (10 + k)) after k updates, so early averages are not
    dominated by the random initial weights. ``copy_to(model)`` writes the averages into a model.
    Averaging the last ~1 / (1 - d) steps smooths the noise of stochastic gradients: for diffusion
    models the EMA weights give visibly cleaner samples than the raw ones.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay: expected a number in [0, 1), got {decay!r}")
        self.decay, self.updates = float(decay), 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()
                       if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        state = model.state_dict()
        for k, v in self.shadow.items():
            state[k].copy_(v)


# ====================================================================== the denoiser
def mnist_diffusion_config(*, fast: bool = False, conditional: bool = False) -> dict:
    """Everything that changes the MNIST denoiser's weights (the checkpoint cache key); see the module docstring.

    ``conditional=True``: the class-conditional U-Net of notebook 08 (``num_classes`` 10): each training label
    is replaced by the null label with probability ``label_drop`` (0.2), so the one network learns eps(x^t, y)
    and the unconditional eps(x^t) = eps(x^t, null) that classifier-free guidance combines; 8,000 steps.
    """
    cfg = {"arch": "unet", "channels": [32, 64, 64], "emb_dim": 128, "embedding": "sin-cos of 1000 t / T",
           "target": "eps", "weighting": "min_snr", "num_classes": None, "schedule": "cosine", "T": 500,
           "data": "mnist-train in [-1, 1]", "train_limit": None, "steps": 10000, "batch_size": 128, "lr": 1e-3,
           "lr_schedule": "cosine", "grad_clip": 1.0, "ema_decay": 0.9995, "precision": "bf16", "seed": 0,
           "fast": False, "version": 2}
    if conditional:
        cfg.update(num_classes=10, label_drop=0.2, steps=8000)
    if fast:
        cfg.update(channels=[16, 32, 32], emb_dim=64, steps=40, batch_size=32, train_limit=1000, ema_decay=0.9,
                   precision="float32", fast=True)
    return cfg


def mnist_unet(config: dict) -> UNet:
    """The untrained ``UNet`` that ``config`` describes (``model.config`` is set to it)."""
    model = UNet(tuple(config["channels"]), config["emb_dim"], target=config["target"],
                 num_classes=config["num_classes"], T=config["T"])
    model.config = dict(config)
    return model


def mnist_schedule(config: dict | None = None) -> NoiseSchedule:
    """The noise schedule a denoiser was trained with (default: the full config's cosine, T = 500)."""
    config = config or mnist_diffusion_config()
    if config["schedule"] not in ("cosine", "linear"):
        raise ValueError(f"config['schedule']: expected 'cosine' or 'linear', got {config['schedule']!r}")
    return getattr(NoiseSchedule, config["schedule"])(config["T"])


def mnist_diffusion_loss(model, x0: torch.Tensor, schedule: NoiseSchedule, generator: torch.Generator | None = None,
                         *, y: torch.Tensor | None = None, **kw) -> torch.Tensor:
    """Per-pixel eps loss: E_t,eps |model(x^t, t[, y]) - eps|^2 / D, t ~ U{1..T}, D = pixels per image (784).

    ``course_lib.denoisers.diffusion_loss`` (summed over pixels, averaged over the batch) divided by D.
    x0: (n, 1, 28, 28) in [-1, 1]. y: labels (n,) for a conditional U-Net (its null label = no label).
    Keywords (``t``, ``noise``, ...) go to ``diffusion_loss``.
    """
    from .denoisers import diffusion_loss

    net = model if y is None else (lambda x_t, t: model(x_t, t, y))
    return diffusion_loss(net, x0, schedule, model.target, generator, **kw) / x0[0].numel()


def _downsample(values: list[float], points: int = LOSS_POINTS) -> tuple[list[int], list[float]]:
    """Block means of a per-step series: (last step of each block, mean over the block), <= ``points`` blocks."""
    n = len(values)
    size = max(1, -(-n // points))
    steps, means = [], []
    for start in range(0, n, size):
        block = values[start:start + size]
        steps.append(start + len(block))
        means.append(round(sum(block) / len(block), 5))
    return steps, means


def _autocast(precision: str, dev: torch.device):
    """(context factory, enabled): bfloat16 autocast for the forward pass ("bf16"), or nothing ("float32").

    bf16 halves the training time on CPUs with AMX/AVX-512 bf16 units and on recent GPUs; the weights, the
    optimiser and the loss stay float32. Where bf16 is not supported natively it falls back to float32.
    """
    from contextlib import nullcontext

    if precision not in ("bf16", "float32"):
        raise ValueError(f"precision: expected 'bf16' or 'float32', got {precision!r}")
    ok = precision == "bf16" and (torch.cuda.is_bf16_supported() if dev.type == "cuda" else dev.type == "cpu")
    if not ok:
        return nullcontext, False
    return (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)), True


def train_mnist_denoiser(model: UNet, config: dict, *, progress: bool = True,
                         dev: torch.device | str | None = None) -> dict:
    """Train ``model`` as ``config`` says (EMA weights end up in the model); returns the checkpoint metadata.

    Metadata: wall seconds, CPU seconds of this process, steps, device, threads, parameter count and the
    per-pixel loss history (block means, ``LOSS_POINTS`` points at most).
    """
    from tqdm.auto import tqdm

    from .training import training_loop

    dev = torch.device(dev) if dev is not None else next(model.parameters()).device
    gen = seed(config["seed"])
    x, labels = _mnist_train(config["train_limit"])
    conditional = config.get("num_classes") is not None
    data = (x.to(dev), labels.to(dev)) if conditional else x.to(dev)
    schedule = mnist_schedule(config)
    g_noise = torch.Generator().manual_seed(config["seed"] + 1)
    g_drop = torch.Generator().manual_seed(config["seed"] + 2)
    ema = EMA(model, config["ema_decay"])
    losses: list[float] = []

    amp, amp_on = _autocast(config["precision"], dev)

    from .denoisers import loss_weights

    weights = loss_weights(schedule, config["target"], config.get("weighting", "none")).float().to(dev)

    def loss_fn(m, batch):
        y = None
        if conditional:
            batch, y = batch
            drop = torch.rand(y.shape, generator=g_drop).to(y.device) < config["label_drop"]
            y = torch.where(drop, torch.full_like(y, config["num_classes"]), y)
        t = torch.randint(1, schedule.T + 1, (batch.shape[0],), generator=g_noise).to(batch.device)
        with amp():
            per_image = mnist_diffusion_loss(m, batch, schedule, g_noise, y=y, t=t, reduction="none")
        # train on the weighted loss; record the plain per-pixel squared error (1 = predicting eps_hat = 0)
        return (weights[t] * per_image).mean(), {"mse": per_image.mean().detach()}

    steps = config["steps"]
    t0, c0 = time.perf_counter(), time.process_time()
    with threads_for(model), tqdm(total=steps, desc="MNIST U-Net", disable=not progress, leave=False,
                                  mininterval=5.0) as bar:
        threads = torch.get_num_threads()
        for state in training_loop(model, loss_fn, data, steps=steps, batch_size=config["batch_size"],
                                   lr=config["lr"], generator=gen, device=dev, grad_clip=config["grad_clip"],
                                   lr_schedule=config["lr_schedule"]):
            ema.update(model)
            losses.append(state.logs["mse"])
            bar.set_postfix(loss=f"{state.logs['mse']:.4f}", refresh=False)
            bar.update(1)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    ema.copy_to(model)
    model.eval()
    loss_steps, loss_means = _downsample(losses)
    return {"train_seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "steps": steps,
            "seconds_per_step": round(seconds / steps, 4), "device": str(dev), "threads": threads,
            "autocast": "bf16" if amp_on else "off",
            "cpu_count": os.cpu_count() or 1, "machine": platform.machine(), "torch": str(torch.__version__),
            "params": sum(p.numel() for p in model.parameters()),
            "loss_steps": loss_steps, "loss": loss_means, "final_loss": loss_means[-1]}


def _available(name: str, config: dict) -> bool:
    return checkpoint_path(name, config).is_file() or checkpoint_path(name, config, PRETRAINED_DIR).is_file()


def load_full_or_fast(name: str, make_config, build, train_fn, *, fast: bool, retrain: bool,
                      dev: torch.device | str | None, progress: bool) -> tuple[nn.Module, CacheInfo]:
    """The loading rule of every MNIST model: the full config (``make_config()``) from the user cache or the shipped
    weights; only when neither has it, train the full model, or with ``fast`` the small ``make_config(fast=True)``.

    ``build(config)`` -> an untrained model, ``train_fn(model, config, progress=, dev=)`` -> metadata. The model
    ends in eval mode on ``dev`` (default ``device()``, the GPU when present).
    """
    dev = torch.device(dev) if dev is not None else device()
    full = make_config()
    cfg = full if (not fast or (_available(name, full) and not retrain)) else make_config(fast=True)
    return cached_model(name, cfg, lambda c: build(c).to(dev),
                        lambda m: train_fn(m, cfg, progress=progress, dev=dev), retrain=retrain, map_location=dev)


def load_or_train_mnist_denoiser(*, fast: bool = FAST, retrain: bool = False, dev: torch.device | str | None = None,
                                 progress: bool = True, conditional: bool = False) -> tuple[UNet, CacheInfo]:
    """The MNIST U-Net denoiser and where it came from (``info.source``: "cache", "pretrained" or "trained").

    Always asks for the full config first, which the user cache or the shipped weights provide without
    training. Only if neither has it: trains the full model, or with ``fast=True`` the tiny FAST one
    (``mnist_diffusion_config(fast=True)``). ``model.config`` is its config; ``mnist_schedule(model.config)``
    its schedule. The model is in eval mode on ``dev`` (default ``device()``, the GPU when present).
    ``conditional=True``: notebook 08's class-conditional U-Net (``model(x_t, t, y)``, null label 10).
    """
    from functools import partial

    return load_full_or_fast(COND_DENOISER_NAME if conditional else DENOISER_NAME,
                             partial(mnist_diffusion_config, conditional=conditional), mnist_unet,
                             train_mnist_denoiser, fast=fast, retrain=retrain, dev=dev, progress=progress)


def describe_source(model: nn.Module, info: CacheInfo) -> str:
    """One line for a notebook: which model, from where, trained how long on what."""
    cfg = getattr(model, "config", {})
    meta = info.meta
    what = f"{type(model).__name__} with {sum(p.numel() for p in model.parameters()):,} parameters"
    if cfg.get("fast"):
        what += " (the tiny FAST model: the shipped weights were not found)"
    trained = ""
    if "train_seconds" in meta:
        trained = (f"; trained for {meta.get('steps', meta.get('epochs', '?'))} "
                   f"{'steps' if 'steps' in meta else 'epochs'} in {meta['train_seconds'] / 60:.1f} min "
                   f"on {meta.get('device', '?')}")
    return f"{what} — {info}{trained}"


# ====================================================================== the classifier
class MNISTClassifier(nn.Module):
    """A small CNN for MNIST in [-1, 1]: (n, 1, 28, 28) -> logits (n, 10); ``features(x)``: (n, hidden).

    conv 3x3 1->c1, ReLU, max-pool (14x14); conv 3x3 c1->c2, ReLU, max-pool (7x7); conv 3x3 c2->c2, ReLU;
    linear c2*49 -> hidden, ReLU (the features); dropout; linear hidden -> 10.
    """

    def __init__(self, channels=(32, 64), hidden: int = 128, dropout: float = 0.3):
        super().__init__()
        c1, c2 = (int(c) for c in channels)
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv3 = nn.Conv2d(c2, c2, 3, padding=1)
        self.fc = nn.Linear(c2 * 49, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, 10)
        self.hidden = int(hidden)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer, (n, 1, 28, 28) -> (n, hidden): the feature space of the Frechet distance."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"x: expected images of shape (n, 1, 28, 28) in [-1, 1], got {describe(x)}")
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.relu(self.conv3(h))
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.features(x)))


def mnist_classifier_config(*, fast: bool = False) -> dict:
    """The classifier's config: CNN (32, 64) channels, 128 features, Adam 1e-3 cosine, batch 128, 3 epochs,
    random shifts of up to 2 pixels. FAST: 60 steps on 2,000 digits (far from 99%)."""
    cfg = {"arch": "cnn", "channels": [32, 64], "hidden": 128, "dropout": 0.3, "steps": 1400, "batch_size": 128,
           "lr": 1e-3, "lr_schedule": "cosine", "shift": 2, "train_limit": None, "seed": 0, "fast": False,
           "version": 1}
    if fast:
        cfg.update(steps=60, train_limit=2000, fast=True)
    return cfg


def _build_classifier(config: dict) -> MNISTClassifier:
    model = MNISTClassifier(tuple(config["channels"]), config["hidden"], config["dropout"])
    model.config = dict(config)
    return model


def _random_shift(x: torch.Tensor, shift: int, generator: torch.Generator | None) -> torch.Tensor:
    """Translate each image by up to ``shift`` pixels (zero = background -1 padding, then a random crop)."""
    if shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(x.device)          # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None, :]).to(x.device)          # (n, w)
    idx = torch.arange(n, device=x.device)[:, None, None]
    return padded[:, 0][idx, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


@torch.no_grad()
def classifier_accuracy(model: MNISTClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``x`` (n, 1, 28, 28) in [-1, 1] whose argmax logit equals the label ``y`` (n,)."""
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        correct += int((model(x[i:i + batch_size].to(dev)).argmax(1).cpu() == y[i:i + batch_size]).sum())
    return correct / x.shape[0]


def train_mnist_classifier(model: MNISTClassifier, config: dict, *, progress: bool = True,
                           dev: torch.device | str | None = None) -> dict:
    """Train the classifier (cross-entropy, Adam); returns metadata with the test accuracy on the 10,000 test digits."""
    from .data import mnist_tensors
    from .training import train

    dev = torch.device(dev) if dev is not None else next(model.parameters()).device
    gen = seed(config["seed"])
    x, y = _mnist_train(config["train_limit"])
    g_shift = torch.Generator().manual_seed(config["seed"] + 1)

    def loss_fn(m, batch):
        xb, yb = batch
        return F.cross_entropy(m(_random_shift(xb, config["shift"], g_shift)), yb)

    c0 = time.process_time()
    hist = train(model, loss_fn, (x.to(dev), y.to(dev)), steps=config["steps"], batch_size=config["batch_size"],
                 lr=config["lr"], lr_schedule=config["lr_schedule"], generator=gen, device=dev, progress=progress,
                 desc="MNIST classifier")
    cpu_seconds = time.process_time() - c0
    model.eval()
    xt, yt = mnist_tensors("test", limit=2000 if config["fast"] else None)
    acc = classifier_accuracy(model, to_model_scale(xt), yt)
    loss_steps, loss_means = _downsample(hist["loss"])
    return {"train_seconds": round(hist["seconds"], 1), "cpu_seconds": round(cpu_seconds, 1),
            "steps": config["steps"], "device": str(dev), "torch": str(torch.__version__),
            "params": sum(p.numel() for p in model.parameters()), "test_accuracy": round(acc, 5),
            "test_size": int(xt.shape[0]), "loss_steps": loss_steps, "loss": loss_means}


def load_or_train_mnist_classifier(*, fast: bool = FAST, retrain: bool = False, dev: torch.device | str | None = None,
                                   progress: bool = True) -> tuple[MNISTClassifier, CacheInfo]:
    """The feature classifier: full config from cache or shipped weights, else trained (tiny in FAST mode)."""
    return load_full_or_fast(CLASSIFIER_NAME, mnist_classifier_config, _build_classifier, train_mnist_classifier,
                             fast=fast, retrain=retrain, dev=dev, progress=progress)


@torch.no_grad()
def classifier_features(classifier: MNISTClassifier, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``classifier.features`` in batches, float64 on the CPU: (n, 1, 28, 28) in [-1, 1] -> (n, hidden)."""
    classifier.eval()
    dev = next(classifier.parameters()).device
    out = [classifier.features(x[i:i + batch_size].to(dev).float()).double().cpu()
           for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


def mnist_frechet_distance(classifier: MNISTClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to the classifier features of two image sets (an MNIST "FID").

    x, y: (n, 1, 28, 28) and (m, 1, 28, 28) in [-1, 1] (samples are clamped to [-1, 1] first).
    """
    from .fid import frechet_distance

    return frechet_distance(classifier_features(classifier, x.clamp(-1, 1)),
                            classifier_features(classifier, y.clamp(-1, 1)))


# ====================================================================== shipped weights
def _half(model: nn.Module) -> dict:
    # float16 storage halves the file; load_state_dict casts back to the model's float32
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
            for k, v in model.state_dict().items()}


def train_pretrained(which=("classifier", "denoiser"), *, dev: torch.device | str | None = None,
                     progress: bool = True, directory=PRETRAINED_DIR) -> list:
    """Train the full-config classifier and/or denoiser and save them (float16) where ``cached_model`` finds them."""
    dev = torch.device(dev) if dev is not None else device()
    paths = []
    for kind in which:
        if kind == "classifier":
            cfg, name = mnist_classifier_config(), CLASSIFIER_NAME
            model = _build_classifier(cfg).to(dev)
            meta = train_mnist_classifier(model, cfg, progress=progress, dev=dev)
            half = _half(model)
            model.load_state_dict(half)
            from .data import mnist_tensors

            xt, yt = mnist_tensors("test")
            meta["test_accuracy_float16"] = round(classifier_accuracy(model, to_model_scale(xt), yt), 5)
            summary = f"test accuracy {meta['test_accuracy']:.4f} (float16 {meta['test_accuracy_float16']:.4f})"
        elif kind in ("denoiser", "cond_denoiser"):
            cond = kind == "cond_denoiser"
            cfg, name = mnist_diffusion_config(conditional=cond), (COND_DENOISER_NAME if cond else DENOISER_NAME)
            model = mnist_unet(cfg).to(dev)
            meta = train_mnist_denoiser(model, cfg, progress=progress, dev=dev)
            half = _half(model)
            summary = f"final loss {meta['final_loss']:.4f} per pixel"
        elif kind == "noisy_classifier":
            from . import guidance_models as gm

            cfg, name = gm.noisy_classifier_config(), gm.NOISY_CLASSIFIER_NAME
            model = gm._build_noisy(cfg).to(dev)
            meta = gm.train_noisy_classifier(model, cfg, progress=progress, dev=dev)
            half = _half(model)
            pairs = zip(meta["accuracy_t"], meta["accuracy"], strict=True)
            summary = "accuracy at t = " + ", ".join(f"{t}: {a:.3f}" for t, a in pairs)
        else:
            raise ValueError(f"which: expected 'classifier', 'denoiser', 'cond_denoiser' or 'noisy_classifier', "
                             f"got {kind!r}")
        meta["storage"] = "float16"
        path = save_checkpoint(checkpoint_path(name, cfg, directory), half, name=name, config=cfg, meta=meta)
        print(f"{name}: {summary}; {meta['steps']} steps in {meta['train_seconds'] / 60:.1f} min "
              f"({meta['cpu_seconds'] / 60:.1f} CPU-min) on {meta['device']}; {path.name} "
              f"{path.stat().st_size / 2**20:.2f} MiB", flush=True)
        paths.append(path)
    return paths


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.mnist_models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-pretrained", action="store_true",
                        help="train the MNIST classifier and U-Net denoiser and write them into course_lib/pretrained/")
    parser.add_argument("--only", choices=["classifier", "denoiser", "cond_denoiser", "noisy_classifier"], default=None,
                        help="train just one of them (cond_denoiser, noisy_classifier: notebook 08's models)")
    parser.add_argument("--device", default=None, help="e.g. cpu or cuda (default: the best available)")
    args = parser.parse_args(argv)
    if not args.train_pretrained:
        parser.print_help()
        return 0
    which = (args.only,) if args.only else ("classifier", "denoiser")
    train_pretrained(which, dev=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(_main())


# ====================================================================== figures (the notebook's, owned here)
def _imshow(ax, images: torch.Tensor, nrow: int | None = None, title: str | None = None) -> None:
    from .plotting import image_grid, to_numpy

    # ink dark on white (gray_r), images separated by light grey lines
    ax.imshow(image_grid(to_numpy(to_unit(images.detach().float().cpu())), nrow=nrow, value=0.3), cmap="gray_r",
              vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)


def plot_images(images: torch.Tensor, *, nrow: int | None = None, title: str | None = None, ax=None):
    """A grid of images (n, 1, 28, 28) in [-1, 1], ink dark on white. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        cols, rows = _grid_shape(images.shape[0], nrow)
        width = max(4.0, 0.6 * cols)
        _, ax = plt.subplots(figsize=(width, width * rows / cols + (0.5 if title else 0.1)))
    _imshow(ax, images, nrow, title)
    return ax


def _grid_shape(n: int, nrow: int | None) -> tuple[int, int]:
    """(columns, rows) of ``plotting.image_grid`` for n images with ``nrow`` images per row."""
    cols = nrow or int(np.ceil(np.sqrt(n)))
    return cols, int(np.ceil(n / cols))


def plot_loss_history(meta: dict, ax=None):
    """The training loss stored in a checkpoint's metadata (block means per step) against the training step.

    The dashed line at 1 is the loss of predicting eps_hat = 0, what the untrained U-Net does (E|eps|^2 / D = 1).
    """
    import matplotlib.pyplot as plt

    from .plotting import COLORS

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    if not meta.get("loss"):
        ax.text(0.5, 0.5, "no loss history stored with this model", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.plot(meta["loss_steps"], meta["loss"], color=COLORS["model"], label="U-Net (mean over blocks of steps)")
    ax.axhline(1.0, color=COLORS["truth"], ls="--", lw=1.5, label=r"predict $\hat\varepsilon = 0$")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(r"loss per pixel, $|\hat\varepsilon - \varepsilon|^2 / 784$")
    ax.legend(loc="center right")
    return ax


def plot_sample_grids(grids: dict, *, nrow: int | None = None, suptitle: str | None = None, width: float = 3.2):
    """Several sample grids side by side: ``grids`` maps a panel title to images (n, 1, 28, 28). Returns the figure.

    ``width``: inches per panel (the height follows from the grid's shape).
    """
    import matplotlib.pyplot as plt

    k = len(grids)
    cols, rows = _grid_shape(next(iter(grids.values())).shape[0], nrow)
    height = width * rows / cols + 0.45 + (0.45 if suptitle else 0.0)
    fig, axes = plt.subplots(1, k, figsize=(width * k, height), squeeze=False)
    for ax, (title, images) in zip(axes[0], grids.items(), strict=True):
        _imshow(ax, images, nrow, title)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_denoising_strip(path, show_t=None, *, index: int = 0, title: str | None = None):
    """One sample emerging from noise: x^t (top row) and the U-Net's x0_hat = E[x^0 | x^t] (bottom row).

    path: a ``samplers.SamplerPath`` (``return_path=True``) with x (n, 1, 28, 28); ``index`` picks the sample.
    show_t: the steps to show (default 11 steps from T down to 1); a last column shows the final x^0.
    """
    import matplotlib.pyplot as plt

    ts = [int(t) for t in path.timesteps.tolist()]
    T = ts[0]
    if show_t is None:
        show_t = sorted({T, *[int(round(T * f)) for f in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)], 1},
                        reverse=True)
    cols = [ts.index(t) for t in show_t if t in ts[:-1]]
    fig, axes = plt.subplots(2, len(cols) + 1, figsize=(1.05 * (len(cols) + 1) + 0.8, 2.9))
    for j, k in enumerate(cols):
        _imshow(axes[0, j], path.path[k][index:index + 1], title=f"t = {ts[k]}")
        _imshow(axes[1, j], path.x0_pred[k][index:index + 1])
    _imshow(axes[0, -1], path.x[index:index + 1], title="t = 0")
    _imshow(axes[1, -1], path.x[index:index + 1])
    axes[0, 0].set_ylabel(r"$x^t$")
    axes[1, 0].set_ylabel(r"$\hat x^0(x^t)$")
    fig.suptitle(title or r"one sample emerging from noise (top) and the predicted $x^0$ = E[$x^0 | x^t$] (bottom)")
    return fig


def plot_tweedie_rows(x0: torch.Tensor, x_t: torch.Tensor, x0_hat: torch.Tensor, t, *, title: str | None = None):
    """Tweedie in pictures: clean digits (top), their noised x^t (middle), x0_hat = E[x^0 | x^t] (bottom).

    x0, x_t, x0_hat: (n, 1, 28, 28); t: the n steps (one per column).
    """
    import matplotlib.pyplot as plt

    n = x0.shape[0]
    fig, axes = plt.subplots(3, n, figsize=(1.1 * n + 0.8, 3.9), squeeze=False)
    for j in range(n):
        _imshow(axes[0, j], x0[j:j + 1], title=f"t = {int(t[j])}")
        _imshow(axes[1, j], x_t[j:j + 1])
        _imshow(axes[2, j], x0_hat[j:j + 1])
    for i, name in enumerate((r"$x^0$", r"$x^t$", r"$\hat x^0$")):
        axes[i, 0].set_ylabel(name)
    fig.suptitle(title or r"Tweedie in pictures: the U-Net's $\hat x^0 = E[x^0 | x^t]$ blurs as t grows")
    return fig
