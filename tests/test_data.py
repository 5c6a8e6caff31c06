"""Tests of course_lib.data: IDX parsing, where files are looked for, and downloads from a local server.

Nothing here contacts the internet: every test runs with the default mirrors pointed at a closed port
on 127.0.0.1, the cache in a temporary directory, and downloads served by ``http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import data
from course_lib.data import MNISTDownloadError, load_mnist, mnist_dir, mnist_tensors

# read before the fixture below clears it for the other tests
_REAL_DATA_ENV = os.environ.get("COURSE_DATA_DIR", "").strip()
_REAL_DATA_DIR = (
    Path(_REAL_DATA_ENV) if _REAL_DATA_ENV else Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
)

_MODULE_SHA256 = dict(data.MNIST_SHA256)

N = {"train": 5, "test": 3}
LABELS = {"train": [3, 1, 4, 1, 5], "test": [9, 2, 6]}


# ------------------------------------------------------------------------------------------- helpers
def idx_images(images: np.ndarray) -> bytes:
    return struct.pack(">IIII", 0x803, *images.shape) + images.astype(np.uint8).tobytes()


def idx_labels(labels) -> bytes:
    labels = np.asarray(labels, dtype=np.uint8)
    return struct.pack(">II", 0x801, len(labels)) + labels.tobytes()


def synthetic_images(split: str) -> np.ndarray:
    """Distinctive pixels: image i of the test split starts at 100 + 7 i, of the train split at 7 i."""
    n = N[split]
    base = 0 if split == "train" else 100
    return ((base + 7 * np.arange(n)[:, None] + np.arange(784)[None, :]) % 256).reshape(n, 28, 28).astype(np.uint8)


def synthetic_files() -> dict[str, bytes]:
    """The four uncompressed IDX files, keyed by their standard names."""
    out = {}
    for split, (img, lab) in data.MNIST_FILES.items():
        out[img] = idx_images(synthetic_images(split))
        out[lab] = idx_labels(LABELS[split])
    return out


def gz_files() -> dict[str, bytes]:
    return {name + ".gz": gzip.compress(raw, mtime=0) for name, raw in synthetic_files().items()}


def checksums_of(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(b).hexdigest() for name, b in files.items()}


def write_dir(directory: Path, gz: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in (gz_files() if gz else synthetic_files()).items():
        (directory / name).write_bytes(content)
    return directory


def assert_synthetic(m, split: str) -> None:
    assert m.images.dtype == np.uint8 and m.images.shape == (N[split], 28, 28)
    assert m.labels.dtype == np.int64 and m.labels.tolist() == LABELS[split]
    np.testing.assert_array_equal(m.images, synthetic_images(split))


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/mnist/"


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


class Server:
    """A local HTTP server with files under /mnist/; ``mode`` 'ok' or 'truncate' (half the body, then close)."""

    def __init__(self, files: dict[str, bytes], mode: str = "ok"):
        self.files, self.mode, self.requests = files, mode, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.requests.append(self.path)
                body = outer.files.get(self.path.removeprefix("/mnist/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if outer.mode == "ok" else body[: len(body) // 2])
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def serve():
    servers = []

    def start(files=None, mode="ok"):
        s = Server(gz_files() if files is None else files, mode)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real cache, no data directory from the environment, and default mirrors that cannot go out."""
    for var in ("COURSE_DATA_DIR", "COURSE_MNIST_MIRRORS", "COURSE_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data, "MNIST_MIRRORS", (closed_port_url(),))
    monkeypatch.setattr(data, "MNIST_SHA256", checksums_of(gz_files()))


# --------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_load_from_local_dir(tmp_path, gz):
    d = write_dir(tmp_path / "mnist", gz=gz)
    for split in ("train", "test"):
        m = load_mnist(split, data_dir=d, download=False)
        assert_synthetic(m, split)
        assert m.images.flags.writeable  # students may normalise in place
    assert mnist_dir("test", data_dir=d) == d
    assert "uint8 (5, 28, 28)" in repr(load_mnist(data_dir=d))


def test_data_dir_missing_files(tmp_path):
    d = write_dir(tmp_path / "mnist")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    load_mnist("train", data_dir=d)  # the train split is complete
    with pytest.raises(FileNotFoundError, match=r"lacks the MNIST test file\(s\) t10k-labels-idx1-ubyte") as info:
        load_mnist("test", data_dir=d)
    assert str(d) in str(info.value) and "t10k-images" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist("test", data_dir=tmp_path / "nowhere")


def test_env_data_dir_comes_before_cache(tmp_path, monkeypatch):
    env_dir = write_dir(tmp_path / "env")
    cache = write_dir(tmp_path / "cache" / "mnist")
    # make the cached copy different, so the test sees which one was read
    (cache / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_labels([0, 0, 0])))
    assert load_mnist("test", cache_dir=tmp_path / "cache").labels.tolist() == [0, 0, 0]
    monkeypatch.setenv("COURSE_DATA_DIR", str(env_dir))
    assert load_mnist("test", cache_dir=tmp_path / "cache").labels.tolist() == LABELS["test"]
    assert mnist_dir("test", cache_dir=tmp_path / "cache") == env_dir
    # an env dir without the files falls back to the cache, with a warning that says so
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "empty"))
    with pytest.warns(UserWarning, match="COURSE_DATA_DIR"):
        assert load_mnist("test", cache_dir=tmp_path / "cache").labels.tolist() == [0, 0, 0]


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    assert data.cache_root() == tmp_path / "xdg" / "course_lib"
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "c"))
    assert data.cache_root() == tmp_path / "c"
    write_dir(tmp_path / "c" / "mnist")
    assert_synthetic(load_mnist("train", download=False), "train")


def test_download_into_cache(tmp_path, serve, monkeypatch):
    server = serve()
    cache = tmp_path / "cache"
    m = load_mnist("train", cache_dir=cache, mirrors=[server.url], progress=False)
    assert_synthetic(m, "train")
    names = sorted(n + ".gz" for n in data.MNIST_FILES["train"])
    assert leftovers(cache / "mnist") == names  # only the train files, and no temporary files
    for name in names:
        assert (cache / "mnist" / name).read_bytes() == gz_files()[name]
    assert len(server.requests) == 2
    # a second load reads the cache and does not touch the server
    assert_synthetic(load_mnist("train", cache_dir=cache, mirrors=[server.url], progress=False), "train")
    assert len(server.requests) == 2
    # the mirror list may also come from COURSE_MNIST_MIRRORS (comma-separated)
    monkeypatch.setenv("COURSE_MNIST_MIRRORS", f"{closed_port_url()}, {server.url}")
    assert_synthetic(load_mnist("test", cache_dir=cache, progress=True), "test")
    assert len(leftovers(cache / "mnist")) == 4


def test_checksum_mismatch_leaves_nothing(tmp_path, serve):
    bad = gz_files()
    bad["train-images-idx3-ubyte.gz"] = gzip.compress(idx_images(np.zeros((5, 28, 28), np.uint8)))
    bad_server = serve(bad)
    cache = tmp_path / "cache"
    with pytest.raises(MNISTDownloadError) as info:
        load_mnist("train", cache_dir=cache, mirrors=[bad_server.url], progress=False)
    msg = str(info.value)
    expected = data.MNIST_SHA256["train-images-idx3-ubyte.gz"]
    got = hashlib.sha256(bad["train-images-idx3-ubyte.gz"]).hexdigest()
    assert "train-images-idx3-ubyte.gz" in msg and expected in msg and got in msg
    assert leftovers(cache / "mnist") == []
    # with a good second mirror, the download falls through to it
    good_server = serve()
    m = load_mnist("train", cache_dir=cache, mirrors=[bad_server.url, good_server.url], progress=False)
    assert_synthetic(m, "train")
    assert leftovers(cache / "mnist") == sorted(n + ".gz" for n in data.MNIST_FILES["train"])


def test_offline_message(tmp_path):
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    with pytest.raises(MNISTDownloadError) as info:
        load_mnist("test", cache_dir=cache, progress=False)  # the default mirror: a closed port
    assert time.perf_counter() - t0 < 5
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "COURSE_DATA_DIR" in msg and str(cache / "mnist") in msg
    for name in data.MNIST_FILES["train"] + data.MNIST_FILES["test"]:
        assert name + ".gz" in msg
    assert leftovers(cache / "mnist") == []
    # without download, a FileNotFoundError with the same advice
    with pytest.raises(FileNotFoundError, match="COURSE_DATA_DIR"):
        load_mnist("test", cache_dir=cache, download=False)


def test_truncated_download_leaves_nothing(tmp_path, serve):
    server = serve(mode="truncate")
    cache = tmp_path / "cache"
    with pytest.raises(MNISTDownloadError, match=r"closed after \d+ of \d+ bytes"):
        load_mnist("train", cache_dir=cache, mirrors=[server.url], progress=False)
    assert leftovers(cache / "mnist") == []


def test_interrupted_download_leaves_nothing(tmp_path, serve, monkeypatch):
    class Interrupting:  # stands in for tqdm: Ctrl-C in the middle of the transfer
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            raise KeyboardInterrupt

    monkeypatch.setattr(data, "tqdm", Interrupting)
    server = serve()
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        load_mnist("train", cache_dir=cache, mirrors=[server.url, server.url])
    assert leftovers(cache / "mnist") == []
    assert len(server.requests) == 1  # an interrupt is not a failed mirror: no retry


def test_bad_idx_files(tmp_path):
    d = write_dir(tmp_path / "mnist", gz=False)
    images = d / "train-images-idx3-ubyte"
    good = images.read_bytes()

    images.write_bytes(struct.pack(">I", 0x801) + good[4:])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*magic number 0x00000803"):
        load_mnist("train", data_dir=d)

    images.write_bytes(good[:-10])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: truncated"):
        load_mnist("train", data_dir=d)

    images.write_bytes(good[:6])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: truncated IDX file, 6 bytes"):
        load_mnist("train", data_dir=d)

    images.write_bytes(idx_images(np.zeros((4, 28, 28), np.uint8)))
    with pytest.raises(ValueError, match=r"4 images but .*train-labels-idx1-ubyte has 5 labels"):
        load_mnist("train", data_dir=d)

    images.unlink()
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(good)[:-20])  # a cut-off gzip file
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: not a valid gzip file"):
        load_mnist("train", data_dir=d)


@pytest.mark.parametrize("split", ["training", "val", "TEST", None, 0])
def test_bad_split(split, tmp_path):
    with pytest.raises(ValueError, match=r"^split: expected 'train'.*'test'"):
        load_mnist(split, data_dir=write_dir(tmp_path / "mnist"))


def test_bad_arguments(tmp_path):
    d = write_dir(tmp_path / "mnist")
    with pytest.raises(ValueError, match="^binarize:"):
        mnist_tensors("test", binarize="bernoulli", data_dir=d)
    with pytest.raises(ValueError, match="^limit:"):
        mnist_tensors("test", limit=0, data_dir=d)
    with pytest.raises(TypeError, match="^limit:"):
        mnist_tensors("test", limit=2.5, data_dir=d)
    with pytest.raises(TypeError, match="^generator:"):
        mnist_tensors("test", binarize="dynamic", generator=0, data_dir=d)
    with pytest.raises(TypeError, match="^data_dir:"):
        load_mnist("test", data_dir=3)
    with pytest.raises(ValueError, match="^mirrors:"):
        load_mnist("test", cache_dir=tmp_path / "c", mirrors=[])


def test_mnist_tensors(tmp_path):
    d = write_dir(tmp_path / "mnist")
    x, y = mnist_tensors("train", data_dir=d)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (5,) and y.dtype == torch.int64 and y.tolist() == LABELS["train"]
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    torch.testing.assert_close(x[:, 0] * 255, torch.from_numpy(synthetic_images("train")).float())

    x3, y3 = mnist_tensors("train", data_dir=d, limit=3)
    assert x3.shape == (3, 1, 28, 28) and torch.equal(x3, x[:3]) and torch.equal(y3, y[:3])
    assert mnist_tensors("train", data_dir=d, limit=100)[0].shape[0] == 5

    xt, _ = mnist_tensors("train", data_dir=d, binarize="threshold")
    assert torch.equal(xt, (x > 0.5).float())

    xd, _ = mnist_tensors("train", data_dir=d, binarize="dynamic", generator=torch.Generator().manual_seed(0))
    assert xd.dtype == torch.float32 and set(xd.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(xd.mean()) - float(x.mean())) < 0.02  # 3920 pixels: std of the mean about 0.008
    xd2, _ = mnist_tensors("train", data_dir=d, binarize="dynamic", generator=torch.Generator().manual_seed(0))
    assert torch.equal(xd, xd2)


def test_verify_mnist(tmp_path):
    d = write_dir(tmp_path / "mnist")
    assert set(data.verify_mnist(d).values()) == {True}
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    assert data.verify_mnist(d)["t10k-labels-idx1-ubyte.gz"] is False


@pytest.mark.skipif(not _REAL_DATA_DIR.is_dir(), reason=f"real MNIST not found in {_REAL_DATA_DIR}")
def test_real_mnist():
    real_sha = {
        "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
        "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
        "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
        "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    }
    assert _MODULE_SHA256 == real_sha  # the module's own table (the fixture swaps in the synthetic one)
    for name, sha in real_sha.items():
        path = _REAL_DATA_DIR / name
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, name
    for split, n in (("train", 60000), ("test", 10000)):
        m = load_mnist(split, data_dir=_REAL_DATA_DIR, download=False)
        assert m.images.shape == (n, 28, 28) and m.images.dtype == np.uint8
        assert m.labels.shape == (n,) and m.labels.dtype == np.int64
        assert sorted(np.unique(m.labels).tolist()) == list(range(10))
        assert 0.12 < m.images.mean() / 255 < 0.14  # MNIST's mean pixel is about 0.13
