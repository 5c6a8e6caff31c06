"""Repository hygiene that CI must enforce: ruff, clean notebooks, kernelspecs, no caches committed."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tracked(pattern):
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / f for f in out.stdout.split()]


def test_ruff_is_clean():
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_notebooks_have_no_outputs_and_a_kernelspec():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        dirty = [i for i, c in enumerate(nb["cells"]) if c.get("outputs") or c.get("execution_count")]
        assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"
        spec = nb.get("metadata", {}).get("kernelspec", {})
        assert spec.get("name") == "python3", f"{path.name}: needs kernelspec python3 (else Lab asks for a kernel)"


def test_no_caches_or_checkpoints_are_committed():
    bad = [p for p in _tracked("*") if "__pycache__" in p.parts or ".ipynb_checkpoints" in p.parts
           or p.suffix in {".pyc"} or (p.suffix == ".pt" and "pretrained" not in p.parts)]
    assert not bad, bad
