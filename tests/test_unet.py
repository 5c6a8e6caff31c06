"""The MNIST U-Net: shapes, the time embedding, the class-conditioning hook, gradients, and that it can learn."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.nets import time_embedding
from course_lib.unet import UNet


def _tiny(*, randomise: bool = False, **kw) -> UNet:
    """A small UNet; ``randomise`` re-draws the zero-initialised layers (residual branches, output, labels),
    without which the untrained net's output ignores t and y by construction."""
    torch.manual_seed(0)
    model = UNet((8, 16, 16), 32, **kw)
    if randomise:
        for m in model.modules():
            if hasattr(m, "conv2"):
                torch.nn.init.normal_(m.conv2.weight, std=0.05)
        torch.nn.init.normal_(model.conv_out.weight, std=0.1)
        if model.label_emb is not None:
            torch.nn.init.normal_(model.label_emb.weight, std=1.0)
    return model


# ---------------------------------------------------------------------------------------------- embedding
def test_time_embedding_matches_the_formula_written_out():
    t = torch.tensor([0, 1, 7, 499])
    dim, h, T = 16, 8, 500
    got = time_embedding(t, T, dim)
    assert got.shape == (4, dim) and got.dtype == torch.float32
    for i, ti in enumerate(t.tolist()):
        u = 1000.0 * ti / T
        for k in range(h):
            w = 10000.0 ** (-k / h)
            assert got[i, k].item() == pytest.approx(math.sin(u * w), abs=1e-5)
            assert got[i, h + k].item() == pytest.approx(math.cos(u * w), abs=1e-5)


def test_time_embedding_separates_every_step_and_rejects_bad_sizes():
    e = time_embedding(torch.arange(1, 501), 500, 128)
    d = torch.cdist(e.double(), e.double())
    d.fill_diagonal_(float("inf"))
    assert d.min() > 0.1  # no two of the 500 steps share an embedding
    with pytest.raises(ValueError, match="dim"):
        time_embedding(torch.arange(3), 500, 7)
    with pytest.raises(ValueError, match="T"):
        time_embedding(torch.arange(3), 0, 8)


def test_every_model_uses_the_one_time_embedding():
    """The toy MLP, the U-Net and the noise-aware classifier all embed t with nets.time_embedding(t, T)."""
    from course_lib import denoisers, guidance_models
    from course_lib import unet as unet_module

    assert denoisers.time_embedding is time_embedding
    assert unet_module.time_embedding is time_embedding and guidance_models.time_embedding is time_embedding
    assert not hasattr(unet_module, "timestep_embedding")
    net = UNet((8, 16, 16), 32, T=500)
    torch.testing.assert_close(net.embedding(torch.tensor([250])),
                               net.time_mlp(time_embedding(torch.tensor([250]), 500, 32)))


# ---------------------------------------------------------------------------------------------- the network
def test_default_unet_shapes_size_and_untrained_output():
    model = UNet()
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.5e6 <= n_params <= 1.5e6
    x = torch.randn(3, 1, 28, 28)
    out = model(x, torch.tensor([1, 250, 500]))
    assert out.shape == x.shape and out.dtype == torch.float32
    # the output layer starts at zero: the untrained net predicts E[eps] = 0
    assert torch.equal(out, torch.zeros_like(out))
    assert model.target == "eps" and model.null_label is None


def test_int_and_per_row_t_agree_and_bad_inputs_are_named():
    model = _tiny(randomise=True)
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(model(x, 10), model(x, torch.full((4,), 10)))
    with pytest.raises(ValueError, match="x_t"):
        model(torch.randn(4, 784), 10)
    with pytest.raises(ValueError, match="t"):
        model(x, torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="t"):
        model(x, 0.5)
    with pytest.raises(ValueError, match="y"):
        model(x, 10, y=torch.zeros(4, dtype=torch.long))  # unconditional net


def test_the_output_depends_on_t():
    model = _tiny(randomise=True)
    x = torch.randn(2, 1, 28, 28)
    a, b = model(x, 5), model(x, 400)
    assert (a - b).abs().max() > 1e-3


def test_class_conditioning_and_the_null_label():
    model = _tiny(num_classes=10, randomise=True)
    assert model.null_label == 10
    x = torch.randn(3, 1, 28, 28)
    y3 = torch.tensor([3, 3, 3])
    null = torch.full((3,), 10)
    # y=None means "no label": the same as passing the null label explicitly
    assert torch.allclose(model(x, 50), model(x, 50, y=null))
    assert (model(x, 50, y=y3) - model(x, 50, y=null)).abs().max() > 1e-3
    assert (model(x, 50, y=y3) - model(x, 50, y=torch.tensor([7, 7, 7]))).abs().max() > 1e-3
    with pytest.raises(ValueError, match="0..10"):
        model(x, 50, y=torch.tensor([0, 11, 2]))


def test_gradients_reach_every_parameter():
    model = _tiny(num_classes=4, randomise=True)  # zero-initialised branches pass no gradient upstream
    x = torch.randn(4, 1, 28, 28)
    model(x, torch.tensor([1, 2, 3, 4]), y=torch.tensor([0, 1, 2, 4])).pow(2).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_a_tiny_unet_overfits_16_images():
    """Learning: the eps loss on 16 fixed images at fixed (t, eps) falls by more than half in 60 Adam steps."""
    from course_lib.denoisers import diffusion_loss
    from course_lib.schedules import NoiseSchedule

    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(16, 1, 28, 28, generator=g) > 0.7).float() * 2 - 1
    t = torch.randint(1, 101, (16,), generator=g)
    noise = torch.randn(16, 1, 28, 28, generator=g)
    s = NoiseSchedule.cosine(100)
    model = _tiny()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = diffusion_loss(model, x0, s, "eps", t=t, noise=noise) / 784
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(1.0, abs=0.1)  # predicting 0 costs E|eps|^2 / D = 1
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
