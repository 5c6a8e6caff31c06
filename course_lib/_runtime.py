"""Run-time settings: FAST mode, the device, seeding, and CPU threads for small models."""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

_TRUE = {"1", "true", "yes", "on"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def fast_mode() -> bool:
    """True when ``COURSE_FAST`` is set to a true value, or when running under CI (``CI``).

    ``COURSE_FAST=0`` forces full mode even under CI.
    """
    v = os.environ.get("COURSE_FAST")
    if v is not None and v.strip() != "":
        return v.strip().lower() in _TRUE
    return _env_flag("CI")


FAST: bool = fast_mode()


def device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (or the environment variable ``COURSE_DEVICE``) forces one, e.g. ``"cpu"``.
    """
    choice = prefer or os.environ.get("COURSE_DEVICE")
    if choice:
        choice = str(choice)
        if choice.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device: asked for {choice!r} but CUDA is not available on this machine")
        if choice == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("device: asked for 'mps' but Apple's MPS is not available on this machine")
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed(n: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); returns a ``torch.Generator`` seeded with ``n``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"seed: expected an integer, got {type(n).__name__} {n!r}")
    n = int(n)
    if n < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {n}")
    random.seed(n)
    np.random.seed(n % 2**32)
    torch.manual_seed(n)
    return torch.Generator().manual_seed(n)


def cache_dir() -> Path:
    """The user cache: ``COURSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/course_lib``, else ``~/.cache/course_lib``."""
    env = os.environ.get("COURSE_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "course_lib"


def recommended_threads(model: torch.nn.Module | None = None) -> int:
    """CPU threads for training or running ``model``.

    Toy MLPs are latency-bound: one thread ran 6x faster than two on a 2-core machine with the other
    core busy, and no slower when idle. Convolutional nets are compute-bound and gain from every core
    (2x with 2 threads when idle). ``bench/bench_threads.py`` prints the measurement.
    ``COURSE_THREADS`` overrides.
    """
    env = env_threads()
    if env is not None:
        return env
    if model is None:
        return 1
    convolutional = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    return (os.cpu_count() or 1) if convolutional else 1


def env_threads() -> int | None:
    """``COURSE_THREADS`` as a positive integer, None when unset; anything else is a ValueError naming it."""
    raw = os.environ.get("COURSE_THREADS", "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"COURSE_THREADS: expected a positive whole number of CPU threads (e.g. 2), got {raw!r}; "
                         "unset it to let course_lib choose")
    return n


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 in hardware (AMX or AVX-512 BF16 on x86; BF16 on ARM).

    Read from ``torch.backends.cpu.get_cpu_capability()`` and, on Linux, the flags of /proc/cpuinfo. Without
    such units bf16 is emulated and slower than float32, so ``training.autocast`` falls back to float32.
    ``COURSE_BF16=0`` or ``1`` overrides the detection.
    """
    forced = os.environ.get("COURSE_BF16", "").strip().lower()
    if forced:
        return forced in _TRUE
    return _native_bf16_flags()


def _native_bf16_flags() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
            break
    if flags & {"amx_bf16", "avx512_bf16", "bf16", "svebf16"}:
        return True
    return "AMX" in getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")().upper()


def set_threads(n: int | None = None) -> int:
    """Set PyTorch's CPU threads; ``None`` picks ``recommended_threads()`` (1 unless overridden)."""
    if n is None:
        n = recommended_threads()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive number of threads, got {n!r}")
    torch.set_num_threads(n)
    return n


@contextmanager
def threads_for(model: torch.nn.Module | None):
    """Context manager: use ``recommended_threads(model)`` inside, restore the previous setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(recommended_threads(model))
    try:
        yield
    finally:
        torch.set_num_threads(before)
