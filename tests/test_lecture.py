"""``course_lib.lecture`` without a server: which notebook a number names, the model check, the lecture copy, the
settings and the ``jupyter lab`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from course_lib import lecture
from course_lib import prepare as prep
from course_lib._notebooks import NOTEBOOK_DIR
from course_lib.checkpoints import CacheInfo
from course_lib.lecture import LectureError, check_models, command, lecture_copy, main, resolve


def _notebooks(tmp_path, names=("01_a.ipynb", "05_posterior.ipynb", "05b_other.ipynb", "12_late.ipynb")):
    for n in names:
        (tmp_path / n).write_text("{}", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("given", ["05", "5", " 05 ", "05_posterior", "05_posterior.ipynb"])
def test_a_number_names_its_notebook(tmp_path, given):
    assert resolve(given, _notebooks(tmp_path)).name == "05_posterior.ipynb"


def test_two_digit_numbers(tmp_path):
    assert resolve("12", _notebooks(tmp_path)).name == "12_late.ipynb"


@pytest.mark.parametrize("given", ["9", "99", "x", "", "005", "05_nothing", "-1"])
def test_a_bad_number_names_the_choices(tmp_path, given):
    with pytest.raises(LectureError) as err:
        resolve(given, _notebooks(tmp_path))
    assert f"no notebook {given!r}" in str(err.value)
    assert "01_a.ipynb, 05_posterior.ipynb, 05b_other.ipynb, 12_late.ipynb" in str(err.value)


def test_the_course_notebooks_resolve():
    assert resolve("05") == next(NOTEBOOK_DIR.glob("05_*.ipynb"))
    assert resolve("8").name.startswith("08_")


def test_main_reports_a_bad_number(capsys):
    assert main(["99", "--skip-models"]) == 2
    err = capsys.readouterr().err
    assert "lecture: no notebook '99'" in err and "05_posterior_means_and_tweedie.ipynb" in err


def _entries(monkeypatch, sources):
    calls = []

    def loader(source):
        def load(fast, progress):
            calls.append((source, fast))
            if source == "failed":
                raise RuntimeError("no data here")
            return object(), CacheInfo(source, Path(f"/x/{source}.pt"), 0.1, {})
        return load

    entries = [prep.ModelEntry(f"model {nb} {s}", nb, loader(s)) for nb, s in sources]
    monkeypatch.setattr(prep, "registry", lambda log=print: entries)
    return calls


def test_check_models_loads_only_the_notebooks_models(monkeypatch):
    calls = _entries(monkeypatch, [("07", "cache"), ("08", "pretrained"), ("08", "trained")])
    summary = check_models(Path("08_guidance.ipynb"), fast=True, log=lambda *a: None)
    assert [s["source"] for s in summary] == ["pretrained", "trained"]
    assert calls == [("pretrained", True), ("trained", True)]
    assert check_models(Path("05_posterior.ipynb"), fast=False, log=lambda *a: None) == []  # no models


def test_check_models_fails_on_a_model_that_cannot_be_prepared(monkeypatch):
    _entries(monkeypatch, [("08", "cache"), ("08", "failed")])
    with pytest.raises(LectureError, match=r"08_guidance.ipynb: 1 model\(s\) could not be prepared "
                                           r"\(model 08 failed: RuntimeError: no data here\)"):
        check_models(Path("08_guidance.ipynb"), fast=True, log=lambda *a: None)


def test_main_stops_before_the_server_when_a_model_fails(monkeypatch, capsys):
    _entries(monkeypatch, [("08", "failed")])
    monkeypatch.setattr(lecture.subprocess, "Popen", lambda *a, **k: pytest.fail("the server was started"))
    assert main(["08", "--no-browser"]) == 2
    assert "could not be prepared" in capsys.readouterr().err


def test_the_command_line():
    nb = lecture.LECTURE_DIR / "05_posterior_means_and_tweedie.ipynb"
    settings = lecture.LECTURE_DIR / "user-settings"
    cmd = command(nb, settings_dir=settings, port=9999, no_browser=True, token="t", extra=["--ip=127.0.0.1"])
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"]
    for arg in [f"--ServerApp.root_dir={lecture.REPO}", f"--LabApp.user_settings_dir={settings}",
                f"--LabApp.workspaces_dir={lecture.LECTURE_DIR / 'workspaces'}",
                "--LabApp.default_url=/lab/tree/build/lecture/05_posterior_means_and_tweedie.ipynb",
                "--port=9999", "--ServerApp.port_retries=0", "--no-browser", "--IdentityProvider.token=t"]:
        assert arg in cmd
    assert cmd[-1] == "--ip=127.0.0.1"
    plain = command(nb, settings_dir=settings)
    assert not [a for a in plain if a.startswith(("--port", "--no-browser", "--IdentityProvider"))]


def test_allow_root_only_as_root(monkeypatch):
    nb = lecture.LECTURE_DIR / "05_x.ipynb"
    monkeypatch.setattr(lecture.os, "geteuid", lambda: 0, raising=False)
    assert "--allow-root" in command(nb, settings_dir=Path("s"))
    monkeypatch.setattr(lecture.os, "geteuid", lambda: 1000, raising=False)
    assert "--allow-root" not in command(nb, settings_dir=Path("s"))


def test_dry_run_prints_the_command_and_starts_nothing(monkeypatch, capsys):
    monkeypatch.setattr(lecture.subprocess, "Popen", lambda *a, **k: pytest.fail("the server was started"))
    assert main(["05", "--dry-run", "--port", "9999", "--", "--ip=127.0.0.1"]) == 0
    out = capsys.readouterr().out
    assert "-m jupyterlab" in out and "--port=9999" in out and out.strip().endswith("--ip=127.0.0.1")
    assert "/lab/tree/build/lecture/05_posterior_means_and_tweedie.ipynb" in out


def test_main_writes_the_copy_and_settings_then_starts_the_server(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(lecture, "LECTURE_DIR", tmp_path / "lecture")
    started = {}

    class Server:
        def __init__(self, cmd, cwd, env):
            started.update(cmd=cmd, cwd=cwd, env=env)

        def wait(self):
            return 0

    monkeypatch.setattr(lecture.subprocess, "Popen", Server)
    monkeypatch.setattr(lecture, "REPO", tmp_path)  # the copy lives under the server's root
    assert main(["05", "--skip-models", "--no-browser"]) == 0
    copy = tmp_path / "lecture" / "05_posterior_means_and_tweedie.ipynb"
    assert copy.is_file() and started["env"]["COURSE_LECTURE"] == "1" and started["cwd"] == tmp_path
    settings = tmp_path / "lecture" / "user-settings"
    themes = settings / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings"
    assert json.loads(themes.read_text())["overrides"] == lecture.FONTS
    deck = settings / "jupyterlab-slideshow" / "plugin.jupyterlab-settings"
    assert json.loads(deck.read_text()) == {"active": True}
    assert "--LabApp.default_url=/lab/tree/lecture/05_posterior_means_and_tweedie.ipynb" in started["cmd"]


def test_the_lecture_copy(tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    (src / "NOTATION.md").write_text("notation", encoding="utf-8")
    cells = [
        {"cell_type": "markdown", "metadata": {"slideshow": {"slide_type": "slide"}},
         "source": ["# Title\n", "see [the notation](NOTATION.md#x), [elsewhere](OTHER.md), [web](https://a.b/c.md)"]},
        {"cell_type": "code", "metadata": {"slideshow": {"slide_type": "-"}, "tags": ["hide-input"]},
         "execution_count": 3, "outputs": [{"output_type": "stream", "name": "stdout", "text": "hi"}], "source": "x"},
        {"cell_type": "code", "metadata": {"slideshow": {"slide_type": "fragment"}}, "execution_count": None,
         "outputs": [], "source": "y"},
    ]
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (src / "05_x.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    out = lecture_copy(src / "05_x.ipynb", tmp_path / "build" / "lecture")
    assert out == tmp_path / "build" / "lecture" / "05_x.ipynb"
    md, hidden, fragment = json.loads(out.read_text(encoding="utf-8"))["cells"]
    assert md["metadata"] == {"slideshow": {"slide_type": "slide"}}
    assert md["source"] == ("# Title\nsee [the notation](../../nb/NOTATION.md#x), [elsewhere](OTHER.md), "
                            "[web](https://a.b/c.md)")
    assert hidden["metadata"] == {"tags": ["hide-input"], "jupyter": {"source_hidden": True}}  # no "-"
    assert hidden["outputs"] == [] and hidden["execution_count"] is None
    assert fragment["metadata"] == {"slideshow": {"slide_type": "fragment"}}
    assert json.loads((src / "05_x.ipynb").read_text())["cells"][1]["metadata"]["slideshow"] == {"slide_type": "-"}


def test_the_course_notebooks_copy_cleanly(tmp_path):
    """Every widget notebook's lecture copy keeps its cells, slides and sources, without a "-" slide type."""
    for n in ("01", "04", "05", "08"):
        src = resolve(n)
        before = json.loads(src.read_text(encoding="utf-8"))["cells"]
        after = json.loads(lecture_copy(src, tmp_path).read_text(encoding="utf-8"))["cells"]
        assert len(after) == len(before)
        kinds = [c["metadata"].get("slideshow", {}).get("slide_type") for c in after]
        assert "-" not in kinds and kinds.count("slide") == [c["metadata"].get("slideshow", {}).get("slide_type")
                                                           for c in before].count("slide")
        assert [c["source"] for c in after if c["cell_type"] == "code"] == \
               [c["source"] for c in before if c["cell_type"] == "code"]
