"""The student version: solution stubs, hidden tests, the "finish exercise N first" guard, slide metadata (in the
master notebooks too, and jupyterlab-slideshow installed to show it), and the build of the real course notebooks
(no solution text left; each runs top to bottom in FAST mode and asks for every exercise)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_lib import checks
from course_lib._notebooks import notebook_paths, run_notebook
from course_lib.homework import (
    EXTENSION_LINE,
    add_slide_metadata,
    build_student,
    clear_solutions,
    exercises,
    leaked_solution_lines,
    solution_lines,
    student_notebook,
)

NOTEBOOKS = notebook_paths()
SOLVED = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    y = x + 1\n    ### END SOLUTION\n    return y"


def _nb(*cells):
    return new_notebook(cells=list(cells))


def test_stub_keeps_indentation_and_names_the_exercise():
    out = clear_solutions(SOLVED, 3, "f")
    assert out == ("def f(x):\n    y = 1\n    # YOUR CODE HERE\n"
                   "    raise NotImplementedError('Exercise 3 (f): replace these two lines with your solution')\n"
                   "    return y")
    ns = {}
    exec(out, ns)
    with pytest.raises(NotImplementedError) as info:
        ns["f"](1)
    assert checks.unfinished_exercise(info.value) == 3


def test_two_blocks_and_top_level_solution():
    src = "### BEGIN SOLUTION\na = 1\n### END SOLUTION\nb = 2\n### BEGIN SOLUTION\nc = 3\n### END SOLUTION"
    out = clear_solutions(src, 1)
    assert out.count("raise NotImplementedError('Exercise 1:") == 2 and "b = 2" in out and "a = 1" not in out


@pytest.mark.parametrize("src", ["### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION",
                                 "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"])
def test_unbalanced_markers_are_an_error(src):
    with pytest.raises(ValueError, match="SOLUTION"):
        clear_solutions(src, 1)


def test_markdown_solution():
    assert clear_solutions("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION", 1, markdown=True) == \
        "Why?\nYOUR ANSWER HERE"


def test_exercises_hidden_tests_and_points():
    nb = _nb(new_code_cell("import math"),
             new_markdown_cell("### Exercise 4 — f"),
             new_code_cell(SOLVED),
             new_code_cell("checks.nb01.check_f(f)"),
             new_code_cell("assert f(1) == 2", metadata={"tags": ["hidden-test"], "points": 3}),
             new_code_cell("print(f(2))"),
             new_code_cell("def g():\n    ### BEGIN SOLUTION\n    return 0\n    ### END SOLUTION"),
             new_code_cell("assert g() == 0\n### BEGIN HIDDEN TESTS\nassert g() + 1 == 1\n### END HIDDEN TESTS",
                           metadata={"tags": ["check"]}))
    exs = exercises(nb)
    assert [(e.number, e.name, e.cell, e.tests) for e in exs] == [
        (4, "f", 2, [(3, 1.0), (4, 3.0)]), (5, "g", 6, [(7, 1.0)])]  # numbered from the heading, then counted
    student = student_notebook(nb)
    sources = [c.source for c in student.cells]
    assert len(sources) == len(nb.cells) - 1 and "assert f(1) == 2" not in "\n".join(sources)
    assert sources[-1] == "assert g() == 0"  # the hidden block is gone, the visible check stays
    assert "Exercise 5 (g)" in sources[-2]
    assert sources[0] == "import math\n" + EXTENSION_LINE
    assert leaked_solution_lines(nb, student) == [] and leaked_solution_lines(nb, nb) == ["y = x + 1", "return 0"]


def _run_guarded(cells: list[str]) -> tuple[dict, list[str]]:
    """Run cells like the student version's kernel does (through the AST guard); returns (namespace, results)."""
    ns: dict = {}
    results = []
    guard = checks._GuardUnfinished()
    for src in cells:
        tree = guard.visit(ast.parse(src))
        exec(compile(tree, "<cell>", "exec"), ns)
        results.append(ns.get(guard.RESULT))
    return ns, results


def test_guard_prints_finish_first_and_keeps_other_errors(capsys):
    stub = clear_solutions(SOLVED, 2, "f")
    ns, results = _run_guarded([
        "import torch\n" + stub,
        "g = lambda x: f(x)\nvalue = g(1)\nother = 5",       # calls the stub: skipped, value and other blocked
        "value + 1",                                           # NameError on a blocked name: skipped too
        "1 + 1",                                               # a last expression is still the cell's value
    ])
    out = capsys.readouterr().out
    assert out.count("finish exercise 2 first") == 2 and "`value` was not computed" in out
    assert results[-1] == 2 and "value" not in ns
    with pytest.raises(ZeroDivisionError):
        _run_guarded(["1 / 0"])
    with pytest.raises(NameError):
        _run_guarded(["never_defined_anywhere + 1"])


def test_guard_recognises_a_check_that_wraps_the_error():
    try:
        try:
            raise NotImplementedError("Exercise 7 (h): replace these two lines")
        except NotImplementedError as exc:
            raise checks.ExerciseError("h: your function raised NotImplementedError") from exc
    except checks.ExerciseError as wrapped:
        assert checks.unfinished_exercise(wrapped) == 7
    assert checks.unfinished_exercise(NotImplementedError("not a stub")) is None


def test_slide_metadata():
    nb = _nb(new_markdown_cell("# Title"), new_code_cell("x = 1"), new_markdown_cell("### Part"),
             new_markdown_cell("text"), new_markdown_cell("## Kept", metadata={"slideshow": {"slide_type": "skip"}}))
    kinds = [c.metadata["slideshow"]["slide_type"] for c in add_slide_metadata(nb).cells]
    assert kinds == ["slide", "-", "subslide", "-", "skip"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_master_notebooks_have_slide_metadata(path: Path):
    """Every cell of every master notebook carries RISE metadata; ``python -m course_lib slides`` adds it."""
    nb = nbformat.read(path, as_version=4)
    missing = [i for i, c in enumerate(nb.cells) if "slide_type" not in c.metadata.get("slideshow", {})]
    assert not missing, (f"{path.name}: cells {missing} have no slide metadata; "
                         f"run `python -m course_lib slides {path.name[:2]}`")
    assert nb.cells[0].metadata["slideshow"]["slide_type"] == "slide"  # the title opens the show
    assert add_slide_metadata(nbformat.read(path, as_version=4)) == nb  # the command would change nothing


def test_slideshow_is_installed_for_jupyterlab():
    """The ``jupyter`` extra's jupyterlab-slideshow (the lecture mode of ``python -m course_lib lecture``): its lab
    extension is where JupyterLab loads extensions from (what ``jupyter labextension list`` reads)."""
    pytest.importorskip("jupyterlab", reason="the jupyter extra is not installed")
    from jupyter_core.paths import jupyter_path
    from jupyterlab_server.config import get_federated_extensions

    try:
        import jupyterlab_slideshow
    except ImportError:
        pytest.fail("jupyterlab-slideshow is not installed: pip install -e '.[jupyter]' (make setup) installs it")
    assert [p["dest"] for p in jupyterlab_slideshow._jupyter_labextension_paths()] == ["jupyterlab-slideshow"]
    assert "jupyterlab-slideshow" in get_federated_extensions(jupyter_path("labextensions"))


def test_stubs_match_nbgrader():
    """Our stub is nbgrader's ClearSolutions output plus the exercise number in the message."""
    preprocessors = pytest.importorskip("nbgrader.preprocessors")
    for path in notebook_paths():
        master = nbformat.read(path, as_version=4)
        theirs, _ = preprocessors.ClearSolutions(enforce_metadata=False).preprocess(
            nbformat.read(path, as_version=4), {})
        ours = student_notebook(master, slides=False)
        theirs = [c.source for c in theirs.cells if "hidden-test" not in c.metadata.get("tags", [])]
        ours = [re.sub(r"raise NotImplementedError\(.*\)", "raise NotImplementedError()", c.source) for c in ours.cells]
        ours[next(i for i, s in enumerate(ours) if EXTENSION_LINE in s)] = theirs[
            next(i for i, s in enumerate(ours) if EXTENSION_LINE in s)]
        assert ours == theirs, path.name


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    build_student(out_dir=out)
    return out


def test_student_build_has_no_solutions(student_dir: Path):
    masters = notebook_paths()
    assert masters and sorted(p.name for p in student_dir.glob("*.ipynb")) == [p.name for p in masters]
    assert (student_dir / "LECTURE_ERRATA.md").is_file()  # the notebooks link to it
    for path in masters:
        master = nbformat.read(path, as_version=4)
        text = (student_dir / path.name).read_text(encoding="utf-8")
        student = nbformat.reads(text, as_version=4)
        assert solution_lines(master), f"{path.name} has no exercise"
        assert leaked_solution_lines(master, student) == [], path.name
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text and '"hidden-test"' not in text
        for ex in exercises(master):
            assert f"Exercise {ex.number} ({ex.name})" in text, (path.name, ex.number)
        for cell in student.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
            assert "slideshow" in cell.metadata


@pytest.mark.slow
@pytest.mark.parametrize("master", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_student_version_runs_top_to_bottom(master: Path, student_dir: Path):
    """Each notebook's student version runs without an error in FAST mode and asks for every exercise."""
    nb, seconds = run_notebook(student_dir / master.name, fast=True)  # a cell that raises fails the run
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    missing = [ex.number for ex in exercises(nbformat.read(master, as_version=4))
               if f"finish exercise {ex.number} first" not in text]
    assert not missing, f"{master.name}: no 'finish exercise N first' for N in {missing}"
    print(f"{master.name}: student version ran in {seconds:.1f} s")


def test_student_command(tmp_path, monkeypatch, capsys):
    from course_lib.__main__ import main

    monkeypatch.setenv("STUDENT_DIR", str(tmp_path / "from_env"))
    assert main(["student", notebook_paths()[0].name[:2]]) == 0
    notes = [p.name for p in notebook_paths()[0].parent.glob("*.md")]
    assert sorted(p.name for p in (tmp_path / "from_env").iterdir()) == sorted([notebook_paths()[0].name, *notes])
    assert main(["student", "--out", str(tmp_path / "explicit"), "no-such-notebook"]) == 2
    assert "wrote" in capsys.readouterr().out
