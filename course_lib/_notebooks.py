"""Execute the course notebooks headlessly (tests, ``make html``, ``python -m course_lib run-notebooks``)."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_paths(directory: str | os.PathLike | None = None) -> list[Path]:
    """The course notebooks in order (``NN_name.ipynb``), skipping checkpoints."""
    d = Path(directory) if directory is not None else NOTEBOOK_DIR
    return sorted(p for p in d.glob("*.ipynb") if not p.name.startswith("."))


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
