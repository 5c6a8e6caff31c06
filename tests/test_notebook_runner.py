"""The notebook runner behind `make test`, `make html` and `python -m course_lib run-notebooks`."""

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from course_lib.__main__ import main
from course_lib._notebooks import notebook_paths, run_notebook


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_fast_flag_reaches_the_kernel_and_the_file_is_untouched(tmp_path):
    path = _notebook(tmp_path / "a.ipynb", "import course_lib\nprint('FAST', course_lib.FAST)")
    before = path.read_text()
    nb, seconds = run_notebook(path, fast=True, html_dir=tmp_path / "html")
    assert "FAST True" in nb.cells[0].outputs[0]["text"]
    assert path.read_text() == before and seconds > 0
    assert "FAST True" in (tmp_path / "html" / "a.html").read_text()
    nb, _ = run_notebook(path, fast=False)
    assert "FAST False" in nb.cells[0].outputs[0]["text"]


@pytest.mark.slow
def test_a_failing_cell_fails_the_run(tmp_path):
    path = _notebook(tmp_path / "bad.ipynb", "x = 1", "raise ValueError('boom in cell 2')")
    with pytest.raises(CellExecutionError, match="boom in cell 2"):
        run_notebook(path)


@pytest.mark.slow
def test_cli_reports_each_notebook(tmp_path, monkeypatch, capsys):
    _notebook(tmp_path / "01_ok.ipynb", "1 + 1")
    _notebook(tmp_path / "02_bad.ipynb", "1 / 0")
    monkeypatch.setattr("course_lib._notebooks.NOTEBOOK_DIR", tmp_path)
    assert main(["run-notebooks"]) == 1
    out = capsys.readouterr()
    assert "01_ok.ipynb: ok" in out.out and "02_bad.ipynb: FAILED" in out.err
    assert main(["run-notebooks", "nothing-matches"]) == 2


def test_notebook_paths_are_in_course_order(tmp_path):
    for name in ("02_b.ipynb", "01_a.ipynb", ".hidden.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in notebook_paths(tmp_path)] == ["01_a.ipynb", "02_b.ipynb"]
