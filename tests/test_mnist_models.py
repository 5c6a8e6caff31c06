"""MNIST diffusion models: the Frechet distance, the classifier, EMA, configs, and the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from course_lib import mnist_models as mm
from course_lib.checkpoints import PRETRAINED_DIR, checkpoint_path, config_key, load_checkpoint, save_checkpoint
from course_lib.data import random_shift
from course_lib.fid import feature_statistics, frechet_distance, gaussian_frechet_distance
from course_lib.training import EMA, HISTORY_POINTS, downsample


def _random_cov(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- Frechet distance
def test_frechet_is_zero_for_identical_sets_and_symmetric():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g, dtype=torch.float64)
    b = torch.randn(300, 6, generator=g, dtype=torch.float64) * 1.3 + 0.2
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, b) > 0.1


def test_gaussian_frechet_matches_scipy_sqrtm_and_the_diagonal_closed_form():
    d = 5
    mu1 = torch.linspace(-1, 1, d, dtype=torch.float64)
    mu2 = torch.linspace(0, 2, d, dtype=torch.float64).flip(0)
    c1, c2 = _random_cov(d, 1), _random_cov(d, 2)
    # independent reference: the usual FID formula with scipy's (non-symmetric) matrix square root
    covmean = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy()).real
    ref = float(((mu1 - mu2) ** 2).sum()) + np.trace(c1.numpy() + c2.numpy() - 2 * covmean)
    assert gaussian_frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-9)
    # commuting (diagonal) covariances: d^2 = |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2
    s1, s2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    m1, m2 = torch.zeros(3), torch.tensor([3.0, 0.0, 4.0])
    want = 25.0 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0.0
    assert gaussian_frechet_distance(m1, torch.diag(s1), m2, torch.diag(s2)) == pytest.approx(want, rel=1e-12)


def test_frechet_of_samples_converges_to_the_gaussian_closed_form():
    """Plug-in estimate from 200,000 draws of two known Gaussians vs the exact d^2 (fixed seed; the
    estimate's standard error is ~0.01 here, the tolerance 0.05)."""
    d = 4
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.tensor([1.0, -0.5, 0.0, 2.0], dtype=torch.float64)
    c1, c2 = _random_cov(d, 3), _random_cov(d, 4)
    g = torch.Generator().manual_seed(5)
    n = 200_000
    x = mu1 + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(c1).T
    y = mu2 + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(c2).T
    exact = gaussian_frechet_distance(mu1, c1, mu2, c2)
    assert frechet_distance(x, y) == pytest.approx(exact, abs=0.05)


def test_frechet_grows_with_a_mean_shift_by_exactly_its_squared_length():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 8, generator=g, dtype=torch.float64)
    shifts = [0.0, 0.5, 1.0, 2.0]
    values = [frechet_distance(a, a + s) for s in shifts]
    assert all(v1 < v2 for v1, v2 in zip(values[:-1], values[1:], strict=True))
    for s, v in zip(shifts, values, strict=True):
        assert v == pytest.approx(8 * s**2, abs=1e-8)


def test_frechet_handles_singular_covariances_and_checks_inputs():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 3, generator=g, dtype=torch.float64)
    a = torch.cat([a, torch.zeros(50, 2, dtype=torch.float64)], dim=1)  # two dead features: rank 3 of 5
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    mu, cov = feature_statistics(a)
    assert mu.shape == (5,) and cov.shape == (5, 5)
    with pytest.raises(ValueError, match="feats_b"):
        frechet_distance(a, a[:, :4])
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], a)


# ---------------------------------------------------------------------------------------------- classifier
def test_classifier_shapes_features_and_input_check():
    torch.manual_seed(0)
    clf = mm.MNISTClassifier()
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    assert clf(x).shape == (5, 10)
    f = clf.features(x)
    assert f.shape == (5, 128) and bool((f >= 0).all())
    feats = mm.classifier_features(clf, x, batch_size=2)
    assert feats.dtype == torch.float64 and torch.allclose(feats, f.double(), atol=1e-6)
    with pytest.raises(ValueError, match="x"):
        clf.features(torch.zeros(5, 784))
    y = clf(x).argmax(1)
    assert mm.classifier_accuracy(clf, x, y) == 1.0
    assert mm.mnist_frechet_distance(clf, x, x) == pytest.approx(0.0, abs=1e-8)


def test_a_few_classifier_steps_learn_a_synthetic_task():
    """Two synthetic 'digits' (a vertical bar, a horizontal bar): 30 Adam steps separate them."""
    from course_lib.training import train

    g = torch.Generator().manual_seed(0)
    x = -torch.ones(64, 1, 28, 28)
    y = torch.arange(64) % 2
    x[y == 0, :, 4:24, 12:16] = 1
    x[y == 1, :, 12:16, 4:24] = 1
    x = x + 0.3 * torch.randn(x.shape, generator=g)
    torch.manual_seed(0)
    clf = mm.MNISTClassifier(channels=(8, 16), hidden=32)  # the same architecture, narrower: a fast test
    train(clf, lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]), (x, y), steps=30, batch_size=32,
          progress=False, generator=g)
    assert mm.classifier_accuracy(clf, x, y) == 1.0


def test_random_shift_translates_without_changing_the_ink():
    x = -torch.ones(6, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal((out > 0).sum((1, 2, 3)), (x > 0).sum((1, 2, 3)))  # the bar stays inside the frame
    assert not torch.equal(out, x)
    assert torch.equal(random_shift(x, 0, None), x)


# ---------------------------------------------------------------------------------------------- training pieces
def test_ema_matches_the_formula_with_warm_up():
    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = EMA(lin, decay=0.9)
    values, avg = [1.0, 2.0, 3.0], 0.0
    for k, v in enumerate(values, start=1):
        with torch.no_grad():
            lin.weight.fill_(v)
        ema.update(lin)
        d = min(0.9, (1 + k) / (10 + k))
        avg = d * avg + (1 - d) * v
    ema.copy_to(lin)
    assert lin.weight.item() == pytest.approx(avg, rel=1e-6)
    with pytest.raises(ValueError, match="decay"):
        EMA(lin, decay=1.0)


def test_loss_history_is_downsampled_to_block_means():
    steps, means = downsample([float(i) for i in range(1, 1001)], points=200)
    assert len(steps) == 200 and steps[0] == 5 and steps[-1] == 1000
    assert means[0] == pytest.approx(3.0) and means[-1] == pytest.approx(998.0)
    steps, means = downsample([1.0, 2.0, 3.0], points=200)
    assert steps == [1, 2, 3] and means == [1.0, 2.0, 3.0]


def test_the_image_loss_is_the_per_pixel_eps_mse():
    s = mm.mnist_schedule()
    x0 = torch.rand(3, 1, 28, 28) * 2 - 1
    noise = torch.randn(3, 1, 28, 28)
    t = torch.tensor([1, 200, 500])

    class Zero(torch.nn.Module):
        target = "eps"

        def forward(self, x, t):
            return torch.zeros_like(x)

    loss = mm.mnist_diffusion_loss(Zero(), x0, s, t=t, noise=noise)
    assert loss.item() == pytest.approx(noise.pow(2).mean().item(), rel=1e-5)


def test_scales_round_trip():
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(mm.to_unit(mm.to_model_scale(x)), x, atol=1e-6)
    assert float(mm.to_model_scale(x).min()) >= -1 and float(mm.to_unit(torch.tensor([-3.0, 3.0])).max()) == 1.0


# ---------------------------------------------------------------------------------------------- configs and caching
def test_config_key_changes_when_the_config_does():
    full, fast = mm.mnist_diffusion_config(), mm.mnist_diffusion_config(fast=True)
    assert config_key(full) != config_key(fast)
    for key, value in (("steps", 4001), ("T", 1000), ("channels", [32, 64, 128]), ("ema_decay", 0.99),
                       ("precision", "float32"), ("seed", 1)):
        assert config_key({**full, key: value}) != config_key(full), key
    assert config_key(mm.mnist_classifier_config()) != config_key(mm.mnist_classifier_config(fast=True))
    assert mm.mnist_schedule(full).T == full["T"] and mm.mnist_schedule(full).name == full["schedule"]
    model = mm.mnist_unet(fast)
    assert model.channels == tuple(fast["channels"]) and model.config == fast


def test_fast_mode_uses_the_full_model_when_available(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    trained = []
    monkeypatch.setattr(mm, "train_mnist_denoiser", lambda model, cfg, **kw: trained.append(cfg) or {})
    full = mm.mnist_diffusion_config()
    if checkpoint_path(mm.DENOISER_NAME, full, PRETRAINED_DIR).is_file():
        monkeypatch.setattr("course_lib.checkpoints.PRETRAINED_DIR", tmp_path / "none")
    model, info = mm.load_or_train_mnist_denoiser(fast=True, dev="cpu", progress=False)
    assert info.source == "trained" and trained[-1]["fast"] and model.config["fast"]  # the tiny one, never the full
    save_checkpoint(checkpoint_path(mm.DENOISER_NAME, full), mm.mnist_unet(full), config=full)
    model, info = mm.load_or_train_mnist_denoiser(fast=True, dev="cpu", progress=False)
    assert info.source == "cache" and not model.config["fast"] and len(trained) == 1
    assert "FAST" not in mm.describe_source(model, info)


SHIPPED = {name: sorted(PRETRAINED_DIR.glob(f"{name}-*.pt")) for name in (mm.DENOISER_NAME, mm.CLASSIFIER_NAME)}


@pytest.mark.skipif(not SHIPPED[mm.DENOISER_NAME], reason="no shipped MNIST denoiser weights")
def test_shipped_denoiser_loads_weights_only_with_the_right_shapes():
    (path,) = SHIPPED[mm.DENOISER_NAME]
    ckpt = load_checkpoint(path)  # torch.load(weights_only=True)
    cfg = ckpt["config"]
    assert cfg == mm.mnist_diffusion_config()  # the config the notebook asks for
    assert path == checkpoint_path(mm.DENOISER_NAME, cfg, PRETRAINED_DIR)
    model = mm.mnist_unet(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in ckpt["state_dict"].items()} == expected
    model.load_state_dict(ckpt["state_dict"])
    assert next(model.parameters()).dtype == torch.float32
    assert path.stat().st_size < 5 * 2**20
    meta = ckpt["meta"]
    for key in ("train_seconds", "steps", "device", "loss", "loss_steps"):
        assert key in meta, key
    assert meta["steps"] == cfg["steps"] and len(meta["loss"]) == len(meta["loss_steps"]) <= HISTORY_POINTS
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28), torch.tensor([10, 400]))
    assert out.shape == (2, 1, 28, 28) and bool(torch.isfinite(out).all())


@pytest.mark.skipif(not SHIPPED[mm.CLASSIFIER_NAME], reason="no shipped MNIST classifier weights")
def test_shipped_classifier_loads_weights_only_and_states_its_accuracy():
    (path,) = SHIPPED[mm.CLASSIFIER_NAME]
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    assert cfg == mm.mnist_classifier_config()
    model = mm.mnist_classifier(cfg)
    model.load_state_dict(ckpt["state_dict"])
    assert ckpt["meta"]["test_accuracy"] >= 0.99 and ckpt["meta"]["test_size"] == 10000
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
