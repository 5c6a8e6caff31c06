"""MNIST from the four standard IDX files, read with NumPy only.

Where ``load_mnist`` looks, in order:

1. ``data_dir`` when given, and then only there (a missing file is a ``FileNotFoundError``);
2. the directory in the environment variable ``COURSE_DATA_DIR``;
3. the cache ``<cache>/mnist``, where ``<cache>`` is the ``cache_dir`` argument, else ``COURSE_CACHE_DIR``,
   else ``$XDG_CACHE_HOME/course_lib``, else ``~/.cache/course_lib``;
4. if still not found (and ``download=True``), a download into that cache from the mirrors in
   ``MNIST_MIRRORS`` (or ``COURSE_MNIST_MIRRORS``, comma-separated), each file checked against ``MNIST_SHA256``.

Each file may be gzipped (``.gz``, as downloaded) or not. Offline? Put the four files listed in
``MNIST_FILES`` (``.gz`` or not) in a directory and set ``COURSE_DATA_DIR`` to it.

>>> train = load_mnist("train")           # MNIST(images=uint8 (60000, 28, 28), labels=int64 (60000,))
>>> x, y = mnist_tensors("test")          # x: float32 (10000, 1, 28, 28) in [0, 1], y: int64 (10000,)

The diffusion models and classifiers work on the [-1, 1] scale: ``mnist_model_tensors`` (= ``to_model_scale`` of
``mnist_tensors``), ``to_unit`` maps back for display, ``random_shift`` is the classifiers' augmentation.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import struct
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from ._checks import describe
from ._runtime import cache_dir as _runtime_cache_dir

__all__ = [
    "MNIST",
    "MNISTDownloadError",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_SHA256",
    "cache_root",
    "download_mnist",
    "load_mnist",
    "mnist_dir",
    "mnist_model_tensors",
    "mnist_tensors",
    "random_shift",
    "to_model_scale",
    "to_unit",
    "verify_mnist",
]

#: The IDX files of each split: (images, labels), without the ``.gz`` suffix.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_FILES = [name for pair in MNIST_FILES.values() for name in pair]
_SIZES = {"train": 60000, "test": 10000}

#: Where the ``.gz`` files are downloaded from, tried in order (override: ``mirrors=`` or ``COURSE_MNIST_MIRRORS``).
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: SHA-256 of the original ``.gz`` files; every download is checked against these.
MNIST_SHA256: dict[str, str] = {
    "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
    "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
}

DOWNLOAD_TIMEOUT = 30.0  # seconds without data before a mirror is given up
_CHUNK = 1 << 16
_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


class MNIST(NamedTuple):
    """One split of MNIST. ``images``: uint8 array (n, 28, 28), 0 = black; ``labels``: int64 array (n,) in 0..9."""

    images: np.ndarray
    labels: np.ndarray

    def __repr__(self) -> str:
        return f"MNIST(images={self.images.dtype} {self.images.shape}, labels={self.labels.dtype} {self.labels.shape})"


class MNISTDownloadError(RuntimeError):
    """No mirror delivered a file whose checksum matched (offline, blocked, or a corrupted download)."""


# ----------------------------------------------------------------------------------------------- where
def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The course's cache directory: ``cache_dir`` if given, else ``course_lib.cache_dir()``. Not created here."""
    if cache_dir is not None:
        return _as_path(cache_dir, "cache_dir")
    return _runtime_cache_dir()


def mnist_dir(
    split: str = "train", *, data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> Path | None:
    """The directory ``load_mnist(split)`` would read from right now, or ``None`` (it would download).

    Follows the same order as ``load_mnist``: ``data_dir``, ``COURSE_DATA_DIR``, the cache. Downloads nothing.
    """
    names = MNIST_FILES[_check_split(split)]
    for directory in _candidate_dirs(data_dir, cache_dir):
        if _missing(directory, names) == []:
            return directory
    return None


def _as_path(p, name: str) -> Path:
    if not isinstance(p, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a directory path (str or pathlib.Path), got {describe(p)}")
    return Path(p).expanduser()


def _check_split(split) -> str:
    if split not in MNIST_FILES:
        raise ValueError(f"split: expected 'train' (60000 images) or 'test' (10000 images), got {split!r}")
    return split


def _env_data_dir() -> Path | None:
    env = os.environ.get("COURSE_DATA_DIR", "").strip()
    return Path(env).expanduser() if env else None


def _candidate_dirs(data_dir, cache_dir) -> list[Path]:
    if data_dir is not None:
        return [_as_path(data_dir, "data_dir")]
    dirs = [_env_data_dir(), cache_root(cache_dir) / "mnist"]
    return [d for d in dirs if d is not None]


def _find(directory: Path, name: str) -> Path | None:
    """The file ``name`` in ``directory``, uncompressed (faster to read) or gzipped."""
    for candidate in (directory / name, directory / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing(directory: Path, names: Iterable[str]) -> list[str]:
    return [n for n in names if _find(directory, n) is None]


def _offline_help(cache: Path) -> str:
    files = ", ".join(n + ".gz" for n in _ALL_FILES)
    return (
        f"If this machine is offline: download the four MNIST files\n  {files}\n"
        f"elsewhere (e.g. from {MNIST_MIRRORS[0]}) and put them in\n  {cache}\n"
        "or put them in any directory and set the environment variable COURSE_DATA_DIR to that directory "
        "(before starting Jupyter, or with os.environ['COURSE_DATA_DIR'] = ... before loading). "
        "The files may be gzipped or not."
    )


# ------------------------------------------------------------------------------------------------ read
def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut-off file an EOFError
        raise ValueError(f"{path}: not a valid gzip file ({exc}); delete it and load again") from None


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parse one IDX file: a big-endian uint32 magic (0x0000 08 ndim), ndim uint32 sizes, then uint8 data."""
    data = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX file, {len(data)} bytes is shorter than its {header}-byte header")
    (got_magic,) = struct.unpack_from(">I", data, 0)
    if got_magic != magic:
        kind = "images" if ndim == 3 else "labels"
        raise ValueError(
            f"{path}: expected the IDX magic number 0x{magic:08X} ({kind}), got 0x{got_magic:08X}; "
            f"is this the right file, and is it intact?"
        )
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        raise ValueError(
            f"{path}: {what} IDX file, header says shape {tuple(dims)} = {expected} bytes, got {len(data)} bytes"
        )
    # copy: a writable array that does not keep the file's bytes alive
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _load_dir(directory: Path, split: str) -> MNIST:
    img_name, lab_name = MNIST_FILES[split]
    img_path, lab_path = _find(directory, img_name), _find(directory, lab_name)
    images = _read_idx(img_path, _IMAGES_MAGIC, 3)
    labels = _read_idx(lab_path, _LABELS_MAGIC, 1).astype(np.int64)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{img_path}: expected images of 28 x 28 pixels, got {images.shape[1]} x {images.shape[2]}")
    if len(images) != len(labels):
        raise ValueError(
            f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels; "
            "the two files must belong to the same split"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{lab_path}: expected labels in 0..9, got {labels.max()}")
    return MNIST(images, labels)


# -------------------------------------------------------------------------------------------- download
def _mirror_list(mirrors) -> list[str]:
    if mirrors is None:
        env = os.environ.get("COURSE_MNIST_MIRRORS", "").strip()
        mirrors = env if env else MNIST_MIRRORS
    if isinstance(mirrors, str):
        mirrors = mirrors.split(",")
    mirrors = list(mirrors) if isinstance(mirrors, Iterable) else mirrors
    if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
        raise TypeError(
            f"mirrors: expected a list of base URLs (or one comma-separated string), got {describe(mirrors)}"
        )
    out = [m.strip() for m in mirrors if m.strip()]
    if not out:
        raise ValueError("mirrors: expected at least one base URL, got none")
    return [m if m.endswith("/") else m + "/" for m in out]


def _fetch_one(url: str, tmp, expected_sha: str, name: str, timeout: float, progress: bool) -> None:
    """Stream ``url`` into the open file ``tmp``; raise ``OSError``/``ValueError`` unless complete and intact."""
    request = urllib.request.Request(url, headers={"User-Agent": "course_lib (MNIST loader)"})
    sha = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress) as bar:
            while chunk := response.read(_CHUNK):
                tmp.write(chunk)
                sha.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise OSError(f"connection closed after {received} of {total} bytes")
    got = sha.hexdigest()
    if got != expected_sha:
        raise ValueError(f"checksum mismatch for {name}: expected SHA-256 {expected_sha}, got {got}")


def _download_file(name: str, directory: Path, mirrors: list[str], checksums, timeout: float, progress: bool) -> Path:
    """Download ``name`` (a ``.gz``) into ``directory`` from the first mirror that delivers it intact."""
    if name not in checksums:
        raise ValueError(f"checksums: expected a SHA-256 for {name!r}, got entries for {sorted(checksums)}")
    expected = str(checksums[name]).lower()
    target = directory / name
    errors = []
    for base in mirrors:
        url = base + name
        # a temporary file beside the target: os.replace is then atomic, and a crash leaves no half-written target
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as tmp:
                _fetch_one(url, tmp, expected, name, timeout, progress)
            os.chmod(tmp_name, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
            os.replace(tmp_name, target)
            return target
        except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timeout, HTTP error, cut, checksum
            errors.append(f"  {url}: {_reason(exc)}")
        finally:
            # also on KeyboardInterrupt: never leave a partial file behind
            if os.path.exists(tmp_name):
                os.remove(tmp_name)
    raise MNISTDownloadError(
        f"could not download {name} from any of {len(mirrors)} mirror(s):\n"
        + "\n".join(errors)
        + "\n"
        + _offline_help(directory)
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{exc.reason} (offline, or blocked by a firewall or proxy?)"
    if isinstance(exc, TimeoutError):
        return f"timed out ({exc})"
    return str(exc) or type(exc).__name__


def download_mnist(
    directory: str | os.PathLike | None = None,
    *,
    splits: Iterable[str] = ("train", "test"),
    mirrors: str | Iterable[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    progress: bool = True,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> Path:
    """Download the ``.gz`` files of ``splits`` that ``directory`` lacks (default ``<cache>/mnist``); return it.

    Each file is streamed to a temporary file beside its target, checked against ``checksums``
    (default ``MNIST_SHA256``) and only then renamed into place; on any failure the next mirror is
    tried and nothing half-written is left. Raises ``MNISTDownloadError`` when every mirror fails.
    """
    directory = cache_root() / "mnist" if directory is None else _as_path(directory, "directory")
    if isinstance(splits, str):
        splits = (splits,)
    names = [n for s in splits for n in MNIST_FILES[_check_split(s)]]
    mirror_list = _mirror_list(mirrors)
    checksums = MNIST_SHA256 if checksums is None else checksums
    if not isinstance(checksums, Mapping):
        raise TypeError(f"checksums: expected a dict file name -> SHA-256 hex digest, got {describe(checksums)}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MNISTDownloadError(
            f"cannot create the directory {directory} for the download ({exc}); set COURSE_CACHE_DIR to a writable "
            f"directory. " + _offline_help(directory)
        ) from None
    for name in _missing(directory, names):
        _download_file(name + ".gz", directory, mirror_list, checksums, timeout, progress)
    return directory


def verify_mnist(directory: str | os.PathLike | None = None, *, checksums: Mapping[str, str] | None = None) -> dict:
    """Check the SHA-256 of the MNIST files in ``directory`` (default: where ``load_mnist("train")`` reads).

    ``.gz`` files are checked against ``checksums`` (default ``MNIST_SHA256``); other files against a
    ``SHA256SUMS`` file beside them, if there is one. Returns {file name: True / False / None (nothing to compare)}.
    ``load_mnist`` never re-hashes local files (it would slow every load); call this when in doubt.
    """
    if directory is None:
        directory = mnist_dir("train") or cache_root() / "mnist"
    directory = _as_path(directory, "directory")
    known = dict(MNIST_SHA256 if checksums is None else checksums)
    sums = directory / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                known.setdefault(parts[1].lstrip("*"), parts[0].lower())
    result = {}
    for name in _ALL_FILES:
        for path in (directory / name, directory / (name + ".gz")):
            if path.is_file():
                want = known.get(path.name)
                result[path.name] = None if want is None else _sha256(path) == want
    return result


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ load
def load_mnist(
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
    mirrors: str | Iterable[str] | None = None,
    progress: bool = True,
    checksums: Mapping[str, str] | None = None,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> MNIST:
    """One split of MNIST: ``images`` uint8 (n, 28, 28), ``labels`` int64 (n,); n = 60000 (train) or 10000 (test).

    ``data_dir``: read from this directory only (never download). Otherwise ``COURSE_DATA_DIR``, then
    ``<cache>/mnist`` (see ``cache_root``), then download there if ``download`` (see ``download_mnist``
    for ``mirrors``, ``checksums``, ``timeout``; ``progress`` shows a progress bar).
    Raises ``FileNotFoundError`` (not found, no download) or ``MNISTDownloadError`` (download failed),
    and ``ValueError`` for a corrupted file (bad IDX header, truncated, images and labels disagree).
    """
    split = _check_split(split)
    names = MNIST_FILES[split]
    if data_dir is not None:
        directory = _as_path(data_dir, "data_dir")
        missing = _missing(directory, names)
        if missing:
            state = "lacks" if directory.is_dir() else "does not exist, so it lacks"
            raise FileNotFoundError(
                f"data_dir: {directory} {state} the MNIST {split} file(s) "
                + ", ".join(f"{n} (or {n}.gz)" for n in missing)
                + "; put them there, or leave out data_dir to use COURSE_DATA_DIR or the cache (and download)"
            )
        return _load_dir(directory, split)

    env_dir = _env_data_dir()
    if env_dir is not None:
        missing = _missing(env_dir, names)
        if not missing:
            return _load_dir(env_dir, split)
        warnings.warn(
            f"COURSE_DATA_DIR is {env_dir}, but it lacks {', '.join(missing)} (or .gz); using the cache instead",
            stacklevel=2,
        )

    cache = cache_root(cache_dir) / "mnist"
    if not _missing(cache, names):
        return _load_dir(cache, split)
    if not download:
        where = f"COURSE_DATA_DIR ({env_dir}) nor " if env_dir is not None else ""
        raise FileNotFoundError(
            f"MNIST {split} files not found in {where}the cache {cache}, and download=False. " + _offline_help(cache)
        )
    download_mnist(cache, splits=(split,), mirrors=mirrors, checksums=checksums, progress=progress, timeout=timeout)
    return _load_dir(cache, split)


_BINARIZE = (None, "dynamic", "threshold")


def mnist_tensors(
    split: str = "train",
    *,
    binarize: str | None = None,
    generator: torch.Generator | None = None,
    limit: int | None = None,
    **load_kw,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as tensors: ``x`` float32 (n, 1, 28, 28) in [0, 1], ``y`` int64 (n,) in 0..9.

    ``binarize``: ``None`` keeps the grey levels (pixel / 255); ``"dynamic"`` draws x ~ Bernoulli(pixel / 255)
    once, with ``generator`` (to re-draw every epoch, keep grey levels and call ``torch.bernoulli`` in the loop);
    ``"threshold"`` sets x = 1[pixel / 255 > 0.5]. ``limit``: keep only the first ``limit`` examples (all if
    larger). Other keywords go to ``load_mnist`` (``data_dir``, ``download``, ``cache_dir``, ...).
    """
    if binarize not in _BINARIZE:
        raise ValueError(f"binarize: expected None, 'dynamic' or 'threshold', got {binarize!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {describe(generator)}")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
            raise TypeError(f"limit: expected a positive integer or None, got {describe(limit)}")
        if limit < 1:
            raise ValueError(f"limit: expected a positive integer or None, got {limit}")
    images, labels = load_mnist(split, **load_kw)
    if limit is not None:
        images, labels = images[: int(limit)], labels[: int(limit)]
    x = torch.from_numpy(images).to(torch.float32).div_(255.0).unsqueeze(1)
    if binarize == "dynamic":
        x = torch.bernoulli(x, generator=generator)
    elif binarize == "threshold":
        x = (x > 0.5).to(torch.float32)
    return x, torch.from_numpy(labels)


# ---------------------------------------------------------------------------------------------- the [-1, 1] scale
def to_model_scale(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] (``mnist_tensors``) -> [-1, 1], the scale the diffusion models work in: 2 x - 1."""
    return x * 2.0 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] for display, clamped (samples can overshoot): (x + 1) / 2."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def mnist_model_tensors(split: str = "train", *, limit: int | None = None, **load_kw
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST on the models' scale: x float32 (n, 1, 28, 28) in [-1, 1], y int64 (n,). See ``mnist_tensors``."""
    x, y = mnist_tensors(split, limit=limit, **load_kw)
    return to_model_scale(x), y


def random_shift(x: torch.Tensor, shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image of x (n, 1, H, W) in [-1, 1] by up to ``shift`` pixels in each direction.

    Pads with the background value -1 and crops at a random offset per image; the offsets are drawn on the CPU
    from ``generator`` (the course's rule: draw where the generator lives, then move), so a seed gives the same
    shifts on any device. ``shift`` <= 0 returns x unchanged.
    """
    if shift <= 0:
        return x
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"x: expected images of shape (n, 1, H, W), got {describe(x)}")
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(x.device)          # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None, :]).to(x.device)          # (n, w)
    idx = torch.arange(n, device=x.device)[:, None, None]
    return padded[:, 0][idx, rows[:, :, None], cols[:, None, :]].unsqueeze(1)
