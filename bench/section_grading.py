"""Bench section of the grader: what the sandbox costs (``python bench/run.py grading``).

- start-up: from starting a worker to its first answer (``bwrap`` + Python + torch + IPython), in the sandbox and
  without it (``--no-sandbox``): the difference is the sandbox's own cost per submission;
- a class: 30 submissions of one notebook (the master's solutions, FAST mode), graded with 2 jobs, against
  running the same 30 notebooks plainly in Jupyter kernels (nbclient, 2 at a time, no checks).

``COURSE_BENCH_NOTEBOOK`` (default 04) picks the notebook, ``COURSE_BENCH_CLASS`` (default 30) the class size.
The load average before and after is in the table: two cores are easily shared.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _harness import section


def _startup(sandbox: bool, repeat: int = 5) -> list[float]:
    import nbformat

    from course_lib.grader import GradeOptions, Worker
    from course_lib.sandbox import check_bwrap

    bwrap = check_bwrap() if sandbox else None
    nb = nbformat.writes(nbformat.v4.new_notebook()).encode()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        w = Worker("empty.ipynb", nb, GradeOptions(sandbox=sandbox), bwrap)
        w.request({"op": "cell", "source": "1 + 1", "timeout": 30}, timeout=30)
        times.append(time.perf_counter() - t0)
        w.close()
    return times


@section("grading")
def grading_cost():
    import shutil

    from course_lib._notebooks import NOTEBOOK_DIR, run_notebook
    from course_lib.grader import grade_folder

    name = os.environ.get("COURSE_BENCH_NOTEBOOK", "04")
    n = int(os.environ.get("COURSE_BENCH_CLASS", "30"))
    master = next(NOTEBOOK_DIR.glob(f"{name}_*.ipynb"))
    rows = []
    load0 = os.getloadavg()[0]
    sb, plain = _startup(True), _startup(False)
    rows.append(["worker start-up, sandboxed (bwrap)", f"{statistics.median(sb):.2f} s (median of {len(sb)})", ""])
    rows.append(["worker start-up, --no-sandbox", f"{statistics.median(plain):.2f} s (median of {len(plain)})", ""])
    rows.append(["the sandbox's own cost per start", f"{statistics.median(sb) - statistics.median(plain):+.2f} s", ""])
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "subs"
        for i in range(n):
            (subs / f"student{i:02d}").mkdir(parents=True)
            shutil.copy(master, subs / f"student{i:02d}" / master.name)
        t0 = time.perf_counter()
        graded = grade_folder(subs, Path(tmp) / "grades.csv", master=master, jobs=2, log=None)
        t_grade = time.perf_counter() - t0
        full = sum(1 for r in graded if r["exercise"] != "run" and r["points"] == r["max_points"])
        exs = sum(1 for r in graded if r["exercise"] != "run")
        t0 = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda p: run_notebook(p, fast=True), [subs / f"student{i:02d}" / master.name
                                                                 for i in range(n)]))
        t_plain = time.perf_counter() - t0
    rows.append([f"grade {n} submissions of {master.stem} (2 jobs)", f"{t_grade:.0f} s ({t_grade / n:.1f} s each)",
                 f"{full} of {exs} exercises full marks"])
    rows.append([f"run the same {n} notebooks plainly (nbclient, 2 at a time)",
                 f"{t_plain:.0f} s ({t_plain / n:.1f} s each)", f"grading / plain = {t_grade / t_plain:.2f}"])
    rows.append(["load average (1 min) before / after", f"{load0:.2f} / {os.getloadavg()[0]:.2f}", ""])
    return "Grading: the sandbox's cost", ["what", "time", "note"], rows
