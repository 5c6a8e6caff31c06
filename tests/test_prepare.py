"""``python -m course_lib prepare``: the summary, the registry (notebooks 03, 06, 07 and 08, sample sets included),
and a real FAST run into an empty cache: every entry is loaded from shipped weights, trained or computed once,
and a second run trains nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from course_lib.checkpoints import CacheInfo
from course_lib.prepare import ArtefactInfo, ModelEntry, prepare


def _loader(source, calls):
    def load(fast, progress):
        calls.append((source, fast))
        if source == "failed":
            raise RuntimeError("no data")
        if source == "computed":
            return ArtefactInfo(source, Path("/x/samples.npz"), 0.2)
        return object(), CacheInfo(source, Path(f"/x/{source}.pt"), 0.1, {})
    return load


def test_prepare_summary_and_failures():
    calls = []
    entries = [ModelEntry(f"model {s}", "0x", _loader(s, calls)) for s in ("cache", "trained", "failed", "pretrained")]
    lines = []
    summary = prepare(fast=True, entries=entries, log=lines.append)
    assert [s["source"] for s in summary] == ["cache", "trained", "failed", "pretrained"]
    assert calls == [("cache", True), ("trained", True), ("failed", True), ("pretrained", True)]
    text = "\n".join(lines)
    assert "4 models: 1 cache, 1 pretrained, 1 trained, 1 failed" in text and "FAILED model failed" in text
    assert [s["name"] for s in prepare(entries=entries, only=["CACHE"], log=lines.append)] == ["model cache"]


def test_sample_sets_have_their_own_label():
    calls = []
    entries = [ModelEntry("a model", "08", _loader("trained", calls)),
               ModelEntry("some samples", "08", _loader("computed", calls), kind="samples")]
    lines = []
    summary = prepare(fast=False, entries=entries, log=lines.append)
    assert [(s["kind"], s["source"]) for s in summary] == [("model", "trained"), ("samples", "computed")]
    text = "\n".join(lines)
    assert "1 model and 1 sample set: 1 trained, 1 computed" in text
    assert any(line.startswith("some samples") and " samples " in line and "computed" in line for line in lines)
    with pytest.raises(ValueError, match="kind"):
        ModelEntry("x", "08", _loader("cache", calls), kind="weights")


def test_prepare_registry_tolerates_absent_modules(monkeypatch):
    from course_lib import prepare as prep

    monkeypatch.setattr(prep, "KNOWN", (("course_lib.no_such_module", prep._vae_entries),) + prep.KNOWN)
    monkeypatch.setattr(prep, "_EXTRA", [])
    lines = []
    prep.register("extra model", "99", lambda fast, progress: None)
    prep.register("extra samples", "99", lambda fast, progress: None, kind="samples")
    entries = prep.registry(log=lines.append)
    names = [e.name for e in entries]
    assert any("no_such_module" in line for line in lines)
    assert names[-2:] == ["extra model", "extra samples"] and entries[-1].kind == "samples"
    assert len(names) == len(set(names))


def test_registry_covers_notebook_08():
    from course_lib.prepare import registry

    entries = registry(log=None)
    by_nb = {}
    for i, e in enumerate(entries):
        by_nb.setdefault(e.notebook, []).append((i, e))
    assert sorted(by_nb) == ["03", "06", "07", "08"]
    names08 = [e.name for _, e in by_nb["08"]]
    assert names08 == ["MNIST conditional U-Net denoiser", "toy noise-aware classifier", "toy conditional denoiser",
                       "MNIST noise-aware classifier", "MNIST guided sample sets"]
    # every model whose weights ship has a recipe to make them again, and the keys name them
    shipped = {e.shipped.key: e.shipped.name for e in entries if e.shipped is not None}
    assert shipped == {"mnist_vae_k2": "mnist_vae", "mnist_vae_k10": "mnist_vae", "mnist_vae_k20": "mnist_vae",
                       "mnist_denoiser": "mnist_denoiser", "mnist_classifier": "mnist_classifier",
                       "mnist_cond_denoiser": "mnist_cond_denoiser", "mnist_noisy_classifier": "mnist_noisy_classifier"}
    samples = [(i, e) for i, e in enumerate(entries) if e.kind == "samples"]
    assert [e.name for _, e in samples] == ["MNIST guided sample sets"]
    # the sample sets come after every model they are computed with, so those are cached first
    needed = ("MNIST U-Net denoiser", "MNIST feature classifier", "MNIST conditional U-Net denoiser",
              "MNIST noise-aware classifier")
    assert all(next(i for i, e in enumerate(entries) if e.name == n) < samples[0][0] for n in needed)


def test_list_command(capsys):
    from course_lib.__main__ import main

    assert main(["prepare", "--list"]) == 0
    out = capsys.readouterr().out
    assert "MNIST guided sample sets  (notebook 08, sample set)" in out
    assert "MNIST conditional U-Net denoiser  (notebook 08)" in out


def _fresh_cache(tmp_path, monkeypatch) -> Path:
    """An empty COURSE_CACHE_DIR, with MNIST kept in reach (COURSE_DATA_DIR at wherever it is found now)."""
    from course_lib import _runtime
    from course_lib.data import mnist_dir

    found = mnist_dir("train")
    if found is not None:
        monkeypatch.setenv("COURSE_DATA_DIR", str(found))
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    assert _runtime.cache_dir() == tmp_path / "cache"
    return tmp_path / "cache"


def _cheap_in_fast_mode(entry: ModelEntry) -> bool:
    """Every entry but the two that take minutes in FAST mode on 2 cores: the noise-aware MNIST classifier when no
    shipped weights exist (its 40 FAST steps took 50-100 s) and the guided sample sets (75 s; tested below, small)."""
    from course_lib import guidance_models as gm
    from course_lib.checkpoints import PRETRAINED_DIR, checkpoint_path

    if entry.kind == "samples":
        return False
    if entry.name == "MNIST noise-aware classifier":
        return checkpoint_path(gm.NOISY_CLASSIFIER_NAME, gm.noisy_classifier_config(), PRETRAINED_DIR).is_file()
    return True


@pytest.mark.slow
def test_prepare_for_real_in_fast_mode(tmp_path, monkeypatch):
    """The registered models, FAST, into an empty cache: shipped weights are loaded, the rest trained and cached where
    the notebooks look; a second run loads everything and trains nothing."""
    from course_lib.checkpoints import PRETRAINED_DIR
    from course_lib.prepare import registry

    cache = _fresh_cache(tmp_path, monkeypatch)
    entries = [e for e in registry(log=None) if _cheap_in_fast_mode(e)]
    assert {e.notebook for e in entries} == {"03", "06", "07", "08"}
    shipped = {p.name for p in PRETRAINED_DIR.glob("*.pt")}

    lines: list[str] = []
    t0 = time.perf_counter()
    first = prepare(fast=True, progress=False, entries=entries, log=lines.append)
    seconds = time.perf_counter() - t0
    text = "\n".join(lines)
    assert [s for s in first if s["source"] == "failed"] == [], text
    for s in first:
        name = s["message"].split(":")[0]  # "<file>: loaded shipped weights in 0.0 s"
        if name in shipped:
            assert s["source"] == "pretrained", s
        else:
            assert s["source"] == "trained", s
            assert (cache / "models" / name).is_file(), s
    counts = {k: sum(s["source"] == k for s in first) for k in ("pretrained", "trained")}
    assert counts["trained"] >= 9  # 7 toy denoisers (06) and 2 toy models (08) at least
    assert f"{len(first)} models: {counts['pretrained']} pretrained, {counts['trained']} trained; " in text, text

    again = prepare(fast=True, progress=False, entries=entries, log=lines.append)
    assert [(s["name"], s["source"]) for s in again] == [
        (s["name"], "pretrained" if s["source"] == "pretrained" else "cache") for s in first]
    print(f"\nprepare, FAST, empty cache: {seconds:.1f} s; again: {sum(s['seconds'] for s in again):.1f} s\n{text}")


@pytest.mark.slow
def test_guided_sample_sets_entry_for_real(tmp_path, monkeypatch):
    """Notebook 08's sample-set entry with the real U-Nets and sampler, made small: fewer strengths, one sample per
    digit, 2 DDIM steps, and an untrained noise-aware classifier (training it is what takes minutes). Computed into
    the file the notebook reads, then loaded from it."""
    from course_lib import guidance_models as gm
    from course_lib.checkpoints import CacheInfo
    from course_lib.prepare import registry

    cache = _fresh_cache(tmp_path, monkeypatch)
    full_config = gm.sample_set_config

    def small_config(**kw):
        cfg = full_config(**kw)
        cfg.update(gammas={"classifier": [0.0, 4.0], "cfg": [1.0, 3.0]}, per_digit=1, steps=2)
        return cfg

    def untrained_noisy_classifier(**kw):
        model = gm.noisy_classifier(gm.noisy_classifier_config(fast=True)).eval()
        return model, CacheInfo("trained", cache / "untrained.pt", 0.0, {})

    monkeypatch.setattr(gm, "sample_set_config", small_config)
    monkeypatch.setattr(gm, "load_or_train_noisy_classifier", untrained_noisy_classifier)
    entry = next(e for e in registry(log=None) if e.kind == "samples")
    lines: list[str] = []
    first, again = (prepare(fast=True, progress=False, entries=[entry], log=lines.append)[0] for _ in range(2))
    assert (first["kind"], first["source"], again["source"]) == ("samples", "computed", "cache"), "\n".join(lines)
    files = list((cache / "samples").glob("guidance-*.npz"))
    assert [f.name for f in files] == [first["message"].split(":")[0]] == [again["message"].split(":")[0]]
    assert "\n1 sample set: 1 computed" in "\n".join(lines)
    sets = gm.guidance_sample_sets(gm.load_guidance_models(fast=True, progress=False), fast=True, progress=False)
    assert {k: sorted(v) for k, v in sets.items()} == {"classifier": [0.0, 4.0], "cfg": [1.0, 3.0]}
    assert all(x.shape == (10, 1, 1, 28, 28) for v in sets.values() for x in v.values())


def test_widget_check_lists_every_widget(capsys):
    """``prepare --check``: one line per widget the notebooks show (every WidgetView subclass), median and p95 of a
    slider move's kernel-side work, and the warning for slow ones."""
    import inspect

    from course_lib import __main__ as cli
    from course_lib import prepare as prep
    from course_lib.widgets import WidgetView, elbo, guidance, noising, posterior

    classes = {name for module in (elbo, noising, posterior, guidance)
               for name, obj in inspect.getmembers(module, inspect.isclass)
               if issubclass(obj, WidgetView) and obj.__module__ == module.__name__ and not name.startswith("_")}
    assert classes == {"ElboView", "NoisingView1D", "NoisingView2D", "NoisingViewImages", "PosteriorMeanView",
                       "ToyGuidanceView", "MnistGuidanceView"}
    builders = prep._widget_builders()
    assert {name.split()[0] for name, _, _ in builders} == classes
    assert {nb for _, nb, _ in builders} == {"01", "04", "05", "08"}

    # the command, cheap: the two cheapest widgets for real (2 moves each), then the report's shape for all
    assert cli.main(["prepare", "--check", "--moves", "2", "two moons", "MnistGuidance"]) == 0
    out = capsys.readouterr().out
    assert "NoisingView2D (two moons)" in out and "MnistGuidanceView" in out and "ElboView" not in out
    lines = []
    rows = prep.check_widgets(n=1, log=lines.append, warn_seconds=0.0)  # every widget "slow": every one warned
    assert [r["name"] for r in rows] == [name for name, _, _ in builders]
    assert all("error" not in r and r["n"] == 1 and 0 < r["median"] <= r["p95"] for r in rows), rows
    text = "\n".join(lines)
    for name, notebook, _ in builders:
        assert any(line.startswith(name) and f" {notebook} " in line and " ms " in line for line in lines), name
    assert f"WARNING: {len(builders)} widget(s) above 0 ms" in text
