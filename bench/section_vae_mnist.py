"""Bench section: the MNIST VAEs of notebook 03 — test negative ELBO and IWAE bound in nats, training time.

Evaluates the models the notebook uses (user cache, else the shipped weights; trained only if neither
exists). ``COURSE_BENCH_RETRAIN=1`` retrains them here and reports this machine's training time
(about 10 minutes per model on 2 CPU cores; the cache then holds them). ``COURSE_BENCH_IWAE_N``: how many
test images get the k = 1000 importance-weighted bound (default 1000, the first ones; 10000 = all).

Targets (issue "Part I"): -ELBO <= 100 nats with a 20-d latent on dynamically binarised MNIST,
-L_1000 <= 95 nats, training <= 10 min on 2 CPU cores. Anchors: Kingma & Welling (2013); the IWAE paper's
(Burda et al. 2016) one-stochastic-layer VAE reaches -log p(x) ~ 86.76 nats after 3,280 epochs.
"""

from __future__ import annotations

import os
import time

import torch
from _harness import fmt_seconds, section

LATENT_DIMS = (2, 10, 20)
TARGET_ELBO, TARGET_IWAE, TARGET_MINUTES = 100.0, 95.0, 10.0


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


@section("vae_mnist")
def vae_mnist():
    from course_lib import device, recommended_threads
    from course_lib.vae_models import evaluate_vae, load_or_train_mnist_vae, mnist_test_binarized

    retrain = os.environ.get("COURSE_BENCH_RETRAIN", "").strip().lower() in {"1", "true", "yes", "on"}
    iwae_n = int(os.environ.get("COURSE_BENCH_IWAE_N", "1000"))
    dev = device()
    x_test, _ = mnist_test_binarized()
    x_test = x_test.to(dev)
    x_iwae = x_test[:iwae_n]
    rows = []
    for k in LATENT_DIMS:
        model, info = load_or_train_mnist_vae(k, fast=False, retrain=retrain, dev=dev, progress=False)
        meta = info.meta
        torch.set_num_threads(recommended_threads(model))
        terms = evaluate_vae(model, x_test, generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(1)
        t0 = time.perf_counter()
        with torch.no_grad():
            iwae = float(model.iwae_bound(x_iwae, k=1000, generator=g).mean())
        t_iwae = time.perf_counter() - t0
        elbo_subset = evaluate_vae(model, x_iwae, generator=torch.Generator().manual_seed(0))["elbo"]
        minutes = meta.get("train_seconds", float("nan")) / 60
        where = {"cache": "cache", "pretrained": "shipped", "trained": "trained now"}[info.source]
        ok_elbo = "" if k != 20 else " " + _mark(-terms["elbo"] <= TARGET_ELBO)
        ok_iwae = "" if k != 20 else " " + _mark(-iwae <= TARGET_IWAE)
        rows.append([
            str(k), f"{meta.get('params', sum(p.numel() for p in model.parameters())):,}", str(meta.get("epochs", "?")),
            f"{-terms['elbo']:.2f}{ok_elbo}", f"{-terms['reconstruction']:.2f}", f"{terms['kl_prior']:.2f}",
            f"{-iwae:.2f}{ok_iwae} (ELBO there {-elbo_subset:.2f}; {fmt_seconds(t_iwae)})",
            f"{minutes:.1f} min {_mark(minutes <= TARGET_MINUTES)}",
            f"{meta.get('seconds_per_epoch', float('nan')):.1f} s",
            f"{meta.get('device', '?')}, {meta.get('threads', '?')} thr, {where}",
        ])
    rows.append(["target (k = 20)", "", "", f"≤ {TARGET_ELBO:g}", "", "", f"≤ {TARGET_IWAE:g}",
                 f"≤ {TARGET_MINUTES:g} min on 2 cores", "", ""])
    rows.append(["anchor: IWAE paper VAE", "", "3,280", "", "", "", "86.76 (k = 5000)", "", "", ""])
    title = (f"MNIST VAE: MLP 784-512-256-k, Bernoulli decoder, dynamically binarised; test set binarised once "
             f"(seed fixed), 10,000 images, one z per image; L_1000 on the first {len(x_iwae)} test images. "
             f"Training time as stored in the checkpoint (measured where it was trained)")
    header = ["latent k", "params", "epochs", "test −ELBO (nats)", "−reconstruction", "KL",
              f"−L_1000 (first {len(x_iwae)})", "training time", "time / epoch", "trained on"]
    return title, header, rows
