"""Checkpoints: atomic save, safe load (``weights_only=True``), and a cache keyed by the model's config.

A checkpoint is a dict ``{"format": 1, "name", "config", "state_dict", "meta"}`` saved with
``torch.save``. Configs and metadata hold only plain values (str, int, float, bool, lists, dicts), so
loading never unpickles code. The cache file name is ``<name>-<key>.pt`` where ``key`` hashes the
config: change a hyper-parameter and a new model is trained instead of a stale one being loaded.

Where a model comes from, in order: the user cache (``COURSE_CACHE_DIR`` or ``~/.cache/course_lib``,
sub-folder ``models``), then weights shipped with the package (``course_lib/pretrained``), then
training it (and saving the result to the cache). ``cached_model`` applies this rule to one config;
``load_or_train`` is the rule of every shipped model (the full config first, the FAST one only when the full
model is nowhere to be found), and ``describe_source`` says in one line what a notebook got.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ._runtime import cache_dir

__all__ = ["PRETRAINED_DIR", "CacheInfo", "available", "cached_model", "checkpoint_path", "config_key",
           "describe_source", "float16_state", "load_checkpoint", "load_or_train", "save_checkpoint"]

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value, where: str):
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: expected string keys, got {type(k).__name__} {k!r}")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif type(value) not in _PLAIN:  # exact types: a str subclass (torch.__version__) would not load weights_only
        raise TypeError(f"{where}: expected plain values (str, int, float, bool, list, dict), "
                        f"got {type(value).__name__} {value!r}"[:200])


def config_key(config: dict) -> str:
    """A short stable hash of a config dict (12 hex digits); key order does not matter."""
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict, got {type(config).__name__}")
    _check_plain(config, "config")
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def checkpoint_path(name: str, config: dict, directory: str | os.PathLike | None = None) -> Path:
    """``<directory>/<name>-<config_key>.pt``; ``directory`` defaults to the cache's ``models`` folder."""
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise ValueError(f"name: expected a non-empty name without slashes or spaces, got {name!r}")
    base = Path(directory) if directory is not None else cache_dir() / "models"
    return base / f"{name}-{config_key(config)}.pt"


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module | dict, *, name: str = "",
                    config: dict | None = None, meta: dict | None = None) -> Path:
    """Save a model's ``state_dict`` (or a state dict) atomically: a crash never leaves half a file."""
    path = Path(path)
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    if not isinstance(state, dict):
        raise TypeError(f"model: expected an nn.Module or a state dict, got {type(model).__name__}")
    config, meta = dict(config or {}), dict(meta or {})
    _check_plain(config, "config")
    _check_plain(meta, "meta")
    state = {k: v.detach().cpu() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"format": 1, "name": name, "config": config, "state_dict": state, "meta": meta}, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a checkpoint is an ordinary readable file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint saved by ``save_checkpoint`` with ``weights_only=True`` (no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint at {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != 1 or "state_dict" not in ckpt:
        raise ValueError(f"path: {path} is not a course_lib checkpoint (expected format 1 with a state_dict)")
    return ckpt


@dataclass
class CacheInfo:
    """Where ``cached_model`` got the model: ``source`` is "cache", "pretrained" or "trained"."""

    source: str
    path: Path
    seconds: float
    meta: dict

    def __str__(self) -> str:
        verb = {"cache": "loaded from the cache", "pretrained": "loaded shipped weights",
                "trained": "trained and cached"}[self.source]
        return f"{self.path.name}: {verb} in {self.seconds:.1f} s"


def cached_model(name: str, config: dict, build: Callable[[dict], torch.nn.Module],
                 train: Callable[[torch.nn.Module], dict | None], *, retrain: bool = False,
                 directory: str | os.PathLike | None = None, pretrained: bool = True,
                 map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, CacheInfo]:
    """The model for ``config``: from the cache, else shipped weights, else ``train(build(config))``.

    ``build(config)`` returns an untrained model (called with torch's generator seeded from
    ``config.get("seed", 0)``, so its initial weights are reproducible); ``train(model)`` trains it in place
    and may return a dict of plain values (e.g. the training time), stored as the checkpoint's metadata.
    ``retrain=True`` ignores the cache and shipped weights. Returns ``(model, info)``.
    """
    t0 = time.perf_counter()
    path = checkpoint_path(name, config, directory)
    shipped = checkpoint_path(name, config, PRETRAINED_DIR)
    # Initial weights must depend on the config alone, not on what used the global generator before.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.get("seed", 0)))
        model = build(config)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"build: expected it to return an nn.Module, got {type(model).__name__}")
    for source, candidate in (("cache", path), ("pretrained", shipped)):
        if retrain or (source == "pretrained" and not pretrained) or not candidate.is_file():
            continue
        ckpt = load_checkpoint(candidate, map_location)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as exc:  # shapes from an older version of the model: say which file, then go on
            first = str(exc).strip().splitlines()[0]
            warnings.warn(f"{candidate} does not fit the model this config builds ({first}); it is ignored",
                          RuntimeWarning, stacklevel=2)
            continue
        model.eval()
        return model, CacheInfo(source, candidate, time.perf_counter() - t0, ckpt.get("meta", {}))
    meta = train(model) or {}
    model.eval()
    try:
        save_checkpoint(path, model, name=name, config=config, meta=meta)
    except OSError as exc:  # a read-only cache (the grading sandbox) keeps the model, uncached
        warnings.warn(f"{path.name} was trained but could not be cached ({exc})", RuntimeWarning, stacklevel=2)
    return model, CacheInfo("trained", path, time.perf_counter() - t0, dict(meta))


def available(name: str, config: dict) -> bool:
    """True when the model ``name`` with ``config`` is in the user cache or among the shipped weights."""
    return checkpoint_path(name, config).is_file() or checkpoint_path(name, config, PRETRAINED_DIR).is_file()


def load_or_train(name: str, make_config: Callable[..., dict], build: Callable[[dict], torch.nn.Module],
                  train: Callable[..., dict | None], *, fast: bool, retrain: bool = False,
                  dev: torch.device | str | None = None, progress: bool = True) -> tuple[torch.nn.Module, CacheInfo]:
    """The loading rule of every shipped model: the full config ``make_config()`` from the user cache or the shipped
    weights; only when neither has it, train the full model, or with ``fast`` the small ``make_config(fast=True)``.

    ``build(config)`` -> an untrained model; ``train(model, config, progress=, dev=)`` -> metadata. The model ends in
    eval mode on ``dev`` (default ``device()``, the GPU when present). Returns ``(model, CacheInfo)``.
    """
    from ._runtime import device

    dev = torch.device(dev) if dev is not None else device()
    full = make_config()
    cfg = full if (not fast or (available(name, full) and not retrain)) else make_config(fast=True)
    return cached_model(name, cfg, lambda c: build(c).to(dev),
                        lambda m: train(m, cfg, progress=progress, dev=dev), retrain=retrain, map_location=dev)


def float16_state(model: torch.nn.Module) -> dict:
    """The model's state dict on the CPU with floating tensors stored as float16 (shipped weights: half the file;
    ``load_state_dict`` casts back to the model's float32)."""
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
            for k, v in model.state_dict().items()}


def describe_source(model: torch.nn.Module, info: CacheInfo) -> str:
    """One line for a notebook: which model (class, parameters, latent size if any), from where, trained how long."""
    cfg = getattr(model, "config", {}) or {}
    meta = info.meta
    what = f"{type(model).__name__} with {sum(p.numel() for p in model.parameters()):,} parameters"
    if cfg.get("latent_dim") is not None:
        what += f", latent size {cfg['latent_dim']}"
    if cfg.get("fast"):
        what += " (the tiny FAST model: the shipped weights were not found)"
    trained = ""
    if "train_seconds" in meta:
        unit = "epochs" if "epochs" in meta and "steps" not in meta else "steps"
        trained = (f"; trained for {meta.get(unit, '?')} {unit} in {meta['train_seconds'] / 60:.1f} min "
                   f"on {meta.get('device', '?')}")
    return f"{what} — {info}{trained}"
