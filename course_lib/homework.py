"""Homework: the student version of the notebooks, and grading a folder of submissions.

Conventions in the master notebooks (see CONTRIBUTING.md):

- **Solution**: in a code cell, the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's
  markers). The student version replaces them, at the marker's indentation, by
  ``# YOUR CODE HERE`` and ``raise NotImplementedError("Exercise N (name): ...")`` — nbgrader's stub, plus the
  exercise number. N is read from the nearest "Exercise N" in the markdown above (else counted); name is the
  function the cell defines. In a markdown cell the block becomes "YOUR ANSWER HERE".
- **Check**: a code cell calling ``check_...(`` (or tagged ``check``) after an exercise's solution cell. It
  stays in the student version; it is worth 1 point, or ``metadata["points"]``.
- **Hidden test**: a code cell tagged ``hidden-test`` (1 point, or ``metadata["points"]``), or the lines between
  ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` in a check cell. Removed from the student version,
  run by the grader. Checks and hidden tests belong to the exercise whose solution cell comes last before them.

The student version also gets ``%load_ext course_lib.checks`` at the end of its first code cell: a cell that
needs an unfinished exercise prints "finish exercise N first" instead of stopping the notebook
(``course_lib.checks.load_ipython_extension``). Outputs and execution counts are cleared, and cells without RISE
slide metadata get it (``slides.add_slide_metadata``; the master notebooks carry it already,
``python -m course_lib slides`` adds it to a new one).

Grading (``grade_folder``, ``grade_notebook``) is in ``course_lib.grader``: the submission runs in a sandbox, the
master's checks and hidden tests run in the grader against stand-ins for the student's functions.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .slides import add_slide_metadata

__all__ = [
    "Exercise", "add_slide_metadata", "block_lines", "build_student", "cell_tags", "clear_solutions", "exercises",
    "leaked_solution_lines", "replace_blocks", "solution_lines", "student_notebook",
]

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
HIDDEN_TAG, CHECK_TAG = "hidden-test", "check"
EXTENSION_LINE = ('# runs the notebook before every exercise is done: cells that need one say "finish exercise N first"'
                  "\n%load_ext course_lib.checks")
_CHECK_CALL = re.compile(r"\bcheck_\w+\s*\(")
_EXERCISE_HEADING = re.compile(r"Exercise\s+(\d+)")
_DEF = re.compile(r"^\s*def\s+(\w+)\s*\(", re.MULTILINE)


# ====================================================================== reading the master notebooks
@dataclass
class Exercise:
    """One exercise of a master notebook: its solution cell and the cells that test it."""

    number: int
    name: str                  # the function the solution cell defines ("" if none)
    cell: int                  # index of the solution cell
    tests: list[tuple[int, float]] = field(default_factory=list)  # (cell index, points)

    @property
    def max_points(self) -> float:
        return sum(p for _, p in self.tests)


def cell_tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _is_solution(cell) -> bool:
    return BEGIN_SOLUTION in cell.source


def _is_test(cell) -> bool:
    if cell.cell_type != "code" or _is_solution(cell):
        return False
    tags = cell_tags(cell)
    return HIDDEN_TAG in tags or CHECK_TAG in tags or BEGIN_HIDDEN in cell.source or bool(
        _CHECK_CALL.search(cell.source))


def _points(cell) -> float:
    p = cell.get("metadata", {}).get("points", 1)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0:
        raise ValueError(f"cell metadata 'points': expected a number >= 0, got {p!r}")
    return float(p)


def exercises(nb) -> list[Exercise]:
    """The exercises of a master notebook in order, each with its check and hidden-test cells."""
    out: list[Exercise] = []
    heading: int | None = None
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            found = _EXERCISE_HEADING.findall(cell.source)
            if found:
                heading = int(found[-1])
            if _is_solution(cell):
                out.append(Exercise(heading if heading is not None else len(out) + 1, "", i))
                heading = None
        elif _is_solution(cell):
            m = _DEF.search(cell.source.split(BEGIN_SOLUTION)[0])
            number = heading if heading is not None else (out[-1].number + 1 if out else 1)
            out.append(Exercise(number, m.group(1) if m else "", i))
            heading = None
        elif _is_test(cell) and out:
            out[-1].tests.append((i, _points(cell)))
    return out


def replace_blocks(source: str, begin: str, end: str, stub) -> str:
    """Replace each block of lines from ``begin`` to ``end`` (inclusive) by ``stub(indent)`` (a list of lines)."""
    lines = source.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == begin:
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            j = i + 1
            while j < len(lines) and lines[j].strip() != end:
                if lines[j].strip() == begin:
                    raise ValueError(f"{begin!r} inside another {begin!r} block (line {j + 1})")
                j += 1
            if j == len(lines):
                raise ValueError(f"{begin!r} on line {i + 1} has no matching {end!r}")
            out.extend(stub(indent))
            i = j + 1
        else:
            if lines[i].strip() == end:
                raise ValueError(f"{end!r} on line {i + 1} without a {begin!r} before it")
            out.append(lines[i])
            i += 1
    return "\n".join(out)


def clear_solutions(source: str, number: int, name: str = "", *, markdown: bool = False) -> str:
    """``source`` with every solution block replaced by the stub of exercise ``number``."""
    if markdown:
        return replace_blocks(source, BEGIN_SOLUTION, END_SOLUTION, lambda indent: [f"{indent}YOUR ANSWER HERE"])
    what = f"Exercise {number}" + (f" ({name})" if name else "")
    message = f"{what}: replace these two lines with your solution"
    return replace_blocks(source, BEGIN_SOLUTION, END_SOLUTION, lambda indent: [
        f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError({message!r})"])


def block_lines(source: str, begin: str, end: str) -> list[str]:
    """The lines of ``source`` between each ``begin`` and ``end`` marker line (markers excluded), as they are."""
    lines, inside = [], False
    for line in source.split("\n"):
        if line.strip() == begin:
            inside = True
        elif line.strip() == end:
            inside = False
        elif inside:
            lines.append(line)
    return lines


def solution_lines(nb) -> list[str]:
    """Every non-blank line between the solution markers of ``nb``, stripped (what a student build must not contain)."""
    return [line.strip() for cell in nb.cells for line in block_lines(cell.source, BEGIN_SOLUTION, END_SOLUTION)
            if line.strip()]


def student_notebook(nb, *, slides: bool = True):
    """The student version of master notebook ``nb`` (a copy): solutions stubbed, hidden tests removed, outputs
    cleared, the "finish exercise N first" extension loaded in the first code cell."""
    nb = copy.deepcopy(nb)
    by_cell = {ex.cell: ex for ex in exercises(nb)}
    cells = []
    for i, cell in enumerate(nb.cells):
        if HIDDEN_TAG in cell_tags(cell):
            continue
        if i in by_cell:
            ex = by_cell[i]
            cell.source = clear_solutions(cell.source, ex.number, ex.name, markdown=cell.cell_type == "markdown")
        if cell.cell_type == "code":
            if BEGIN_HIDDEN in cell.source:
                cell.source = replace_blocks(cell.source, BEGIN_HIDDEN, END_HIDDEN, lambda indent: []).rstrip()
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        cells.append(cell)
    nb.cells = cells
    first = next((c for c in nb.cells if c.cell_type == "code"), None)
    if first is not None and EXTENSION_LINE not in first.source:
        first.source = first.source.rstrip("\n") + ("\n" if first.source.strip() else "") + EXTENSION_LINE
    nb.metadata.pop("widgets", None)
    if slides:
        add_slide_metadata(nb)
    return nb


def build_student(src_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike = "build/student",
                  names: list[str] | None = None) -> list[Path]:
    """Write the student version of every master notebook in ``src_dir`` (default: notebooks/) into ``out_dir``.

    ``names``: substrings selecting notebooks. Checks that no solution line is left. The folder's markdown notes
    (``*.md``: errata, notation, references), which the notebooks link to, are copied too. Returns the paths of the
    notebooks written.
    """
    import nbformat

    from ._notebooks import NOTEBOOK_DIR, notebook_paths

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebook_paths(src_dir):
        if names and not any(n in path.name for n in names):
            continue
        master = nbformat.read(path, as_version=4)
        try:
            student = student_notebook(master)
        except ValueError as exc:
            raise ValueError(f"{path.name}: {exc}") from None
        text = nbformat.writes(student)
        left = leaked_solution_lines(master, student)
        if left:
            raise ValueError(f"{path.name}: solution lines left in the student version: {left[:3]}")
        target = out / path.name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    if written:  # the notebooks link to the folder's notes (errata, notation, references): they come along
        for note in sorted((Path(src_dir) if src_dir is not None else NOTEBOOK_DIR).glob("*.md")):
            (out / note.name).write_text(note.read_text(encoding="utf-8"), encoding="utf-8")
    return written


def leaked_solution_lines(master, student) -> list[str]:
    """The solution lines of ``master`` found in ``student`` (lines that also occur outside the solutions excepted)."""
    outside = set()
    for cell in master.cells:
        inside = False
        for line in cell.source.split("\n"):
            if line.strip() in (BEGIN_SOLUTION, END_SOLUTION):
                inside = line.strip() == BEGIN_SOLUTION
            elif not inside:
                outside.add(line.strip())
    present = {line.strip() for cell in student.cells for line in cell.source.split("\n")}
    return [line for line in solution_lines(master) if line in present and line not in outside]


# ====================================================================== grading (course_lib.grader)
