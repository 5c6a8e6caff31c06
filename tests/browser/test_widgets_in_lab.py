"""The widgets in a real browser: every notebook with a widget, run in JupyterLab driven by Chromium.

For each notebook in notebooks/ that uses ``course_lib.widgets`` (new ones join automatically) and for
the fixture ``fixtures/widget_smoke.ipynb``: run all cells (FAST), no cell error, every widget rendered
with a drawn figure, every slider moves its figure within 1 s; screenshots of each widget before and
after go to build/browser/ (``lab_harness`` says exactly what is checked). The harness checks run
copies of the fixture broken on purpose and assert that the harness reports each break.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import lab_harness
import pytest
from lab_harness import WidgetCheckFailed, check_widget_notebook

from course_lib._notebooks import _WIDGET_USE, uses_widgets, widget_notebooks

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "widget_smoke.ipynb"
VIEWPORT_NOTE = "1600 px wide window, side panels closed"
HARNESS_DIR = ROOT / "build" / "browser" / "harness"  # inside the server's root, ignored by git

WIDGET_NOTEBOOKS = widget_notebooks()


def _check(page, lab, path: Path, out: Path):
    relpath = path.relative_to(ROOT).as_posix()
    t0 = time.perf_counter()
    reports = check_widget_notebook(page, lab, relpath, out)
    print(f"\n{relpath}: {len(reports)} widget(s) checked in {time.perf_counter() - t0:.1f} s")
    for r in reports:
        moves = ", ".join(f"{label} {old}->{new} in {s * 1000:.0f} ms" for label, old, new, s in r.moves)
        print(f"  widget {r.index}: {moves}\n    {r.before}\n    {r.after}")
        if r.width[0] > r.width[1]:
            print(f"    note: {r.width[0]} px wide, wider than its output area ({r.width[1]} px in a "
                  f"{VIEWPORT_NOTE}): cut off on the right")
    return reports


@pytest.mark.browser
@pytest.mark.slow
def test_fixture_widget_works_in_jupyterlab(lab, lab_page, browser_out):
    reports = _check(lab_page, lab, FIXTURE, browser_out)
    assert len(reports) == 1 and len(reports[0].moves) == 1


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("path", WIDGET_NOTEBOOKS, ids=[p.stem for p in WIDGET_NOTEBOOKS])
def test_notebook_widgets_work_in_jupyterlab(path, lab, lab_page, browser_out):
    _check(lab_page, lab, path, browser_out)


# What the harness must report for each break of the fixture (see its BREAK cell).
BREAKS = {
    "build": [r"cell \d+ raised RuntimeError: SmokeView._build broken on purpose"],
    "update": [r"moving the slider 'frequency f' from 1\.00 to 1\.75 did not change its figure within 1 s",
               r"the kernel raised RuntimeError: SmokeView\._update broken on purpose.* while the sliders moved"],
    "predraw": [r"widget 0's figure is blank: its ipympl canvas is 0 x 0 px"],
    "frontend": [r"the notebook shows an ipywidgets error widget: .*NoSuchView.*@course-kit/no-such-module"],
}


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(BREAKS))
def test_harness_reports_a_broken_widget(mode, lab, lab_page, browser_out, monkeypatch):
    # a blank figure is only reported once the widgets had WIDGET_TIMEOUT to draw: shorter here
    monkeypatch.setattr(lab_harness, "WIDGET_TIMEOUT", 15.0)
    nb = json.loads(FIXTURE.read_text(encoding="utf-8"))
    hits = 0
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code" and 'BREAK = ""' in src:
            cell["source"] = src.replace('BREAK = ""', f'BREAK = "{mode}"', 1)
            hits += 1
    assert hits == 1, "the fixture notebook has lost its BREAK = \"\" line"
    HARNESS_DIR.mkdir(parents=True, exist_ok=True)
    broken = HARNESS_DIR / f"widget_smoke_broken_{mode}.ipynb"
    broken.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    with pytest.raises(WidgetCheckFailed) as failed:
        _check(lab_page, lab, broken, browser_out)
    message = str(failed.value)
    print(f"\nthe harness reported, as it should:\n{message}")
    for pattern in BREAKS[mode]:
        assert re.search(pattern, message), f"expected {pattern!r} in the harness's report:\n{message}"


def test_widget_notebooks_are_discovered():
    """The discovery rule (no browser needed): the fixture counts, a notebook without widgets does not."""
    assert uses_widgets(FIXTURE)
    assert all(uses_widgets(p) for p in WIDGET_NOTEBOOKS)
    for src, expected in [("from course_lib.widgets.elbo import ElboView", True),
                          ("import course_lib.widgets.noising as noising", True),
                          ("from course_lib import plotting, widgets", True),
                          ("from course_lib import plotting\nimport ipywidgets as widgets", False)]:
        assert bool(_WIDGET_USE.search(src)) is expected, src
