"""What crosses the sandbox's boundary, and how the grader reads it without trusting it.

A message is a frame: ``b"CLG1"``, a 4-byte length and a JSON header, an 8-byte length and a payload. From the
grader to the worker the payload is a ``torch.save`` of the call's arguments (the worker may unpickle what the
grader sends). From the worker to the grader it is an ``.npz`` of plain arrays, read with
``allow_pickle=False``; the header describes the value as a tree of plain JSON (``encode_value``), and
``decode_value`` rebuilds it after checking every array's dtype, shape and size against the header and the
limits. Nothing the worker sends is executed or unpickled.
"""

from __future__ import annotations

import io
import json
import math
import os
import select
import struct
import time
import zipfile

import numpy as np
import torch

MAGIC = b"CLG1"
MAX_HEADER = 1 << 20                # bytes of JSON in one message
MAX_DEPTH, MAX_ITEMS = 8, 4096      # nesting and length of a returned tuple, list or dict
MAX_STR = 4000                      # characters of a returned string or an error message
_DTYPES = {  # torch dtype name -> (torch dtype, numpy dtype it travels as)
    "float64": (torch.float64, np.float64), "float32": (torch.float32, np.float32),
    "float16": (torch.float16, np.float16), "bfloat16": (torch.bfloat16, np.float32),
    "int64": (torch.int64, np.int64), "int32": (torch.int32, np.int32), "int16": (torch.int16, np.int16),
    "int8": (torch.int8, np.int8), "uint8": (torch.uint8, np.uint8), "bool": (torch.bool, np.bool_),
}
_NP_KINDS = {"f": "float", "i": "int", "u": "uint", "b": "bool"}


class WireError(Exception):
    """The other side sent something malformed, too large, or not at all in time."""


# ====================================================================== frames
def frame(header: dict, payload: bytes = b"") -> bytes:
    """The bytes of one message."""
    head = json.dumps(header, allow_nan=False).encode()
    return MAGIC + struct.pack(">I", len(head)) + head + struct.pack(">Q", len(payload)) + payload


def write_frame(fd: int, header: dict, payload: bytes = b"") -> None:
    view = memoryview(frame(header, payload))
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            # bytes that have arrived are read even past the deadline (a reader that was not scheduled in time must
            # not discard an answer given in time): only an empty pipe at the deadline is a timeout
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no answer in time")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, *, deadline: float | None = None, max_payload: int = 1 << 40) -> tuple[dict, bytes]:
    """One frame from ``fd``: (header, payload). ``WireError`` for anything malformed or too large;
    ``TimeoutError`` past ``deadline`` (a ``time.monotonic()`` value); ``EOFError`` if the pipe closed."""
    if _read_exact(fd, 4, deadline) != MAGIC:
        raise WireError("the message does not start with the protocol's marker")
    (n_head,) = struct.unpack(">I", _read_exact(fd, 4, deadline))
    if n_head > MAX_HEADER:
        raise WireError(f"a message header of {n_head} bytes (at most {MAX_HEADER})")
    try:
        header = json.loads(_read_exact(fd, n_head, deadline))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"a message header that is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WireError("a message header that is not a JSON object")
    (n_pay,) = struct.unpack(">Q", _read_exact(fd, 8, deadline))
    if n_pay > max_payload:
        raise WireError(f"an answer of {n_pay / 2**20:.0f} MiB (at most {max_payload / 2**20:.0f} MiB)")
    return header, _read_exact(fd, n_pay, deadline)


# ====================================================================== values: worker side
def encode_value(value, tensors: list | None = None) -> tuple[dict, bytes]:
    """(JSON tree, npz bytes) describing ``value``; tensors and arrays go into the npz. Runs in the worker.
    ``tensors``: if given, each tensor encoded is appended to it, in the order ``decode_value`` returns them."""
    arrays: dict[str, np.ndarray] = {}

    def enc(v, depth):
        if depth > MAX_DEPTH:
            return {"t": "other", "type": "nested too deep"}
        if v is None:
            return {"t": "none"}
        if isinstance(v, bool | np.bool_):
            return {"t": "bool", "v": bool(v)}
        if isinstance(v, int | np.integer):
            return {"t": "int", "v": int(v)} if abs(int(v)) < 2**63 else {"t": "float", "v": str(float(v))}
        if isinstance(v, float | np.floating):
            return {"t": "float", "v": repr(float(v))}
        if isinstance(v, str):
            return {"t": "str", "v": v[:MAX_STR]}
        if isinstance(v, torch.Tensor):
            name = str(v.dtype).removeprefix("torch.")
            if name not in _DTYPES:
                return {"t": "other", "type": f"tensor of dtype {name}"}
            key = f"a{len(arrays)}"
            arrays[key] = v.detach().cpu().to(_DTYPES[name][0] if name != "bfloat16" else torch.float32).numpy()
            if tensors is not None:
                tensors.append(v)
            return {"t": "tensor", "k": key, "dtype": name, "shape": list(v.shape), "rg": bool(v.requires_grad)}
        if isinstance(v, np.ndarray) and v.dtype.kind in _NP_KINDS and v.dtype.itemsize <= 8:
            key = f"a{len(arrays)}"
            arrays[key] = np.ascontiguousarray(v)
            return {"t": "ndarray", "k": key, "dtype": str(v.dtype), "shape": list(v.shape)}
        if isinstance(v, tuple | list) and len(v) <= MAX_ITEMS:
            return {"t": type(v).__name__ if type(v) in (tuple, list) else "tuple", "v": [enc(x, depth + 1) for x in v]}
        if isinstance(v, dict) and len(v) <= MAX_ITEMS and all(isinstance(k, str) for k in v):
            return {"t": "dict", "v": [[k[:200], enc(x, depth + 1)] for k, x in v.items()]}
        return {"t": "other", "type": type(v).__name__[:60]}

    tree = enc(value, 0)
    buf = io.BytesIO()
    if arrays:
        np.savez(buf, **arrays)
    return tree, buf.getvalue()


# ====================================================================== values: grader side
class Opaque:
    """Stands for a value the worker could not send as plain data (its type name only)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} from the submission>"


def _opaque(type_name) -> Opaque:
    name = type_name if isinstance(type_name, str) and type_name.isidentifier() and len(type_name) <= 60 else "object"
    return type(name, (Opaque,), {})()


def _npy_header(f) -> tuple[tuple, np.dtype]:
    """(shape, dtype) from an .npy header, read before any data: a header may claim any size."""
    from numpy.lib import format as npy

    version = npy.read_magic(f)
    read = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
    if read is None:
        raise WireError(f"an array file of version {version}")
    shape, _, dtype = read(f)
    return shape, dtype


def load_arrays(payload: bytes, *, max_elements: int) -> dict[str, np.ndarray]:
    """The arrays of an npz payload, read without pickle: every header is checked (numbers only, at most
    ``max_elements`` numbers in all) before the array behind it is read."""
    if not payload:
        return {}
    from numpy.lib import format as npy

    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            names = z.namelist()
            if len(names) > MAX_ITEMS or not all(n.endswith(".npy") for n in names):
                raise WireError("an answer that is not a plain array file (unexpected members)")
            out, total = {}, 0
            for name in names:
                with z.open(name) as f:
                    shape, dtype = _npy_header(f)
                if dtype.kind not in _NP_KINDS or dtype.itemsize > 8 or dtype.fields is not None:
                    raise WireError(f"an array of dtype {dtype} (numbers only)")
                total += math.prod(shape)
                if total > max_elements:
                    raise WireError(f"more than {max_elements} numbers in one answer")
                with z.open(name) as f:
                    out[name[:-4]] = npy.read_array(f, allow_pickle=False)
            return out
    except WireError:
        raise
    except Exception as exc:  # not a zip, a pickled object array, a truncated file...
        raise WireError(f"an answer that is not a plain array file ({type(exc).__name__}: {str(exc)[:200]})") from None


def decode_value(tree, arrays: dict[str, np.ndarray]):
    """Rebuild a value from ``encode_value``'s tree, checking every node. Tensors come back as CPU leaves;
    ``requires_grad`` as the worker reported it (``tensor_requires_grad``). Raises ``WireError``."""
    grads: list[bool] = []
    tensors: list[torch.Tensor] = []

    def dec(node, depth):
        if depth > MAX_DEPTH + 1 or not isinstance(node, dict):
            raise WireError("a malformed value")
        kind = node.get("t")
        v = node.get("v")
        if kind == "none":
            return None
        if kind == "bool" and isinstance(v, bool):
            return v
        if kind == "int" and isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63:
            return v
        if kind == "float" and isinstance(v, str) and len(v) < 40:
            try:
                return float(v)
            except ValueError:
                raise WireError("a malformed number") from None
        if kind == "str" and isinstance(v, str):
            return v[:MAX_STR]
        if kind in ("tensor", "ndarray"):
            a = arrays.get(node.get("k"))
            if a is None or not isinstance(node.get("shape"), list) or list(a.shape) != node["shape"]:
                raise WireError("an array whose shape does not match its description")
            if kind == "ndarray":
                return a
            dtype = _DTYPES.get(node.get("dtype"))
            if dtype is None or np.dtype(dtype[1]) != a.dtype:
                raise WireError("a tensor whose dtype does not match its description")
            t = torch.from_numpy(a.copy()).to(dtype[0])
            tensors.append(t)
            grads.append(bool(node.get("rg")) and t.is_floating_point())
            return t
        if kind in ("tuple", "list") and isinstance(v, list) and len(v) <= MAX_ITEMS:
            items = [dec(x, depth + 1) for x in v]
            return tuple(items) if kind == "tuple" else items
        if kind == "dict" and isinstance(v, list) and len(v) <= MAX_ITEMS:
            out = {}
            for pair in v:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                    raise WireError("a malformed dict")
                out[pair[0][:200]] = dec(pair[1], depth + 1)
            return out
        if kind == "other":
            return _opaque(node.get("type"))
        raise WireError(f"a value of unknown kind {str(kind)[:40]!r}")

    value = dec(tree, 0)
    return value, tensors, grads

