"""tools/torch_install.py picks the PyTorch build for the machine: faked nvidia-smi and platform, no network."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "torch_install.py"
_spec = importlib.util.spec_from_file_location("torch_install", SCRIPT)
ti = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ti)

CPU = "https://download.pytorch.org/whl/cpu"
SMI_550 = """Tue Dec  2 10:00:00 2025
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.14              Driver Version: 550.54.14      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""
SMI_FAILS = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
PIP_INDEX = """torch (2.15.0)
Available versions: 2.15.0, 2.14.1, 2.13.0+cpu, 2.13.0, 2.1.0, 1.13.1+cpu
"""


def smi(stdout=None, returncode=0):
    """A fake subprocess.run: nvidia-smi absent (stdout None), printing `stdout`, or failing."""
    def run(cmd, **kw):
        assert cmd == ["nvidia-smi"], cmd
        if stdout is None:
            raise FileNotFoundError("nvidia-smi")
        return subprocess.CompletedProcess(cmd, returncode, stdout, "")
    return run


@pytest.mark.parametrize(("run", "cuda", "seen"), [
    (smi(None), None, "not found"),
    (smi(SMI_FAILS, returncode=9), None, "failed (exit 9: NVIDIA-SMI has failed"),
    (smi(SMI_550), (12, 4), "CUDA 12.4"),
    (smi("| NVIDIA-SMI 580.65.06  Driver Version: 580.65.06  CUDA Version: 13.0 |"), (13, 0), "CUDA 13.0"),
    (smi("garbage"), None, "no CUDA version"),
])
def test_nvidia_smi_is_read(run, cuda, seen):
    got, why = ti.nvidia_cuda(run)
    assert got == cuda and seen in why, (got, why)


def test_a_hanging_nvidia_smi_counts_as_no_gpu():
    def run(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])
    assert ti.nvidia_cuda(run)[0] is None


@pytest.mark.parametrize(("system", "machine", "cuda", "build"), [
    ("Linux", "x86_64", None, "cpu"),
    ("Linux", "aarch64", None, "cpu"),
    ("Windows", "AMD64", None, "cpu"),
    ("Darwin", "arm64", None, "pypi"),
    ("Darwin", "x86_64", (12, 4), "pypi"),
    ("Linux", "x86_64", (12, 4), "cu124"),
    ("Linux", "x86_64", (12, 5), "cu124"),   # the newest build the driver can run, never a newer one
    ("Linux", "x86_64", (12, 9), "cu128"),
    ("Linux", "x86_64", (13, 2), "cu130"),
    ("Linux", "x86_64", (11, 8), "cu118"),
    ("Linux", "x86_64", (11, 4), "cpu"),     # driver older than every CUDA build
    ("Windows", "AMD64", (12, 6), "cu126"),
])
def test_auto_picks_the_build_for_the_platform(system, machine, cuda, build):
    choice = ti.choose("auto", system, machine, cuda, "seen")
    assert choice.build == build, choice
    assert choice.index == (None if build == "pypi" else f"https://download.pytorch.org/whl/{build}")


@pytest.mark.parametrize(("backend", "system", "cuda", "build"), [
    ("cpu", "Linux", (12, 4), "cpu"),        # the override wins over the GPU
    ("cu121", "Linux", None, "cu121"),
    ("pypi", "Linux", None, "pypi"),
    ("cuda", "Linux", (12, 6), "cu126"),
    ("cuda", "Linux", None, "pypi"),         # no driver to read: PyPI's Linux x86_64 wheel is the CUDA one
    ("cuda", "Windows", None, "cu130"),
    ("cuda", "Darwin", None, "pypi"),        # no CUDA on macOS
    ("cpu", "Darwin", None, "pypi"),
])
def test_an_override_wins(backend, system, cuda, build):
    choice = ti.choose(backend, system, "x86_64", cuda, "seen")
    assert choice.build == build, choice
    if system == "Darwin" and backend == "cuda":
        assert "no cuda build for macOS" in choice.reason


@pytest.mark.parametrize(("backend", "installed", "system", "machine", "keep"), [
    ("auto", "2.13.0+cpu", "Linux", "x86_64", True),
    ("auto", "2.14.1", "Linux", "x86_64", True),       # an existing torch is left alone, whatever its build
    ("cpu", "2.13.0+cpu", "Linux", "x86_64", True),
    ("cpu", "2.14.1", "Linux", "x86_64", False),       # PyPI's Linux x86_64 wheel is a CUDA build
    ("cpu", "2.14.1", "Linux", "aarch64", True),
    ("cpu", "2.14.1", "Darwin", "arm64", True),
    ("cuda", "2.14.1", "Linux", "x86_64", True),
    ("cuda", "2.5.1+cu124", "Linux", "x86_64", True),
    ("cuda", "2.13.0+cpu", "Linux", "x86_64", False),
    ("cu126", "2.5.1+cu124", "Linux", "x86_64", False),
    ("cu124", "2.5.1+cu124", "Linux", "x86_64", True),
    ("pypi", "2.13.0+cpu", "Linux", "x86_64", False),
    ("pypi", "2.14.1", "Linux", "x86_64", True),
])
def test_what_is_already_installed_is_kept_when_it_is_the_asked_build(backend, installed, system, machine, keep):
    assert ti.keeps(backend, installed, system, machine) is keep


def test_the_pip_command():
    assert ti.pip_command("py", index=CPU) == ["py", "-m", "pip", "install", "torch>=2.1,<3", "--index-url", CPU]
    assert ti.pip_command("py") == ["py", "-m", "pip", "install", "torch>=2.1,<3"]


def test_the_torch_range_is_the_kits_own():
    assert f'"{ti.TORCH_SPEC}"' in (ROOT / "pyproject.toml").read_text()


def _pip_index(stdout):
    def run(cmd, **kw):
        assert cmd[1:6] == ["-m", "pip", "index", "versions", "torch"], cmd
        return subprocess.CompletedProcess(cmd, 0, stdout, "")
    return run


def test_the_newest_cpu_build_in_range_that_pip_can_reach():
    assert ti.cpu_build_pip_can_reach("py", _pip_index(PIP_INDEX)) == "2.13.0+cpu"
    assert ti.cpu_build_pip_can_reach("py", _pip_index("Available versions: 2.15.0, 1.13.1+cpu\n")) is None
    assert ti.cpu_build_pip_can_reach("py", _pip_index("ERROR: No matching distribution found for torch\n")) is None


class Machine:
    """Fakes for main(): nvidia-smi's output (None: absent), what `pip index` lists, whether the index answers."""

    def __init__(self, monkeypatch, capsys, *, system="Linux", machine="x86_64", smi_out=None, smi_rc=0,
                 versions=PIP_INDEX, problem=None, installed=None):
        self.calls, self.capsys = [], capsys
        self.smi_out, self.smi_rc, self.versions = smi_out, smi_rc, versions
        monkeypatch.setattr(ti.platform, "system", lambda: system)
        monkeypatch.setattr(ti.platform, "machine", lambda: machine)
        monkeypatch.setattr(ti, "installed_torch", lambda: installed)
        monkeypatch.setattr(ti, "unreachable", lambda index: problem)
        monkeypatch.setattr(ti.sys, "executable", "py")
        monkeypatch.delenv("TORCH_BACKEND", raising=False)

    def run(self, cmd, **kw):
        self.calls.append(cmd)
        if cmd == ["nvidia-smi"]:
            if self.smi_out is None:
                raise FileNotFoundError(cmd[0])
            return subprocess.CompletedProcess(cmd, self.smi_rc, self.smi_out, "")
        if cmd[3:5] == ["index", "versions"]:
            return subprocess.CompletedProcess(cmd, 0, self.versions, "")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def main(self, *argv):
        assert ti.main(list(argv), run=self.run) == 0
        installs = [c for c in self.calls if c[1:4] == ["-m", "pip", "install"]]
        return installs, self.capsys.readouterr().out


def test_no_gpu_installs_the_cpu_build(monkeypatch, capsys):
    installs, out = Machine(monkeypatch, capsys).main()
    assert installs == [["py", "-m", "pip", "install", "torch>=2.1,<3", "--index-url", CPU]]
    assert "no NVIDIA GPU (nvidia-smi not found)" in out


def test_a_failing_nvidia_smi_installs_the_cpu_build(monkeypatch, capsys):
    installs, out = Machine(monkeypatch, capsys, smi_out=SMI_FAILS, smi_rc=9).main()
    assert installs == [["py", "-m", "pip", "install", "torch>=2.1,<3", "--index-url", CPU]]


def test_a_gpu_installs_the_matching_cuda_build(monkeypatch, capsys):
    installs, out = Machine(monkeypatch, capsys, smi_out=SMI_550).main()
    assert installs == [["py", "-m", "pip", "install", "torch>=2.1,<3", "--index-url",
                         "https://download.pytorch.org/whl/cu124"]]


def test_macos_installs_pypis_wheel_without_asking_nvidia_smi(monkeypatch, capsys):
    m = Machine(monkeypatch, capsys, system="Darwin", machine="arm64", smi_out=SMI_550)
    installs, out = m.main()
    assert installs == [["py", "-m", "pip", "install", "torch>=2.1,<3"]]
    assert ["nvidia-smi"] not in m.calls


def test_an_unreachable_cpu_index_falls_back_to_a_cpu_build_pip_can_reach(monkeypatch, capsys):
    installs, out = Machine(monkeypatch, capsys, problem="Name or service not known").main()
    assert installs == [["py", "-m", "pip", "install", "torch==2.13.0+cpu"]]
    said = [line for line in out.splitlines() if "cannot be reached" in line]
    assert len(said) == 1 and "Name or service not known" in said[0] and "2.13.0+cpu" in said[0], out


def test_with_no_cpu_build_in_reach_the_fallback_says_it_is_cuda(monkeypatch, capsys):
    m = Machine(monkeypatch, capsys, problem="timed out", versions="Available versions: 2.15.0, 2.14.1\n")
    installs, out = m.main()
    assert installs == [["py", "-m", "pip", "install", "torch>=2.1,<3"]]
    said = [line for line in out.splitlines() if "cannot be reached" in line]
    assert len(said) == 1 and "CUDA build" in said[0] and "TORCH_BACKEND=cpu" in said[0], out


def test_an_existing_torch_is_left_alone(monkeypatch, capsys):
    installs, out = Machine(monkeypatch, capsys, installed="2.13.0+cpu", smi_out=SMI_550).main()
    assert installs == [] and "left alone" in out


def test_an_explicit_backend_replaces_a_different_build(monkeypatch, capsys):
    m = Machine(monkeypatch, capsys, installed="2.14.1")
    installs, out = m.main("--backend", "cpu")
    assert ["py", "-m", "pip", "uninstall", "--yes", "torch"] in m.calls
    assert installs == [["py", "-m", "pip", "install", "torch>=2.1,<3", "--index-url", CPU]]
    assert m.calls.index(["py", "-m", "pip", "uninstall", "--yes", "torch"]) < m.calls.index(installs[0])


def test_an_explicit_backend_does_not_reinstall_the_same_fallback(monkeypatch, capsys):
    """Index unreachable and only PyPI's wheel in reach, which is what is installed: nothing is uninstalled."""
    m = Machine(monkeypatch, capsys, installed="2.14.1", problem="timed out", versions="Available versions: 2.14.1\n")
    installs, out = m.main("--backend", "cpu")
    assert installs == [] and not any("uninstall" in c for c in m.calls), m.calls


def test_the_environment_variable_is_the_override(monkeypatch, capsys):
    m = Machine(monkeypatch, capsys, smi_out=SMI_550)
    monkeypatch.setenv("TORCH_BACKEND", "CPU")
    installs, out = m.main()
    assert installs == [["py", "-m", "pip", "install", "torch>=2.1,<3", "--index-url", CPU]]


def test_an_unknown_backend_is_refused(monkeypatch, capsys):
    m = Machine(monkeypatch, capsys)
    with pytest.raises(SystemExit):
        ti.main(["--backend", "cuda12"], run=m.run)
    assert "expected auto, cpu, cuda" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform != "linux", reason="the script's own platform is Linux only here")
@pytest.mark.parametrize(("smi_script", "index"), [
    (None, CPU),
    ("echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"; exit 9", CPU),
    ("echo '| NVIDIA-SMI 570.86.10   Driver Version: 570.86.10   CUDA Version: 12.8 |'",
     "https://download.pytorch.org/whl/cu128"),
])
def test_the_script_with_a_fake_nvidia_smi_on_path(tmp_path, smi_script, index):
    """The real script in a subprocess; `python -S` hides the venv's torch, --dry-run installs nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if smi_script is not None:
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{smi_script}\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "TORCH_BACKEND"}
    env["PATH"] = f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"
    res = subprocess.run([sys.executable, "-S", str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1].endswith(f"-m pip install 'torch>=2.1,<3' --index-url {index}"), res.stdout


def _make_n(tmp_path, *args):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    res = subprocess.run(["make", "-n", "setup", f"VENV={tmp_path / 'venv'}", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "TORCH_BACKEND"})
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def test_make_setup_installs_torch_before_the_kit(tmp_path):
    lines = _make_n(tmp_path)
    chooser = [i for i, line in enumerate(lines) if "tools/torch_install.py --backend 'auto'" in line]
    kit = [i for i, line in enumerate(lines) if re.search(r"pip install -e '\.\[", line)]
    assert len(chooser) == 1 and len(kit) == 1 and chooser[0] < kit[0], lines
    assert any("--backend 'cpu'" in line for line in _make_n(tmp_path, "TORCH_BACKEND=cpu"))


def test_make_setup_on_a_ready_venv_runs_the_chooser_only_when_told(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    (venv / ".course_lib-installed").touch()
    assert not any("torch_install" in line for line in _make_n(tmp_path)), "auto: the venv's torch is left alone"
    told = _make_n(tmp_path, "TORCH_BACKEND=cu126")
    assert [line for line in told if "torch_install" in line] == [f"{venv}/bin/python tools/torch_install.py "
                                                                  "--backend 'cu126'"], told
