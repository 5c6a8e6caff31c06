"""Steps per second of a toy MLP and a small conv net with 1 vs all CPU threads, idle and busy.

Run: .venv/bin/python bench/bench_threads.py   (prints a markdown table)
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import torch
from torch import nn


def _burn(stop):
    x = 0.0
    while not stop.is_set():
        x += 1.0


def _steps_per_second(model, batch, seconds=1.5):
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        opt.zero_grad()
        loss = model(batch).pow(2).mean()
        loss.backward()
        opt.step()
        n += 1
    return n / (time.perf_counter() - t0)


def main():
    torch.manual_seed(0)
    models = {
        "toy MLP 3x128, batch 256": (nn.Sequential(nn.Linear(3, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(),
                                                   nn.Linear(128, 2)), torch.randn(256, 3)),
        "conv net 28x28, batch 128": (nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.SiLU(),
                                                    nn.Conv2d(32, 32, 3, padding=1), nn.SiLU(), nn.Flatten(),
                                                    nn.Linear(32 * 28 * 28, 10)), torch.randn(128, 1, 28, 28)),
    }
    cores = os.cpu_count() or 1
    print(f"| model | load | 1 thread (steps/s) | {cores} threads (steps/s) |")
    print("|---|---|---|---|")
    for busy in (False, True):
        stop = mp.Event()
        burner = mp.Process(target=_burn, args=(stop,)) if busy else None
        if burner:
            burner.start()
        for name, (model, batch) in models.items():
            rates = []
            for n in (1, cores):
                torch.set_num_threads(n)
                rates.append(_steps_per_second(model, batch))
            print(f"| {name} | {'one core busy' if busy else 'idle'} | {rates[0]:.0f} | {rates[1]:.0f} |")
        if burner:
            stop.set()
            burner.join()


if __name__ == "__main__":
    main()
