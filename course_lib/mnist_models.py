"""Diffusion on MNIST (notebook 07): the U-Net denoiser, its training, and a classifier that measures samples.

- ``mnist_diffusion_config(fast=...)``: everything that changes the denoiser's weights (the cache key). Full:
  ``UNet(channels=(32, 96, 128))`` (1.72M parameters: the 14 x 14 and 7 x 7 levels, where the digit's shape is decided,
  are wider than the 28 x 28 one, which costs most per channel) predicting v = sqrt(ab) eps - sqrt(1 - ab) x^0, cosine
  schedule with T = 500, Adam lr 1e-3 with cosine decay, batch 128, 12,000 steps (26 epochs) over the 60,000 training
  digits scaled to [-1, 1], the v loss weighted by min(1, 5 / (1 + SNR_t)) ("v_min_snr", ``denoisers.loss_weights``:
  min(1 + SNR_t, 5) on the x^0 error), gradient clipping at 1, bfloat16 autocast where the machine runs bf16 natively
  (``training.autocast``), and an exponential moving average (EMA) of the weights with decay 0.9995 (the EMA weights are
  the model). The conditional U-Net of notebook 08 (``conditional=True``) keeps the (32, 64, 64) channels (0.62M
  parameters), eps target and "min_snr" weights it was trained with, and adds 10 labels and the null label, 5,000 steps.
  FAST (``fast=True``): a tiny U-Net (0.16M parameters), 40 float32 steps on 1,000 digits — a sketch that shows the code
  path, not digits.
- ``load_or_train_mnist_denoiser(fast=...)``: ``checkpoints.load_or_train``: the full config from the user cache or
  the shipped weights (``course_lib/pretrained``); only when neither has it, trains the full model or, in FAST
  mode, the tiny one. ``mnist_schedule(config)`` is the matching ``NoiseSchedule``.
- ``mnist_diffusion_loss``: the loss of ``course_lib.denoisers.diffusion_loss`` (in the model's target) per pixel
  (its sum over the 784 pixels divided by 784), so the numbers read as a mean squared error per pixel.
- ``MNISTClassifier``: a small CNN (0.46M parameters, 99.1% test accuracy after 1,400 steps, 3 epochs); ``features(x)``
  is its 128-dimensional penultimate layer, the feature space of ``mnist_frechet_distance`` (an FID for
  MNIST: the Frechet distance of ``course_lib.fid`` between Gaussians fitted to the two feature sets).
- ``python -m course_lib train-pretrained mnist_denoiser`` (the names are ``course_lib.registry``'s) retrains
  shipped weights.

Images are (n, 1, 28, 28) float32 in [-1, 1] (``data.to_model_scale``); the figures are in ``mnist_figures``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import describe
from ._runtime import FAST, seed
from .checkpoints import CacheInfo, describe_source, load_or_train
from .data import mnist_model_tensors, random_shift, to_model_scale, to_unit
from .metrics import binomial_se
from .mnist_figures import plot_denoising_strip, plot_images, plot_loss_history, plot_sample_grids, plot_tweedie_rows
from .schedules import NoiseSchedule
from .training import EMA, train, training_meta
from .unet import UNet

__all__ = [
    "CLASSIFIER_NAME",
    "COND_DENOISER_NAME",
    "DENOISER_NAME",
    "EMA",
    "MNISTClassifier",
    "classifier_accuracy",
    "classifier_features",
    "confident_share",
    "describe_source",
    "load_or_train_mnist_classifier",
    "load_or_train_mnist_denoiser",
    "mnist_classifier",
    "mnist_classifier_config",
    "mnist_diffusion_config",
    "mnist_diffusion_loss",
    "mnist_frechet_distance",
    "mnist_schedule",
    "mnist_unet",
    "plot_denoising_strip",
    "plot_images",
    "plot_loss_history",
    "plot_sample_grids",
    "plot_tweedie_rows",
    "to_model_scale",
    "to_unit",
    "train_mnist_classifier",
    "train_mnist_denoiser",
    "zero_prediction_loss",
]

DENOISER_NAME = "mnist_denoiser"
COND_DENOISER_NAME = "mnist_cond_denoiser"
CLASSIFIER_NAME = "mnist_classifier"


# ====================================================================== the denoiser
def mnist_diffusion_config(*, fast: bool = False, conditional: bool = False) -> dict:
    """Everything that changes the MNIST denoiser's weights (the checkpoint cache key); see the module docstring.

    ``conditional=True``: the class-conditional U-Net of notebook 08 (``num_classes`` 10): each training label
    is replaced by the null label with probability ``label_drop`` (0.2), so the one network learns eps(x^t, y)
    and the unconditional eps(x^t) = eps(x^t, null) that classifier-free guidance combines; 5,000 steps.
    """
    cfg = {"arch": "unet", "channels": [32, 96, 128], "emb_dim": 128, "embedding": "sin-cos of 1000 t / T",
           "target": "v", "weighting": "v_min_snr", "num_classes": None, "schedule": "cosine", "T": 500,
           "data": "mnist-train in [-1, 1]", "train_limit": None, "steps": 12000, "batch_size": 128, "lr": 1e-3,
           "lr_schedule": "cosine", "grad_clip": 1.0, "ema_decay": 0.9995, "precision": "bf16", "seed": 0,
           "fast": False, "version": 4}
    if conditional:
        # notebook 08's U-Net keeps the channels, eps target and min-SNR weights it was trained with (version 2)
        cfg.update(channels=[32, 64, 64], target="eps", weighting="min_snr", num_classes=10, label_drop=0.2,
                   steps=5000, version=2)
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
    """Per-pixel loss in the model's target: E_t,eps |model(x^t, t[, y]) - target|^2 / D, t ~ U{1..T}, D = 784.

    ``course_lib.denoisers.diffusion_loss`` (summed over pixels, averaged over the batch) divided by D.
    x0: (n, 1, 28, 28) in [-1, 1]. y: labels (n,) for a conditional U-Net (its null label = no label).
    Keywords (``t``, ``noise``, ...) go to ``diffusion_loss``.
    """
    from .denoisers import diffusion_loss

    net = model if y is None else (lambda x_t, t: model(x_t, t, y))
    return diffusion_loss(net, x0, schedule, model.target, generator, **kw) / x0[0].numel()


def train_mnist_denoiser(model: UNet, config: dict, *, progress: bool = True,
                         dev: torch.device | str | None = None) -> dict:
    """Train ``model`` as ``config`` says (EMA weights end up in the model); returns the checkpoint metadata.

    The loss is ``config["weighting"]`` (``denoisers.loss_weights``: "v_min_snr", "min_snr", "none", ...) times the
    per-pixel error of ``config["target"]``; the history records the plain per-pixel error (``zero_prediction_loss``
    is its value for predicting 0). Metadata: ``training_meta`` (wall and CPU seconds, steps, device, threads,
    autocast, parameters, the loss history).
    """
    from .denoisers import loss_weights

    dev = torch.device(dev) if dev is not None else next(model.parameters()).device
    gen = seed(config["seed"])
    x, labels = mnist_model_tensors("train", limit=config["train_limit"])
    conditional = config.get("num_classes") is not None
    data = (x.to(dev), labels.to(dev)) if conditional else x.to(dev)
    schedule = mnist_schedule(config)
    g_noise = torch.Generator().manual_seed(config["seed"] + 1)
    g_drop = torch.Generator().manual_seed(config["seed"] + 2)
    weights = loss_weights(schedule, config["target"], config.get("weighting", "none")).float().to(dev)

    def loss_fn(m, batch):
        y = None
        if conditional:
            batch, y = batch
            drop = torch.rand(y.shape, generator=g_drop).to(y.device) < config["label_drop"]
            y = torch.where(drop, torch.full_like(y, config["num_classes"]), y)
        t = torch.randint(1, schedule.T + 1, (batch.shape[0],), generator=g_noise).to(batch.device)
        per_image = mnist_diffusion_loss(m, batch, schedule, g_noise, y=y, t=t, reduction="none")
        # train on the weighted loss; record the plain per-pixel squared error (1 = predicting eps_hat = 0)
        return (weights[t] * per_image).mean(), {"mse": per_image.mean().detach()}

    hist = train(model, loss_fn, data, steps=config["steps"], batch_size=config["batch_size"], lr=config["lr"],
                 lr_schedule=config["lr_schedule"], grad_clip=config["grad_clip"], precision=config["precision"],
                 ema_decay=config["ema_decay"], generator=gen, device=dev, progress=progress,
                 desc="MNIST U-Net")
    return training_meta(hist, model, curve="mse")


def zero_prediction_loss(config: dict, x0: torch.Tensor | None = None) -> float:
    """E |y|^2 / D for the U-Net's regression target y (``config["target"]``) with t ~ U{1..T}: the per-pixel loss of
    predicting 0, where training starts. eps: 1. x0: m2 = E[(x^0)^2] per pixel. v = sqrt(ab) eps - sqrt(1 - ab) x^0:
    the mean over t of ab_t + (1 - ab_t) m2 (eps independent of x^0, mean 0). x0: (n, 1, 28, 28) in [-1, 1]
    (default: 10,000 training digits) gives m2.
    """
    target = config["target"]
    if target == "eps":
        return 1.0
    if target not in ("x0", "v"):
        raise ValueError(f"config['target']: expected 'eps', 'x0' or 'v', got {target!r}")
    if x0 is None:
        x0, _ = mnist_model_tensors("train", limit=10_000)
    m2 = float(x0.double().pow(2).mean())
    if target == "x0":
        return m2
    ab = mnist_schedule(config).alpha_bars[1:]
    return float((ab + (1 - ab) * m2).mean())


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

    return load_or_train(COND_DENOISER_NAME if conditional else DENOISER_NAME,
                         partial(mnist_diffusion_config, conditional=conditional), mnist_unet,
                         train_mnist_denoiser, fast=fast, retrain=retrain, dev=dev, progress=progress)


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


def mnist_classifier(config: dict) -> MNISTClassifier:
    """The untrained ``MNISTClassifier`` that ``config`` describes (``model.config`` is set to it)."""
    model = MNISTClassifier(tuple(config["channels"]), config["hidden"], config["dropout"])
    model.config = dict(config)
    return model


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
    dev = torch.device(dev) if dev is not None else next(model.parameters()).device
    gen = seed(config["seed"])
    x, y = mnist_model_tensors("train", limit=config["train_limit"])
    g_shift = torch.Generator().manual_seed(config["seed"] + 1)

    def loss_fn(m, batch):
        xb, yb = batch
        return F.cross_entropy(m(random_shift(xb, config["shift"], g_shift)), yb)

    hist = train(model, loss_fn, (x.to(dev), y.to(dev)), steps=config["steps"], batch_size=config["batch_size"],
                 lr=config["lr"], lr_schedule=config["lr_schedule"], generator=gen, device=dev, progress=progress,
                 desc="MNIST classifier")
    xt, yt = mnist_model_tensors("test", limit=2000 if config["fast"] else None)
    meta = training_meta(hist, model)
    meta.update(test_accuracy=round(classifier_accuracy(model, xt, yt), 5), test_size=int(xt.shape[0]))
    return meta


def load_or_train_mnist_classifier(*, fast: bool = FAST, retrain: bool = False, dev: torch.device | str | None = None,
                                   progress: bool = True) -> tuple[MNISTClassifier, CacheInfo]:
    """The feature classifier: full config from cache or shipped weights, else trained (tiny in FAST mode)."""
    return load_or_train(CLASSIFIER_NAME, mnist_classifier_config, mnist_classifier, train_mnist_classifier,
                         fast=fast, retrain=retrain, dev=dev, progress=progress)


@torch.no_grad()
def classifier_features(classifier: MNISTClassifier, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``classifier.features`` in batches, float64 on the CPU: (n, 1, 28, 28) in [-1, 1] -> (n, hidden)."""
    classifier.eval()
    dev = next(classifier.parameters()).device
    out = [classifier.features(x[i:i + batch_size].to(dev).float()).double().cpu()
           for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


@torch.no_grad()
def confident_share(classifier: MNISTClassifier, x: torch.Tensor, threshold: float = 0.9,
                    batch_size: int = 1000) -> tuple[float, float]:
    """(share, standard error): the fraction of images x (n, 1, 28, 28) in [-1, 1] (clamped first) whose largest
    class probability under ``classifier`` is at least ``threshold`` — images the classifier calls some digit with
    confidence; the standard error is the binomial sqrt(p (1 - p) / n)."""
    classifier.eval()
    dev = next(classifier.parameters()).device
    sure = 0
    for i in range(0, x.shape[0], batch_size):
        p = torch.softmax(classifier(x[i:i + batch_size].to(dev).float().clamp(-1, 1)), dim=1)
        sure += int((p.max(dim=1).values >= threshold).sum())
    share = sure / x.shape[0]
    return share, binomial_se(share, x.shape[0])


def mnist_frechet_distance(classifier: MNISTClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to the classifier features of two image sets (an MNIST "FID").

    x, y: (n, 1, 28, 28) and (m, 1, 28, 28) in [-1, 1] (samples are clamped to [-1, 1] first).
    """
    from .fid import frechet_distance

    return frechet_distance(classifier_features(classifier, x.clamp(-1, 1)),
                            classifier_features(classifier, y.clamp(-1, 1)))
