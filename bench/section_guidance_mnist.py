"""Bench section of notebook 08 on MNIST: guided samples judged by a held-out classifier, and sampling time.

For classifier guidance (notebook 07's unconditional U-Net + the noise-aware classifier, strength gamma) and
classifier-free guidance (the class-conditional U-Net, gamma = 1 + w), at each strength of
``guidance_models.sample_set_config``: PER_DIGIT samples per digit (25 DDIM steps with eta = 1), every image from
its own x^T and sampler noise (``guidance_sample_sets(..., independent=True)``: the notebook's sets share column j's
noise across the prompts, so at gamma = 0 their ten rows are copies of PER_DIGIT images), and
- "recognised": the share that the *judge* labels as the prompt digit. The judge is ``mnist_models``' clean
  classifier (trained on clean digits only, its test accuracy is printed), never the guidance classifier. At
  classifier guidance's gamma = 0 the prompt is ignored (the unconditional U-Net): the chance level, 10%;
- "diversity": mean pairwise distance of the judge's features within a digit's samples over the same for real
  test digits of that digit (1 = as varied as the data), averaged over digits;
- "Fréchet": the Fréchet distance between Gaussians fitted to the judge's features of all 10 x PER_DIGIT samples
  and of N_REF real test digits (lower = closer to the data; biased upwards at small sample sizes, so compare rows:
  "distinct images" gives how many each rests on, 10 x PER_DIGIT when no image is counted twice).
Then the time to draw 10 guided digits (one of each) with 25 DDIM steps, median of 5, as ``sample_guided_digits``
draws them by default (all cores for the U-Net; bf16 autocast where the CPU runs it natively), and in float32.
``COURSE_BENCH_GUIDANCE_PER_DIGIT`` overrides PER_DIGIT.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from _harness import fmt_seconds, section

PER_DIGIT = int(os.environ.get("COURSE_BENCH_GUIDANCE_PER_DIGIT", "40"))
N_REF = 5000


@section("guidance_mnist")
def guidance_mnist():
    from course_lib import guidance_models as gm
    from course_lib import mnist_models as mm
    from course_lib import mnist_tensors
    from course_lib._runtime import recommended_threads
    from course_lib.checkpoints import available
    from course_lib.training import autocast

    header = ["guidance", "strength", "recognised by the judge", "diversity", "Fréchet distance", "distinct images"]
    needed = ((mm.DENOISER_NAME, mm.mnist_diffusion_config()),
              (mm.COND_DENOISER_NAME, mm.mnist_diffusion_config(conditional=True)),
              (gm.NOISY_CLASSIFIER_NAME, gm.noisy_classifier_config()),
              (mm.CLASSIFIER_NAME, mm.mnist_classifier_config()))
    missing = [name for name, cfg in needed if not available(name, cfg)]
    title = "Guidance on MNIST (notebook 08)"
    if missing:
        return (title, header, [[f"no weights for {', '.join(missing)}: run `python -m course_lib "
                                 "train-pretrained`", "-", "-", "-", "-", "-"]])
    dev = torch.device("cpu")
    models = gm.load_guidance_models(fast=False, progress=False, dev=dev)
    judge, judge_info = models["judge"]
    x_test, y_test = mnist_tensors("test")
    x_test = mm.to_model_scale(x_test)
    g = torch.Generator().manual_seed(0)
    ref = torch.randperm(x_test.shape[0], generator=g)[:N_REF]
    judge_acc = mm.classifier_accuracy(judge, x_test, y_test)

    t0 = time.perf_counter()
    sets = gm.guidance_sample_sets(models, fast=False, progress=False, per_digit=PER_DIGIT, independent=True)
    seconds = time.perf_counter() - t0
    table = gm.tradeoff_table(sets, judge, (x_test[ref], y_test[ref]), frechet=True)
    names = {"classifier": "classifier guidance", "cfg": "classifier-free"}
    rows = []
    for kind in gm.GUIDANCE_KINDS:
        kind_rows = [r for r in table if r["kind"] == kind]
        best = max(r["recognised"] for r in kind_rows if not r["unconditional"])
        for r in kind_rows:
            strength = f"gamma = {r['gamma']:g}" + (f" (w = {r['gamma'] - 1:g})" if kind == "cfg" else "")
            if r["unconditional"]:
                strength += " (unconditional)"
                mark = " (chance: the prompt is ignored)"
            else:
                mark = " (best)" if r["recognised"] == best else ""
            rows.append([names[kind], strength, f"{r['recognised']:.1%}{mark}", f"{r['diversity']:.2f}",
                         f"{r['frechet']:.1f}", str(r["images"])])
    rows.append(["real test digits (floor)", "-", f"{judge_acc:.1%} (judge's test accuracy)", "1.00",
                 f"{_real_floor(judge, x_test, ref, g):.1f}", str(10 * PER_DIGIT)])

    digits = torch.arange(10)
    threads = recommended_threads(models["denoiser"][0])  # what sample_guided_digits runs with (fast_inference)
    _, native_bf16 = autocast("bf16", dev)
    for kind in gm.GUIDANCE_KINDS:
        for precision in ("bf16", "float32"):
            times = []
            for i in range(6):
                t1 = time.perf_counter()
                gm.sample_guided_digits(kind, models, digits, 3.0, 10, steps=25, precision=precision,
                                        generator=torch.Generator().manual_seed(i))
                times.append(time.perf_counter() - t1)
            how = ("default: bf16 autocast" if native_bf16 else "default: float32, no native bf16"
                   ) if precision == "bf16" else "float32"
            rows.append([f"time: 10 {names[kind]} digits, 25 DDIM steps (eta = 1)", "gamma = 3",
                         f"{fmt_seconds(statistics.median(times[1:]))} (target 1 s; {threads} threads, {how})",
                         "-", "-", "-"])
    note = (f"{PER_DIGIT} samples per digit and strength, {10 * PER_DIGIT} per row, each from its own starting and "
            f"sampler noise, drawn in {seconds / 60:.1f} min "
            f"(cached afterwards); judge = clean classifier, test accuracy {judge_acc:.2%}; Fréchet against {N_REF} "
            f"real test digits")
    return (f"{title}: {note}", header, rows)


def _real_floor(judge, x_test, ref, g) -> float:
    """The Fréchet distance of real test digits (as many as one row of samples, disjoint from the reference)."""
    from course_lib import mnist_models as mm

    mask = torch.ones(x_test.shape[0], dtype=torch.bool)
    mask[ref] = False
    rest = torch.nonzero(mask).squeeze(1)
    pick = rest[torch.randperm(rest.shape[0], generator=g)[:10 * PER_DIGIT]]
    return mm.mnist_frechet_distance(judge, x_test[pick], x_test[ref])
