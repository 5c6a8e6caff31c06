"""Grading a folder of submissions (``course_lib.grader.grade_folder``) on a tiny fixture notebook.

The fixture master (tests/fixtures/homework/hw_master.ipynb) has two exercises: kl_gaussian (its check, 1 point,
and a hidden test worth 2) and square (a check and a hidden test, 1 point each): 5 points in all. Six students
submit the student version with: the right solutions; nothing; wrong solutions (the KL without its 1/2 still
passes the hidden test at mu = 0, sigma = 1: 2 points); a notebook that raises, deletes the files in its working
directory and kills its kernel after exercise 1; a never-ending one (square loops forever, and so does the last
cell); one whose cell ignores the interrupt (SIGINT) and loops; and one student submits nothing. Each must
score what it earned, within its time limits, without stopping the others.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib.grader import grade_folder
from course_lib.homework import exercises, student_notebook

MASTER = Path(__file__).parent / "fixtures" / "homework" / "hw_master.ipynb"
KL_RIGHT = "def kl_gaussian(mu, log_sigma):\n    return 0.5 * (mu**2 + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma)"
KL_WRONG = "def kl_gaussian(mu, log_sigma):\n    return mu**2 + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma"
TIMEOUT, CHECK_TIMEOUT = 20, 8


def _submission(kl: str | None = None, square: str | None = None, after_kl: tuple[str, ...] = (),
                at_end: tuple[str, ...] = ()):
    nb = student_notebook(nbformat.read(MASTER, as_version=4))
    cells = []
    for cell in nb.cells:
        if "def kl_gaussian" in cell.source and kl is not None:
            cell.source = kl
        if "def square" in cell.source and square is not None:
            cell.source = square
        cells.append(cell)
        if "check_kl_gaussian" in cell.source:
            cells.extend(nbformat.v4.new_code_cell(s) for s in after_kl)
    cells.extend(nbformat.v4.new_code_cell(s) for s in at_end)
    nb.cells = cells
    return nb


SUBMISSIONS = {
    "correct": _submission(KL_RIGHT, "def square(x):\n    return x ** 2"),
    "empty": _submission(),
    "wrong": _submission(KL_WRONG, "def square(x):\n    return 2 * x"),
    "crashing": _submission(KL_RIGHT, None, after_kl=(
        "raise RuntimeError('boom')",
        "import os\nfor f in os.listdir('.'):\n    os.remove(f)\nprint('deleted', os.listdir('.'))",
        "import os\nos._exit(1)")),
    "never_ending": _submission(KL_RIGHT, "def square(x):\n    while True:\n        pass",
                                at_end=("while True:\n    pass",)),
    "borrowed": _submission("from course_lib.vae import gaussian_kl_diag\n\n\ndef kl_gaussian(mu, log_sigma):\n"
                            "    return gaussian_kl_diag(mu[..., None], log_sigma[..., None])",
                            "def square(x):\n    return x * x"),
    "stubborn": _submission(KL_RIGHT, "def square(x):\n    return x * x", after_kl=(
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",)),
}
EXPECTED = {  # student -> (points of exercise 1, points of exercise 2)
    "correct": (3, 2), "empty": (0, 0), "wrong": (2, 0), "crashing": (3, 0), "never_ending": (3, 0),
    "stubborn": (3, 2),  # the cell that ignores the interrupt is skipped in a fresh kernel
    "borrowed": (3, 2),  # right, by calling the library's own answer: flagged, the points stand
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("submissions")
    for student, nb in SUBMISSIONS.items():
        (root / student).mkdir()
        nbformat.write(nb, root / student / MASTER.name)
    (root / "late").mkdir()  # submitted nothing
    out = root.parent / "grades.csv"
    lines = []
    torch.manual_seed(7)
    grade_folder(root, out, master=MASTER, timeout=TIMEOUT, check_timeout=CHECK_TIMEOUT, jobs=3, log=lines.append)
    after = torch.randn(3)
    torch.manual_seed(7)
    assert torch.equal(after, torch.randn(3))  # the tests' secret seeds do not leak into the caller's generator
    seconds = {m.group(1): float(m.group(2)) for m in (re.match(r"(\w+) / .* in (\d+) s$", x) for x in lines) if m}
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return root, rows, seconds


def _points(rows, student):
    return tuple(float(r["points"]) for r in rows if r["student"] == student and r["exercise"] != "run")


def _message(rows, student, exercise):
    return next(r["message"] for r in rows if r["student"] == student and r["exercise"] == str(exercise))


def test_fixture_master_layout():
    exs = exercises(nbformat.read(MASTER, as_version=4))
    assert [(e.number, e.name, e.max_points) for e in exs] == [(1, "kl_gaussian", 3.0), (2, "square", 2.0)]


@pytest.mark.slow
def test_scores(graded):
    _, rows, _ = graded
    for student, want in EXPECTED.items():
        assert _points(rows, student) == want, (student, [r for r in rows if r["student"] == student])
    assert _points(rows, "late") == (0, 0)
    assert _message(rows, "late", 1) == "not submitted"
    assert {tuple(r) for r in rows} >= set()  # every row has every column
    assert list(rows[0]) == ["student", "notebook", "exercise", "name", "points", "max_points", "message", "flag",
                            "sandbox"]
    assert {r["sandbox"] for r in rows} == {"bwrap"}


@pytest.mark.slow
def test_messages_say_what_happened(graded):
    _, rows, _ = graded
    assert _message(rows, "correct", 1) == "passed"
    assert "exercise 1 not done" in _message(rows, "empty", 1)
    assert "1/2" in _message(rows, "wrong", 1)  # the check's diagnosis reaches the CSV
    assert "square(3) should be 9" in _message(rows, "wrong", 2)
    assert "timed out" in _message(rows, "never_ending", 2)
    run = {r["student"]: r["message"] for r in rows if r["exercise"] == "run"}
    assert run["empty"] == "ran without errors"  # the student version runs top to bottom
    assert "RuntimeError" in run["crashing"] and "kernel died" in run["crashing"]
    assert "out of time" in run["never_ending"]
    assert "stopped answering" in run["stubborn"]


@pytest.mark.slow
def test_time_limits_and_files(graded):
    root, _, seconds = graded
    # never_ending: TIMEOUT for its cells + 3 tests (setup, check, hidden test) x CHECK_TIMEOUT + kernel start-up
    assert seconds["never_ending"] < TIMEOUT + 3 * CHECK_TIMEOUT + 45, seconds
    # stubborn: TIMEOUT, the 15 s probe, a second kernel re-running the cells before, the tests
    assert seconds["stubborn"] < 2 * TIMEOUT + 15 + 3 * CHECK_TIMEOUT + 60, seconds
    # the crashing notebook deleted the files of its working directory: a temporary copy, not the submission
    assert (root / "crashing" / MASTER.name).is_file()


@pytest.mark.slow
def test_calling_the_librarys_answer_is_flagged(graded):
    _, rows, _ = graded
    flags = {(r["student"], r["exercise"]): r["flag"] for r in rows}
    assert "course_lib.vae.gaussian_kl_diag" in flags[("borrowed", "1")]
    assert flags[("borrowed", "2")] == "" and flags[("correct", "1")] == ""


def test_every_reference_names_a_library_function():
    """A misspelt REFERENCES entry would never flag anything."""
    import importlib

    for nn in range(1, 9):
        module = importlib.import_module(f"course_lib.checks.nb{nn:02d}")
        assert module.REFERENCES, module.__name__
        for exercise, refs in module.REFERENCES.items():
            for ref in refs:
                parts = ref.split(".")
                obj = importlib.import_module(".".join(parts[:2]))
                for part in parts[2:]:
                    obj = getattr(obj, part)
                assert callable(obj), (exercise, ref)


def test_only_the_check_statements_of_a_check_cell_are_graded():
    from course_lib.grader import graded_source

    cell = nbformat.v4.new_code_cell("nb04.check_q_sample(q_sample)\nprint(q_sample(x, 3, cosine, eps))\n"
                                     "### BEGIN HIDDEN TESTS\nassert q_sample is not None\n### END HIDDEN TESTS")
    assert graded_source(cell) == "nb04.check_q_sample(q_sample)\nassert q_sample is not None"
    tagged = nbformat.v4.new_code_cell("expect(square(3) == 9, 'no')\nprint('x')", metadata={"tags": ["check"]})
    assert graded_source(tagged) == tagged.source


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01", "02", "03", "04", "05", "06", "07", "08"])
def test_every_master_gets_full_marks_from_its_own_grader(name):
    """The master's solutions, graded as a submission in the sandbox, pass every check: the stand-ins for the
    student's functions (autograd through them, modules and schedules as arguments, torch.no_grad, the global
    generator) behave as the functions themselves."""
    from course_lib._notebooks import NOTEBOOK_DIR
    from course_lib.grader import grade_notebook
    from course_lib.sandbox import SandboxUnavailable, check_bwrap

    try:
        check_bwrap()
    except SandboxUnavailable as exc:
        if not os.environ.get("CI"):
            pytest.skip(str(exc))
    master = next(NOTEBOOK_DIR.glob(f"{name}_*.ipynb"))
    result = grade_notebook(master, master, timeout=900, check_timeout=120)
    assert result["events"] == [], result["events"]
    for row in result["exercises"]:
        assert (row["points"], row["message"], row["flag"]) == (row["max_points"], "passed", ""), row


@pytest.mark.slow
def test_the_time_limit_holds_when_the_grader_ignores_sigint(tmp_path):
    # a grader started as a background job of a script ignores SIGINT, and so would its workers: the time limit
    # (an interrupt) must still stop a never-ending test and say "timed out", not lose the worker
    import signal

    (tmp_path / "s" / "loop").mkdir(parents=True)
    nbformat.write(SUBMISSIONS["never_ending"], tmp_path / "s" / "loop" / MASTER.name)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        grade_folder(tmp_path / "s", tmp_path / "grades.csv", master=MASTER, timeout=TIMEOUT,
                     check_timeout=CHECK_TIMEOUT, log=lambda line: None)
    finally:
        signal.signal(signal.SIGINT, before)
    with (tmp_path / "grades.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert "timed out" in _message(rows, "loop", 2), [r for r in rows if r["exercise"] != "1"]
