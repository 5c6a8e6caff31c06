"""Every notebook in notebooks/ runs top to bottom in FAST mode (new notebooks join automatically)."""

import pytest

from course_lib._notebooks import notebook_paths, run_notebook

NOTEBOOKS = notebook_paths()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(path):
    nb, _ = run_notebook(path, fast=True)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
