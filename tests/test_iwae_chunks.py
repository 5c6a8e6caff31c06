"""The importance-weighted bound in chunks over the K draws (``VAE.log_weight_chunks``, ``VAE.iwae_bounds``), the
streaming log-mean-exp (``RunningLogMeanExp``, ``log_mean_exp_chunks``) and the means with standard errors
(``mean_stderr``, ``elbo_summary``, ``bernoulli_baselines``).

References: scipy's logsumexp of all the values side by side, ``log_weights`` in one piece (itself tested in
test_vae_neural.py against the exact linear-Gaussian model), numpy's and scipy's standard error of the mean,
``vae_models.evaluate_vae``, ``torch.distributions.Bernoulli``, and the peak resident memory of a fresh process.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy import special, stats

from course_lib import vae_models
from course_lib.vae import (
    RunningLogMeanExp,
    bernoulli_baselines,
    elbo_summary,
    iwae_summary,
    log_mean_exp,
    log_mean_exp_chunks,
    mean_stderr,
    plot_iwae_bounds,
)


@pytest.fixture(scope="module")
def mnist_like():
    """A small MNIST-shaped VAE in float64 and 6 binary images."""
    torch.manual_seed(0)
    vae = vae_models.mnist_vae(latent_dim=4, hidden=(32,)).double().eval()
    x = torch.bernoulli(torch.full((6, 784), 0.2, dtype=torch.float64),
                        generator=torch.Generator().manual_seed(1))
    return vae, x


def _gen(seed=5):
    return torch.Generator().manual_seed(seed)


# ====================================================================== streaming log-mean-exp
@pytest.mark.parametrize("sizes", [(1,), (3, 4), (1, 7, 2, 5), (10, 1)])
def test_log_mean_exp_chunks_equals_scipy_on_all_columns(sizes):
    g = _gen(2)
    # levels hundreds of nats apart between rows and between chunks: exp of any of them under- or overflows
    chunks = [torch.randn(3, c, generator=g, dtype=torch.float64) * 5 + torch.tensor([[-800.0], [0.0], [700.0]])
              + 300.0 * i for i, c in enumerate(sizes)]
    whole = torch.cat(chunks, dim=1).numpy()
    want = special.logsumexp(whole, axis=1) - math.log(whole.shape[1])
    np.testing.assert_allclose(log_mean_exp_chunks(chunks).numpy(), want, rtol=1e-13, atol=1e-10)
    np.testing.assert_allclose(log_mean_exp_chunks(iter(chunks)).numpy(), want, rtol=1e-13, atol=1e-10)
    running = RunningLogMeanExp()
    for c in chunks:
        running.add(c)
    assert running.count == sum(sizes)
    np.testing.assert_allclose(log_mean_exp(torch.cat(chunks, 1)).numpy(), want, rtol=1e-13, atol=1e-10)


def test_running_log_mean_exp_rejects_bad_chunks():
    running = RunningLogMeanExp()
    with pytest.raises(ValueError, match="no chunk"):
        running.value()
    with pytest.raises(ValueError, match=r"shape \(n, c\)"):
        running.add(torch.zeros(3))
    running.add(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="expected 3 rows"):
        running.add(torch.zeros(4, 2))


# ====================================================================== the bound in chunks == in one piece
def test_log_weight_chunks_are_the_draws_of_log_weights(mnist_like):
    vae, x = mnist_like
    with torch.no_grad():
        whole = vae.log_weights(x, 23, generator=_gen())
        chunks = list(vae.log_weight_chunks(x, 23, chunk=5, generator=_gen()))
    assert [c.shape for c in chunks] == [(6, 5)] * 4 + [(6, 3)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), whole, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("chunk", [1, 3, 7, 40, None])
def test_chunked_bounds_equal_the_unchunked_ones(mnist_like, chunk):
    vae, x = mnist_like
    ks = [1, 10, 37]
    with torch.no_grad():
        chunked = vae.iwae_bounds(x, ks, chunk=chunk, generator=_gen())
        lw = vae.log_weights(x, max(ks), generator=_gen()).numpy()  # all the draws side by side
    assert sorted(chunked) == ks
    for k in ks:
        want = special.logsumexp(lw[:, :k], axis=1) - math.log(k)
        np.testing.assert_allclose(chunked[k].numpy(), want, rtol=1e-12, atol=1e-9)
    # L_K for one K draws exactly the first K of those draws
    with torch.no_grad():
        one = vae.iwae_bound(x, k=10, chunk=chunk, generator=_gen())
    torch.testing.assert_close(one, chunked[10], rtol=1e-12, atol=1e-9)


def test_chunked_bound_has_the_gradient_of_the_unchunked_one(mnist_like):
    vae, x = mnist_like
    vae.zero_grad()
    vae.iwae_bound(x, k=12, chunk=5, generator=_gen()).sum().backward()
    chunked = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad()
    torch.logsumexp(vae.log_weights(x, 12, generator=_gen()), -1).sum().backward()
    for a, p in zip(chunked, vae.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-9, atol=1e-9)
    vae.zero_grad()


def test_iwae_summary_reports_means_and_paired_standard_errors(mnist_like):
    vae, x = mnist_like
    s = iwae_summary(vae, x, [10, 1, 30], chunk=4, generator=_gen())
    with torch.no_grad():
        lw = vae.log_weights(x, 30, generator=_gen()).numpy()
    per_image = {k: special.logsumexp(lw[:, :k], axis=1) - math.log(k) for k in (1, 10, 30)}
    assert s["k"] == [1, 10, 30] and s["n"] == 6
    for i, k in enumerate(s["k"]):
        assert s["mean"][i] == pytest.approx(per_image[k].mean(), rel=1e-10)
        assert s["stderr"][i] == pytest.approx(stats.sem(per_image[k]), rel=1e-8)
        gain = per_image[k] - per_image[1]
        assert s["gain"][i] == pytest.approx(gain.mean(), abs=1e-9)
        assert s["gain_stderr"][i] == pytest.approx(stats.sem(gain) if k > 1 else 0.0, rel=1e-8, abs=1e-12)
    import matplotlib
    matplotlib.use("Agg")
    fig = plot_iwae_bounds({"a": s, "b": s})
    assert len(fig.axes) == 3 and all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)


def test_bound_arguments_are_checked(mnist_like):
    vae, x = mnist_like
    with pytest.raises(ValueError, match="chunk"):
        vae.iwae_bound(x, k=10, chunk=0)
    with pytest.raises(ValueError, match="ks"):
        vae.iwae_bounds(x, [10, 0])
    with pytest.raises(ValueError, match="ks"):
        vae.iwae_bounds(x, [])


def test_the_decoder_never_sees_more_than_a_chunk(mnist_like):
    """Memory does not grow with K: the largest decoder batch is n * chunk draws for K = 10 and K = 2000 alike."""
    vae, x = mnist_like
    seen = []
    hook = vae.decoder.net.register_forward_hook(lambda m, inp, out: seen.append(out.shape[:-1].numel()))
    try:
        with torch.no_grad():
            for k in (10, 2000):
                seen.clear()
                vae.iwae_bound(x, k=k, chunk=10, generator=_gen())
                assert max(seen) == x.shape[0] * 10 and sum(seen) == x.shape[0] * k
    finally:
        hook.remove()


def test_peak_memory_does_not_grow_with_k():
    """In a fresh process: the peak resident memory for K = 2000 is that of K = 20 (chunks of 10), although all
    2000 draws side by side would need 100 * 2000 * 784 float32 logits = 627 MB for the logits alone."""
    code = textwrap.dedent("""
        import resource, torch
        from course_lib import vae_models
        torch.set_num_threads(1)
        torch.manual_seed(0)
        vae = vae_models.mnist_vae(latent_dim=8, hidden=(64,)).eval()
        x = torch.bernoulli(torch.full((100, 784), 0.2))
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB
        with torch.no_grad():
            vae.iwae_bound(x, k=20, chunk=10, generator=torch.Generator().manual_seed(0))
            small = peak()
            vae.iwae_bound(x, k=2000, chunk=10, generator=torch.Generator().manual_seed(0))
            large = peak()
        print(small, large)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    small, large = map(float, out.stdout.split())
    assert large - small < 40, (small, large)


# ====================================================================== means with standard errors
def test_mean_stderr_matches_numpy_and_scipy():
    v = np.random.default_rng(0).normal(3.0, 2.0, size=57)
    mean, se = mean_stderr(torch.tensor(v))
    assert mean == pytest.approx(v.mean(), rel=1e-13)
    assert se == pytest.approx(v.std(ddof=1) / math.sqrt(57), rel=1e-12)
    assert se == pytest.approx(stats.sem(v), rel=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        mean_stderr(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="finite"):
        mean_stderr(torch.tensor([1.0, float("nan")]))


def test_standard_error_covers_the_truth_at_its_stated_rate():
    """A 95% interval mean +- 1.96 se of 200 normal draws covers the true mean in about 95% of 2000 repeats;
    the count of misses is Binomial(2000, 0.05) (sd 9.7): |misses - 100| < 5 sd, false-alarm rate < 1e-6."""
    rng = np.random.default_rng(1)
    misses = 0
    for _ in range(2000):
        mean, se = mean_stderr(torch.tensor(rng.normal(1.0, 3.0, size=200)))
        misses += abs(mean - 1.0) > 1.96 * se
    assert abs(misses - 100) < 5 * math.sqrt(2000 * 0.05 * 0.95)


def test_elbo_summary_matches_evaluate_vae_and_the_per_example_terms(mnist_like):
    vae, x = mnist_like
    x = torch.cat([x] * 3)
    summary = elbo_summary(vae, x, n_samples=2, batch_size=7, generator=_gen(3))
    means = vae_models.evaluate_vae(vae, x, n_samples=2, batch_size=7, generator=_gen(3))
    g = _gen(3)
    with torch.no_grad():
        terms = [vae.elbo_terms(x[i:i + 7], n_samples=2, generator=g) for i in range(0, x.shape[0], 7)]
    for key in ("elbo", "reconstruction", "kl_prior"):
        values = torch.cat([t[key] for t in terms]).numpy()
        assert summary[key][0] == pytest.approx(means[key], rel=1e-12)
        assert summary[key][1] == pytest.approx(stats.sem(values), rel=1e-10)


def test_bernoulli_baselines_against_torch_distributions():
    g = _gen(4)
    grey = torch.rand(50, 1, 4, 4, generator=g, dtype=torch.float64)
    grey[:, 0, 0, 0] = 0.0  # a pixel that is always off in training: the smoothing keeps its log-probability finite
    bits = torch.bernoulli(torch.full((30, 1, 4, 4), 0.4, dtype=torch.float64), generator=g)
    bits[0, 0, 0, 0] = 1.0
    out = bernoulli_baselines(grey, bits)
    p = (grey.reshape(50, -1).sum(0) + 1) / 52
    nll = -torch.distributions.Bernoulli(probs=p).log_prob(bits.reshape(30, -1)).sum(-1)
    assert out["pixel_means"][0] == pytest.approx(float(nll.mean()), rel=1e-12)
    assert out["pixel_means"][1] == pytest.approx(stats.sem(nll.numpy()), rel=1e-10)
    assert out["coin_flip"] == (pytest.approx(16 * math.log(2)), 0.0)
    with pytest.raises(ValueError, match="binarised"):
        bernoulli_baselines(grey, grey[:5])


def test_elbo_terms_report_the_monte_carlo_standard_error(mnist_like):
    vae, x = mnist_like
    with torch.no_grad():
        terms = vae.elbo_terms(x, n_samples=50, generator=_gen(6))
        mu, log_sigma = vae.encode(x)
        g = _gen(6)
        eps = torch.randn(mu.shape[0], 50, mu.shape[1], generator=g, dtype=mu.dtype)  # reparameterize's draws
        z = mu.unsqueeze(1) + torch.exp(log_sigma).unsqueeze(1) * eps
        per_draw = torch.distributions.Bernoulli(logits=vae.decoder(z)).log_prob(x.unsqueeze(1)).sum(-1).numpy()
    np.testing.assert_allclose(terms["reconstruction"].numpy(), per_draw.mean(1), rtol=1e-10)
    np.testing.assert_allclose(terms["reconstruction_stderr"].numpy(), stats.sem(per_draw, axis=1), rtol=1e-8)
    assert "reconstruction_stderr" not in vae.elbo_terms(x)  # one draw: no spread to measure
