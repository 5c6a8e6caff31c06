"""`make bench`: speed and quality figures of the kit, printed as markdown tables.

Sections live in ``bench/section_*.py`` (each registers functions with ``@section(name)``); later
parts of the course add files there. ``python bench/run.py`` runs all; ``python bench/run.py core``
one. ``bench/bench_threads.py`` is separate: it measures the CPU thread policy.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import SECTIONS  # noqa: E402


def main(argv: list[str]) -> int:
    for path in sorted(HERE.glob("section_*.py")):
        importlib.import_module(path.stem)
    names = argv or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        print(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}", file=sys.stderr)
        return 2
    import torch

    print(f"_machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}_\n")
    for name in names:
        title, header, rows = SECTIONS[name]()
        print(f"### {title}\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
