"""Execute the course notebooks headlessly (tests, ``make html``, ``python -m course_lib run-notebooks``)."""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_paths(directory: str | os.PathLike | None = None) -> list[Path]:
    """The course notebooks in order (``NN_name.ipynb``), skipping checkpoints."""
    d = Path(directory) if directory is not None else NOTEBOOK_DIR
    return sorted(p for p in d.glob("*.ipynb") if not p.name.startswith("."))


# A code cell that names course_lib.widgets (import course_lib.widgets..., from course_lib.widgets
# import ..., from course_lib import widgets) makes the notebook a widget notebook.
_WIDGET_USE = re.compile(r"\bcourse_lib\.widgets\b|\bfrom\s+course_lib\s+import\s[^\n]*\bwidgets\b")


def uses_widgets(path: str | os.PathLike) -> bool:
    """True when a code cell of the notebook uses course_lib's widgets (unreadable: True, so it fails loudly)."""
    try:
        cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    except (ValueError, KeyError):
        return True
    for cell in cells:
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        if cell.get("cell_type") == "code" and _WIDGET_USE.search(src):
            return True
    return False


def widget_notebooks(directory: str | os.PathLike | None = None) -> list[Path]:
    """The notebooks (of ``notebook_paths(directory)``) that show one of course_lib's widgets."""
    return [p for p in notebook_paths(directory) if uses_widgets(p)]


@contextmanager
def _environ(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _static(nb):
    """A copy of ``nb`` whose widget outputs show their PNG snapshot (a static page cannot run widgets)."""
    import copy

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_MIME in data and "image/png" in data:
                del data[WIDGET_MIME]
    return nb


def run_notebook(path: str | os.PathLike, *, fast: bool = True, timeout: int = 1200,
                 html_dir: str | os.PathLike | None = None, kernel_name: str = "python3"):
    """Execute a notebook top to bottom in its own folder; returns ``(executed_notebook, seconds)``.

    ``fast`` sets ``COURSE_FAST`` for the kernel. A cell that raises stops the run with
    ``nbclient.exceptions.CellExecutionError`` naming the cell. ``html_dir``: also write an HTML export.
    The notebook file itself is never modified.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, store_widget_state=False,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    # The kernel inherits this process's environment; MPLBACKEND keeps figures inline and headless.
    with _environ(COURSE_FAST="1" if fast else "0", MPLBACKEND="module://matplotlib_inline.backend_inline"):
        client.execute()
    seconds = time.perf_counter() - t0
    if html_dir is not None:
        from nbconvert import HTMLExporter

        out = Path(html_dir)
        out.mkdir(parents=True, exist_ok=True)
        body, _ = HTMLExporter().from_notebook_node(_static(nb))
        (out / f"{path.stem}.html").write_text(body, encoding="utf-8")
    return nb, seconds
