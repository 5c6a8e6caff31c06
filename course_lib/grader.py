"""Grading a folder of submissions: the student's code in a sandbox, the verdict in the grader.

The trust boundary. The grader (this module, trusted) never runs a submission's code in its own process. For
each submitted notebook it starts a worker (``course_lib._grade_worker``) inside the sandbox of
``course_lib.sandbox`` and sends it the notebook, whose code cells run there, one at a time, under a time
limit. Then the **master's** checks and hidden tests run *here*, in the grader, with every function of the
submission replaced by a stand-in (``RemoteFunction``): calling it sends the arguments the grader chose to
the worker, which calls the student's function and answers with plain data only — JSON numbers and arrays in
an ``.npz`` read with ``allow_pickle=False``, validated for dtype, shape and size (``course_lib._wire``).
Gradients a check asks for are computed in the worker too (an autograd function whose backward asks the worker
for the vector-Jacobian product), so a check such as "no gradient reaches log_sigma" works unchanged. A hidden
test draws its inputs from a seed made at grading time. The check modules decide, from those arrays, exactly
as they do in the student's notebook; there a forged pass fools only the student.

One bad submission costs only itself: a crash, a hang, garbage or an oversized answer fails that submission's
exercises with a message; the CSV is always written, atomically, one row per exercise and a ``run`` row.
"""

from __future__ import annotations

import ast
import builtins
import csv
import dis
import io
import itertools
import os
import random
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import _wire
from .homework import (
    BEGIN_HIDDEN,
    CHECK_TAG,
    END_HIDDEN,
    HIDDEN_TAG,
    Exercise,
    block_lines,
    cell_tags,
    exercises,
    replace_blocks,
)
from .sandbox import (
    Limits,
    SandboxUnavailable,
    bwrap_command,
    check_bwrap,
    no_fork_filter,
    options_file,
    readonly_paths,
)

__all__ = ["FIELDS", "GradeOptions", "RemoteFunction", "SandboxUnavailable", "grade_folder", "grade_notebook",
           "graded_source"]

FIELDS = ["student", "notebook", "exercise", "name", "points", "max_points", "message", "flag", "sandbox"]
MAX_NOTEBOOK_BYTES = 50 * 2**20
_CHECK_CALL = "check_"


@dataclass
class GradeOptions:
    """How to grade: time limits (s), FAST mode, the sandbox and its limits, the largest answer accepted."""

    timeout: float = 600          # the student's cells, all together
    check_timeout: float = 60     # each check or hidden test
    fast: bool = True
    sandbox: bool = True          # False: ``--no-sandbox`` (a Mac without bwrap); recorded in every CSV row
    limits: Limits = field(default_factory=Limits)
    max_answer_mb: int = 64       # the largest answer (all arrays of one call) read from the worker
    grace: float = 12.0           # seconds past a time limit before the worker is killed (a loaded machine needs them)

    @property
    def sandbox_label(self) -> str:
        return "bwrap" if self.sandbox else "none (--no-sandbox)"


class WorkerLost(BaseException):
    """The worker died, stopped answering, or broke the protocol; it has been killed. A ``BaseException``, so
    that a check's ``except Exception`` (which turns a student's error into a diagnosis) lets it through."""


class TestTimeout(BaseException):
    """A check or hidden test ran past its time limit (a ``BaseException`` for the same reason)."""


# ====================================================================== the worker process
class Worker:
    """One sandboxed worker process running one submission (``course_lib._grade_worker``)."""

    def __init__(self, notebook_name: str, notebook: bytes, opts: GradeOptions, bwrap: str | None):
        self.opts = opts
        self.tmp = Path(tempfile.mkdtemp(prefix="course-grade-sandbox-"))
        (self.tmp / "work").mkdir()  # the notebook's working directory; HOME is the folder above
        self.lost: str | None = None
        self._lock = threading.Lock()
        inside_tmp = "/tmp" if opts.sandbox else str(self.tmp)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": inside_tmp, "TMPDIR": inside_tmp, "LANG": "C.UTF-8",
               "COURSE_FAST": "1" if opts.fast else "0", "MPLBACKEND": "Agg",
               "MPLCONFIGDIR": f"{inside_tmp}/.matplotlib", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        from ._runtime import cache_dir

        env["COURSE_CACHE_DIR"] = str(cache_dir().resolve())
        if os.environ.get("COURSE_DATA_DIR", "").strip():  # resolved: the sandbox mounts the real folder, not links
            env["COURSE_DATA_DIR"] = str(Path(os.environ["COURSE_DATA_DIR"].strip()).resolve())
        for name in ("COURSE_THREADS", "COURSE_DEVICE"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        argv = [sys.executable, "-m", "course_lib._grade_worker"]
        files = []
        if opts.sandbox:
            filt, options = tempfile.TemporaryFile(), tempfile.TemporaryFile()
            files = [filt, options]
            filt.write(no_fork_filter())
            full = bwrap_command(argv, self.tmp, env=env, seccomp_fd=filt.fileno(), readonly=readonly_paths(),
                                 bwrap=bwrap or "bwrap", cwd="/tmp/work")
            data, rest = options_file(full)
            options.write(data)
            for f in files:
                f.seek(0)
            cmd = [full[0], "--args", str(options.fileno())] + rest
            popen_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        else:
            cmd, popen_env = argv, env
        debug = bool(os.environ.get("COURSE_GRADE_DEBUG"))
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=None if debug else subprocess.DEVNULL, cwd=self.tmp / "work",
                                         env=popen_env,
                                         pass_fds=tuple(f.fileno() for f in files), start_new_session=True,
                                         preexec_fn=opts.limits.apply)
        finally:
            for f in files:
                f.close()
        os.set_blocking(self.proc.stdin.fileno(), False)
        self._watch = threading.Thread(target=self._watch_disk, daemon=True)
        self._watch.start()
        self.request({"op": "start", "notebook": notebook_name}, notebook, timeout=60)

    def _watch_disk(self) -> None:
        """Kill the worker when its /tmp holds more than the limits allow (RLIMIT_FSIZE bounds one file only)."""
        lim = self.opts.limits
        while self.proc.poll() is None and self.lost is None:
            size = files = 0
            stack = [str(self.tmp)]
            while stack:  # iterative: a deep tree of folders must not stop the count
                try:
                    entries = list(os.scandir(stack.pop()))
                except OSError:
                    continue
                for e in entries:
                    files += 1
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        else:
                            size += e.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        pass
                if size > lim.disk_mb * 2**20 or files > lim.disk_files:
                    self.kill(f"was stopped: it wrote more than the disk limit ({lim.disk_mb} MiB or "
                              f"{lim.disk_files} files)")
                    return
            time.sleep(0.25)

    def _write(self, data: bytes, deadline: float) -> None:
        fd, view = self.proc.stdin.fileno(), memoryview(data)
        while view:
            # as in _wire.read_frame: only a pipe still full at the deadline is a timeout, not a late writer
            _, ready, _ = select.select([], [fd], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("the worker stopped reading")
            view = view[os.write(fd, view[: 1 << 16]):]

    def request(self, header: dict, payload: bytes = b"", *, timeout: float) -> tuple[dict, bytes]:
        """Send one request and read its answer within ``timeout`` (+ grace) s; ``WorkerLost`` otherwise."""
        if self.lost is not None:
            raise WorkerLost(self.lost)
        deadline = time.monotonic() + max(0.0, timeout) + self.opts.grace
        with self._lock:
            try:
                self._write(_wire.frame(header, payload), deadline)
                reply, data = _wire.read_frame(self.proc.stdout.fileno(), deadline=deadline,
                                               max_payload=self.opts.max_answer_mb * 2**20)
            except TimeoutError:
                self.kill(self.lost or "stopped answering (it ignored the interrupt at its time limit)")
                raise WorkerLost(self.lost) from None
            except (EOFError, BrokenPipeError, OSError):
                self.kill(self.lost or self._death())
                raise WorkerLost(self.lost) from None
            except _wire.WireError as exc:
                self.kill(self.lost or f"sent malformed data ({exc})")
                raise WorkerLost(self.lost) from None
        if not isinstance(reply.get("ok"), bool):
            self.kill("sent malformed data (no status)")
            raise WorkerLost(self.lost)
        return reply, data

    def _death(self) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "closed its connection"
        if code is not None and code < 0:
            import signal

            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            hint = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)"}.get(name, "")
            return f"died ({name}{hint})"
        return f"died (exit code {code})"

    def kill(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
        try:
            os.killpg(self.proc.pid, 9)
        except OSError:
            pass
        self.proc.kill()

    def close(self) -> None:
        if self.lost is None:
            self.lost = "closed"
        self.kill(self.lost)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self._watch.join(timeout=5)
        try:
            shutil.rmtree(self.tmp)
        except Exception:  # a tree too deep for rmtree's recursion, say
            subprocess.run(["rm", "-rf", "--", str(self.tmp)], check=False)


# ====================================================================== calling the student's functions
_EXCEPTIONS = {name: getattr(builtins, name) for name in (
    "ArithmeticError", "AssertionError", "AttributeError", "FloatingPointError", "IndexError", "KeyError",
    "LookupError", "MemoryError", "NameError", "NotImplementedError", "OverflowError", "RecursionError",
    "RuntimeError", "TimeoutError", "TypeError", "UnboundLocalError", "ValueError", "ZeroDivisionError")}


def _exception(err, check_timeout: float) -> BaseException:
    """The student's exception, rebuilt from plain data: a built-in type or a plain Exception of that name."""
    err = err if isinstance(err, dict) else {}
    name = err.get("type") if isinstance(err.get("type"), str) else "Exception"
    name = name if name.isidentifier() and len(name) <= 60 else "Exception"
    message = str(err.get("message", ""))[: _wire.MAX_STR]
    if err.get("interrupted") is True:
        return TestTimeout(f"timed out after {check_timeout:g} s")
    n = err.get("unfinished")
    if isinstance(n, int) and not isinstance(n, bool) and 0 < n < 1000:
        return NotImplementedError(f"Exercise {n}: not implemented yet")
    cls = _EXCEPTIONS.get(name) or type(name, (Exception,), {"__module__": "submission"})
    return cls(message)


def _prepare(obj, leaves: list, sent: list, grad: bool, depth: int = 0):
    """A copy of the arguments to send: tensors detached (those that need a gradient become fresh leaves);
    modules as they are. With ``grad``, each tensor that needs a gradient goes into ``leaves`` and its copy
    into ``sent`` (pickled with the arguments, so the worker gets the very same objects)."""
    if depth > 6:
        return obj
    if isinstance(obj, torch.Tensor):
        copy = obj.detach().cpu().clone()
        if obj.requires_grad:
            copy.requires_grad_(True)
            if grad:
                leaves.append(obj)
                sent.append(copy)
        return copy
    if isinstance(obj, torch.nn.Module):
        if grad:
            params = [p for p in obj.parameters() if p.requires_grad]
            leaves.extend(params)
            sent.extend(params)
        return obj
    if isinstance(obj, tuple | list) and type(obj) in (tuple, list):
        return type(obj)(_prepare(x, leaves, sent, grad, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return {k: _prepare(v, leaves, sent, grad, depth + 1) for k, v in obj.items()}
    return obj


def _replace_tensors(value, new, depth: int = 0):
    if isinstance(value, torch.Tensor):
        return next(new)
    if isinstance(value, tuple | list):
        items = [_replace_tensors(x, new, depth + 1) for x in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {k: _replace_tensors(v, new, depth + 1) for k, v in value.items()}
    return value


class _Remote:
    """What a linked call needs for its backward pass."""

    def __init__(self, session, call_id, tensors, grads, leaves):
        self.session, self.call_id, self.tensors, self.grads, self.leaves = session, call_id, tensors, grads, leaves


class _Link(torch.autograd.Function):
    """Joins the worker's answer to the grader's autograd graph: backward asks the worker for the gradients."""

    @staticmethod
    def forward(ctx, remote, *leaves):
        ctx.remote = remote
        ctx.mark_non_differentiable(*[t for t, g in zip(remote.tensors, remote.grads, strict=True) if not g])
        return tuple(remote.tensors)

    @staticmethod
    def backward(ctx, *grad_outputs):
        r = ctx.remote
        gs = [(g if g is not None else torch.zeros_like(t)).detach()
              for g, t, rg in zip(grad_outputs, r.tensors, r.grads, strict=True) if rg]
        return (None, *r.session.vjp(r.call_id, gs, r.leaves))


class RemoteFunction:
    """Stands in the grader for a function of the submission: calls it in the worker, returns plain data."""

    def __init__(self, session: _Session, name: str):
        self._session, self.__name__ = session, name

    def __call__(self, *args, **kwargs):
        return self._session.call(self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<function {self.__name__} of the submission>"

    def __reduce__(self):  # passed to another of the student's functions: the worker's own object
        from . import _grade_worker

        return (_grade_worker._user_object, (self.__name__,))


# ====================================================================== one submission
class _Session:
    """A submission's worker, restarted (without the cell that killed it) when it dies, and its events."""

    def __init__(self, name: str, notebook: bytes, cells: list[tuple[int, str]], opts: GradeOptions,
                 bwrap: str | None):
        self.name, self.notebook, self.cells, self.opts, self.bwrap = name, notebook, cells, opts, bwrap
        self.events: list[str] = []
        self.skip: set[int] = set()
        self.worker: Worker | None = None
        self.cell_deadline = time.monotonic() + opts.timeout
        self.spent = 0.0
        self.starts = 0
        self.deadline = 0.0  # of the test running now
        self.calls = itertools.count()
        self.library_calls: dict[str, set[str]] = {}
        self.max_elements = opts.max_answer_mb * 2**20 // 8

    def event(self, message: str) -> None:
        if message not in self.events:
            self.events.append(message)

    def boot(self) -> bool:
        """Start a worker and run the student's cells; False if no worker could run them."""
        while self.starts < 3:
            self.starts += 1
            where = None
            try:
                self.worker = Worker(self.name, self.notebook, self.opts, self.bwrap)
                spent = 0.0
                errors = 0
                for i, source in self.cells:
                    if i in self.skip:
                        continue
                    left = self.cell_deadline - time.monotonic()
                    if left <= 1:
                        self.event(f"out of time ({self.opts.timeout:g} s): cells from {i} on were not run")
                        break
                    where = i
                    t0 = time.monotonic()
                    reply, _ = self.worker.request({"op": "cell", "source": source, "timeout": left}, timeout=left)
                    spent += time.monotonic() - t0
                    err = reply.get("error")
                    if isinstance(err, dict) and err.get("interrupted") is True:
                        self.event(f"cell {i} ran past the time limit ({self.opts.timeout:g} s for all cells) "
                                   "and was interrupted")
                    elif isinstance(err, dict):
                        errors += 1
                        if errors <= 3:
                            self.event(f"cell {i} raised {str(err.get('type'))[:60]}: {str(err.get('message'))[:200]}")
                self.spent = spent
                return True
            except WorkerLost as exc:
                if where is None:
                    self.event(f"the kernel could not start: it {exc}")
                    return False
                self.skip.add(where)
                self.cell_deadline = time.monotonic() + max(0.0, self.cell_deadline - time.monotonic()) \
                    + 1.5 * spent + 10
                self.event(f"the kernel {exc} in cell {where}: restarted without that cell")
                self.worker.close()
                self.worker = None
        self.event("the kernel failed too often: grading stopped")
        return False

    def ensure(self) -> bool:
        """A live worker for the next test (restarting it, with the time its cells took, if it was lost)."""
        if self.worker is not None and self.worker.lost is None:
            return True
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        if self.starts >= 3:
            return False
        self.cell_deadline = time.monotonic() + 1.5 * self.spent + 10
        self.event("the kernel was restarted for the remaining tests")
        return self.boot()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TestTimeout(f"timed out after {self.opts.check_timeout:g} s")
        return left

    def lookup(self, names: list[str]) -> dict[str, str]:
        reply, _ = self.worker.request({"op": "lookup", "names": names}, timeout=self._left())
        found = reply.get("found") if isinstance(reply.get("found"), dict) else {}
        return {k: v for k, v in found.items() if k in names and v in ("function", "value")}

    def _decode(self, reply: dict, data: bytes):
        try:
            arrays = _wire.load_arrays(data, max_elements=self.max_elements)
            return _wire.decode_value(reply.get("value"), arrays)
        except _wire.WireError as exc:
            self.worker.kill(f"sent malformed data ({exc})")
            raise WorkerLost(self.worker.lost) from None

    def get(self, name: str):
        reply, data = self.worker.request({"op": "get", "name": name}, timeout=self._left())
        if not reply["ok"]:
            raise NameError(f"name {name!r} could not be read from the submission")
        return self._decode(reply, data)[0]

    def call(self, name: str, args: tuple, kwargs: dict):
        left = self._left()
        grad = torch.is_grad_enabled()
        leaves: list[torch.Tensor] = []
        sent: list[torch.Tensor] = []
        shipped = _prepare((args, kwargs), leaves, sent, grad)
        buf = io.BytesIO()
        try:
            torch.save({"args": shipped[0], "kwargs": shipped[1], "leaves": sent, "rng": torch.get_rng_state()},
                       buf)
        except Exception as exc:
            raise TypeError(f"the grader cannot send these arguments to the submission ({exc}); a test may pass "
                            "tensors, numbers and course_lib objects") from None
        call_id = next(self.calls)
        reply, data = self.worker.request({"op": "call", "name": name, "id": call_id, "grad": grad,
                                           "timeout": left}, buf.getvalue(), timeout=left)
        if not reply["ok"]:
            raise _exception(reply.get("error"), self.opts.check_timeout)
        called = reply.get("called")
        if isinstance(called, list):
            self.library_calls.setdefault(name, set()).update(c for c in called[:64] if isinstance(c, str))
        value, tensors, grads = self._decode(reply, data)
        if grad and leaves and any(grads):
            linked = _Link.apply(_Remote(self, call_id, tensors, grads, leaves), *leaves)
            value = _replace_tensors(value, iter(linked))
        return value

    def vjp(self, call_id: int, grad_outputs: list[torch.Tensor], leaves: list[torch.Tensor]) -> list:
        buf = io.BytesIO()
        torch.save([g.cpu() for g in grad_outputs], buf)
        reply, data = self.worker.request({"op": "vjp", "id": call_id, "timeout": self._left()}, buf.getvalue(),
                                          timeout=self._left())
        if not reply["ok"]:
            raise _exception(reply.get("error"), self.opts.check_timeout)
        grads = self._decode(reply, data)[0]
        if not isinstance(grads, list) or len(grads) != len(leaves):
            raise RuntimeError("the submission's gradients do not match its inputs")
        out = []
        for g, leaf in zip(grads, leaves, strict=True):
            if g is None:
                out.append(None)
            elif isinstance(g, torch.Tensor) and g.shape == leaf.shape and g.is_floating_point():
                out.append(g.to(dtype=leaf.dtype, device=leaf.device))
            else:
                raise RuntimeError("the submission's gradients do not match its inputs")
        return out


# ====================================================================== the master's tests
def graded_source(cell) -> str:
    """The code of a check or hidden-test cell that the grader runs.

    A cell tagged ``hidden-test`` or ``check`` runs whole. In a cell recognised by its ``check_...(`` call, only
    the statements that call a check and its hidden-test block run: lines that print or plot for the student may
    use the notebook's other variables, which the grader does not have.
    """
    if HIDDEN_TAG in cell_tags(cell) or CHECK_TAG in cell_tags(cell):
        return cell.source
    hidden = block_lines(cell.source, BEGIN_HIDDEN, END_HIDDEN)
    visible = replace_blocks(cell.source, BEGIN_HIDDEN, END_HIDDEN, lambda indent: [])
    try:
        tree = ast.parse(visible)
    except SyntaxError:
        return cell.source
    kept = [ast.get_source_segment(visible, node) or "" for node in tree.body]
    kept = [s for s in kept if _CHECK_CALL in s]
    return "\n".join(kept + hidden)


def _free_names(code: types.CodeType) -> list[str]:
    """The global names a test's code reads (in it and in the functions it defines)."""
    names = [i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_NAME", "LOAD_GLOBAL")]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _free_names(const)
    return list(dict.fromkeys(names))


def _seed_all() -> None:
    """A seed made now, so that hidden tests draw inputs the submission cannot know in advance."""
    torch.manual_seed(secrets.randbits(63))
    np.random.seed(secrets.randbits(32))
    random.seed(secrets.randbits(64))


class _QuietThreads:
    """``sys.stdout`` and ``sys.stderr`` while tests run: what a grading thread's checks print ("✓ passed") goes
    nowhere; other threads (the progress log) write as usual. Installed while any thread grades."""

    _lock = threading.Lock()
    _users = 0
    _saved: tuple = ()
    quiet = threading.local()

    def __init__(self, real):
        self.real = real

    def write(self, text):
        return len(text) if getattr(self.quiet, "on", False) else self.real.write(text)

    def __getattr__(self, name):
        return getattr(self.real, name)

    @classmethod
    def enter(cls) -> None:
        with cls._lock:
            if cls._users == 0:
                cls._saved = (sys.stdout, sys.stderr)
                sys.stdout, sys.stderr = cls(sys.stdout), cls(sys.stderr)
            cls._users += 1
        cls.quiet.on = True

    @classmethod
    def exit(cls) -> None:
        cls.quiet.on = False
        with cls._lock:
            cls._users -= 1
            if cls._users == 0:
                sys.stdout, sys.stderr = cls._saved


def _run_test(session: _Session, source: str, key: str, ns: dict) -> tuple[bool, str]:
    from .checks import unfinished_exercise

    try:
        code = compile(source, f"<{key}>", "exec")
    except SyntaxError as exc:
        return False, f"the test does not compile: {exc}"
    session.deadline = time.monotonic() + session.opts.check_timeout
    try:
        missing = [n for n in _free_names(code) if n not in ns and not hasattr(builtins, n)]
        if missing:
            for name, kind in session.lookup(missing).items():
                ns[name] = RemoteFunction(session, name) if kind == "function" else session.get(name)
        _seed_all()
        exec(code, ns)  # noqa: S102 - the master's own test code; the submission's functions are stand-ins
        return True, "passed"
    except WorkerLost as exc:
        return False, f"the kernel {exc} during this test"
    except TestTimeout:
        return False, f"timed out after {session.opts.check_timeout:g} s"
    except Exception as exc:
        n = unfinished_exercise(exc)
        if n is not None:
            return False, f"exercise {n} not done (NotImplementedError)"
        return False, (f"{type(exc).__name__}: {exc}"[:500] if str(exc) else f"{type(exc).__name__} (no message)")


def _references(master_nb) -> dict[str, tuple[str, ...]]:
    """{exercise function: the library functions that answer it}, from the check modules the master uses."""
    import importlib
    import re

    out: dict[str, tuple[str, ...]] = {}
    text = "\n".join(c.source for c in master_nb.cells if c.cell_type == "code")
    for nn in sorted(set(re.findall(r"\bnb(\d\d)\b", text))):
        try:
            module = importlib.import_module(f"course_lib.checks.nb{nn}")
        except ImportError:
            continue
        for fn, refs in getattr(module, "REFERENCES", {}).items():
            out[fn] = tuple(dict.fromkeys(out.get(fn, ()) + tuple(refs)))
    return out


def grade_notebook(submission: str | os.PathLike, master: str | os.PathLike, *, timeout: float = 600,
                   check_timeout: float = 60, fast: bool = True, sandbox: bool = True,
                   options: GradeOptions | None = None) -> dict:
    """Grade one submitted notebook against its master.

    Returns ``{"exercises": [row, ...], "events": [...], "seconds": s, "sandbox": label}``, one row per
    exercise: number, name, points, max_points, message, flag (the library's reference called, if any).
    ``sandbox=False`` runs the worker without isolation (``--no-sandbox``). Raises ``SandboxUnavailable`` if the
    sandbox was asked for and ``bwrap`` does not work here.
    """
    import nbformat

    opts = options or GradeOptions(timeout=timeout, check_timeout=check_timeout, fast=fast, sandbox=sandbox)
    bwrap = check_bwrap() if opts.sandbox else None
    t0 = time.perf_counter()
    master_nb = nbformat.read(master, as_version=4)
    exs = exercises(master_nb)
    result = {"exercises": [], "events": [], "seconds": 0.0, "sandbox": opts.sandbox_label}

    def finish(by_key: dict, calls: dict) -> dict:
        refs = _references(master_nb)
        for ex in exs:
            got, msgs = 0.0, []
            for i, p in ex.tests:
                ok, message = by_key.get(f"test-{i}", (False, "not graded (the run stopped before this test)"))
                if ok:
                    got += p
                else:
                    msgs.append(message)
            used = sorted(c for c in calls.get(ex.name, ()) if c in refs.get(ex.name, ()))
            result["exercises"].append({
                "exercise": ex.number, "name": ex.name, "points": got, "max_points": ex.max_points,
                "message": "passed" if not msgs else " | ".join(dict.fromkeys(msgs)),
                "flag": f"calls the library's own answer: {', '.join(used)}" if used else ""})
        result["seconds"] = time.perf_counter() - t0
        return result

    try:
        size = Path(submission).stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            raise ValueError(f"{size / 2**20:.0f} MiB (at most {MAX_NOTEBOOK_BYTES / 2**20:.0f} MiB)")
        raw = Path(submission).read_bytes()
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        cells = [(i, c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    except Exception as exc:
        result["events"].append(f"the notebook cannot be read: {type(exc).__name__}: {exc}"[:300])
        return finish({}, {})
    setup = next((c.source for c in master_nb.cells if c.cell_type == "code"), "")
    tests = [(f"test-{i}", graded_source(master_nb.cells[i])) for ex in exs for i, _ in ex.tests]
    session = _Session(Path(submission).name, raw, cells, opts, bwrap)
    by_key: dict[str, tuple[bool, str]] = {}
    try:
        if session.boot():
            ns: dict = {"__name__": "__grader__"}
            _QuietThreads.enter()
            try:
                exec(compile(setup, "<setup>", "exec"), ns)  # noqa: S102 - the master's imports
                for key, source in tests:
                    if not session.ensure():
                        break
                    by_key[key] = _run_test(session, source, key, ns)
            finally:
                _QuietThreads.exit()
    finally:
        session.close()
        result["events"] = session.events
    return finish(by_key, session.library_calls)


# ====================================================================== a folder
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


def _cell(value):
    """A CSV cell a spreadsheet will not run as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _write_csv(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows({k: _cell(r.get(k, "")) for k in FIELDS} for r in rows)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def grade_folder(submissions: str | os.PathLike, out_csv: str | os.PathLike, *,
                 master: str | os.PathLike | None = None, timeout: float = 600, check_timeout: float = 60,
                 jobs: int = 1, fast: bool = True, sandbox: bool = True, limits: Limits | None = None,
                 log=print) -> list[dict]:
    """Grade every submission in ``submissions`` and write one CSV row per student, notebook and exercise.

    Layout: ``submissions/<student>/<NN_name>.ipynb`` (matched to the master of the same name), or, when
    ``master`` is one notebook, ``submissions/<student>.ipynb``. ``master``: a notebook or a folder of them
    (default notebooks/). A master notebook that nobody submitted is not graded; one that a student did not
    submit scores 0 for that student. The row with exercise "run" lists what happened to the notebook (cells
    that raised, a crash, the time limit), with no points. The CSV is written atomically, also when grading
    stops half-way (the rows not graded say so). ``sandbox=False``: no isolation (every row says so).
    """
    from concurrent.futures import ThreadPoolExecutor

    import nbformat

    from ._notebooks import NOTEBOOK_DIR, notebook_paths

    opts = GradeOptions(timeout=timeout, check_timeout=check_timeout, fast=fast, sandbox=sandbox,
                        limits=limits or Limits())
    if opts.sandbox:
        check_bwrap()  # refuse before anything runs
    master = Path(master) if master is not None else NOTEBOOK_DIR
    masters = {master.name: master} if master.is_file() else {p.name: p for p in notebook_paths(master)}
    subs = _submissions(Path(submissions), masters)
    assigned = sorted({name for nbs in subs.values() for name in nbs})
    jobs_list = [(student, name) for student in subs for name in assigned]

    def empty(name: str, message: str) -> dict:
        exs: list[Exercise] = exercises(nbformat.read(masters[name], as_version=4))
        return {"exercises": [{"exercise": ex.number, "name": ex.name, "points": 0.0, "max_points": ex.max_points,
                               "message": message, "flag": ""} for ex in exs],
                "events": [message], "seconds": 0.0, "sandbox": opts.sandbox_label}

    def one(job):
        student, name = job
        path = subs[student].get(name)
        if path is None:
            return job, empty(name, "not submitted")
        try:
            return job, grade_notebook(path, masters[name], options=opts)
        except Exception as exc:  # a fault of the grader's: this submission only
            return job, empty(name, f"not graded: the grader failed ({type(exc).__name__}: {exc})"[:300])

    results: dict[tuple[str, str], dict] = {}
    generators = torch.get_rng_state(), np.random.get_state(), random.getstate()  # tests reseed them: put back
    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            for (student, name), result in pool.map(one, jobs_list):
                results[(student, name)] = result
                if log:
                    total = sum(r["points"] for r in result["exercises"])
                    top = sum(r["max_points"] for r in result["exercises"])
                    log(f"{student} / {name}: {total:g} of {top:g} points in {result['seconds']:.0f} s")
    finally:
        torch.set_rng_state(generators[0])
        np.random.set_state(generators[1])
        random.setstate(generators[2])
        rows = []
        for student, name in jobs_list:
            result = results.get((student, name)) or empty(name, "not graded (grading was interrupted)")
            for r in result["exercises"]:
                rows.append({"student": student, "notebook": name, **r, "sandbox": result["sandbox"]})
            rows.append({"student": student, "notebook": name, "exercise": "run", "name": "", "points": "",
                         "max_points": "", "message": "; ".join(result["events"]) or "ran without errors",
                         "flag": "", "sandbox": result["sandbox"]})
        _write_csv(rows, Path(out_csv))
    return rows
