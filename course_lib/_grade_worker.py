"""The grading worker: runs one submission inside the sandbox and calls its functions for the grader.

Started by ``course_lib.grader`` as ``python -m course_lib._grade_worker`` (inside ``bwrap`` unless the
instructor chose ``--no-sandbox``). It reads requests from stdin and answers on stdout in ``_wire`` frames;
the student's own output goes to /dev/null. Everything here runs next to the student's code and is as
untrusted as it: the grader believes none of it, and reads only plain numbers and arrays back.

Requests (``op``): ``start`` (the notebook), ``cell`` (run one code cell with a time limit), ``lookup`` (what a
name is in the notebook), ``get`` (a plain value), ``call`` (call a function of the notebook on arguments the
grader sends; the answer is the value as plain data), ``vjp`` (gradients of a call's outputs with respect to its
tensor arguments).
"""

from __future__ import annotations

import io
import os
import signal
import sys
import traceback

import torch

from . import _wire

_SHELL = None
_GRAPHS: dict[int, tuple[list, list]] = {}  # call id -> (output tensors, input leaves)


def _user_object(name: str):
    """What a grader-side stand-in for the notebook's ``name`` unpickles to (a function passed to a function)."""
    return _SHELL.user_ns[name]


def _interrupt(signum, frame):
    """The time limit: behave as if SIGINT arrived (a cell that ignores SIGINT ignores this too)."""
    handler = signal.getsignal(signal.SIGINT)
    if handler is signal.SIG_IGN:
        return
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


class _Alarm:
    def __init__(self, seconds):
        self.seconds = max(0.05, float(seconds or 0))

    def __enter__(self):
        signal.signal(signal.SIGALRM, _interrupt)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)


def _error(exc: BaseException) -> dict:
    from .checks import unfinished_exercise

    if isinstance(exc, KeyboardInterrupt):
        return {"type": "TimeoutError", "message": "interrupted at its time limit", "interrupted": True}
    return {"type": type(exc).__name__[:60], "message": str(exc)[: _wire.MAX_STR],
            "unfinished": unfinished_exercise(exc), "interrupted": False}


def _library_calls(called: set):
    """A profiler hook that records the course_lib functions the student's code calls directly."""

    def hook(frame, event, arg):
        if event != "call" or len(called) >= 64:
            return
        module = frame.f_globals.get("__name__", "")
        if not (isinstance(module, str) and module.startswith("course_lib")):
            return
        back = frame.f_back
        caller = back.f_globals.get("__name__", "") if back is not None else ""
        if isinstance(caller, str) and caller.startswith("course_lib"):
            return
        called.add(f"{module}.{getattr(frame.f_code, 'co_qualname', frame.f_code.co_name)}"[:200])

    return hook


# ====================================================================== requests
def _start(header, payload):
    global _SHELL
    from traitlets.config import Config

    name = os.path.basename(str(header.get("notebook", "submission.ipynb"))) or "submission.ipynb"
    with open(name, "wb") as f:
        f.write(payload)
    from IPython.core.interactiveshell import InteractiveShell

    config = Config()
    config.HistoryManager.enabled = False
    _SHELL = InteractiveShell.instance(config=config)

    def close_figures(*_):
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            plt.close("all")

    _SHELL.events.register("post_run_cell", close_figures)
    return {"ok": True}, b""


def _cell(header, payload):
    with _Alarm(header.get("timeout")):
        result = _SHELL.run_cell(str(header.get("source", "")), store_history=False)
    exc = result.error_before_exec or result.error_in_exec
    return {"ok": True, "error": _error(exc) if exc is not None else None}, b""


def _lookup(header, payload):
    found = {}
    for name in list(header.get("names", []))[:200]:
        if name not in _SHELL.user_ns:
            continue
        v = _SHELL.user_ns[name]
        found[name] = "function" if callable(v) else "value"
    return {"ok": True, "found": found}, b""


def _get(header, payload):
    tree, data = _wire.encode_value(_SHELL.user_ns[str(header.get("name"))])
    return {"ok": True, "value": tree}, data


def _call(header, payload):
    call_id = int(header["id"])
    request = torch.load(io.BytesIO(payload), weights_only=False)
    fn = _SHELL.user_ns.get(str(header.get("name")))
    if fn is None:
        raise NameError(f"name {header.get('name')!r} is not defined")
    args, kwargs = request["args"], request["kwargs"]
    leaves = request["leaves"]  # the arguments' tensors that need gradients (the same objects, by pickle)
    torch.set_rng_state(request["rng"])
    called: set = set()
    with _Alarm(header.get("timeout")), torch.set_grad_enabled(bool(header.get("grad"))):
        sys.setprofile(_library_calls(called))
        try:
            value = fn(*args, **kwargs)
        finally:
            sys.setprofile(None)
    outs: list = []
    tree, data = _wire.encode_value(value, outs)
    if leaves and any(o.requires_grad for o in outs):
        _GRAPHS[call_id] = (outs, leaves)
        while len(_GRAPHS) > 64:
            _GRAPHS.pop(next(iter(_GRAPHS)))
    return {"ok": True, "value": tree, "called": sorted(called)}, data


def _vjp(header, payload):
    outs, leaves = _GRAPHS[int(header["id"])]
    grad_outputs = torch.load(io.BytesIO(payload), weights_only=True)
    pairs = [(o, g) for o, g in zip([o for o in outs if o.requires_grad], grad_outputs, strict=True)]
    with _Alarm(header.get("timeout")):
        grads = torch.autograd.grad([o for o, _ in pairs], leaves, grad_outputs=[g.to(o.dtype) for o, g in pairs],
                                    allow_unused=True, retain_graph=True)
    tree, data = _wire.encode_value(list(grads))
    return {"ok": True, "value": tree}, data


_OPS = {"start": _start, "cell": _cell, "lookup": _lookup, "get": _get, "call": _call, "vjp": _vjp}


def serve(fd_in: int, fd_out: int) -> None:
    while True:
        try:
            header, payload = _wire.read_frame(fd_in)
        except EOFError:
            return
        op = header.get("op")
        if op == "exit":
            return
        try:
            reply, data = _OPS[op](header, payload)
        except BaseException as exc:  # noqa: BLE001 - the student's error is the answer
            reply, data = {"ok": False, "error": _error(exc)}, b""
            if os.environ.get("COURSE_GRADE_DEBUG"):
                traceback.print_exc()
        _wire.write_frame(fd_out, reply, data)


def main() -> None:
    # the time limit raises KeyboardInterrupt through SIGINT's handler: install Python's own even when the grader
    # was started with SIGINT ignored (a background job of a shell script, cron), which the worker would inherit
    signal.signal(signal.SIGINT, signal.default_int_handler)
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # print() in the submission must not mix with the answers
    os.set_inheritable(fd_in, False)
    os.set_inheritable(fd_out, False)
    serve(fd_in, fd_out)


if __name__ == "__main__":
    main()
