"""Install the PyTorch build that fits this machine, before `pip install -e .` (stdlib only: the kit is not there yet).

Who decides, first match wins:
  1. TORCH_BACKEND=cpu|cuda|cu126|rocm6.4|pypi (or --backend): that build; it replaces a different torch in the venv;
  2. a torch already in the venv (as `.ci/run` pins one): left alone;
  3. macOS: PyPI's torch (CPU + Apple MPS);
  4. Linux/Windows: `nvidia-smi` absent or failing -> the CPU build; else the CUDA build for the driver's CUDA version.
When the chosen index cannot be reached, one line says so and pip installs from what it can reach: a CPU build if
one is there, else PyPI's torch (which on Linux x86_64 is a CUDA build of about 3 GB).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import shlex
import ssl
import subprocess
import sys
import urllib.request
from typing import NamedTuple

TORCH_SPEC = "torch>=2.1,<3"  # the kit's own range, as in pyproject.toml
INDEX = "https://download.pytorch.org/whl/"
# PyTorch's CUDA builds, newest first: the driver's CUDA version must be at least the build's.
CUDA_BUILDS = [((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126"), ((12, 4), "cu124"), ((12, 1), "cu121"),
               ((11, 8), "cu118")]
BACKENDS = re.compile(r"auto|cpu|cuda|pypi|cu\d{3}|rocm\d+(\.\d+)*|xpu")


class Choice(NamedTuple):
    build: str  # "cpu", "cu126", ... or "pypi" (PyPI's own wheel, no index)
    reason: str

    @property
    def index(self) -> str | None:
        return None if self.build == "pypi" else INDEX + self.build


def say(line: str) -> None:
    print(f"torch: {line}", flush=True)


def pypi_is_cuda(system: str, machine: str) -> bool:
    """PyPI's Linux x86_64 torch wheel is a CUDA build (with nvidia-* wheels); elsewhere it is CPU (+ MPS on macOS)."""
    return system == "Linux" and machine.lower() in ("x86_64", "amd64")


def nvidia_cuda(run=subprocess.run) -> tuple[tuple[int, int] | None, str]:
    """The CUDA version the NVIDIA driver supports, read off `nvidia-smi`, and what was seen."""
    try:
        res = run(["nvidia-smi"], capture_output=True, text=True, timeout=15)
    except FileNotFoundError:
        return None, "nvidia-smi not found"
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"nvidia-smi failed: {e}"
    out = (res.stdout or "") + (res.stderr or "")
    if res.returncode != 0:
        first = next((line.strip() for line in out.splitlines() if line.strip()), "")
        return None, f"nvidia-smi failed (exit {res.returncode}: {first[:80]})"
    m = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", out)
    if not m:
        return None, "nvidia-smi shows no CUDA version"
    return (int(m[1]), int(m[2])), f"NVIDIA driver for CUDA {m[1]}.{m[2]}"


def cuda_build(cuda: tuple[int, int]) -> str | None:
    return next((name for version, name in CUDA_BUILDS if cuda >= version), None)


def choose(backend: str, system: str, machine: str, cuda: tuple[int, int] | None, seen: str) -> Choice:
    """The build to install when the venv has none (or an explicit backend asks for another one)."""
    told = f"TORCH_BACKEND={backend}: "
    if system == "Darwin":
        extra = "" if backend in ("auto", "cpu", "pypi") else f"no {backend} build for macOS; "
        return Choice("pypi", ("" if backend == "auto" else told) + extra + "macOS: PyPI's torch (CPU + Apple MPS)")
    if backend not in ("auto", "cuda"):
        return Choice(backend, told + ("PyPI's torch" if backend == "pypi" else f"the {backend} build"))
    head = "" if backend == "auto" else told
    if cuda is None:
        if backend == "cuda":  # no driver to read: PyPI's Linux wheel is CUDA, else the newest CUDA build
            build = "pypi" if pypi_is_cuda(system, machine) else CUDA_BUILDS[0][1]
            what = "PyPI's torch, a CUDA build" if build == "pypi" else f"the {build} build"
            return Choice(build, f"{told}{seen}; {what}")
        return Choice("cpu", f"no NVIDIA GPU ({seen}): the CPU build")
    build = cuda_build(cuda)
    if build is None:
        oldest = ".".join(map(str, CUDA_BUILDS[-1][0]))
        return Choice("cpu", f"{head}{seen}, older than PyTorch's CUDA {oldest} builds: the CPU build")
    return Choice(build, f"{head}{seen}: the {build} build")


def keeps(backend: str, installed: str, system: str, machine: str) -> bool:
    """Whether the torch already installed (its version, e.g. '2.13.0+cpu') is what `backend` asks for."""
    label = installed.partition("+")[2]
    build = label or ("cuda" if pypi_is_cuda(system, machine) else "cpu")
    if backend == "auto":
        return True
    if backend == "cuda":
        return build.startswith("cu")
    if backend == "pypi":
        return not label
    return build == backend


def pip_command(python: str, spec: str = TORCH_SPEC, index: str | None = None) -> list[str]:
    return [python, "-m", "pip", "install", spec] + (["--index-url", index] if index else [])


def unreachable(index: str, timeout: float = 5) -> str | None:
    """None when the index answers for torch, else why not (in a few words)."""
    ctx = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    try:
        with urllib.request.urlopen(index + "/torch/", timeout=timeout, context=ctx):
            return None
    except OSError as e:  # URLError, HTTPError, timeouts, TLS errors are all OSErrors
        reason = getattr(e, "reason", None) or e
        return str(reason)[:100]


def cpu_build_pip_can_reach(python: str, run=subprocess.run) -> str | None:
    """The newest '+cpu' torch in the kit's range among the versions pip's own indexes and find-links offer."""
    try:
        res = run([python, "-m", "pip", "index", "versions", "torch", "--timeout", "15"],
                  capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"Available versions:\s*(.+)", res.stdout or "")
    for version in (v.strip() for v in m[1].split(",")) if m else ():
        major_minor = re.match(r"(\d+)\.(\d+)", version)
        if version.endswith("+cpu") and major_minor and (2, 1) <= tuple(map(int, major_minor.groups())) < (3, 0):
            return version  # pip lists newest first
    return None


def fallback(choice: Choice, problem: str, python: str, system: str, machine: str, run=subprocess.run):
    """(build, pip command, the one line to print) when `choice.index` cannot be reached."""
    head = f"{choice.index} cannot be reached ({problem}); "
    if choice.build == "cpu":
        cpu = cpu_build_pip_can_reach(python, run)
        if cpu:
            line = head + f"installing torch {cpu}, a CPU build pip can reach"
            return "cpu", pip_command(python, f"torch=={cpu}"), line
    if not pypi_is_cuda(system, machine):
        what = "a CPU-only build here"
    elif choice.build == "cpu":
        what = ("a CUDA build (about 3 GB with its nvidia-* wheels) this machine cannot use; "
                "`make setup TORCH_BACKEND=cpu` swaps it for the CPU build once the index is reachable")
    else:
        what = "a CUDA build for a recent driver"
    return "pypi", pip_command(python), head + f"installing PyPI's torch instead, {what}"


def installed_torch() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None, run=subprocess.run) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=os.environ.get("TORCH_BACKEND") or "auto",
                        help="auto (default), cpu, cuda, cuXYZ (e.g. cu126), rocmX.Y, xpu or pypi")
    parser.add_argument("--dry-run", action="store_true", help="print the choice and the pip command only")
    args = parser.parse_args(argv)
    backend = args.backend.strip().lower() or "auto"
    if not BACKENDS.fullmatch(backend):
        parser.error(f"TORCH_BACKEND={args.backend!r}: expected auto, cpu, cuda, cuXYZ (cu126), rocmX.Y, xpu or pypi")
    system, machine, python = platform.system(), platform.machine(), sys.executable

    installed = installed_torch()
    if installed and keeps(backend, installed, system, machine):
        say(f"torch {installed} is already in this venv: left alone"
            + ("" if backend == "auto" else f" (it is the {backend} build)"))
        return 0
    cuda, seen = nvidia_cuda(run) if backend in ("auto", "cuda") and system != "Darwin" else (None, "")
    choice = choose(backend, system, machine, cuda, seen)
    build, cmd = choice.build, pip_command(python, index=choice.index)
    say(choice.reason)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    problem = unreachable(choice.index) if choice.index else None
    if problem:
        build, cmd, line = fallback(choice, problem, python, system, machine, run)
        say(line)
    if installed:
        if keeps(build, installed, system, machine):
            say(f"torch {installed} is already that build: left alone")
            return 0
        say(f"replacing torch {installed}")
        run([python, "-m", "pip", "uninstall", "--yes", "torch"], check=True)
    print(shlex.join(cmd), flush=True)
    return run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
