"""Tests for the neural VAE in course_lib.vae (encoders, decoders, VAE) and course_lib.vae_models.

References: the exact LinearGaussianModel (a neural VAE with linear maps is one), torch.distributions
(Normal, Bernoulli, their KL), autograd. Statistical checks use |z| < Z = 5 (false-alarm rate 5.7e-7
per check) with fixed seeds.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from course_lib import vae_models
from course_lib.checkpoints import PRETRAINED_DIR, checkpoint_path, load_checkpoint, save_checkpoint
from course_lib.nets import MLP
from course_lib.vae import (
    VAE,
    BernoulliDecoder,
    GaussianDecoder,
    GaussianEncoder,
    LinearGaussianModel,
    gaussian_kl_diag,
    log_normal_diag,
    reparameterize,
)

Z = 5.0


# ====================================================================== a neural VAE that is a linear-Gaussian model
def linear_vae(W, b, sigma, A, c, log_s) -> VAE:
    """Decoder x = W z + b + sigma eps; encoder mu = A x + c, log sigma = log_s (constant): all in float64."""
    d, k = W.shape
    enc, dec = GaussianEncoder(d, k, hidden=()), GaussianDecoder(k, d, hidden=(), sigma=sigma)
    vae = VAE(enc, dec).double()
    with torch.no_grad():
        dec.net[0].weight.copy_(W)
        dec.net[0].bias.copy_(b)
        enc.net[0].weight.copy_(torch.cat([A, torch.zeros(k, d, dtype=torch.float64)]))
        enc.net[0].bias.copy_(torch.cat([c, log_s]))
    return vae


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    d, k, sigma = 3, 2, 0.7
    W = torch.randn(d, k, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    lgm = LinearGaussianModel(W, b, sigma)
    x = lgm.sample(5, generator=g)
    # a deliberately imperfect encoder: shifted posterior mean, too-narrow widths
    post_mean, _ = lgm.posterior(x)
    A = torch.linalg.lstsq(x - b, post_mean).solution.T + 0.2
    c = torch.tensor([0.3, -0.2], dtype=torch.float64)
    log_s = torch.tensor([-1.0, -0.4], dtype=torch.float64)
    return lgm, linear_vae(W, b, sigma, A, c, log_s), x


def test_linear_vae_elbo_terms_match_the_exact_model(setup):
    lgm, vae, x = setup
    mu, log_sigma = vae.encode(x)
    exact = lgm.elbo_terms(x, mu.detach(), torch.diag_embed(torch.exp(2 * log_sigma.detach())))
    m = 20_000
    terms = vae.elbo_terms(x, n_samples=m, generator=torch.Generator().manual_seed(1))
    # the analytic term is exact
    torch.testing.assert_close(terms["kl_prior"], exact["kl_prior"], rtol=1e-12, atol=1e-12)
    # reconstruction is Monte Carlo: within Z standard errors, the standard error from the same draws
    z = reparameterize(mu, log_sigma, m, torch.Generator().manual_seed(1))
    values = vae.decoder.log_prob(x, z)
    torch.testing.assert_close(terms["reconstruction"], values.mean(-1), rtol=1e-12, atol=1e-12)
    stderr = values.std(-1) / math.sqrt(m)
    assert ((terms["reconstruction"] - exact["reconstruction"]).abs() < Z * stderr).all()
    torch.testing.assert_close(terms["elbo"], terms["reconstruction"] - terms["kl_prior"])
    torch.testing.assert_close(terms["loss"], -terms["elbo"])
    beta = vae.elbo_terms(x, n_samples=m, beta=3.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(beta["loss"], 3.0 * terms["kl_prior"] - terms["reconstruction"])
    assert all(v.shape == (5,) for v in terms.values())


def test_decoder_log_prob_matches_the_exact_model(setup):
    lgm, vae, x = setup
    z = torch.randn(5, 4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(vae.decoder.log_prob(x, z), lgm.decoder_log_prob(x, z))
    torch.testing.assert_close(vae.decoder.log_prob(x, z[:, 0]), lgm.decoder_log_prob(x, z[:, 0]))


def test_kl_term_matches_torch_distributions():
    g = torch.Generator().manual_seed(3)
    vae = vae_models.mnist_vae(latent_dim=6, hidden=(32,))
    x = torch.bernoulli(torch.full((7, 1, 28, 28), 0.3), generator=g)
    mu, log_sigma = vae.encode(x)
    want = kl_divergence(Normal(mu, log_sigma.exp()), Normal(0.0, 1.0)).sum(-1)
    terms = vae.elbo_terms(x)
    torch.testing.assert_close(terms["kl_prior"], want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms["kl_prior"], gaussian_kl_diag(mu, log_sigma))


def test_log_normal_diag_matches_torch_distributions():
    g = torch.Generator().manual_seed(4)
    z, mu, ls = (torch.randn(6, 3, generator=g, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(log_normal_diag(z, mu, ls), Normal(mu, ls.exp()).log_prob(z).sum(-1))


# ====================================================================== the reparameterisation
def test_reparameterize_has_the_right_law_and_gradients():
    g = torch.Generator().manual_seed(5)
    mu = torch.tensor([[1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ls = torch.tensor([[-0.5, 0.3]], dtype=torch.float64, requires_grad=True)
    n = 40_000
    z = reparameterize(mu, ls, n, g)
    assert z.shape == (1, n, 2)
    zd = z.detach()[0]
    sd = torch.exp(ls.detach()[0])
    # the sample mean has standard error sd / sqrt(n); the sample variance about var * sqrt(2 / n)
    assert ((zd.mean(0) - mu.detach()[0]).abs() < Z * sd / math.sqrt(n)).all()
    assert ((zd.var(0) - sd**2).abs() < Z * sd**2 * math.sqrt(2 / n)).all()
    gmu, gls = torch.autograd.grad(z.sum(), [mu, ls])
    torch.testing.assert_close(gmu, torch.full_like(gmu, float(n)))
    torch.testing.assert_close(gls, (zd - mu.detach()).sum(0, keepdim=True))  # d z / d log sigma = sigma eps


def test_elbo_gradients_reach_every_encoder_parameter():
    torch.manual_seed(6)
    vae = vae_models.toy_vae(latent_dim=2, hidden=(16,))
    x = torch.randn(32, 2)
    vae.elbo_terms(x)["loss"].mean().backward()
    for name, p in vae.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    # the reconstruction term alone reaches log sigma of the encoder only through the reparameterisation
    vae.zero_grad()
    vae.elbo_terms(x)["reconstruction"].mean().backward()
    last = vae.encoder.net.last
    assert last.weight.grad[2:].abs().max() > 0  # rows of log sigma


# ====================================================================== the importance-weighted bound
def _diagonal_posterior_model():
    """W with orthogonal columns: p(z | x) has a diagonal covariance, so the encoder can represent it exactly."""
    Q, _ = torch.linalg.qr(torch.randn(4, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    W = Q * torch.tensor([1.5, 0.6], dtype=torch.float64)
    b = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
    return LinearGaussianModel(W, b, 0.5)


def test_iwae_with_the_exact_posterior_is_log_p_x_for_every_k():
    lgm = _diagonal_posterior_model()
    x = lgm.sample(6, generator=torch.Generator().manual_seed(8))
    s2 = lgm.sigma**2
    cov = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + lgm.W.T @ lgm.W / s2)
    assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-12)
    A = cov @ lgm.W.T / s2  # posterior mean = A (x - b)
    vae = linear_vae(lgm.W, lgm.b, lgm.sigma, A, -A @ lgm.b, 0.5 * torch.log(torch.diagonal(cov)))
    log_px = lgm.log_marginal(x)
    # every importance weight equals p(x): the bound is exact whatever k and chunk
    for k, chunk in ((1, None), (10, 1), (100, 4)):
        torch.testing.assert_close(vae.iwae_bound(x, k=k, chunk=chunk), log_px, rtol=1e-7, atol=1e-7)


def test_iwae_increases_with_k_towards_log_p_x(setup):
    lgm, vae, x = setup
    x = lgm.sample(200, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(10)
    with torch.no_grad():
        log_px = lgm.log_marginal(x).mean()
        mu, log_sigma = vae.encode(x)
        exact_elbo = lgm.elbo_terms(x, mu, torch.diag_embed(torch.exp(2 * log_sigma)))["elbo"].mean()
        bounds = {k: vae.iwae_bound(x, k=k, generator=g).mean() for k in (1, 10, 1000)}
        lw = vae.log_weights(x, 1000, generator=g)
    # L_1 is an unbiased estimate of the ELBO (standard error from the log-weights' spread)
    assert abs(bounds[1] - exact_elbo) < Z * lw.std() / math.sqrt(200)
    assert exact_elbo < bounds[10] < bounds[1000] <= log_px + 0.01
    assert log_px - bounds[1000] < 0.1 * (log_px - exact_elbo)


def test_iwae_is_above_the_elbo_for_an_mnist_shaped_model():
    torch.manual_seed(11)
    vae = vae_models.mnist_vae(latent_dim=4, hidden=(32,))
    x = torch.bernoulli(torch.full((20, 1, 28, 28), 0.2))
    with torch.no_grad():
        elbo = vae.elbo_terms(x, n_samples=200)["elbo"]
        iwae = vae.iwae_bound(x, k=200, chunk=7)
    assert iwae.shape == (20,) and (iwae >= elbo - 1e-3).all()


# ====================================================================== decoders
def test_bernoulli_log_likelihood_matches_torch_distributions():
    g = torch.Generator().manual_seed(12)
    dec = BernoulliDecoder(3, 10, hidden=(8,)).double()
    with torch.no_grad():
        dec.net.last.weight.mul_(200.0)  # confident logits, |l| ~ 100: must stay finite
    z = torch.randn(6, 5, 3, generator=g, dtype=torch.float64)
    x = torch.bernoulli(torch.full((6, 10), 0.5, dtype=torch.float64), generator=g)
    logits = dec(z)
    assert logits.abs().max() > 30
    want = Bernoulli(logits=logits).log_prob(x.unsqueeze(1)).sum(-1)
    got = dec.log_prob(x, z)
    assert got.shape == (6, 5) and torch.isfinite(got).all()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(dec.mean(z), torch.sigmoid(logits))


def test_gaussian_decoder_learns_or_fixes_sigma():
    learned, fixed = GaussianDecoder(2, 3, hidden=(4,)), GaussianDecoder(2, 3, hidden=(4,), sigma=0.3)
    assert "log_sigma" in dict(learned.named_parameters())
    assert "log_sigma" not in dict(fixed.named_parameters()) and "log_sigma" in fixed.state_dict()
    z, x = torch.randn(5, 2), torch.randn(5, 3)
    torch.testing.assert_close(fixed.log_prob(x, z), Normal(fixed(z), 0.3).log_prob(x).sum(-1))


def test_sample_and_reconstruct_shapes_and_ranges():
    vae = vae_models.mnist_vae(latent_dim=2, hidden=(16,))
    g = torch.Generator().manual_seed(13)
    x = vae.sample(4, generator=g)
    assert x.shape == (4, 1, 28, 28) and set(x.unique().tolist()) <= {0.0, 1.0}
    p, z = vae.sample(3, mean=True, return_z=True, generator=g)
    assert p.shape == (3, 1, 28, 28) and z.shape == (3, 2) and ((p > 0) & (p < 1)).all()
    r = vae.reconstruct(x)
    assert r.shape == (4, 1, 28, 28)
    torch.testing.assert_close(vae.reconstruct(x.flatten(1)), r)  # flat input accepted too
    mu, _ = vae.encode(x)
    torch.testing.assert_close(vae.decode(mu), r)


# ====================================================================== training
def _strokes(n: int, seed: int) -> torch.Tensor:
    """MNIST-shaped grey images: one of 4 bars (a horizontal or vertical stroke), jittered."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    kind = torch.randint(4, (n,), generator=g)
    shift = torch.randint(-3, 4, (n,), generator=g)
    for i in range(n):
        r = 7 + 7 * (int(kind[i]) % 2) + int(shift[i])
        if kind[i] < 2:
            x[i, 0, r - 1:r + 2, 4:24] = 0.9
        else:
            x[i, 0, 4:24, r - 1:r + 2] = 0.9
    return x


def test_tiny_mnist_shaped_training_run_decreases_the_loss():
    torch.manual_seed(14)
    x_train, x_test = _strokes(512, 0), torch.bernoulli(_strokes(256, 1), generator=torch.Generator().manual_seed(2))
    vae = vae_models.mnist_vae(latent_dim=2, hidden=(64,))
    before = vae_models.evaluate_vae(vae, x_test)
    hist = vae_models.fit_vae(vae, x_train, x_test, steps=150, batch_size=64, binarize=True, eval_every=50,
                              progress=False, generator=torch.Generator().manual_seed(3))
    after = vae_models.evaluate_vae(vae, x_test)
    assert hist["step"] == [50, 100, 150] and len(hist["test_elbo"]) == 3 and hist["seconds"] > 0
    # from about 545 nats (784 pixels at p = 1/2) to below 150 when the bars are learned
    assert before["elbo"] < -400 and after["elbo"] > -150
    assert after["elbo"] == pytest.approx(after["reconstruction"] - after["kl_prior"])
    assert not vae.training


def test_toy_vae_learns_the_position_along_the_moons():
    g = torch.Generator().manual_seed(15)
    torch.manual_seed(15)
    x, u = vae_models.toy_data("two_moons", 3000, generator=g)
    vae = vae_models.toy_vae(latent_dim=1, hidden=(64, 64))
    vae_models.fit_vae(vae, x, steps=1500, batch_size=128, lr=3e-3, lr_schedule="cosine", progress=False,
                       generator=g)
    with torch.no_grad():
        mu, _ = vae.encode(x)
    # along each moon, a 1-D code that follows the curve is monotone in the position (|Spearman rho| near 1)
    rank = lambda v: v.argsort().argsort().double()  # noqa: E731
    for moon in (u < 0.5, u >= 0.5):
        rho = torch.corrcoef(torch.stack([rank(mu[moon, 0]), rank(u[moon])]))[0, 1]
        assert abs(rho) > 0.95


# ====================================================================== configs, cache and shipped weights
def test_mnist_config_key_changes_with_fast_and_latent_size():
    full, fast = vae_models.mnist_vae_config(20), vae_models.mnist_vae_config(20, fast=True)
    names = {checkpoint_path("m", c).name for c in (full, fast, vae_models.mnist_vae_config(2))}
    assert len(names) == 3 and fast["fast"] and fast["train_limit"] < 60000 and not full["fast"]


def test_fast_mode_uses_the_full_model_when_available(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    trained = []
    monkeypatch.setattr(vae_models, "train_mnist_vae", lambda model, cfg, **kw: trained.append(cfg) or {})
    full = vae_models.mnist_vae_config(3)
    # nothing cached, nothing shipped for k = 3: FAST trains the tiny model
    model, info = vae_models.load_or_train_mnist_vae(3, fast=True, dev="cpu", progress=False)
    assert info.source == "trained" and trained[-1]["fast"] and model.config["fast"]
    # a full-mode model in the cache: FAST loads it instead of training
    save_checkpoint(checkpoint_path(vae_models.MNIST_NAME, full), vae_models.mnist_vae(3), config=full)
    model, info = vae_models.load_or_train_mnist_vae(3, fast=True, dev="cpu", progress=False)
    assert info.source == "cache" and not model.config["fast"] and len(trained) == 1
    assert "latent size 3" in vae_models.describe_source(model, info)


SHIPPED = sorted(PRETRAINED_DIR.glob(f"{vae_models.MNIST_NAME}-*.pt"))


@pytest.mark.skipif(not SHIPPED, reason="no shipped MNIST VAE weights")
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_weights_load_safely_and_have_the_expected_shapes(path):
    ckpt = load_checkpoint(path)  # torch.load(weights_only=True) inside
    cfg = ckpt["config"]
    assert path == checkpoint_path(vae_models.MNIST_NAME, cfg, PRETRAINED_DIR)
    assert cfg == vae_models.mnist_vae_config(cfg["latent_dim"])  # the config the notebooks ask for
    assert path.stat().st_size < 3 * 2**20
    model = vae_models.mnist_vae(cfg["latent_dim"], cfg["hidden"], cfg["activation"])
    model.load_state_dict(ckpt["state_dict"])  # strict: every key and shape
    meta = ckpt["meta"]
    assert meta["epochs"] == cfg["epochs"] and meta["train_seconds"] > 0 and meta["test_elbo"] < -50
    with torch.no_grad():
        assert model.sample(3, mean=True).shape == (3, 1, 28, 28)
        assert model.encode(torch.zeros(2, 1, 28, 28))[0].shape == (2, cfg["latent_dim"])


# ====================================================================== bad input
def test_bad_input_raises_errors_that_name_the_argument():
    vae = vae_models.mnist_vae(latent_dim=2, hidden=(8,))
    ok = torch.zeros(2, 1, 28, 28)
    with pytest.raises(ValueError, match="x: expected shape"):
        vae.elbo_terms(torch.zeros(2, 28, 28))
    with pytest.raises(ValueError, match=r"x: .*\[0, 1\]"):
        vae.elbo_terms(ok + 255)
    with pytest.raises(TypeError, match="x: expected a tensor"):
        vae.elbo_terms(ok.numpy())
    with pytest.raises(ValueError, match="n_samples"):
        vae.elbo_terms(ok, n_samples=0)
    with pytest.raises(ValueError, match="beta"):
        vae.elbo_terms(ok, beta=-1.0)
    with pytest.raises(ValueError, match="k: expected"):
        vae.iwae_bound(ok, k=0)
    with pytest.raises(ValueError, match="z: expected"):
        vae.decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="log_sigma"):
        reparameterize(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="decoder"):
        VAE(GaussianEncoder(784, 2), BernoulliDecoder(3, 784))
    with pytest.raises(ValueError, match="x_shape"):
        VAE(GaussianEncoder(784, 2), BernoulliDecoder(2, 784), x_shape=(1, 28, 27))
    with pytest.raises(ValueError, match="activation"):
        MLP(2, 2, activation="sigmoidish")
    with pytest.raises(ValueError, match="hidden"):
        MLP(2, 2, hidden=(0,))
    with pytest.raises(ValueError, match="name"):
        vae_models.toy_data("spiral", 10)
    with pytest.raises(ValueError, match="latent_dim"):
        vae_models.mnist_vae_config(0)
