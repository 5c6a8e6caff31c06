"""Lecture mode: ``python -m course_lib lecture 05`` presents a notebook as slides in JupyterLab, widgets live.

The slides are jupyterlab-slideshow's deck (it presents inside the notebook panel, so ipywidgets 8 and ipympl
work as in the notebook; jupyterlab-rise's separate page shows no ipywidgets 8 widget). The steps:

1. ``resolve("05")`` finds ``notebooks/05_*.ipynb``;
2. ``check_models`` loads that notebook's models from the ``course_lib.prepare`` registry, the way
   ``python -m course_lib prepare`` does (from the cache or the shipped weights in seconds; whatever is missing is
   trained now, not in front of the class), and stops on a failure;
3. ``lecture_copy`` writes the notebook to ``build/lecture/`` for presenting: the master stays free of outputs,
   slide metadata is put the way the deck reads it (a continuation cell, RISE's ``"-"``, has no slide type:
   the deck would leave a ``"-"`` cell off every slide), and a cell tagged ``hide-input`` gets its code
   collapsed (``metadata.jupyter.source_hidden``: JupyterLab shows its first line and an ellipsis, a click opens it);
4. ``command`` starts JupyterLab with its own settings and workspaces in ``build/lecture/`` (``write_settings``: the
   deck switched on, lecture fonts, every cell kept in the page) and ``COURSE_LECTURE=1`` for the kernels (large
   fonts and thick lines in the figures), and opens the copy.

In the deck: run the cells (Run > Run All Cells, or Shift+Enter slide by slide), step with the arrows at the
bottom right (or the arrow keys once a cell, not a widget, has focus), Escape leaves the deck, the deck
button on the notebook's toolbar brings it back.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from ._notebooks import NOTEBOOK_DIR, notebook_paths

__all__ = ["HIDE_INPUT_TAG", "LectureError", "check_models", "command", "lecture_copy", "main", "resolve",
           "lecture_settings", "write_settings"]

REPO = NOTEBOOK_DIR.parent
LECTURE_DIR = REPO / "build" / "lecture"
HIDE_INPUT_TAG = "hide-input"

#: Lecture fonts (px): JupyterLab's theme overrides; the figures grow with COURSE_LECTURE=1.
FONTS = {"content-font-size1": "20px", "code-font-size": "16px", "ui-font-size1": "16px"}


class LectureError(Exception):
    """The lecture cannot start; the message says why and what to do."""


def resolve(number: str, directory: str | os.PathLike | None = None) -> Path:
    """The notebook ``NN_*.ipynb`` for ``number`` ("05", "5" or "05_posterior"); LectureError names the choices."""
    paths = notebook_paths(directory)
    choices = ", ".join(p.name for p in paths) or "none"
    m = re.fullmatch(r"(\d{1,2})(_.*)?", str(number).strip().removesuffix(".ipynb"))
    if m:
        hits = [p for p in paths if p.name.startswith(f"{int(m.group(1)):02d}_" + (m.group(2) or "")[1:])]
        if len(hits) == 1:
            return hits[0]
    raise LectureError(f"no notebook {number!r}: give its number, one of {choices}")


def check_models(path: Path, *, fast: bool, log=print) -> list[dict]:
    """Load (or, if missing, train) the notebook's registered models, as ``python -m course_lib prepare`` does;
    returns its summary. LectureError when one fails."""
    from . import prepare as _prepare

    number = path.name[:2]
    entries = [e for e in _prepare.registry(log) if e.notebook == number]
    if not entries:
        return []
    summary = _prepare.prepare(fast=fast, progress=False, entries=entries, log=log)
    failed = [f"{s['name']}: {s['message']}" for s in summary if s["source"] == "failed"]
    if failed:
        raise LectureError(f"{path.name}: {len(failed)} model(s) could not be prepared ("
                           + "; ".join(failed) + "); fix that, or run `python -m course_lib prepare` to see why")
    return summary


def lecture_copy(path: Path, out_dir: str | os.PathLike = LECTURE_DIR) -> Path:
    """Write the notebook for presenting into ``out_dir`` (replaced if there) and return its path.

    Outputs are cleared; ``"-"`` slide types are removed (continuation: jupyterlab-slideshow reads only a missing
    type that way, RISE and nbconvert read both); cells tagged ``hide-input`` get ``jupyter.source_hidden``;
    links to the notebooks' own ``*.md`` files are pointed back at ``notebooks/``.
    """
    out_dir = Path(out_dir)
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    local = {p.name for p in Path(path).parent.glob("*.md")}
    back = Path(os.path.relpath(Path(path).parent, out_dir)).as_posix()
    for cell in nb["cells"]:
        meta = cell.setdefault("metadata", {})
        show = meta.get("slideshow")
        if isinstance(show, dict) and show.get("slide_type") == "-":
            del show["slide_type"]
            if not show:
                del meta["slideshow"]
        if HIDE_INPUT_TAG in meta.get("tags", []):
            meta.setdefault("jupyter", {})["source_hidden"] = True
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        elif cell["cell_type"] == "markdown" and local:
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = re.sub(r"\]\(([^)/#\s]+\.md)(#[^)]*)?\)",
                                    lambda m: f"]({back}/{m.group(1)}{m.group(2) or ''})" if m.group(1) in local
                                    else m.group(0), src)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / Path(path).name
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def lecture_settings() -> dict:
    """The lecture's JupyterLab user settings, by plugin: written afresh at each start into ``build/lecture/``, so
    the lecturer's own settings are neither used nor changed (theme font sizes work only as user settings)."""
    return {
        "jupyterlab-slideshow:plugin": {"active": True},  # the deck is on when the notebook opens
        "@jupyterlab/apputils-extension:themes": {"overrides": dict(FONTS)},
        "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},  # every cell in the page
        "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    }


def write_settings(settings_dir: Path) -> None:
    """Write ``lecture_settings()`` as JupyterLab user-settings files under ``settings_dir``."""
    for plugin, values in lecture_settings().items():
        package, name = plugin.split(":")
        f = Path(settings_dir) / package / f"{name}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values, indent=1), encoding="utf-8")


def command(notebook: Path, *, settings_dir: Path, port: int | None = None, no_browser: bool = False,
            token: str | None = None, extra: list[str] = ()) -> list[str]:
    """The ``jupyter lab`` command line that presents ``notebook`` (a path under the repository)."""
    rel = notebook.resolve().relative_to(REPO).as_posix()
    workspaces = Path(settings_dir).parent / "workspaces"
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={REPO}",
           f"--LabApp.user_settings_dir={settings_dir}", f"--LabApp.workspaces_dir={workspaces}",
           f"--LabApp.default_url=/lab/tree/{quote(rel)}"]
    if port is not None:
        cmd += [f"--port={port}", "--ServerApp.port_retries=0"]
    if no_browser:
        cmd.append("--no-browser")
    if token is not None:
        cmd.append(f"--IdentityProvider.token={token}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root
    return cmd + list(extra)


def main(argv: list[str] | None = None) -> int:
    """``python -m course_lib lecture NN [--port P] [--no-browser] [--skip-models] [-- JUPYTER LAB ARGS]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m course_lib lecture", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", help="the notebook's number, e.g. 05")
    parser.add_argument("--port", type=int, default=None, help="the port (default 8888, else the next free one)")
    parser.add_argument("--no-browser", action="store_true", help="start the server only; open the printed URL")
    parser.add_argument("--token", default=None, help="the server's token (default: a random one)")
    parser.add_argument("--skip-models", action="store_true", help="do not load the notebook's models first")
    parser.add_argument("--dry-run", action="store_true", help="print the command line and stop")
    args = parser.parse_args(argv)
    from ._runtime import fast_mode

    try:
        path = resolve(args.notebook)
        if not (args.skip_models or args.dry_run):
            check_models(path, fast=fast_mode())
    except LectureError as exc:
        print(f"lecture: {exc}", file=sys.stderr)
        return 2
    settings = LECTURE_DIR / "user-settings"
    cmd = command(LECTURE_DIR / path.name, settings_dir=settings, port=args.port, no_browser=args.no_browser,
                  token=args.token, extra=extra)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    copy = lecture_copy(path, LECTURE_DIR)
    write_settings(settings)
    print(f"presenting {copy}, a copy of {path.name} (its outputs stay out of the master notebook)")
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, COURSE_LECTURE="1"))
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # JupyterLab got it too and asks whether to stop
            continue


if __name__ == "__main__":
    sys.exit(main())
