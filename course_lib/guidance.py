"""Conditioning and guidance (notebook 08): steer a diffusion sampler towards a label y.

Bayes' rule for the noised data, p(x^t | y) = p(x^t) p(y | x^t) / p(y), gives the conditional score

    grad log p(x^t | y) = grad log p(x^t) + grad log p(y | x^t),

so an unconditional denoiser and a classifier of *noisy* inputs make a conditional sampler. Classifier
guidance over-weights the classifier by a strength gamma >= 1 (gamma = 1: exactly p(x | y)):

    s_gamma(x^t, y) = grad log p(x^t) + gamma grad log p(y | x^t)
    eps_gamma       = eps(x^t) - gamma sqrt(1 - alpha_bar_t) grad log p(y | x^t)     (eps = -sqrt(1 - ab) s).

Classifier-free guidance (Ho & Salimans 2021) trains one denoiser with the label dropped at random, so it
predicts both eps(x^t, y) and eps(x^t) = eps(x^t, null), and samples with

    eps_w = (1 + w) eps(x^t, y) - w eps(x^t).

For exact models eps(x^t, y) - eps(x^t) = -sqrt(1 - ab) grad log p(y | x^t), so eps_w is classifier
guidance with gamma = 1 + w (``gamma_from_w``): the implicit classifier is the ratio of the two denoisers.

What is here:
- ``ExactClassifier(mixture, schedule)``: log p(y = k | x^t) of a labelled ``GaussianMixture`` (label =
  component), exactly, differentiable; called like a trained classifier, ``clf(x_t, t)`` -> (n, K).
- ``exact_guided_score``: the guided score of a mixture in closed form, (1 - gamma) s(x^t) + gamma s_y(x^t).
- ``ExactConditionalDenoiser``: E[target | x^t, y] of the mixture (y = None: unconditional), for exact CFG.
- ``classifier_log_prob_grad``: log p(y | x^t) and its gradient in x^t, by autograd, for any classifier.
- ``ClassifierGuidance`` and ``ClassifierFreeGuidance``: wrap denoisers into guided denoisers that the
  samplers of ``course_lib.samplers`` take as they are (``sample(guided, schedule, n, steps=25, eta=0)``).
- ``tilted_log_density`` / ``tilted_density_grid``: p(x) p(y | x)^gamma (normalised on a grid), what gamma
  does to the data density; at gamma = 1 it is p(x | y). Guided *sampling* with any gamma other than 0 and 1
  does not draw exactly from it (the noised tilted densities are not the tilts of the noised ones), a point the
  notebook shows.

Shapes: points x (n, d) for toys, images (n, 1, 28, 28) for MNIST; labels y an int or a long tensor (n,).
"""

from __future__ import annotations

import math
import numbers

import torch

from ._checks import as_tensor, check_timestep, describe
from .diffusion import ALL_TARGETS, convert
from .schedules import NoiseSchedule

__all__ = [
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "ExactClassifier",
    "ExactConditionalDenoiser",
    "classifier_log_prob_grad",
    "component_mixture",
    "exact_guided_score",
    "gamma_from_w",
    "tilted_density_grid",
    "tilted_log_density",
    "w_from_gamma",
]


# ---------------------------------------------------------------------------------------------- checks
def check_strength(value, name: str = "gamma") -> float:
    """A guidance strength: a finite real number >= 0 (0 switches the classifier off)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise TypeError(f"{name}: expected a finite number >= 0, got {describe(value)}")
    if float(value) < 0:
        raise ValueError(f"{name}: expected a number >= 0 (1 = plain conditioning, > 1 = stronger), got {value}")
    return float(value)


def check_labels(y, n: int, num_classes: int, name: str = "y") -> torch.Tensor:
    """An int label or a long tensor (n,) with values in 0..num_classes-1 -> long tensor (n,) on the CPU."""
    if isinstance(y, bool):
        raise TypeError(f"{name}: expected an integer label or a long tensor of shape ({n},), got {y!r}")
    if isinstance(y, numbers.Integral):
        y = torch.full((n,), int(y), dtype=torch.long)
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer label or a long tensor of shape ({n},), got {describe(y)}")
    y = y.cpu().long()
    if y.ndim == 0:
        y = y.expand(n)
    if y.shape != (n,):
        raise ValueError(f"{name}: expected one label per row, shape ({n},), got shape {tuple(y.shape)}")
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise ValueError(f"{name}: expected labels in 0..{num_classes - 1}, got {bad}")
    return y


def gamma_from_w(w: float) -> float:
    """The classifier-guidance strength that classifier-free weight w amounts to: gamma = 1 + w."""
    return 1.0 + check_strength(w, "w")


def w_from_gamma(gamma: float) -> float:
    """The classifier-free weight for a strength gamma >= 1: w = gamma - 1."""
    gamma = check_strength(gamma)
    if gamma < 1:
        raise ValueError(f"gamma: classifier-free guidance needs gamma >= 1 (w = gamma - 1 >= 0), got {gamma}")
    return gamma - 1.0


# ---------------------------------------------------------------------------------------------- exact toy
def component_mixture(mixture, k: int):
    """Component k of a ``GaussianMixture`` as a mixture of its own (weight 1): the law p(x | y = k)."""
    from .densities import GaussianMixture

    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= int(k) < mixture.K:
        raise ValueError(f"y: expected a label in 0..{mixture.K - 1}, got {describe(k)}")
    k = int(k)
    return GaussianMixture(torch.ones(1, dtype=torch.float64), mixture.means[k:k + 1], mixture.covs[k:k + 1])


def _alpha_bar_of(schedule: NoiseSchedule, t) -> torch.Tensor:
    # t = 0 is allowed: alpha_bar_0 = 1, the clean classifier p(y | x^0)
    return schedule.alpha_bars[check_timestep(t, schedule.T, allow_zero=True).cpu()]


class ExactClassifier:
    """The exact noise-aware classifier of a labelled mixture: ``clf(x_t, t)`` -> log p(y = k | x^t), (n, K).

    Label = component: p(y = k | x^t) = w_k N(x^t; sqrt(ab) mu_k, ab Sigma_k + (1 - ab) I) / p(x^t) with
    ab = alpha_bar_t (``GaussianMixture.class_posterior``). Log-probabilities are valid logits, so this
    plugs in wherever a trained classifier does. Differentiable in x_t (float64 on the CPU; the answer is
    returned in x_t's dtype and device).
    """

    def __init__(self, mixture, schedule: NoiseSchedule):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule: expected a NoiseSchedule, got {describe(schedule)}")
        self.mixture, self.schedule, self.num_classes = mixture, schedule, mixture.K

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        x = x_t.to(dtype=torch.float64, device="cpu") if isinstance(x_t, torch.Tensor) else as_tensor(x_t, "x_t")
        ab = _alpha_bar_of(self.schedule, t)
        logp = torch.log(self.mixture.class_posterior(x, ab).clamp_min(1e-300))
        return logp.to(dtype=x_t.dtype, device=x_t.device) if isinstance(x_t, torch.Tensor) else logp


def exact_guided_score(mixture, x_t, alpha_bar: float, y, gamma: float) -> torch.Tensor:
    """grad log p(x^t) + gamma grad log p(y | x^t) for a labelled mixture, in closed form. (n, d) -> (n, d).

    grad log p(y | x^t) = s_y(x^t) - s(x^t), with s the score of the noised mixture and s_y that of its
    component y alone (a Gaussian), so the guided score is (1 - gamma) s(x^t) + gamma s_y(x^t): at gamma = 1
    the score of p(x^t | y). alpha_bar: a number in (0, 1]; y: an int or a long tensor (n,); float64.
    """
    gamma = check_strength(gamma)
    noised = mixture.noised(alpha_bar)
    x = noised._points(x_t, "x_t")
    y = check_labels(y, x.shape[0], mixture.K)
    # score of each noised component: -C_k^{-1} (x - m_k), for the component of each row
    diff = x - noised.means[y]
    s_y = -torch.linalg.solve(noised.covs[y], diff.unsqueeze(-1)).squeeze(-1)
    return (1.0 - gamma) * noised.score(x) + gamma * s_y


class ExactConditionalDenoiser:
    """E[target | x^t, y] for a labelled mixture: ``den(x_t, t, y=None)``; y = None is the unconditional model.

    The Bayes-optimal conditional denoiser that classifier-free training aims at: with y = k it is the
    ``ExactDenoiser`` of component k alone. ``null_label`` = K means "no label" too, as in a trained net.
    """

    def __init__(self, mixture, schedule: NoiseSchedule, target: str = "eps"):
        from .diffusion import ExactDenoiser

        if target not in ALL_TARGETS:
            raise ValueError(f"target: expected one of {ALL_TARGETS}, got {target!r}")
        self.mixture, self.schedule, self.target, self.dim = mixture, schedule, target, mixture.d
        self.num_classes = self.null_label = mixture.K
        self._uncond = ExactDenoiser(mixture, schedule, target)
        self._parts = [ExactDenoiser(component_mixture(mixture, k), schedule, target) for k in range(mixture.K)]

    def __call__(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        if y is None:
            return self._uncond(x_t, t)
        n = x_t.shape[0]
        y = check_labels(y, n, self.num_classes + 1)
        t = check_timestep(t, self.schedule.T)
        t = t.expand(n) if t.ndim == 0 else t
        out = torch.empty_like(x_t)
        for k in y.unique().tolist():
            rows = (y == k).to(x_t.device)
            model = self._uncond if k == self.null_label else self._parts[k]
            out[rows] = model(x_t[rows], t[rows.cpu()])
        return out


# ---------------------------------------------------------------------------------------------- any classifier
def classifier_log_prob_grad(classifier, x_t: torch.Tensor, t, y) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(y | x^t) (n,), its gradient in x^t (n, ...)) for a classifier ``classifier(x_t, t)`` -> logits (n, K).

    The logits go through log_softmax, so unnormalised logits are fine. The gradient is taken by autograd
    (with gradients enabled even inside the samplers' ``no_grad``) and returned detached, in x_t's dtype.
    The rows are independent, so the gradient of the sum of the n log-probabilities is each row's own gradient.
    """
    if not isinstance(x_t, torch.Tensor) or not x_t.is_floating_point():
        raise TypeError(f"x_t: expected a floating-point tensor of shape (n, ...), got {describe(x_t)}")
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        logits = classifier(x, t)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"classifier: expected logits of shape ({x.shape[0]}, K), got {describe(logits)}")
        yy = check_labels(y, x.shape[0], logits.shape[1]).to(logits.device)
        logp = torch.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, -1)
        chosen = logp.gather(1, yy[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(chosen.sum(), x)
    return chosen.detach(), grad.detach().to(x_t.dtype)


def _as_eps(pred: torch.Tensor, target: str, x_t: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """A prediction of ``target`` as eps; ab: alpha_bar per row (n,)."""
    return pred.to(x_t.dtype) if target == "eps" else convert(pred.to(x_t.dtype), target, "eps", x_t, ab)


class ClassifierGuidance:
    """A guided denoiser: ``guided(x_t, t)`` = eps(x^t) - gamma sqrt(1 - alpha_bar_t) grad log p(y | x^t).

    denoiser: callable (x_t, t) predicting its ``.target`` (converted to eps here); classifier: callable
    (x_t, t) -> logits (n, K) of a *noise-aware* classifier (``ExactClassifier`` or a trained one);
    y: the label (int or long tensor (n,)); gamma >= 0 (0: unconditional, 1: p(x | y), > 1: sharper).
    ``target`` is "eps"; ``dim`` is passed on, so ``sample(guided, schedule, n)`` works as for the denoiser.
    ``last_log_prob`` holds log p(y | x^t) of the last call (n,), for plots of how sure the classifier was.
    """

    target = "eps"

    def __init__(self, denoiser, classifier, schedule: NoiseSchedule, y, gamma: float = 1.0):
        if not callable(denoiser) or not callable(classifier):
            raise TypeError(f"denoiser, classifier: expected callables, got {describe(denoiser)} and "
                            f"{describe(classifier)}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule: expected a NoiseSchedule, got {describe(schedule)}")
        self.denoiser, self.classifier, self.schedule = denoiser, classifier, schedule
        self.denoiser_target = getattr(denoiser, "target", "eps")
        self.y, self.gamma = y, check_strength(gamma)
        self.dim = getattr(denoiser, "dim", getattr(getattr(denoiser, "mixture", None), "d", None))
        self.last_log_prob: torch.Tensor | None = None

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        n = x_t.shape[0]
        t = check_timestep(t, self.schedule.T)
        t = t.expand(n) if t.ndim == 0 else t
        ab = self.schedule.alpha_bars[t.cpu()]
        with torch.no_grad():
            eps = _as_eps(self.denoiser(x_t, t.to(x_t.device)), self.denoiser_target, x_t, ab)
        if self.gamma == 0:
            return eps
        logp, grad = classifier_log_prob_grad(self.classifier, x_t, t.to(x_t.device), self.y)
        self.last_log_prob = logp
        scale = (1.0 - ab).sqrt().to(dtype=x_t.dtype, device=x_t.device).reshape((n,) + (1,) * (x_t.ndim - 1))
        return eps - self.gamma * scale * grad


class ClassifierFreeGuidance:
    """A guided denoiser: ``guided(x_t, t)`` = (1 + w) D(x^t, t, y) - w D(x^t, t, null), in D's own target.

    cond_denoiser: callable (x_t, t, y) whose y = None (or its ``null_label``) means "no label", e.g. a
    ``UNet(num_classes=10)`` trained with labels dropped, or ``ExactConditionalDenoiser``. The combination is
    affine with weights summing to 1, so it means the same for x0, eps and score predictions. Where the
    denoiser has a ``null_label`` both predictions come from one batched call of 2n rows. w >= 0: 0 is plain
    conditioning, w = gamma - 1 matches classifier guidance with strength gamma (exactly, for exact models).
    """

    def __init__(self, cond_denoiser, y, w: float = 0.0):
        if not callable(cond_denoiser):
            raise TypeError(f"cond_denoiser: expected a callable (x_t, t, y), got {describe(cond_denoiser)}")
        self.denoiser, self.y, self.w = cond_denoiser, y, check_strength(w, "w")
        self.target = getattr(cond_denoiser, "target", "eps")
        self.dim = getattr(cond_denoiser, "dim", None)
        self.num_classes = getattr(cond_denoiser, "num_classes", None)

    @property
    def gamma(self) -> float:
        return 1.0 + self.w

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        n = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device)
        t = t.expand(n) if t.ndim == 0 else t
        y = self.y
        if self.num_classes is not None:
            y = check_labels(y, n, self.num_classes).to(x_t.device)
        elif isinstance(y, numbers.Integral):
            y = torch.full((n,), int(y), dtype=torch.long, device=x_t.device)
        if self.w == 0:
            return self.denoiser(x_t, t, y)
        null = getattr(self.denoiser, "null_label", None)
        if null is not None:
            both = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null)]))
            cond, uncond = both[:n], both[n:]
        else:
            cond, uncond = self.denoiser(x_t, t, y), self.denoiser(x_t, t, None)
        return (1.0 + self.w) * cond - self.w * uncond


# ---------------------------------------------------------------------------------------------- the tilted density
def tilted_log_density(mixture, x, y: int, gamma: float) -> torch.Tensor:
    """log p(x) + gamma log p(y | x) (unnormalised log of p(x) p(y | x)^gamma) at points x (n, d) -> (n,).

    At gamma = 1 it is log p(x, y) = log p(x | y) + log p(y); at gamma = 0 log p(x).
    """
    gamma = check_strength(gamma)
    x = mixture._points(x, "x")
    yy = check_labels(y, x.shape[0], mixture.K)
    log_post = torch.log(mixture.class_posterior(x, 1.0).clamp_min(1e-300)).gather(1, yy[:, None]).squeeze(1)
    return mixture.log_prob(x) + gamma * log_post


def tilted_density_grid(mixture, y: int, gamma: float, xlim=(-3.0, 3.0), ylim=(-3.0, 3.0), n: int = 120):
    """p_gamma(x | y) = p(x) p(y | x)^gamma / Z on an n x n grid (Z by the grid sum): (xs (n,), ys (n,), dens (n, n)).

    ``dens[i, j]`` is the density at (xs[j], ys[i]) (rows = y, as ``imshow``/``contour`` expect). For 2-D mixtures.
    """
    if mixture.d != 2:
        raise ValueError(f"mixture: expected a 2-D mixture for a density grid, got d = {mixture.d}")
    xs = torch.linspace(float(xlim[0]), float(xlim[1]), n, dtype=torch.float64)
    ys = torch.linspace(float(ylim[0]), float(ylim[1]), n, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    logd = tilted_log_density(mixture, torch.stack([gx.reshape(-1), gy.reshape(-1)], 1), y, gamma).reshape(n, n)
    dens = torch.exp(logd - logd.max())
    cell = float((xs[1] - xs[0]) * (ys[1] - ys[0]))
    return xs, ys, dens / (dens.sum() * cell)
