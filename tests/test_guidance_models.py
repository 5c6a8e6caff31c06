"""The learned pieces of notebook 08 (course_lib.guidance_models) and the conditional ToyDenoiser / U-Net configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib import guidance_models as gm
from course_lib.checkpoints import PRETRAINED_DIR, checkpoint_path
from course_lib.denoisers import ToyDenoiser
from course_lib.densities import named_mixture
from course_lib.guidance import ExactClassifier
from course_lib.mnist_models import (
    DENOISER_NAME,
    MNISTClassifier,
    mnist_diffusion_config,
    mnist_schedule,
    mnist_unet,
)
from course_lib.schedules import NoiseSchedule


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    return tmp_path


# ---------------------------------------------------------------------------------------------- configs
def test_unconditional_config_and_its_shipped_weights_are_unchanged():
    # adding conditional options must not change the key of notebook 07's shipped U-Net
    cfg = mnist_diffusion_config()
    assert "label_drop" not in cfg and cfg["num_classes"] is None
    assert checkpoint_path(DENOISER_NAME, cfg, PRETRAINED_DIR).is_file()
    cond = mnist_diffusion_config(conditional=True)
    assert cond["num_classes"] == 10 and 0 < cond["label_drop"] < 1
    net = mnist_unet(mnist_diffusion_config(fast=True, conditional=True))
    x = torch.randn(3, 1, 28, 28)
    assert net(x, 5, torch.tensor([0, 9, 10])).shape == (3, 1, 28, 28)


# ---------------------------------------------------------------------------------------------- toy models
def test_conditional_toy_denoiser_labels():
    net = ToyDenoiser(num_classes=3)
    x, t = torch.randn(4, 2), torch.tensor([1, 5, 9, 20])
    torch.testing.assert_close(net(x, t), net(x, t, torch.full((4,), 3)))  # None = the null label
    with torch.no_grad():
        net.label.weight.normal_()
    assert not torch.allclose(net(x, t, torch.zeros(4, dtype=torch.long)), net(x, t, torch.ones(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="^y:"):
        net(x, t, torch.full((4,), 4))
    with pytest.raises(ValueError, match="^y:"):
        ToyDenoiser()(x, t, torch.zeros(4, dtype=torch.long))
    assert "num_classes" not in ToyDenoiser().config()  # unconditional cache keys stay as they were
    assert net.config()["num_classes"] == 3 and net.null_label == 3


def test_learned_toy_classifier_approaches_the_exact_one(tmp_cache):
    clf, info = gm.cached_toy_classifier(steps=400, progress=False)
    assert info.source == "trained"
    mix, sched = named_mixture("three_classes_2d"), NoiseSchedule.cosine(1000)
    x0, y = mix.sample(3000, generator=torch.Generator().manual_seed(0), return_labels=True)
    exact = ExactClassifier(mix, sched)
    for t in (50, 400):
        x_t = sched.q_sample(x0, t, generator=torch.Generator().manual_seed(t))
        with torch.no_grad():
            learned = torch.log_softmax(clf(x_t.float(), t), -1).double()
        le = exact(x_t, t)
        kl = float((le.exp() * (le - learned)).sum(1).mean())
        assert kl < 0.05, f"t = {t}: KL(exact || learned) = {kl:.3f}"
        acc_l, acc_e = (learned.argmax(1) == y).double().mean(), (le.argmax(1) == y).double().mean()
        assert acc_l > acc_e - 0.03
    again, info2 = gm.cached_toy_classifier(steps=400, progress=False)
    assert info2.source == "cache"


def test_conditional_toy_denoiser_trains_towards_each_component(tmp_cache):
    from course_lib.guidance import ExactConditionalDenoiser

    den, _ = gm.cached_toy_cond_denoiser(steps=600, progress=False)
    mix, sched = named_mixture("three_classes_2d"), NoiseSchedule.cosine(1000)
    exact = ExactConditionalDenoiser(mix, sched)
    x0, lab = mix.sample(3000, generator=torch.Generator().manual_seed(1), return_labels=True)
    x_t = sched.q_sample(x0, 300, generator=torch.Generator().manual_seed(2))
    t = torch.full((3000,), 300)
    with torch.no_grad():
        for y in (None, lab):
            err = (den(x_t.float(), t, y).double() - exact(x_t, 300, y)).pow(2).sum(1).mean()
            base = exact(x_t, 300, y).pow(2).sum(1).mean()  # the error of predicting 0
            assert err < 0.2 * base
    with pytest.raises(ValueError, match="^label_drop:"):
        gm.cached_toy_cond_denoiser(label_drop=1.0)


# ---------------------------------------------------------------------------------------------- MNIST pieces
def test_noisy_classifier_shapes_and_time_dependence():
    net = gm.NoisyMNISTClassifier((8, 16, 16), 16)
    x = torch.randn(5, 1, 28, 28)
    assert net(x, torch.arange(5)).shape == (5, 10)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    assert not torch.allclose(net(x, 0), net(x, 400))
    with pytest.raises(ValueError, match="^x_t:"):
        net(torch.randn(5, 28, 28), 3)
    with pytest.raises(TypeError, match="^t:"):
        net(x, 0.5)


class _Judge(MNISTClassifier):
    """A stand-in judge that calls an image digit k if its mean pixel is closest to the k-th level."""

    def __init__(self):
        super().__init__((4, 4), hidden=10)
        self.levels = torch.linspace(-0.9, 0.9, 10)

    def features(self, x):
        return -(x.mean((1, 2, 3))[:, None] - self.levels[None]).abs() * 100

    def forward(self, x):
        return self.features(x)


def _tiny_models():
    torch.manual_seed(0)
    den = mnist_unet(mnist_diffusion_config(fast=True))
    cond = mnist_unet(mnist_diffusion_config(fast=True, conditional=True))
    clf = gm.NoisyMNISTClassifier((8, 16, 16), 16)
    clf.config = {"tiny": True}
    for m in (den, cond, clf):
        m.eval()
    judge = _Judge()
    judge.out = torch.nn.Identity()
    judge.config = {"stand-in": True}
    return {"denoiser": (den, None), "cond_denoiser": (cond, None), "noisy_classifier": (clf, None),
            "judge": (judge, None)}


class _Pull(torch.nn.Module):
    """A stand-in noise-aware classifier with a strong, label-dependent gradient: logits = 3 x W."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(784, 10, generator=torch.Generator().manual_seed(5)))
        self.config = {"stand-in": "pull"}

    def forward(self, x, t):
        return 3.0 * x.flatten(1) @ self.w


def _pulling_models():
    models = _tiny_models()
    with torch.no_grad():  # make the untrained U-Nets predict something (and the conditional one heed its label)
        for name in ("denoiser", "cond_denoiser"):
            for p in models[name][0].parameters():
                p.normal_(0, 0.05)
    models["noisy_classifier"] = (_Pull(), None)
    return models


def _distinct(x: torch.Tensor) -> int:
    """The number of distinct images in a set (..., 1, 28, 28)."""
    return int(torch.unique(x.reshape(-1, 28 * 28), dim=0).shape[0])


def test_guided_sample_sets_are_cached_and_gamma_0_is_unconditional(tmp_cache):
    models = _pulling_models()
    sets = gm.guidance_sample_sets(models, fast=True, progress=False)
    cfg = gm.sample_set_config(fast=True)
    assert set(sets) == set(gm.GUIDANCE_KINDS)
    for kind in gm.GUIDANCE_KINDS:
        assert sorted(sets[kind]) == sorted(cfg["gammas"][kind])
        for x in sets[kind].values():
            assert x.shape == (10, cfg["per_digit"], 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    # gamma = 0: classifier guidance ignores the prompt: every digit's row is the unconditional sampler's output
    # from the same x^T and sampler noise
    from course_lib.samplers import ddim_sample

    zero = sets["classifier"][0.0]
    assert torch.equal(zero[0], zero[7])
    assert not torch.equal(sets["classifier"][5.0][0], sets["classifier"][5.0][7])  # the classifier moved them
    k = cfg["per_digit"]
    x_T = torch.randn((k, 1, 28, 28), generator=torch.Generator().manual_seed(cfg["seed"]), dtype=torch.float64)
    den = models["denoiser"][0]
    plain = ddim_sample(den, mnist_schedule(den.config), steps=cfg["steps"], eta=cfg["eta"], x_T=x_T.float(),
                        clip_x0=1.0, generator=torch.Generator().manual_seed(cfg["seed"] + 1))
    torch.testing.assert_close(zero[3], plain.clamp(-1, 1), atol=1 / 127.5, rtol=0)
    files = list((tmp_cache / "samples").glob("guidance-*.npz"))
    assert len(files) == 1
    again = gm.guidance_sample_sets(models, fast=True, progress=False)
    for kind in gm.GUIDANCE_KINDS:
        for g in sets[kind]:
            torch.testing.assert_close(again[kind][g], sets[kind][g])

    # independent=True: every image its own x^T and sampler noise (row d: x_T[d], sampler seed + 1 + d), the same
    # at every strength; cached under its own key; no image twice in any set, gamma = 0 included
    ind = gm.guidance_sample_sets(models, fast=True, progress=False, independent=True)
    assert len(list((tmp_cache / "samples").glob("guidance-*.npz"))) == 2
    x_T = torch.randn((10, k, 1, 28, 28), generator=torch.Generator().manual_seed(cfg["seed"]), dtype=torch.float64)
    plain3 = ddim_sample(den, mnist_schedule(den.config), steps=cfg["steps"], eta=cfg["eta"], x_T=x_T[3].float(),
                         clip_x0=1.0, generator=torch.Generator().manual_seed(cfg["seed"] + 4))
    torch.testing.assert_close(ind["classifier"][0.0][3], plain3.clamp(-1, 1), atol=1 / 127.5, rtol=0)
    torch.testing.assert_close(ind["classifier"][0.0][0], zero[0])  # row 0: the default sets' noise
    guided3 = gm.sample_guided_digits("classifier", models, 3, 5.0, k, steps=cfg["steps"], eta=cfg["eta"],
                                      x_T=x_T[3].float(), generator=torch.Generator().manual_seed(cfg["seed"] + 4),
                                      precision="float32")
    torch.testing.assert_close(ind["classifier"][5.0][3], guided3.clamp(-1, 1), atol=1 / 127.5, rtol=0)
    for kind in gm.GUIDANCE_KINDS:
        for g, x in ind[kind].items():
            assert _distinct(x) == 10 * k, f"{kind}, gamma {g}: {_distinct(x)} distinct images of {10 * k}"
    assert _distinct(zero) == k  # the default sets: ten copies of k images


def test_no_row_of_the_tradeoff_table_counts_an_image_twice(tmp_cache):
    # the default sets share column j's noise across the prompts: at gamma = 0 (prompt ignored) the ten rows are
    # copies, and a row's statistics must use each image once (the Frechet distance of 10 k copies of k images is
    # that of a rank-deficient covariance); the independent sets have 10 k distinct images in every row
    from course_lib.fid import frechet_distance
    from course_lib.mnist_models import classifier_features

    models = _pulling_models()
    judge = models["judge"][0]
    k = gm.sample_set_config(fast=True)["per_digit"]
    g = torch.Generator().manual_seed(1)
    ref_x = judge.levels.repeat_interleave(20)[:, None, None, None] + 0.3 * torch.randn(200, 1, 28, 28, generator=g)
    ref = (ref_x.clamp(-1, 1), torch.arange(10).repeat_interleave(20))
    shared = gm.guidance_sample_sets(models, fast=True, progress=False)
    with pytest.warns(UserWarning, match="classifier 0 "):
        rows = gm.tradeoff_table(shared, judge, ref, frechet=True)
    by = {(r["kind"], r["gamma"]): r for r in rows}
    zero = by[("classifier", 0.0)]
    assert zero["images"] == k and zero["unconditional"]
    assert zero["recognised"] == pytest.approx(0.1)  # chance, exactly: each image once against every prompt
    once = classifier_features(judge, shared["classifier"][0.0][0])
    assert zero["frechet"] == pytest.approx(frechet_distance(once, classifier_features(judge, ref[0])))
    for (kind, gamma), r in by.items():
        assert r["unconditional"] == (kind == "classifier" and gamma == 0.0)
        if not r["unconditional"]:
            assert r["images"] == 10 * k == _distinct(shared[kind][gamma])

    ind = gm.guidance_sample_sets(models, fast=True, progress=False, independent=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = gm.tradeoff_table(ind, judge, ref, frechet=True)
    for r in rows:
        assert r["images"] == 10 * k == _distinct(ind[r["kind"]][r["gamma"]]), r
        assert r["unconditional"] == (r["kind"] == "classifier" and r["gamma"] == 0.0)


def test_tradeoff_table_counts_recognised_prompts_and_diversity():
    judge = _Judge()
    judge.out = torch.nn.Identity()
    levels = judge.levels
    g = torch.Generator().manual_seed(0)
    # "samples": constant images at digit d's level (+ small noise); kind B gives every prompt digit 3's level
    good = levels[:, None, None, None, None] + 0.01 * torch.randn(10, 6, 1, 28, 28, generator=g)
    bad = levels[3] + 0.01 * torch.randn(10, 6, 1, 28, 28, generator=g)
    same = levels[:, None, None, None, None].expand(10, 6, 1, 28, 28).clone()
    copies = good[:1].expand(10, 6, 1, 28, 28).clone()  # one row for every prompt: the prompt changed nothing
    ref_x = (levels.repeat_interleave(20)[:, None, None, None] + 0.01 * torch.randn(200, 1, 28, 28, generator=g))
    ref_y = torch.arange(10).repeat_interleave(20)
    with pytest.warns(UserWarning, match="A 3 "):
        rows = gm.tradeoff_table({"A": {1.0: good, 2.0: same, 3.0: copies}, "B": {1.0: bad}}, judge, (ref_x, ref_y),
                                 frechet=True)
    by = {(r["kind"], r["gamma"]): r for r in rows}
    assert [by[("A", g)]["images"] for g in (1.0, 2.0, 3.0)] == [60, 60, 6]  # "same": one image per row, 10 rows
    assert [by[("A", g)]["unconditional"] for g in (1.0, 2.0, 3.0)] == [False, False, True]
    assert by[("A", 3.0)]["recognised"] == pytest.approx(0.1)
    assert by[("A", 1.0)]["recognised"] == 1.0
    assert by[("B", 1.0)]["recognised"] == pytest.approx(0.1)
    assert by[("A", 2.0)]["diversity"] == pytest.approx(0.0, abs=1e-9)  # one image repeated
    assert 0.5 < by[("A", 1.0)]["diversity"] < 2.0  # as varied as the reference
    assert by[("B", 1.0)]["frechet"] > by[("A", 1.0)]["frechet"]


def test_tradeoff_markdown_names_the_chance_level():
    from course_lib.guidance_plots import tradeoff_markdown

    rows = [{"kind": "classifier", "gamma": 0.0, "recognised": 0.1, "images": 16, "unconditional": True,
             "diversity": 1.8},
            {"kind": "classifier", "gamma": 3.0, "recognised": 0.7, "images": 160, "unconditional": False,
             "diversity": 1.1},
            {"kind": "cfg", "gamma": 2.0, "recognised": 0.99, "images": 160, "unconditional": False, "diversity": 0.8}]
    lines = tradeoff_markdown(rows).splitlines()
    assert "distinct images" in lines[0] and "Fréchet" not in lines[0]
    assert "10.0% (chance" in lines[2] and "| 16 |" in lines[2]
    assert "chance" not in lines[3] + lines[4] and "| 1 |" in lines[4]  # w = gamma - 1 for classifier-free
    assert "Fréchet" in tradeoff_markdown([{**rows[1], "frechet": 40.0}]).splitlines()[0]


def test_guided_sampler_arguments():
    models = _tiny_models()
    with pytest.raises(ValueError, match="^gamma:"):
        gm.guided_mnist_sampler("cfg", models, 3, 0.5)
    with pytest.raises(ValueError, match="^kind:"):
        gm.guided_mnist_sampler("free", models, 3, 2.0)
    with pytest.raises(ValueError, match="^gamma:"):
        gm.guided_mnist_sampler("classifier", models, 3, -1.0)
    x = gm.sample_guided_digits("cfg", models, 4, 2.0, n=2, steps=3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 28, 28) and x.dtype == torch.float32
    sched = mnist_schedule(models["denoiser"][0].config)
    assert sched.T == 500
    assert np.isfinite(x.numpy()).all()


@pytest.mark.parametrize("kind", ["classifier", "cfg"])
def test_guided_digits_use_bf16_only_where_the_cpu_has_it(monkeypatch, kind):
    # the default precision is bf16 where native (faster), float32 elsewhere; "float32" is float32 on every machine
    models = _tiny_models()

    def draw(**kw):
        return gm.sample_guided_digits(kind, models, 4, 3.0, n=3, steps=4, eta=0.0,
                                       x_T=torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)), **kw)

    seen = []  # the dtype of the U-Net's output at each call
    net = models["denoiser" if kind == "classifier" else "cond_denoiser"][0]
    hook = net.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        monkeypatch.setenv("COURSE_BF16", "0")  # a CPU without bf16 units
        fp32 = draw(precision="float32")
        torch.testing.assert_close(draw(), fp32, rtol=0, atol=0)
        assert set(seen) == {torch.float32}
        monkeypatch.setenv("COURSE_BF16", "1")  # one with them
        seen.clear()
        torch.testing.assert_close(draw(precision="float32"), fp32, rtol=0, atol=0)
        assert set(seen) == {torch.float32}
        seen.clear()
        bf16 = draw()
        assert set(seen) == {torch.bfloat16} and len(seen) == 4
        assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    finally:
        hook.remove()


def test_shipped_sample_sets_match_the_shipped_models(tmp_cache, monkeypatch):
    # the default full-mode sets ship with the kit; if a model or the set config changes, their key changes and
    # this fails: regenerate them (python -m course_lib prepare) and copy the cache file into course_lib/pretrained
    def refuse(*args, **kwargs):
        raise AssertionError("guidance_sample_sets recomputed instead of loading the shipped file")

    monkeypatch.setattr(gm, "sample_guided_digits", refuse)
    models = gm.load_guidance_models(fast=False, progress=False, dev="cpu")
    sets = gm.guidance_sample_sets(models, fast=False, progress=False)
    cfg = gm.sample_set_config(fast=False)
    for kind in gm.GUIDANCE_KINDS:
        assert sorted(sets[kind]) == cfg["gammas"][kind]
        assert sets[kind][cfg["gammas"][kind][-1]].shape == (10, cfg["per_digit"], 1, 28, 28)
    # one noise per column: copies only where the prompt is ignored, and the trade-off table counts them once
    k = cfg["per_digit"]
    x_ref = torch.rand(100, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rows = gm.tradeoff_table(sets, models["judge"][0], (x_ref, torch.arange(10).repeat(10)))
    for r in rows:
        x = sets[r["kind"]][r["gamma"]]
        want = k if gm.ignores_prompt(r["kind"], r["gamma"]) else 10 * k
        assert r["images"] == _distinct(x) == want and r["unconditional"] == (want == k), (r, _distinct(x))
