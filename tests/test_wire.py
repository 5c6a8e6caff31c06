"""What the grader reads back from a worker: plain numbers and arrays, checked against their description."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

from course_lib import _wire


def _roundtrip(value):
    tree, data = _wire.encode_value(value)
    return _wire.decode_value(tree, _wire.load_arrays(data, max_elements=10**6))


def test_values_come_back_as_they_left():
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True) * 2
    value, tensors, grads = _roundtrip({"a": (x, 3, 2.5, None, "s"), "b": [np.arange(4), True, float("nan")]})
    assert torch.equal(value["a"][0], x.detach()) and value["a"][1:4] == (3, 2.5, None)
    assert value["a"][4] == "s" and np.array_equal(value["b"][0], np.arange(4)) and value["b"][1] is True
    assert np.isnan(value["b"][2])
    assert len(tensors) == 1 and grads == [True]  # the worker said: this output carries a gradient
    half = _roundtrip(torch.ones(2, dtype=torch.bfloat16))[0]
    assert half.dtype == torch.bfloat16
    assert type(_roundtrip(object())[0]).__name__ == "object"  # an opaque stand-in, not the object


def test_a_pickle_payload_is_refused_unread(tmp_path):
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buf = io.BytesIO()
    np.savez(buf, a0=np.array([Boom()], dtype=object))
    with pytest.raises(_wire.WireError, match="numbers only"):
        _wire.load_arrays(buf.getvalue(), max_elements=100)
    assert not marker.exists()


def test_an_array_header_is_checked_before_its_data():
    """A header that claims 10^12 numbers is refused without allocating them; so is a non-array member."""
    import zipfile

    from numpy.lib import format as npy

    head = io.BytesIO()
    npy.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    for member, data in (("a0.npy", head.getvalue() + b"\0" * 64), ("a0.pkl", b"x")):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(member, data)
        with pytest.raises(_wire.WireError):
            _wire.load_arrays(buf.getvalue(), max_elements=10**6)


def test_descriptions_must_match_the_arrays():
    tree, data = _wire.encode_value(torch.zeros(2, 3))
    arrays = _wire.load_arrays(data, max_elements=100)
    for bad in ({**tree, "shape": [3, 2]}, {**tree, "dtype": "int64"}, {**tree, "k": "a9"}, {"t": "float", "v": 1.0},
                {"t": "int", "v": 2**70}, {"t": "nope"}, [1, 2]):
        with pytest.raises(_wire.WireError):
            _wire.decode_value(bad, arrays)
    with pytest.raises(_wire.WireError, match="more than 5 numbers"):
        _wire.load_arrays(data, max_elements=5)


def test_frames_are_checked(tmp_path):
    r, w = os.pipe()
    _wire.write_frame(w, {"ok": True}, b"xyz")
    assert _wire.read_frame(r, deadline=None) == ({"ok": True}, b"xyz")
    os.write(w, _wire.frame({"ok": True}, b"x" * 100))
    with pytest.raises(_wire.WireError, match="MiB"):
        _wire.read_frame(r, max_payload=10)
    r2, w2 = os.pipe()
    os.write(w2, b"garbage!")
    with pytest.raises(_wire.WireError, match="marker"):
        _wire.read_frame(r2)
    r3, w3 = os.pipe()
    with pytest.raises(TimeoutError):
        import time

        _wire.read_frame(r3, deadline=time.monotonic() + 0.2)
    # an answer that arrived in time is read even when the reader comes to it after the deadline (a busy machine)
    _wire.write_frame(w3, {"ok": True}, b"late reader")
    assert _wire.read_frame(r3, deadline=time.monotonic() - 1.0) == ({"ok": True}, b"late reader")
    with pytest.raises(TimeoutError):
        _wire.read_frame(r3, deadline=time.monotonic() - 1.0)  # nothing there: a timeout at once
    for fd in (r, w, r2, w2, r3, w3):
        os.close(fd)
