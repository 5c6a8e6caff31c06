"""One rule for random numbers and devices: noise is drawn where its generator lives, then moved to the data.

A CPU ``torch.Generator`` cannot draw on a GPU (``torch.randn(..., generator=cpu_gen, device="cuda")`` raises), so a
training or sampling path that draws "on the data's device" with the course's CPU generators crashes on a GPU. No GPU
is needed to catch that: ``GeneratorDeviceGuard`` (a ``TorchFunctionMode``) rejects every draw whose generator and
target device differ, and the data are put on PyTorch's ``meta`` device, a stand-in for a GPU (shapes, no values).
Each training entry point runs its loss for two steps that way (``train`` is replaced by a stand-in that calls the
loss on meta batches and stops), and each sampler runs a few steps.
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

META = torch.device("meta")


class GeneratorDeviceError(RuntimeError):
    pass


class GeneratorDeviceGuard(TorchFunctionMode):
    """Raise when a function draws with ``generator=g`` on a device other than ``g.device``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        g = kwargs.get("generator")
        if isinstance(g, torch.Generator):
            target = kwargs.get("device")
            if target is None:  # bernoulli(p), normal(mean, std), multinomial(w), x.normal_(): the input's device
                target = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
            if torch.device(target).type != g.device.type:
                raise GeneratorDeviceError(f"{getattr(func, '__name__', func)} draws on {target} with a generator on "
                                           f"{g.device}")
        return func(*args, **kwargs)


class _Stop(Exception):
    pass


def _two_loss_steps(module, monkeypatch, batches=2):
    """Replace ``module.train`` by a stand-in: move the model to meta, call the loss on two meta batches, stop."""
    from course_lib.training import minibatches

    def fake_train(model, loss_fn, data, *, steps, batch_size=8, generator=None, device=None, **kw):
        model.to(META)
        it = minibatches(data, min(batch_size, 8), generator=generator, device=META)
        for _ in range(batches):
            out = loss_fn(model, next(it))
            loss = out[0] if isinstance(out, tuple) else out
            assert loss.device == META and loss.ndim == 0
        raise _Stop

    monkeypatch.setattr(module, "train", fake_train)


def test_the_guard_catches_a_draw_on_the_wrong_device():
    g = torch.Generator()
    with GeneratorDeviceGuard(), pytest.raises(GeneratorDeviceError, match="meta"):
        torch.randn(3, generator=g, device=META)
    with GeneratorDeviceGuard():
        assert torch.randn(3, generator=g).to(META).device == META  # drawn where g lives, then moved: fine


def test_q_sample_draws_on_the_generator_and_moves_the_noise():
    from course_lib.schedules import NoiseSchedule

    s = NoiseSchedule.cosine(50)
    x0 = torch.zeros(4, 1, 28, 28, device=META)
    with GeneratorDeviceGuard():
        x_t = s.q_sample(x0, torch.tensor([1, 5, 10, 50]), generator=torch.Generator().manual_seed(0))
    assert x_t.device == META and x_t.shape == x0.shape
    cpu = s.q_sample(torch.zeros(2, 3), 10, generator=torch.Generator().manual_seed(0))
    again = s.q_sample(torch.zeros(2, 3), 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cpu, again)


def test_random_shift_and_the_diffusion_loss_follow_the_rule():
    from course_lib.data import random_shift
    from course_lib.denoisers import ToyDenoiser, diffusion_loss
    from course_lib.schedules import NoiseSchedule

    g = torch.Generator().manual_seed(0)
    with GeneratorDeviceGuard():
        assert random_shift(torch.zeros(3, 1, 28, 28, device=META), 2, g).device == META
        model = ToyDenoiser(2, 16, 2, "eps", 50).to(META)
        loss = diffusion_loss(model, torch.zeros(5, 2, device=META), NoiseSchedule.cosine(50), generator=g)
    assert loss.device == META


@pytest.mark.parametrize("conditional", [False, True])
def test_mnist_denoiser_training_follows_the_rule(monkeypatch, conditional):
    from course_lib import mnist_models as mm

    _two_loss_steps(mm, monkeypatch)
    cfg = mm.mnist_diffusion_config(fast=True, conditional=conditional)
    with GeneratorDeviceGuard(), pytest.raises(_Stop):
        mm.train_mnist_denoiser(mm.mnist_unet(cfg).to(META), cfg, progress=False, dev=META)


def test_classifier_trainings_follow_the_rule(monkeypatch):
    from course_lib import guidance_models as gm
    from course_lib import mnist_models as mm

    _two_loss_steps(mm, monkeypatch)
    _two_loss_steps(gm, monkeypatch)
    cfg = mm.mnist_classifier_config(fast=True)
    with GeneratorDeviceGuard(), pytest.raises(_Stop):
        mm.train_mnist_classifier(mm.mnist_classifier(cfg).to(META), cfg, progress=False, dev=META)
    cfg = gm.noisy_classifier_config(fast=True)
    with GeneratorDeviceGuard(), pytest.raises(_Stop):
        gm.train_noisy_classifier(gm.noisy_classifier(cfg).to(META), cfg, progress=False, dev=META)


def test_toy_and_vae_trainings_follow_the_rule(monkeypatch):
    from course_lib import denoisers, training, vae_models
    from course_lib.schedules import NoiseSchedule

    _two_loss_steps(training, monkeypatch)  # train_toy_denoiser imports train from course_lib.training
    _two_loss_steps(vae_models, monkeypatch)
    with GeneratorDeviceGuard(), pytest.raises(_Stop):
        denoisers.train_toy_denoiser(torch.zeros(64, 2), NoiseSchedule.cosine(50), "eps", 2, hidden=16, layers=2,
                                     progress=False)
    with GeneratorDeviceGuard(), pytest.raises(_Stop):
        vae_models.fit_vae(vae_models.toy_vae(1, hidden=(16,)), torch.zeros(64, 2), steps=2, progress=False)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_samplers_draw_on_the_cpu_and_move_the_noise(eta):
    from course_lib.samplers import sample
    from course_lib.unet import UNet

    net = UNet((8, 16, 16), 16, T=50).to(META)
    from course_lib.schedules import NoiseSchedule

    with GeneratorDeviceGuard():
        x = sample(net, NoiseSchedule.cosine(50), (2, 1, 28, 28), steps=3, eta=eta,
                   generator=torch.Generator().manual_seed(0), clip_x0=1.0)
    assert x.device == META and x.shape == (2, 1, 28, 28)


def test_gpu_check_runs_its_checks_on_the_cpu(tmp_path, monkeypatch):
    """The command's code path, proven without a GPU: two training steps per model (FAST configs), the device-vs-CPU
    comparison (here CPU vs CPU: identical) and the samplers' statistics."""
    from course_lib.gpu_check import gpu_check

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    lines = []
    rows = gpu_check("cpu", steps=2, n_samples=4, fast=True, log=lines.append)
    assert [r["model"] for r in rows] == ["mnist_denoiser", "mnist_cond_denoiser", "mnist_classifier",
                                          "mnist_noisy_classifier"]
    for r in rows:
        assert r["max |device − CPU|"] == 0.0 and r["train steps/s"] > 0
    denoisers = [r for r in rows if "denoiser" in r["model"]]
    assert all(r["finite"] and r["stats agree"] for r in denoisers)
    assert "| model |" in lines[-1]


def test_gpu_check_without_a_gpu_says_so(monkeypatch, capsys):
    from course_lib.__main__ import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu-check"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
