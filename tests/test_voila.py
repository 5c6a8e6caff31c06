"""Every widget notebook served by Voilà as a dashboard: the page renders, with its widgets and without an error.

Starts ``voila`` on 127.0.0.1 at a free port, in FAST mode, on each notebook that shows a course widget
(``_notebooks.widget_notebooks``) and fetches the rendered page. Skipped when voila is not installed (it is in the
``homework`` extra). Notebook 08 trains its FAST toy models on the first request unless they are cached, so its
page may take minutes on 2 busy cores.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from course_lib._notebooks import widget_notebooks

pytest.importorskip("voila")
NOTEBOOKS = widget_notebooks()
PAGE_TIMEOUT = float(os.environ.get("COURSE_VOILA_TIMEOUT", "900"))  # seconds until the page is served


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_widget_notebooks_are_found():
    assert {p.name[:2] for p in NOTEBOOKS} >= {"01", "04", "05", "08"}


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name[:2] for p in NOTEBOOKS])
def test_widget_notebook_renders_under_voila(notebook, tmp_path):
    port = _free_port()
    env = {**os.environ, "COURSE_FAST": "1", "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = (tmp_path / "voila.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}",
                             "--Voila.ip=127.0.0.1", "--show_tracebacks=True"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        page = None
        deadline = time.monotonic() + PAGE_TIMEOUT
        while time.monotonic() < deadline and page is None:
            assert proc.poll() is None, (tmp_path / "voila.log").read_text()[-3000:]
            try:  # the first request executes the notebook, so it may take a while
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=PAGE_TIMEOUT) as response:
                    assert response.status == 200
                    page = response.read().decode("utf-8", "replace")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        assert page is not None, (tmp_path / "voila.log").read_text()[-3000:]
        (tmp_path / "page.html").write_text(page)
        assert "application/vnd.jupyter.widget-view+json" in page  # the widgets are on the page
        errors = [m.start() for m in re.finditer(r"Traceback|jp-OutputArea-output[^>]*stderr", page)]
        assert not errors, page[max(0, errors[0] - 500):errors[0] + 1500]  # no cell failed
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
