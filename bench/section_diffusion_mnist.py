"""Bench section of notebook 07: the shipped MNIST U-Net's training and the quality of its samples (issue 14's table).

For N_SAMPLES generated digits per sampler, all started from the same x^T (ancestral sampling with all T = 500 steps,
deterministic DDIM, eta = 0, with 10, 25, 50 and 100 steps (``COURSE_BENCH_DDIM_STEPS`` overrides), and eta = 1 on
DDIM's 50-step grid):
- **confident**: the share the kit's held-out clean classifier (``mnist_models.MNISTClassifier``, its test accuracy is
  printed) calls some digit with probability >= 0.9, with its binomial standard error; beside it the same share for
  N_SAMPLES real test digits;
- **Fréchet distance** d² between Gaussians fitted to the classifier's 128 penultimate features of the samples and of
  N_REF held-out test digits; the floor is the same distance for N_SAMPLES *real* test digits (disjoint from the
  reference set, drawn at random from the test set): a plug-in Fréchet distance is biased upwards at small sample
  sizes, so only the gap above the floor is the model's. Ratios to the floor and to ancestral sampling are printed.

N_SAMPLES = 1000 (``COURSE_BENCH_MNIST_SAMPLES`` overrides). Sampling runs under ``fast_inference``: bfloat16
autocast where the CPU runs bf16 natively (``COURSE_BENCH_PRECISION=float32`` forces float32; the title says which):
~21 minutes on 2 cores.
"""

from __future__ import annotations

import os
import time

import torch
from _harness import fmt_seconds, section

N_SAMPLES = int(os.environ.get("COURSE_BENCH_MNIST_SAMPLES", "1000"))
N_REF = 5000


def _ddim_steps() -> tuple[int, ...]:
    """COURSE_BENCH_DDIM_STEPS, e.g. "10,25,50,100,500" (500: DDIM along every step of the chain, the ODE's limit)."""
    raw = os.environ.get("COURSE_BENCH_DDIM_STEPS", "10,25,50,100")
    try:
        steps = tuple(int(s) for s in raw.split(","))
    except ValueError:
        steps = ()
    if not steps or not all(1 <= s <= 500 for s in steps):
        raise ValueError(f"COURSE_BENCH_DDIM_STEPS: expected step counts in 1..500 separated by commas, got {raw!r}")
    return steps


SEED = 0


@section("diffusion_mnist")
def diffusion_mnist():
    from course_lib import fast_inference
    from course_lib import mnist_models as mm
    from course_lib.checkpoints import available
    from course_lib.data import mnist_model_tensors
    from course_lib.fid import frechet_distance
    from course_lib.samplers import ancestral_sample, ddim_sample, sample

    ddim_steps = _ddim_steps()

    header = ["what", "steps", "images", "time", "confident (≥ 0.9)", "Fréchet distance d²", "d² / floor",
              "d² / ancestral"]
    missing = [name for name, cfg in ((mm.DENOISER_NAME, mm.mnist_diffusion_config()),
                                      (mm.CLASSIFIER_NAME, mm.mnist_classifier_config()))
               if not available(name, cfg)]
    if missing:
        return ("Diffusion on MNIST (notebook 07)", header,
                [[f"no weights for {', '.join(missing)}: run `python -m course_lib train-pretrained`"] + ["-"] * 7])
    dev = torch.device("cpu")
    model, info = mm.load_or_train_mnist_denoiser(fast=False, dev=dev, progress=False)
    clf, clf_info = mm.load_or_train_mnist_classifier(fast=False, dev=dev, progress=False)
    schedule = mm.mnist_schedule(model.config)
    cfg, meta = model.config, info.meta
    precision = os.environ.get("COURSE_BENCH_PRECISION", "bf16")

    x_test, y_test = mnist_model_tensors("test")
    accuracy = mm.classifier_accuracy(clf, x_test, y_test)
    # a random split: MNIST's test set is ordered (its first 5,000 digits come from cleaner writers than the
    # last 5,000), so the first half against the second would put the floor far too high
    perm = torch.randperm(x_test.shape[0], generator=torch.Generator().manual_seed(SEED))
    reference = mm.classifier_features(clf, x_test[perm[:N_REF]])
    floor_set = x_test[perm[N_REF:N_REF + N_SAMPLES]]

    def fd(images):
        return frechet_distance(mm.classifier_features(clf, images.clamp(-1, 1)), reference)

    def sure(images):
        share, se = mm.confident_share(clf, images)
        return f"{share:.1%} ± {se:.1%}"

    floor = fd(floor_set)
    rows = [
        [f"U-Net training ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, batch "
         f"{cfg['batch_size']}, {cfg.get('weighting', 'none')} weights, EMA {cfg['ema_decay']}, "
         f"{meta.get('autocast', cfg.get('precision'))} autocast, {meta.get('threads', '?')} thread(s), "
         "from the checkpoint)", f"{meta.get('steps', cfg['steps']):,}",
         f"{meta.get('steps', cfg['steps']) * cfg['batch_size']:,} draws",
         fmt_seconds(meta.get("train_seconds", 0.0)) + f" on {meta.get('device', '?')} "
         f"({meta.get('cpu_seconds', 0.0) / 60:.0f} CPU-min)", "-", "-", "-", "-"],
        [f"classifier training (test accuracy {accuracy:.2%} on 10,000 digits)", str(clf_info.meta.get("steps", "?")),
         "-", fmt_seconds(clf_info.meta.get("train_seconds", 0.0)), "-", "-", "-", "-"],
        [f"real test digits (the floor: {N_SAMPLES} vs {N_REF} other test digits)", "-", str(N_SAMPLES), "-",
         sure(floor_set), f"{floor:.2f}", "1.00", "-"],
    ]
    x_T = torch.randn(N_SAMPLES, 1, 28, 28, generator=torch.Generator().manual_seed(SEED))
    runs = [("ancestral (DDPM), clip x0 to [-1, 1]", schedule.T,
             lambda: ancestral_sample(model, schedule, x_T=x_T, generator=torch.Generator().manual_seed(SEED + 1),
                                      clip_x0=1.0))]
    runs += [("DDIM (eta = 0), clip x0 to [-1, 1]", s,
              lambda s=s: ddim_sample(model, schedule, steps=s, x_T=x_T, clip_x0=1.0)) for s in ddim_steps]
    # the same 50-step grid with fresh noise at every step: what the stochastic steps buy at DDIM-50's cost
    runs.append(("eta = 1 on DDIM's 50-step grid, clip x0 to [-1, 1]", 50,
                 lambda: sample(model, schedule, steps=50, eta=1.0, x_T=x_T,
                                generator=torch.Generator().manual_seed(SEED + 1), clip_x0=1.0)))
    ancestral = None
    with fast_inference(model, precision) as bf16:
        threads = torch.get_num_threads()
        for name, steps, run in runs:
            t0 = time.perf_counter()
            samples = run()
            seconds = time.perf_counter() - t0
            d = fd(samples)
            ancestral = d if ancestral is None else ancestral
            rows.append([name, str(steps), str(N_SAMPLES), fmt_seconds(seconds), sure(samples), f"{d:.2f}",
                         f"{d / floor:.2f}", f"{d / ancestral:.2f}"])
    title = (f"Diffusion on MNIST (notebook 07): cosine schedule T = {schedule.T}; {N_SAMPLES} images per sampler from "
             f"the same x^T; Fréchet distance d² in the 128 features of the kit's CNN classifier against {N_REF} "
             f"held-out test digits; sampling on {threads} CPU thread(s), "
             f"{'bf16 autocast' if bf16 else 'float32'}")
    return title, header, rows
