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
slide metadata get it (``add_slide_metadata``; the master notebooks carry it already, ``python -m course_lib slides``
adds it to a new one).

Grading (``grade_folder``) runs every submitted notebook in its own subprocess and kernel, in a temporary
working directory holding a copy of the notebook, under a time limit; then runs the **master's** checks and
hidden tests in that kernel against the student's functions (so editing a check cell changes nothing), each
with its own time limit, and reads each result from a line ``@@COURSE-GRADE <nonce> {json}`` it prints.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Exercise", "add_slide_metadata", "build_student", "clear_solutions", "exercises", "grade_folder",
    "grade_notebook", "leaked_solution_lines", "solution_lines", "student_notebook",
]

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
HIDDEN_TAG, CHECK_TAG = "hidden-test", "check"
EXTENSION_LINE = ('# runs the notebook before every exercise is done: cells that need one say "finish exercise N first"'
                  "\n%load_ext course_lib.checks")
MARKER = "@@COURSE-GRADE"
_CHECK_CALL = re.compile(r"\bcheck_\w+\s*\(")
_EXERCISE_HEADING = re.compile(r"Exercise\s+(\d+)")
_DEF = re.compile(r"^\s*def\s+(\w+)\s*\(", re.MULTILINE)
_HEADING = re.compile(r"^\s*(#{1,6})\s")


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


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _is_solution(cell) -> bool:
    return BEGIN_SOLUTION in cell.source


def _is_test(cell) -> bool:
    if cell.cell_type != "code" or _is_solution(cell):
        return False
    tags = _tags(cell)
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


def _replace_blocks(source: str, begin: str, end: str, stub) -> str:
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
        return _replace_blocks(source, BEGIN_SOLUTION, END_SOLUTION, lambda indent: [f"{indent}YOUR ANSWER HERE"])
    what = f"Exercise {number}" + (f" ({name})" if name else "")
    message = f"{what}: replace these two lines with your solution"
    return _replace_blocks(source, BEGIN_SOLUTION, END_SOLUTION, lambda indent: [
        f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError({message!r})"])


def solution_lines(nb) -> list[str]:
    """Every non-blank line between the solution markers of ``nb``, stripped (what a student build must not contain)."""
    lines = []
    for cell in nb.cells:
        inside = False
        for line in cell.source.split("\n"):
            if line.strip() == BEGIN_SOLUTION:
                inside = True
            elif line.strip() == END_SOLUTION:
                inside = False
            elif inside and line.strip():
                lines.append(line.strip())
    return lines


def add_slide_metadata(nb, overwrite: bool = False):
    """RISE slide metadata, in place: a markdown cell starting with a # or ## heading starts a slide, ### a
    sub-slide; every other cell continues the current one ("-"). Existing choices are kept unless ``overwrite``."""
    for cell in nb.cells:
        meta = cell.setdefault("metadata", {})
        if "slideshow" in meta and not overwrite:
            continue
        kind = "-"
        if cell.cell_type == "markdown":
            m = _HEADING.match(cell.source)
            if m:
                kind = "slide" if len(m.group(1)) <= 2 else "subslide"
        meta["slideshow"] = {"slide_type": kind}
    return nb


def student_notebook(nb, *, slides: bool = True):
    """The student version of master notebook ``nb`` (a copy): solutions stubbed, hidden tests removed, outputs
    cleared, the "finish exercise N first" extension loaded in the first code cell."""
    nb = copy.deepcopy(nb)
    by_cell = {ex.cell: ex for ex in exercises(nb)}
    cells = []
    for i, cell in enumerate(nb.cells):
        if HIDDEN_TAG in _tags(cell):
            continue
        if i in by_cell:
            ex = by_cell[i]
            cell.source = clear_solutions(cell.source, ex.number, ex.name, markdown=cell.cell_type == "markdown")
        if cell.cell_type == "code":
            if BEGIN_HIDDEN in cell.source:
                cell.source = _replace_blocks(cell.source, BEGIN_HIDDEN, END_HIDDEN, lambda indent: []).rstrip()
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

    ``names``: substrings selecting notebooks. Checks that no solution line is left. Returns the written paths.
    """
    import nbformat

    from ._notebooks import notebook_paths

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


# ====================================================================== grading: inside the kernel
def _run_test(source: str, key: str, nonce: str) -> None:
    """Run one check or hidden test in the user's namespace and print its result as a marker line (in the kernel)."""
    from IPython import get_ipython

    from .checks import unfinished_exercise

    ip = get_ipython()
    ok, message = True, "passed"
    try:
        code = ip.transform_cell(source) if ip is not None else source
        exec(compile(code, f"<{key}>", "exec"), ip.user_ns if ip is not None else {})  # noqa: S102
    except KeyboardInterrupt:
        ok, message = False, "timed out (interrupted)"
    except BaseException as exc:  # a test fails, whatever the student's code raised
        ok = False
        n = unfinished_exercise(exc)
        if n is not None:
            message = f"exercise {n} not done (NotImplementedError)"
        else:
            message = f"{type(exc).__name__}: {exc}"[:500] if str(exc) else f"{type(exc).__name__} (no message)"
    print(f"{MARKER} {nonce} " + json.dumps({"key": key, "ok": ok, "message": message}), flush=True)


# ====================================================================== grading: one notebook, in a subprocess
def _worker(master_path: str, submission_path: str, results_path: str, timeout: float, check_timeout: float,
            fast: bool, nonce: str, kernel_name: str = "python3") -> int:
    """Run a submission, then the master's tests, in a fresh kernel; append JSON records to ``results_path``."""
    import shutil

    import nbformat

    with open(results_path, "a", encoding="utf-8") as results:
        def emit(**record):
            results.write(json.dumps(record) + "\n")
            results.flush()

        master = nbformat.read(master_path, as_version=4)
        tests = [(i, master.cells[i].source) for ex in exercises(master) for i, _ in ex.tests]
        setup = next((c.source for c in master.cells if c.cell_type == "code"), "")
        try:
            nb = nbformat.read(submission_path, as_version=4)
        except Exception as exc:
            emit(kind="event", message=f"the notebook cannot be read: {type(exc).__name__}: {exc}"[:300])
            return 0
        workdir = tempfile.mkdtemp(prefix="course-grade-")
        Path(workdir, Path(submission_path).name).write_bytes(Path(submission_path).read_bytes())
        try:
            _execute(emit, nb, workdir, tests, setup, timeout, check_timeout, fast, nonce, kernel_name)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


class _KernelStuck(Exception):
    """The kernel did not answer after an interrupt (it ignores SIGINT, or is stuck in C code)."""


def _execute(emit, nb, workdir, tests, setup, timeout, check_timeout, fast, nonce, kernel_name) -> None:
    """The student's cells (``timeout`` s in all), then the setup cell and each test (``check_timeout`` s each).

    A cell that kills the kernel, or leaves it unresponsive after the interrupt at its time limit, is skipped in a
    fresh kernel (at most twice); the cells before it run again with 1.5 times the time they took plus 10 s.
    A test that kills the kernel fails, and the others run in a fresh kernel.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    n_student = len(nb.cells)
    os.environ.update(COURSE_FAST="1" if fast else "0", MPLBACKEND="module://matplotlib_inline.backend_inline")
    deadline = time.monotonic() + timeout
    skip: set[int] = set()
    done: set[str] = set()
    error_reply = {"ename": "TimeoutError", "evalue": "the cell ran past its time limit", "traceback": []}

    def run(client, cell, index, seconds) -> bool:
        """Execute a cell; True if it ran into its time limit (the kernel was interrupted)."""
        client.timeout = max(1, int(seconds))
        t0 = time.monotonic()
        client.execute_cell(cell, index)
        if time.monotonic() - t0 < client.timeout - 0.5:
            return False
        probe = nbformat.v4.new_code_cell("print('alive')")  # did the interrupt work?
        nb.cells.append(probe)
        client.timeout = 15
        client.execute_cell(probe, len(nb.cells) - 1)
        if not any("alive" in o.get("text", "") for o in probe.outputs):
            raise _KernelStuck()
        return True

    for _attempt in range(3):
        client = NotebookClient(nb, kernel_name=kernel_name, allow_errors=True, interrupt_on_timeout=True,
                                error_on_timeout=error_reply, store_widget_state=False, timeout=int(check_timeout),
                                resources={"metadata": {"path": workdir}}, shutdown_kernel="immediate")
        where = None
        spent = 0.0  # seconds the student's cells took in this kernel, up to the one running now
        try:
            with client.setup_kernel(cwd=workdir):
                try:
                    emit(kind="kernel", pid=client.km.provisioner.process.pid)
                except AttributeError:
                    pass
                errors = 0
                for i, cell in enumerate(nb.cells[:n_student]):
                    if cell.cell_type != "code" or i in skip:
                        continue
                    left = deadline - time.monotonic()
                    if left <= 1:
                        emit(kind="event", message=f"out of time ({timeout:g} s): cells from {i} on were not run")
                        break
                    where = ("cell", i)
                    t0 = time.monotonic()
                    timed_out = run(client, cell, i, left)
                    spent += time.monotonic() - t0
                    err = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
                    if timed_out:
                        emit(kind="event", message=f"cell {i} ran past the time limit ({timeout:g} s for all cells) "
                                                   "and was interrupted")
                    elif err is not None:
                        errors += 1
                        if errors <= 3:
                            emit(kind="event", message=f"cell {i} raised {err.get('ename')}: "
                                                       f"{str(err.get('evalue'))[:200]}")
                for key, source in [("setup", setup)] + [(f"test-{i}", s) for i, s in tests]:
                    if key in done:
                        continue
                    where = ("test", key)
                    cell = nbformat.v4.new_code_cell(f"__import__('course_lib.homework', fromlist=['_'])._run_test("
                                                     f"{source!r}, {key!r}, {nonce!r})")
                    nb.cells.append(cell)  # nbclient writes the executed cell back into the notebook
                    try:
                        run(client, cell, len(nb.cells) - 1, check_timeout)
                    except (DeadKernelError, _KernelStuck):
                        done.add(key)
                        if key != "setup":
                            emit(kind="test", key=key, ok=False, message="the kernel died or hung during this test")
                        raise
                    done.add(key)
                    if key != "setup":
                        result = _read_marker(cell, nonce) or {"ok": False, "message":
                                                               f"timed out after {check_timeout:g} s"}
                        emit(kind="test", key=key, ok=bool(result["ok"]), message=str(result["message"])[:500])
            return
        except (DeadKernelError, _KernelStuck) as exc:
            what = "died" if isinstance(exc, DeadKernelError) else "stopped answering (it ignored the interrupt)"
            if where is None:
                emit(kind="event", message=f"the kernel {what} while starting")
                return
            if where[0] == "cell":
                skip.add(where[1])
                deadline = time.monotonic() + max(0.0, deadline - time.monotonic()) + 1.5 * spent + 10
                emit(kind="event", message=f"the kernel {what} in cell {where[1]}: restarted without that cell")
            else:
                emit(kind="event", message=f"the kernel {what} during a test: restarted")
    emit(kind="event", message="the kernel failed too often: grading stopped")


def _read_marker(cell, nonce: str) -> dict | None:
    prefix = f"{MARKER} {nonce} "
    found = None
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            for line in out.get("text", "").splitlines():
                if line.startswith(prefix):
                    try:
                        found = json.loads(line[len(prefix):])
                    except json.JSONDecodeError:
                        pass
    return found


def _kill_tree(proc: subprocess.Popen, kernel_pids: list[int]) -> None:
    for pid in kernel_pids:  # kernels run in a session of their own
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.wait()


def grade_notebook(submission: str | os.PathLike, master: str | os.PathLike, *, timeout: float = 600,
                   check_timeout: float = 60, fast: bool = True) -> dict:
    """Grade one submitted notebook against its master. Returns ``{"exercises": [row, ...], "events": [...],
    "seconds": s}``, one row per exercise: number, name, points, max_points, message.

    The student's cells get ``timeout`` seconds in all, each check or hidden test ``check_timeout``; the
    subprocess is killed (with its kernels) past ``4 timeout + (tests + 1) (check_timeout + 15) + 120`` s, a
    bound reached only if the kernel restarts after crashes (see ``_execute``) or nbclient itself hangs.
    """
    import nbformat

    master_nb = nbformat.read(master, as_version=4)
    exs = exercises(master_nb)
    n_tests = sum(len(ex.tests) for ex in exs)
    hard = 4 * timeout + (n_tests + 1) * (check_timeout + 15) + 120
    nonce = secrets.token_hex(8)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course-grade-results-") as tmp:
        results_path = Path(tmp) / "results.jsonl"
        results_path.touch()
        cmd = [sys.executable, "-c", "import sys; from course_lib.homework import _worker; sys.exit(_worker("
               "sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), sys.argv[6] == '1', "
               "sys.argv[7]))", str(Path(master).resolve()), str(Path(submission).resolve()), str(results_path),
               str(timeout), str(check_timeout), "1" if fast else "0", nonce]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                cwd=tmp)
        events: list[str] = []
        try:
            _, stderr = proc.communicate(timeout=hard)
            if proc.returncode != 0:
                events.append(f"the grader's subprocess failed ({proc.returncode}): {stderr.decode()[-300:]}")
        except subprocess.TimeoutExpired:
            events.append(f"killed after {hard:g} s (the kernel ignored the time limits)")
        records = [json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
        if proc.poll() is None or any(r["kind"] == "kernel" for r in records):
            _kill_tree(proc, [r["pid"] for r in records if r["kind"] == "kernel"])
    events = list(dict.fromkeys([r["message"] for r in records if r["kind"] == "event"] + events))
    by_key = {r["key"]: r for r in records if r["kind"] == "test"}
    rows = []
    for ex in exs:
        got, msgs = 0.0, []
        for i, p in ex.tests:
            r = by_key.get(f"test-{i}")
            if r is None:
                msgs.append("not graded (the run stopped before this test)")
            elif r["ok"]:
                got += p
            else:
                msgs.append(r["message"])
        rows.append({"exercise": ex.number, "name": ex.name, "points": got, "max_points": ex.max_points,
                     "message": "passed" if not msgs else " | ".join(dict.fromkeys(msgs))})
    return {"exercises": rows, "events": events, "seconds": time.perf_counter() - t0}


# ====================================================================== grading: a folder
FIELDS = ["student", "notebook", "exercise", "name", "points", "max_points", "message"]


def _submissions(submissions: Path, masters: dict[str, Path]) -> dict[str, dict[str, Path]]:
    found: dict[str, dict[str, Path]] = {}
    for entry in sorted(submissions.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found[entry.name] = {p.name: p for p in sorted(entry.glob("*.ipynb")) if p.name in masters}
        elif entry.suffix == ".ipynb" and len(masters) == 1:
            found[entry.stem] = {next(iter(masters)): entry}
    return found


def grade_folder(submissions: str | os.PathLike, out_csv: str | os.PathLike, *,
                 master: str | os.PathLike | None = None, timeout: float = 600, check_timeout: float = 60,
                 jobs: int = 1, fast: bool = True, log=print) -> list[dict]:
    """Grade every submission in ``submissions`` and write one CSV row per student, notebook and exercise.

    Layout: ``submissions/<student>/<NN_name>.ipynb`` (matched to the master of the same name), or, when
    ``master`` is one notebook, ``submissions/<student>.ipynb``. ``master``: a notebook or a folder of them
    (default notebooks/). A master notebook that nobody submitted is not graded; one that a student did not
    submit scores 0 for that student. The row with exercise "run" lists what happened to the notebook
    (cells that raised, a crash, the time limit), with no points.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ._notebooks import NOTEBOOK_DIR, notebook_paths

    master = Path(master) if master is not None else NOTEBOOK_DIR
    masters = {master.name: master} if master.is_file() else {p.name: p for p in notebook_paths(master)}
    subs = _submissions(Path(submissions), masters)
    assigned = sorted({name for nbs in subs.values() for name in nbs})
    jobs_list = [(student, name) for student in subs for name in assigned]

    def one(job):
        student, name = job
        path = subs[student].get(name)
        if path is None:
            import nbformat

            exs = exercises(nbformat.read(masters[name], as_version=4))
            return job, {"exercises": [{"exercise": ex.number, "name": ex.name, "points": 0.0,
                                        "max_points": ex.max_points, "message": "not submitted"} for ex in exs],
                         "events": ["not submitted"], "seconds": 0.0}
        return job, grade_notebook(path, masters[name], timeout=timeout, check_timeout=check_timeout, fast=fast)

    rows = []
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for (student, name), result in pool.map(one, jobs_list):
            total = sum(r["points"] for r in result["exercises"])
            top = sum(r["max_points"] for r in result["exercises"])
            if log:
                log(f"{student} / {name}: {total:g} of {top:g} points in {result['seconds']:.0f} s")
            for r in result["exercises"]:
                rows.append({"student": student, "notebook": name, **r})
            rows.append({"student": student, "notebook": name, "exercise": "run", "name": "", "points": "",
                         "max_points": "", "message": "; ".join(result["events"]) or "ran without errors"})
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return rows
