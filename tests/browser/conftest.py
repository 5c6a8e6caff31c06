"""JupyterLab driven by Chromium: the `browser` marker, the server and the browser for tests/browser/.

Needs Debian's ``chromium`` (``/usr/bin/chromium``; ``COURSE_CHROMIUM`` points elsewhere) and the
``playwright`` Python package, which only drives it (never ``playwright install``: the browser is the
system's). Without either the tests skip with the reason; under CI (the ``CI`` environment variable set)
they fail instead, so CI can never skip them silently.

The server is this environment's JupyterLab (``sys.executable -m jupyterlab``, what ``make lab`` runs)
on 127.0.0.1 with a random port and token, rooted at the repository so that both ``notebooks/`` and the
fixture notebook can be opened. It gets its own settings and workspaces (autosave off, so the notebooks
on disk are never rewritten with outputs; all cells attached to the DOM; no news fetched), writes its
checkpoints outside the repository, and runs kernels with ``COURSE_FAST=1``. ``COURSE_DATA_DIR`` and
``COURSE_CACHE_DIR`` pass through from the environment. Output (server log, screenshots, the harness
checks' notebook copies) goes to ``build/browser/`` (``COURSE_BROWSER_OUT`` overrides).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]  # containers often have a tiny /dev/shm
VIEWPORT = {"width": 1600, "height": 1000}
SERVER_START_TIMEOUT = 120

# User settings for the test server (JUPYTERLAB_SETTINGS_DIR), by plugin.
LAB_SETTINGS = {
    # never save: the notebooks in the repository stay without outputs
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    # every cell in the DOM (no virtual scrolling), so every widget can be found
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    # no request leaves 127.0.0.1, no news toast over the notebook
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: drives JupyterLab in Chromium (needs /usr/bin/chromium and playwright; "
        "skipped without them, failed without them under CI)")


def require_browser() -> None:
    """Skip (locally) or fail (under CI) when Chromium or playwright is missing."""
    missing = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright Python package (pip install playwright; "
                       "no `playwright install`, the system's Chromium is used)")
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is a failure, not a skip", pytrace=False)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    """A running JupyterLab server."""

    url: str
    token: str
    log: Path
    proc: subprocess.Popen

    def api(self, method: str, path: str):
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            return f.read()

    def shutdown_kernels(self) -> None:
        """Delete every session (and so its kernel): the next notebook starts on free cores."""
        for s in self.api("GET", "sessions"):
            try:
                self.api("DELETE", f"sessions/{s['id']}")
            except urllib.error.HTTPError:
                pass


def lab_command(home: Path) -> tuple[list[str], dict, int, str]:
    """The test JupyterLab's command line, environment, port and token (FAST; settings and checkpoints in home)."""
    settings = home / "settings"
    for plugin, values in LAB_SETTINGS.items():
        f = settings / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values), encoding="utf-8")
    env = dict(os.environ, COURSE_FAST="1", JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), PYTHONUNBUFFERED="1")
    env.pop("MPLBACKEND", None)  # the kernel's own default (inline), as for a student
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           # an absolute checkpoint_dir: checkpoints of opened notebooks go there, not next to them
           f"--FileCheckpoints.checkpoint_dir={home / 'checkpoints'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root; the Makefile does the same
    return cmd, env, port, token


@contextmanager
def tab(browser_context, server: Lab):
    """A fresh tab of the suite's Chromium; afterwards the tab is closed and every kernel of ``server`` shut down."""
    page = browser_context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        page.close()
        server.shutdown_kernels()


@contextmanager
def served(cmd: list[str], *, env: dict, log: Path, port: int, token: str, what: str = "JupyterLab"):
    """Start the server ``cmd`` (in the repository, output to ``log``), wait until its REST API answers, yield its
    ``Lab``, and stop its whole process group afterwards. Fails (pytest.fail) if it exits or never answers."""
    with open(log, "w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Lab(url=f"http://127.0.0.1:{port}", token=token, log=log, proc=proc)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{what} exited with code {proc.returncode}; its log:\n{server.log_since(0)[-3000:]}")
            try:
                server.api("GET", "status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{what} did not answer within {SERVER_START_TIMEOUT} s; see {log}")
                time.sleep(0.3)
        yield server
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def browser_out() -> Path:
    """Where screenshots, the server log and the harness checks' notebooks go."""
    out = Path(os.environ.get("COURSE_BROWSER_OUT", ROOT / "build" / "browser")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    return out


@pytest.fixture(scope="session")
def lab(browser_out, tmp_path_factory):
    require_browser()
    home = tmp_path_factory.mktemp("jupyterlab")
    cmd, env, port, token = lab_command(home)
    with served(cmd, env=env, log=browser_out / "jupyterlab.log", port=port, token=token) as server:
        yield server


@pytest.fixture(scope="session")
def browser_context(lab, tmp_path_factory):
    """Chromium (the system's) with a new, empty user-data directory."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport=VIEWPORT, device_scale_factor=1)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def lab_page(lab, browser_context):
    """A fresh browser tab; afterwards the tab is closed and every kernel shut down."""
    with tab(browser_context, lab) as page:
        yield page
