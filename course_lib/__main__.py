"""Command line: ``python -m course_lib <command>``.

Commands:
  run-notebooks [NAMES...] [--full] [--html DIR]   execute notebooks top to bottom (FAST by default)
  info                                             versions, device, FAST, where data and caches live
  student [NAMES...] [--out DIR]                   the student version of the notebooks (default build/student)
  grade SUBMISSIONS_DIR --out grades.csv [--timeout S] [--check-timeout S] [--master PATH] [--jobs N]
        [--memory-mb M] [--no-sandbox]
                                                   run and score submitted notebooks, one CSV row per exercise
  prepare [NAMES...] [--fast | --full] [--list]    load or train every model the notebooks use, and compute their
                                                   cached sample sets (before a lecture)
  prepare --check [NAMES...] [--moves N]           time each widget's answer to a slider move on this machine
  lecture NN [--port P] [--no-browser] [--skip-models] [--dry-run] [-- LAB ARGS]
                                                   present a notebook as slides in JupyterLab, widgets live
  slides [NAMES...] [--overwrite]                  add RISE slide metadata to the master notebooks (headings)
  gpu-check [--device D] [--steps N] [--samples N] train, compare with the CPU and sample each MNIST model on the GPU
  train-pretrained [KEYS...] [--device D] [--list] retrain the weights that ship in course_lib/pretrained
                                                   (maintainers; keys from the registry in course_lib.prepare)
"""

from __future__ import annotations

import argparse
import sys


def _run_notebooks(args) -> int:
    from ._notebooks import notebook_paths, run_notebook

    paths = notebook_paths()
    if args.names:
        paths = [p for p in paths if any(n in p.name for n in args.names)]
        if not paths:
            print(f"no notebook matches {args.names}", file=sys.stderr)
            return 2
    failed = 0
    for p in paths:
        try:
            _, seconds = run_notebook(p, fast=not args.full, html_dir=args.html)
            print(f"{p.name}: ok in {seconds:.1f} s")
        except Exception as exc:  # report and go on with the others
            failed += 1
            print(f"{p.name}: FAILED: {str(exc)[-2000:]}", file=sys.stderr)
    return 1 if failed else 0


def _info(_args) -> int:
    import os

    import torch

    from . import FAST, cache_dir, device

    print(f"torch {torch.__version__}, device {device()}, FAST={FAST}")
    print(f"cache: {cache_dir()}")
    print(f"COURSE_DATA_DIR: {os.environ.get('COURSE_DATA_DIR', '(not set)')}")
    return 0


def _student(args) -> int:
    import os

    from .homework import build_student

    out = args.out or os.environ.get("STUDENT_DIR") or "build/student"
    try:
        paths = build_student(out_dir=out, names=args.names or None)
    except ValueError as exc:
        print(f"student build failed: {exc}", file=sys.stderr)
        return 1
    if not paths:
        print(f"no notebook matches {args.names}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"wrote {p}")
    return 0


def _grade(args) -> int:
    from .grader import SandboxUnavailable, grade_folder
    from .sandbox import Limits

    if args.no_sandbox:
        print("--no-sandbox: the submissions run WITHOUT isolation, with your permissions; every CSV row says so",
              file=sys.stderr)
    try:
        rows = grade_folder(args.submissions, args.out, master=args.master, timeout=args.timeout,
                            check_timeout=args.check_timeout, jobs=args.jobs, fast=not args.full,
                            sandbox=not args.no_sandbox, limits=Limits(memory_mb=args.memory_mb))
    except SandboxUnavailable as exc:
        print(f"grade: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(rows)} rows")
    return 0


def _prepare(args) -> int:
    from . import FAST
    from .prepare import prepare, registry

    if args.list:
        for e in registry():
            print(f"{e.name}  (notebook {e.notebook}{', sample set' if e.kind == 'samples' else ''})")
        return 0
    if args.check:
        from .prepare import check_widgets

        rows = check_widgets(n=args.moves, only=args.names or None)
        return 1 if any("error" in r for r in rows) else 0
    fast = True if args.fast else False if args.full else FAST
    summary = prepare(fast=fast, only=args.names or None)
    return 1 if any(s["source"] == "failed" for s in summary) else 0


def _train_pretrained(args) -> int:
    from .prepare import shipped_entries, train_pretrained

    if args.list:
        for key, entry in shipped_entries().items():
            print(f"{key}  ({entry.name}, notebook {entry.notebook})")
        return 0
    try:
        train_pretrained(args.keys or None, dev=args.device)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def _gpu_check(args) -> int:
    from .gpu_check import gpu_check

    try:
        gpu_check(args.device, steps=args.steps, n_samples=args.samples)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def _write_atomically(path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step: an interrupted write never leaves half a master notebook."""
    import os
    import tempfile
    from pathlib import Path

    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _slides(args) -> int:
    import nbformat

    from ._notebooks import notebook_paths
    from .slides import add_slide_metadata

    for path in notebook_paths():
        if args.names and not any(n in path.name for n in args.names):
            continue
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        after = nbformat.writes(add_slide_metadata(nb, overwrite=args.overwrite))
        if after != before:
            _write_atomically(path, after + ("\n" if not after.endswith("\n") else ""))
            print(f"{path.name}: slide metadata added")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lecture"]:  # its own parser: what follows `--` goes to jupyter lab
        from .lecture import main as lecture_main

        return lecture_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m course_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run-notebooks", help="execute notebooks top to bottom")
    p.add_argument("names", nargs="*", help="substrings of notebook names (default: all)")
    p.add_argument("--full", action="store_true", help="full mode instead of FAST")
    p.add_argument("--html", metavar="DIR", help="also export executed notebooks as HTML into DIR")
    p.set_defaults(func=_run_notebooks)
    sub.add_parser("info", help="versions, device, modes, paths").set_defaults(func=_info)
    p = sub.add_parser("student", help="build the student version of the notebooks")
    p.add_argument("names", nargs="*", help="substrings of notebook names (default: all)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: $STUDENT_DIR or build/student)")
    p.set_defaults(func=_student)
    p = sub.add_parser("grade", help="grade a folder of submitted notebooks into a CSV")
    p.add_argument("submissions",
                   help="SUBMISSIONS_DIR/<student>/<NN_name>.ipynb, or <student>.ipynb with --master FILE")
    p.add_argument("--out", default="grades.csv", help="the CSV to write (default grades.csv)")
    p.add_argument("--timeout", type=float, default=600, help="seconds for all of a notebook's cells (default 600)")
    p.add_argument("--check-timeout", type=float, default=60, help="seconds for each check or hidden test (60)")
    p.add_argument("--master", help="master notebook or folder of them (default: notebooks/)")
    p.add_argument("--jobs", type=int, default=1, help="notebooks graded at the same time (default 1)")
    p.add_argument("--full", action="store_true", help="run submissions in full mode instead of FAST")
    p.add_argument("--memory-mb", type=int, default=4096, help="address space of each submission (default 4096)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run submissions without bubblewrap (a Mac): no isolation, recorded in every CSV row")
    p.set_defaults(func=_grade)
    p = sub.add_parser("prepare", help="load or train every model the notebooks use, with a summary")
    p.add_argument("names", nargs="*", help="substrings of model names (default: all)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fast", action="store_true", help="the FAST-mode models (default: as COURSE_FAST says)")
    mode.add_argument("--full", action="store_true", help="the full-mode models")
    p.add_argument("--list", action="store_true", help="list the registered models and stop")
    p.add_argument("--check", action="store_true",
                   help="time each widget's response to a slider move on this machine (names: widget names) and stop")
    p.add_argument("--moves", type=int, default=12, help="slider moves timed per widget with --check (12)")
    p.set_defaults(func=_prepare)
    sub.add_parser("lecture", help="present notebook NN as slides in JupyterLab, widgets live (lecture NN --help)")
    p = sub.add_parser("slides", help="add RISE slide metadata to the master notebooks (# and ## headings)")
    p.add_argument("names", nargs="*", help="substrings of notebook names (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace slide types set by hand")
    p.set_defaults(func=_slides)
    p = sub.add_parser("gpu-check", help="train, compare with the CPU and sample each MNIST model on the GPU")
    p.add_argument("--device", default=None, help="default cuda; cpu runs the same checks on the CPU")
    p.add_argument("--steps", type=int, default=300, help="training steps per model (default 300)")
    p.add_argument("--samples", type=int, default=256, help="samples per denoiser (default 256)")
    p.set_defaults(func=_gpu_check)
    p = sub.add_parser("train-pretrained", help="retrain the shipped weights (course_lib/pretrained)")
    p.add_argument("keys", nargs="*", help="which models (default: all; --list shows them)")
    p.add_argument("--device", default=None, help="e.g. cpu or cuda (default: the best available)")
    p.add_argument("--list", action="store_true", help="list the shipped models and stop")
    p.set_defaults(func=_train_pretrained)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
