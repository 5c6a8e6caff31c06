"""Bench section of notebook 07: the shipped MNIST U-Net's training time and the quality of its samples.

Quality is a Fréchet distance (an "FID" for MNIST): Gaussians are fitted to the 128 penultimate-layer features
of the kit's MNIST classifier (``course_lib.mnist_models.MNISTClassifier``, its test accuracy is printed) for
N_SAMPLES generated digits and for N_REF held-out test digits, and d^2 between them is reported. The floor is
the same distance for N_SAMPLES *real* test digits (disjoint from the reference set; both drawn at random from
the test set): a plug-in Fréchet distance is biased upwards at small sample sizes, so only the gap above the
floor is the model's.

N_SAMPLES = 256 keeps the section at ~5 minutes on 2 CPU cores: each sample costs one U-Net call per step,
T = 500 for ancestral sampling and 10 + 25 + 50 + 100 for the DDIM runs. ``COURSE_BENCH_MNIST_SAMPLES``
overrides it (e.g. 1000 on a GPU).
"""

from __future__ import annotations

import os
import time

import torch
from _harness import fmt_seconds, section

N_SAMPLES = int(os.environ.get("COURSE_BENCH_MNIST_SAMPLES", "256"))
N_REF = 5000
DDIM_STEPS = (10, 25, 50, 100)
SEED = 0


@section("diffusion_mnist")
def diffusion_mnist():
    from course_lib import mnist_models as mm
    from course_lib import mnist_tensors, threads_for
    from course_lib.samplers import ancestral_sample, ddim_sample

    header = ["what", "steps", "images", "time", "Fréchet distance"]
    missing = [name for name, cfg in ((mm.DENOISER_NAME, mm.mnist_diffusion_config()),
                                      (mm.CLASSIFIER_NAME, mm.mnist_classifier_config()))
               if not mm._available(name, cfg)]
    if missing:
        return ("Diffusion on MNIST (notebook 07)", header,
                [[f"no weights for {', '.join(missing)}: run `python -m course_lib.mnist_models "
                  "--train-pretrained`", "-", "-", "-", "-"]])
    dev = torch.device("cpu")
    model, info = mm.load_or_train_mnist_denoiser(fast=False, dev=dev, progress=False)
    clf, clf_info = mm.load_or_train_mnist_classifier(fast=False, dev=dev, progress=False)
    schedule = mm.mnist_schedule(model.config)
    cfg, meta = model.config, info.meta

    x_test, y_test = mnist_tensors("test")
    x_test = mm.to_model_scale(x_test)
    accuracy = mm.classifier_accuracy(clf, x_test, y_test)
    # a random split: MNIST's test set is ordered (its first 5,000 digits come from cleaner writers than the
    # last 5,000), so the first half against the second would put the floor far too high
    perm = torch.randperm(x_test.shape[0], generator=torch.Generator().manual_seed(SEED))
    reference = mm.classifier_features(clf, x_test[perm[:N_REF]])
    floor_set = x_test[perm[N_REF:N_REF + N_SAMPLES]]

    from course_lib.fid import frechet_distance

    def fd(images):
        return frechet_distance(mm.classifier_features(clf, images.clamp(-1, 1)), reference)

    rows = [
        [f"U-Net training ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, batch "
         f"{cfg['batch_size']}, {meta.get('autocast', cfg.get('precision'))} autocast, {meta.get('threads', '?')} "
         f"thread(s), from the checkpoint)", str(meta.get("steps", cfg["steps"])),
         f"{meta.get('steps', cfg['steps']) * cfg['batch_size']:,} draws", fmt_seconds(meta.get("train_seconds", 0.0))
         + f" on {meta.get('device', '?')} ({meta.get('cpu_seconds', 0.0) / 60:.0f} CPU-min)", "-"],
        [f"classifier training (test accuracy {accuracy:.2%} on 10,000 digits)", str(clf_info.meta.get("steps", "?")),
         "-", fmt_seconds(clf_info.meta.get("train_seconds", 0.0)), "-"],
        [f"real test digits (the floor: {N_SAMPLES} vs {N_REF} other test digits)", "-", str(N_SAMPLES), "-",
         f"{fd(floor_set):.2f}"],
    ]
    x_T = torch.randn(N_SAMPLES, 1, 28, 28, generator=torch.Generator().manual_seed(SEED))
    runs = [("ancestral (DDPM), clip x0 to [-1, 1]", schedule.T,
             lambda: ancestral_sample(model, schedule, x_T=x_T, generator=torch.Generator().manual_seed(SEED + 1),
                                      clip_x0=1.0))]
    runs += [("DDIM (eta = 0), clip x0 to [-1, 1]", s,
              lambda s=s: ddim_sample(model, schedule, steps=s, x_T=x_T, clip_x0=1.0)) for s in DDIM_STEPS]
    with threads_for(model):
        threads = torch.get_num_threads()
        for name, steps, run in runs:
            t0 = time.perf_counter()
            samples = run()
            seconds = time.perf_counter() - t0
            rows.append([name, str(steps), str(N_SAMPLES), fmt_seconds(seconds), f"{fd(samples):.2f}"])
    title = (f"Diffusion on MNIST (notebook 07): cosine schedule T = {schedule.T}; Fréchet distance d² in the 128 "
             f"features of the kit's CNN classifier, {N_SAMPLES} images vs {N_REF} held-out test digits; sampling on "
             f"{threads} CPU thread(s), same x^T for every sampler")
    return title, header, rows
