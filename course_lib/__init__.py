"""course_lib: the library behind the VAE and diffusion course notebooks.

Exact closed-form objects (float64) sit next to the learned ones so every notebook can show the
estimate beside the truth:

- ``NoiseSchedule`` (schedules.py): betas, alphas, alpha_bars, ``q_sample``, ``posterior_coefficients``.
- ``GaussianMixture`` and toy data sets (densities.py): exact densities, scores, posterior means.
- ``LinearGaussianModel`` (vae.py): a latent-variable model whose ELBO terms are all exact.
- ``data.load_mnist``: the real MNIST from IDX files (local directory, cache, or download).

Run-time settings: ``FAST`` (``COURSE_FAST=1`` or ``CI``), ``device()``, ``seed(n)``, ``set_threads()``. Importing
the package changes no global setting: training and sampling set their CPU threads around themselves (``threads_for``;
``fast_inference`` adds bfloat16 autocast where the CPU runs it natively).
"""

from ._runtime import FAST, cache_dir, device, fast_mode, recommended_threads, seed, set_threads, threads_for
from .data import load_mnist, mnist_tensors
from .densities import GaussianMixture, named_mixture, rings, swiss_roll, two_moons
from .schedules import NoiseSchedule
from .training import fast_inference
from .vae import LinearGaussianModel

__version__ = "0.1.0"

__all__ = [
    "FAST",
    "GaussianMixture",
    "LinearGaussianModel",
    "NoiseSchedule",
    "cache_dir",
    "device",
    "fast_inference",
    "fast_mode",
    "load_mnist",
    "mnist_tensors",
    "named_mixture",
    "rings",
    "recommended_threads",
    "seed",
    "set_threads",
    "swiss_roll",
    "threads_for",
    "two_moons",
]
