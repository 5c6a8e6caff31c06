"""Shared pieces of the benchmark: the section registry, a timer, formatting."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

SECTIONS: dict[str, Callable[[], tuple[str, list[str], list[list[str]]]]] = {}


def section(name: str):
    """Register ``fn() -> (title, header, rows)`` as a section of ``make bench``."""
    def register(fn):
        SECTIONS[name] = fn
        return fn
    return register


def timeit(fn: Callable[[], object], *, repeat: int = 7, min_seconds: float = 0.05) -> float:
    """Median seconds per call over ``repeat`` rounds, each looping until ``min_seconds`` passed."""
    fn()
    rounds = []
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            if time.perf_counter() - t0 >= min_seconds:
                break
        rounds.append((time.perf_counter() - t0) / n)
    return statistics.median(rounds)


def latency(update: Callable[[object], object], values, *, warmup: int = 3) -> tuple[float, float]:
    """(median, 95th percentile) seconds of ``update(v)`` over a sweep of slider values."""
    values = list(values)
    for v in values[:warmup]:
        update(v)
    times = []
    for v in values:
        t0 = time.perf_counter()
        update(v)
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]


def fmt_seconds(s: float) -> str:
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.1f} s"


def widget_latency(view, control: str, values) -> tuple[float, float]:
    """(median, p95) seconds for one slider move of ``view``: compute, artist updates and a full draw.

    A connected JupyterLab front end fetches frames itself; headless, ipympl would also re-encode a
    PNG data URL on every draw, which no user waits for, so that is switched off while measuring.
    """
    canvas = view.fig.canvas
    if hasattr(canvas, "syncing_data_url"):
        canvas.syncing_data_url = False

    def move(v):
        view.update(**{control: v})
        view.fig.canvas.draw()
    return latency(move, values)


def widget_cpu_latency(view, control: str, values) -> float:
    """Median CPU seconds of this thread per slider move (update + full draw).

    Robust when other jobs share the cores, where wall-clock latency mostly measures the queue.
    """
    canvas = view.fig.canvas
    if hasattr(canvas, "syncing_data_url"):
        canvas.syncing_data_url = False
    times = []
    for v in values:
        t0 = time.thread_time()
        view.update(**{control: v})
        canvas.draw()
        times.append(time.thread_time() - t0)
    return statistics.median(times)
