"""Command line: ``python -m course_lib <command>``.

Commands:
  run-notebooks [NAMES...] [--full] [--html DIR]   execute notebooks top to bottom (FAST by default)
  info                                             versions, device, FAST, where data and caches live
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run-notebooks", help="execute notebooks top to bottom")
    p.add_argument("names", nargs="*", help="substrings of notebook names (default: all)")
    p.add_argument("--full", action="store_true", help="full mode instead of FAST")
    p.add_argument("--html", metavar="DIR", help="also export executed notebooks as HTML into DIR")
    p.set_defaults(func=_run_notebooks)
    sub.add_parser("info", help="versions, device, modes, paths").set_defaults(func=_info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
