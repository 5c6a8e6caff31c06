"""Checks for notebook 08 (conditioning and guidance): the exercises' functions against the library's answers.

Each ``check_...(fn)`` calls the student's function on a few cases, prints one success line, or raises
``ExerciseError`` naming the likely mistake in words.

- ``log_prob_grad(classifier, x_t, t, y)``   grad_x log p(y | x^t) for every row, by autograd of
  log_softmax(classifier(x_t, t))[row, y_row]; must also work inside ``torch.no_grad()`` (the samplers')
- ``cfg_eps(eps_cond, eps_uncond, w)``       (1 + w) eps(x^t, y) - w eps(x^t)
- ``guided_eps(eps_hat, grad_log_p_y, t, schedule, gamma)``  eps_hat - gamma sqrt(1 - alpha_bar_t) grad log p(y | x^t),
  for a batch of images (n, 1, 28, 28) with one step per image, t of shape (n,)
"""

from __future__ import annotations

from functools import partial

import torch

from ..guidance import classifier_log_prob_grad
from ..schedules import NoiseSchedule
from . import ExerciseError, call_student, diagnose, misshaped_alpha_bar, passed

__all__ = ["check_cfg_eps", "check_guided_eps", "check_log_prob_grad"]

# The library"s own answers to these exercises: a submission that calls one is flagged in the grader"s CSV.
REFERENCES = {
    "log_prob_grad": ("course_lib.guidance.classifier_log_prob_grad",),
    "cfg_eps": ("course_lib.guidance.ClassifierFreeGuidance.__call__",),
    "guided_eps": ("course_lib.guidance.ClassifierGuidance.__call__",),
}

_TOL = {"rtol": 1e-5, "atol": 1e-6}  # float32 rounding passes; every known mistake is off by far more


def _randn(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- exercise 1
class _ProbeClassifier(torch.nn.Module):
    """A fixed, smooth noise-aware classifier of points: logits = tanh(x A + (t / T) u) B, (n, 2) -> (n, 3), float64."""

    def __init__(self, T: int = 1000):
        super().__init__()
        self.T = T
        self.A = torch.nn.Parameter(torch.tensor([[1.1, -0.4, 0.7, 0.2], [0.3, 0.9, -0.8, 0.5]], dtype=torch.float64))
        self.u = torch.nn.Parameter(torch.tensor([0.2, -0.5, 0.1, 0.4], dtype=torch.float64))
        self.B = torch.nn.Parameter(torch.tensor([[1.5, -0.7, 0.2], [-0.3, 1.2, 0.4], [0.8, 0.1, -1.1],
                                                  [0.2, 0.6, 0.9]], dtype=torch.float64))

    def forward(self, x_t, t):
        t = torch.as_tensor(t).to(x_t.dtype)
        t = t.expand(x_t.shape[0]) if t.ndim == 0 else t
        return torch.tanh(x_t @ self.A + (t[:, None] / self.T) * self.u) @ self.B


def _grad_of(f, x: torch.Tensor) -> torch.Tensor:
    """d/dx of the scalar f(x) (x (n, d) float64), by autograd."""
    with torch.enable_grad():
        xx = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xx), xx)
    return g


_NO_GRAD_WORDS = ("does not require grad", "doesn't require grad", "does not have a grad_fn")


def _call_grad(fn, what: str, *args, inside_no_grad: bool = False):
    """Call ``fn``; an autograd error about a missing graph becomes a diagnosis instead of a stack trace."""
    try:
        if inside_no_grad:
            with torch.no_grad():
                return call_student(fn, what, *args)
        return call_student(fn, what, *args)
    except ExerciseError as exc:
        msg = str(exc)
        if any(w in msg for w in _NO_GRAD_WORDS):
            if inside_no_grad:
                raise ExerciseError(
                    f"{what}: right with gradients on, but the samplers call the guided denoiser inside "
                    "torch.no_grad(), where your function finds no graph to differentiate — wrap its body in "
                    "`with torch.enable_grad():`") from None
            raise ExerciseError(
                f"{what}: autograd found no graph — the input must require gradients before the classifier sees it: "
                "x = x_t.detach().requires_grad_(True), then classifier(x, t) (a detached copy without "
                "requires_grad, or the logits detached, cannot be differentiated)") from None
        raise


def check_log_prob_grad(fn) -> bool:
    """Exercise: ``fn(classifier, x_t, t, y)`` -> grad_x log p(y_i | x^t_i) for each row i, shape (n, d), with
    log p = log_softmax(classifier(x_t, t)); checked with gradients on and inside ``torch.no_grad()``."""
    clf = _ProbeClassifier()
    n = 7
    x = _randn((n, 2), 10) * 1.2
    t = torch.tensor([1, 50, 200, 400, 600, 800, 1000])
    y = torch.tensor([0, 2, 1, 1, 0, 2, 0])
    rows = torch.arange(n)
    what = "log_prob_grad"
    want = classifier_log_prob_grad(clf, x, t, y)[1]

    def logp(z):
        return torch.log_softmax(clf(z, t), -1)

    mistakes = {
        "you differentiated p(y | x^t) (softmax) instead of log p(y | x^t): use torch.log_softmax — guidance needs "
        "the gradient of the log-probability": _grad_of(lambda z: torch.softmax(clf(z, t), -1)[rows, y].sum(), x),
        "you differentiated the raw logit of y; log p(y | x^t) = logit_y - logsumexp(logits): apply "
        "torch.log_softmax to the logits first": _grad_of(lambda z: clf(z, t)[rows, y].sum(), x),
        "you summed the log-probabilities of all classes; pick each row's own class y_i (e.g. "
        "logp[torch.arange(n), y] or logp.gather(1, y[:, None]))": _grad_of(lambda z: logp(z).sum(), x),
        "logp[:, y] is an n x n table (every row with every row's label); pick one entry per row with "
        "logp[torch.arange(n), y]": _grad_of(lambda z: logp(z)[:, y].sum(), x),
        "sign error: this is the gradient of -log p(y | x^t) (a cross-entropy loss); guidance moves x^t up "
        "the log-probability": -want,
        "you averaged over the batch (.mean()): each row's gradient came out divided "
        "by n — use .sum(), the rows do not interact": want / n,
        "you averaged over the batch with F.cross_entropy (its default reduction is the mean) and kept its sign: "
        "use the sum of log p(y_i | x^t_i), not minus its mean": -want / n,
    }
    got = _call_grad(fn, what, clf, x.clone(), t.clone(), y.clone())
    if isinstance(got, (tuple, list)):
        raise ExerciseError(f"{what}: return the gradient alone, a tensor of shape ({n}, 2), not a "
                            f"{type(got).__name__} (torch.autograd.grad returns a tuple: take its element [0])")
    if isinstance(got, torch.Tensor) and tuple(got.shape) == (n,):
        raise ExerciseError(f"{what}: got shape ({n},), one number per row — that is log p(y | x^t) itself; return "
                            "its gradient with respect to x_t, shape (n, 2)")
    diagnose(got, want, what=what, mistakes=mistakes, **_TOL)

    what2 = "log_prob_grad inside torch.no_grad() (as in a sampler)"
    got2 = _call_grad(fn, what2, clf, x.clone(), t.clone(), y.clone(), inside_no_grad=True)
    diagnose(got2, want, what=what2, **_TOL)
    return passed("log_prob_grad gives each row's grad log p(y | x^t), by autograd, even inside torch.no_grad()")


# ---------------------------------------------------------------------------------------------- exercise 2
def check_cfg_eps(fn) -> bool:
    """Exercise: ``fn(eps_cond, eps_uncond, w)`` -> (1 + w) eps_cond - w eps_uncond (any shape; w a number >= 0)."""
    c = _randn((6, 2), 20)
    u = _randn((6, 2), 21)
    for w in (2.5, 0.7, 0.0):
        what = f"cfg_eps with w = {w:g}"
        got = call_student(fn, what, c.clone(), u.clone(), w)
        mistakes = {
            "you swapped the two predictions: the conditional eps(x^t, y) gets the weight 1 + w, the unconditional "
            "eps(x^t) the weight -w": (1 + w) * u - w * c,
            "you used w like gamma, eps(x^t) + w (eps(x^t, y) - eps(x^t)); in this notebook w = gamma - 1, so the "
            "formula is eps(x^t) + (1 + w)(eps(x^t, y) - eps(x^t)) = (1 + w) eps(x^t, y) - w eps(x^t)":
                u + w * (c - u),
            "the 1 + is missing: w eps(x^t, y) - w eps(x^t) is only the guidance direction; the weights must add "
            "up to 1, so (1 + w) eps(x^t, y) - w eps(x^t)": w * (c - u),
            "the conditional prediction needs the weight 1 + w, not 1 (the weights must add up to 1)": c - w * u,
            "sign error: the unconditional prediction is subtracted, - w eps(x^t)": (1 + w) * c + w * u,
            "that is an interpolation (1 - w) eps(x^t, y) + w eps(x^t); guidance extrapolates away from the "
            "unconditional prediction: (1 + w) eps(x^t, y) - w eps(x^t)": (1 - w) * c + w * u,
            "you forgot the unconditional prediction: (1 + w) eps(x^t, y) - w eps(x^t)": (1 + w) * c,
        } if w else {"with w = 0 classifier-free guidance is plain conditioning: return eps_cond": u}
        diagnose(got, (1 + w) * c - w * u, what=what, mistakes=mistakes, **_TOL)
    return passed("cfg_eps extrapolates from eps(x^t) through eps(x^t, y): (1 + w) eps(x^t, y) - w eps(x^t)")


# ---------------------------------------------------------------------------------------------- exercise 3
_call_images = partial(
    call_student,
    on_broadcast_error="alpha_bar_t of shape (n,) does not broadcast against images (n, 1, 28, 28): reshape it to "
    "(n, 1, 1, 1), e.g. with .view(-1, 1, 1, 1)")


def check_guided_eps(fn) -> bool:
    """Exercise: ``fn(eps_hat, grad_log_p_y, t, schedule, gamma)`` -> eps_hat - gamma sqrt(1 - ab_t) grad, per image.

    Checked with n = 28 images, where a forgotten reshape of alpha_bar_t (shape (n,)) silently broadcasts along
    the image width instead of raising, and with n = 5.
    """
    s = NoiseSchedule.cosine(500)  # the MNIST models' schedule
    for n, seed, gamma in ((28, 30, 3.0), (5, 31, 2.5)):
        g = torch.Generator().manual_seed(seed)
        eps = torch.randn(n, 1, 28, 28, generator=g, dtype=torch.float64)
        grad = 2.0 * torch.randn(n, 1, 28, 28, generator=g, dtype=torch.float64)
        t = torch.randint(1, 501, (n,), generator=g)
        what = f"guided_eps on {n} images with gamma = {gamma:g}"
        got = _call_images(fn, what, eps.clone(), grad.clone(), t.clone(), s, gamma)
        ab = s.alpha_bars[t].view(-1, 1, 1, 1)
        a = s.alphas[t].view(-1, 1, 1, 1)
        first = s.alpha_bars[t[0]]
        sd = (1 - ab).sqrt()
        mistakes = misshaped_alpha_bar(s.alpha_bars[t],
                                       lambda ab_, e=eps, g_=gamma, d=grad: e - g_ * (1 - ab_).sqrt() * d)
        mistakes.update({
            "sign error: guidance moves x^t up the classifier's log-probability, so its eps moves the other way: "
            "eps_hat - gamma sqrt(1 - alpha_bar_t) grad": eps + gamma * sd * grad,
            "you forgot the square root: eps = -sqrt(1 - alpha_bar_t) x score, the noise's standard deviation, "
            "not its variance": eps - gamma * (1 - ab) * grad,
            "you used alpha_t (schedule.alphas) where alpha_bar_t (schedule.alpha_bars) belongs":
                eps - gamma * (1 - a).sqrt() * grad,
            "you forgot gamma: the classifier's gradient is weighted by the strength gamma":
                eps - sd * grad,
            "you divided by sqrt(1 - alpha_bar_t); a score becomes an eps by multiplying: eps = -sqrt(1 - alpha_bar_t) "
            "x score": eps - gamma * grad / sd,
            "you used sqrt(alpha_bar_t); the factor is the noise's standard deviation sqrt(1 - alpha_bar_t)":
                eps - gamma * ab.sqrt() * grad,
            "gamma multiplies the classifier's term only, not eps_hat: eps_hat - gamma sqrt(1 - alpha_bar_t) grad":
                gamma * (eps - sd * grad),
            "you returned the guided score, -eps_hat / sqrt(1 - alpha_bar_t) + gamma grad; convert it back to an eps "
            "(multiply by -sqrt(1 - alpha_bar_t))": -eps / sd + gamma * grad,
            "you used one step t[0] for every image; each image has its own t (index alpha_bars with the whole t)":
                eps - gamma * (1 - first).sqrt() * grad,
        })
        if isinstance(got, torch.Tensor) and n == 5 and got.shape != eps.shape and got.ndim == 4:
            raise ExerciseError(f"{what}: wrong shape {tuple(got.shape)}, expected {tuple(eps.shape)} — check how "
                                "alpha_bar_t (shape (n,)) broadcasts: reshape it to (n, 1, 1, 1)")
        diagnose(got, eps - gamma * sd * grad, what=what, mistakes=mistakes, **_TOL)
    return passed("guided_eps turns the classifier's gradient into an eps correction, image by image")
