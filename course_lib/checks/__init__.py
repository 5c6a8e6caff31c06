"""Exercise checks students run in the notebooks: one module per notebook (``nb01``, ``nb04``, ...).

A check calls the student's function on cases whose answer the exact core knows, and either prints
a short success line or raises ``ExerciseError`` with a diagnosis in a student's words: "wrong shape",
"sign error", "you forgot the 1/2 in the KL", "you used alpha_t where alpha_bar_t belongs".
``diagnose`` recognises such known mistakes by computing what each wrong formula would give.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["ExerciseError", "call_student", "diagnose", "expect", "misshaped_alpha_bar", "passed"]


class ExerciseError(AssertionError):
    """A check failed; the message says what is wrong and, where it can tell, why."""


_BROADCAST_ERRORS = ("must match the size", "size of tensor", "must match")


def call_student(fn, what: str, *args, on_index_error: str | None = None, on_broadcast_error: str | None = None):
    """Call a student's function; turn whatever goes wrong into an ``ExerciseError`` that says it in words.

    ``on_index_error`` / ``on_broadcast_error``: a sentence added when the function raised an IndexError
    (usually off by one in ``alpha_bars[t]``) or a shape-broadcasting RuntimeError.
    """
    if not callable(fn):
        raise ExerciseError(f"{what}: pass your function itself (without calling it), got {type(fn).__name__}")
    try:
        return fn(*args)
    except ExerciseError:
        raise
    except NotImplementedError:
        raise ExerciseError(f"{what}: not implemented yet — write your solution in the function") from None
    except IndexError as exc:
        if on_index_error:
            raise ExerciseError(f"{what}: your function raised IndexError ({exc}). {on_index_error}") from None
        raise ExerciseError(f"{what}: your function raised IndexError: {exc}") from exc
    except RuntimeError as exc:
        if on_broadcast_error and any(s in str(exc) for s in _BROADCAST_ERRORS):
            raise ExerciseError(f"{what}: shapes do not broadcast ({exc}). {on_broadcast_error}") from exc
        raise ExerciseError(f"{what}: your function raised RuntimeError: {exc}") from exc
    except Exception as exc:
        raise ExerciseError(f"{what}: your function raised {type(exc).__name__}: {exc}") from exc


def passed(message: str) -> bool:
    """Print the success line of a check; returns True so a cell can end with the check."""
    print(f"✓ {message}")
    return True


def expect(condition: bool, message: str) -> None:
    """Raise ``ExerciseError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ExerciseError(message)


def misshaped_alpha_bar(alpha_bar_t: torch.Tensor, formula) -> dict:
    """The silent broadcasting mistake with a batch of images, for ``diagnose``'s ``mistakes``.

    alpha_bar_t (n,) used as shape (n,) or (n, 1) against images (n, 1, 28, 28) broadcasts along the width or the
    height instead of the images; with n = 28 nothing raises (other n fail loudly and ``call_student`` explains).
    ``formula(ab)`` computes the answer with a given ab. Returns {message: wrong answer}, empty unless n == 28.
    """
    n = alpha_bar_t.shape[0]
    if n != 28:
        return {}
    return {f"alpha_bar_t has shape {shape}, which broadcasts along the image {axis}, not along the images: "
            "reshape it to (n, 1, 1, 1) with .view(-1, 1, 1, 1)": formula(alpha_bar_t.view(shape))
            for shape, axis in (((n,), "width (the last axis)"), ((n, 1), "height (the next-to-last axis)"))}


def _as_tensor(x) -> torch.Tensor:
    return x.detach().to(torch.float64) if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float64)


def diagnose(got, want, *, what: str, mistakes: Mapping[str, object] | None = None,
             rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Compare a student's ``got`` with ``want``; on a mismatch name the likely mistake.

    ``mistakes`` maps a hint ("you forgot the 1/2") to the value that mistake would produce; the first
    one that ``got`` matches is reported. Shapes are checked first.
    """
    if got is None:
        raise ExerciseError(f"{what}: your function returned None — did you forget `return`?")
    try:
        g = _as_tensor(got)
    except Exception:
        raise ExerciseError(f"{what}: expected a tensor or number, got {type(got).__name__}") from None
    w = _as_tensor(want)
    if g.shape != w.shape:
        raise ExerciseError(f"{what}: wrong shape: expected {tuple(w.shape)}, got {tuple(g.shape)}")
    if not bool(torch.isfinite(g).all()):
        raise ExerciseError(f"{what}: contains NaN or inf — a log of a negative number, or a division by zero?")
    if torch.allclose(g, w, rtol=rtol, atol=atol):
        return
    for hint, value in (mistakes or {}).items():
        v = _as_tensor(value)
        if v.shape == g.shape and torch.allclose(g, v, rtol=rtol, atol=atol):
            raise ExerciseError(f"{what}: not yet right — {hint}")
    err = (g - w).abs().max().item()
    raise ExerciseError(f"{what}: not yet right (largest difference {err:.3g}); compare your formula with the "
                        "derivation above, term by term")


# ====================================================================== unfinished exercises (student version)
# The student version (``python -m course_lib student``) replaces each solution by
#     raise NotImplementedError("Exercise N (name): ...")
# and adds ``%load_ext course_lib.checks`` to the first code cell. The extension lets the notebook run top to
# bottom before every exercise is done: a cell that fails because of an unfinished exercise (directly, through a
# check, or through a variable such a cell did not compute) prints "finish exercise N first" instead of stopping
# the notebook. Every other error is raised as usual. The master notebooks do not load it and are unaffected.
import ast as _ast  # noqa: E402
import re as _re  # noqa: E402

_STUB_RE = _re.compile(r"^Exercise (\d+)\b")
_BLOCKED: dict[str, int] = {}  # a variable a skipped cell did not compute -> the exercise it waits for


def unfinished_exercise(exc: BaseException | None) -> int | None:
    """The exercise number N if ``exc`` comes from an unfinished exercise's stub, else None.

    Looks through the chain (``__cause__``, ``__context__``) for a ``NotImplementedError("Exercise N ...")``, so
    a check that wraps the student's error in an ``ExerciseError`` is recognised too.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NotImplementedError):
            m = _STUB_RE.match(str(exc))
            if m:
                return int(m.group(1))
        exc = exc.__cause__ or exc.__context__
    return None


def finish_first(exercise: int, detail: str = "") -> None:
    """Print the line a cell shows instead of an error while exercise ``exercise`` is not done."""
    print(f"⏸ finish exercise {exercise} first{detail} — this cell needs it; run it again once your solution works")


def _skip_unfinished(exc: BaseException, names: tuple[str, ...]) -> bool:
    """Called by cells of the student version on an error: True (and a message) if it is an unfinished exercise."""
    n = unfinished_exercise(exc)
    detail = ""
    if n is None and isinstance(exc, NameError) and getattr(exc, "name", None) in _BLOCKED:
        n = _BLOCKED[exc.name]
        detail = f" (`{exc.name}` was not computed because exercise {n} was not done)"
    if n is None:
        return False
    for name in names:
        _BLOCKED.setdefault(name, n)
    finish_first(n, detail)
    return True


def _bound_names(tree: _ast.Module) -> tuple[str, ...]:
    names = set()
    for node in _ast.walk(tree):
        if isinstance(node, _ast.Name) and isinstance(node.ctx, _ast.Store):
            names.add(node.id)
        elif isinstance(node, (_ast.FunctionDef, _ast.AsyncFunctionDef, _ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (_ast.Import, _ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return tuple(sorted(names))


class _GuardUnfinished(_ast.NodeTransformer):
    """IPython AST transformer: run a cell's code inside ``try``, keeping the display of its last expression."""

    RESULT = "_course_cell_result"

    def visit(self, node):  # only the cell (a Module); the code inside is left as it is
        if not isinstance(node, _ast.Module) or not node.body:
            return node
        body = list(node.body)
        last_expr = isinstance(body[-1], _ast.Expr)
        if last_expr:
            body[-1] = _ast.copy_location(
                _ast.Assign(targets=[_ast.Name(self.RESULT, _ast.Store())], value=body[-1].value), body[-1])
        names = _bound_names(node)
        handler = _ast.parse(
            "try:\n    pass\n"
            "except BaseException as _course_exc:\n"
            f"    if not __import__('course_lib.checks', fromlist=['_'])._skip_unfinished(_course_exc, {names!r}):\n"
            "        raise\n"
            f"    {self.RESULT} = None\n"
        ).body[0]
        handler.body = body
        if not last_expr:
            handler.handlers[0].body.pop()  # no result to reset
        new = [handler]
        if last_expr:
            new.append(_ast.Expr(_ast.Name(self.RESULT, _ast.Load())))
        node.body = new
        return _ast.fix_missing_locations(node)


def load_ipython_extension(ipython) -> None:
    """``%load_ext course_lib.checks``: unfinished exercises print "finish exercise N first" instead of stopping."""
    if not any(isinstance(t, _GuardUnfinished) for t in ipython.ast_transformers):
        ipython.ast_transformers.append(_GuardUnfinished())


def unload_ipython_extension(ipython) -> None:
    ipython.ast_transformers[:] = [t for t in ipython.ast_transformers if not isinstance(t, _GuardUnfinished)]
