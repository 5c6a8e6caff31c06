"""The lecture mode in a real browser: each widget notebook presented as slides, its widgets live on their slides.

A server is started the way ``python -m course_lib lecture NN`` starts it (``course_lib.lecture``: its own settings
with the deck of jupyterlab-slideshow switched on and lecture fonts, the lecture copy of the notebook in
build/lecture/), with ``--skip-models`` (the kernel loads the models as it runs; tests/test_lecture.py covers the
check) and the harness's ``expose_app_in_browser``. For each notebook that uses course_lib's widgets
(test_widgets_in_lab's rule), in FAST mode: open its lecture copy, check that it opens presenting, run all cells
(lab_harness: no cell error, every widget drawn), go to the first slide and step forward through the deck; on
each step where a widget is on the screen, move each of its sliders with the arrow keys and see its figure change
(lab_harness's ``move_slider``), check that the deck stayed on that slide, and save the screen as
``build/browser/lecture__<notebook>__slide<k>.png`` (k: the slide's number, counting slides and sub-slides).
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

import pytest
from conftest import _free_port, require_browser, served, tab
from lab_harness import NotebookCheck
from test_widgets_in_lab import WIDGET_NOTEBOOKS

from course_lib import lecture

ROOT = Path(__file__).resolve().parents[2]

# -- JavaScript run in the page ------------------------------------------------------------------------------------

_PRESENTING = "() => document.body.dataset.jpDeckMode === 'presenting'"

_FIRST_SLIDE = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  nb.activeCellIndex = 0; nb.mode = 'command';
  return window.jupyterapp.commands.execute('deck:start');
}"""

_FORWARD = "() => window.jupyterapp.commands.execute('deck:forward')"

# The active cell, its slide's number (slides and sub-slides up to it, from the cells' metadata), and which course
# widgets are on the screen: their cell shown by the deck and the widget's middle not covered by anything else.
_WHERE = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  const active = nb.activeCellIndex;
  let slide = 0;
  nb.widgets.slice(0, active + 1).forEach((cell) => {
    const show = cell.model.getMetadata('slideshow') || {};
    if (show.slide_type === 'slide' || show.slide_type === 'subslide') slide += 1;
  });
  const shown = Array.from(nb.node.querySelectorAll('.course-widget')).map((w) => {
    const cell = w.closest('.jp-Cell');
    if (!cell || getComputedStyle(cell).visibility !== 'visible') return false;
    const r = w.getBoundingClientRect();
    if (r.bottom <= 0 || r.top >= window.innerHeight) return 'offscreen';
    const y = Math.min(Math.max(r.top + 20, 0), window.innerHeight - 1);
    const e = document.elementFromPoint(r.left + r.width / 2, y);
    return !!(e && w.contains(e)) || 'covered';
  });
  return {active, slide: Math.max(slide, 1), shown};
}"""


@pytest.fixture(scope="module")
def lecture_lab(browser_out, tmp_path_factory):
    """JupyterLab as ``python -m course_lib lecture`` starts it (FAST, on 127.0.0.1, a random port and token)."""
    require_browser()
    home = tmp_path_factory.mktemp("lecture")
    port, token = _free_port(), secrets.token_hex(16)
    first = WIDGET_NOTEBOOKS[0].name[:2] if WIDGET_NOTEBOOKS else "01"
    cmd = [sys.executable, "-m", "course_lib.lecture", first, "--skip-models", "--no-browser", f"--port={port}",
           f"--token={token}", "--", "--ip=127.0.0.1", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--FileCheckpoints.checkpoint_dir={home / 'checkpoints'}"]
    env = dict(os.environ, COURSE_FAST="1", PYTHONUNBUFFERED="1")
    env.pop("MPLBACKEND", None)
    with served(cmd, env=env, log=browser_out / "lecture-jupyterlab.log", port=port, token=token,
                what="the lecture server") as server:
        yield server


@pytest.fixture
def lecture_page(lecture_lab, browser_context):
    """A fresh tab of the browser suite's Chromium; afterwards closed, and the lecture server's kernels shut down."""
    with tab(browser_context, lecture_lab) as page:
        yield page


def present(page, lab, path: Path, out: Path) -> dict:
    """Run the lecture copy of ``path``, step through its deck, move every widget's sliders on its slide; returns
    {widget index: (slide number, moves)} and saves a screenshot of each slide holding a widget."""
    copy = lecture.lecture_copy(path, lecture.LECTURE_DIR)  # what `python -m course_lib lecture NN` presents
    check = NotebookCheck(page, lab, copy.relative_to(ROOT).as_posix(), out)
    check.open_and_run()
    if not page.evaluate(_PRESENTING):
        check.fail(["the notebook did not open as a deck (jupyterlab-slideshow's presenting mode): is "
                    "jupyterlab-slideshow installed, and did the lecture's settings switch it on?"])
    # widgets on hidden slides are checked for a drawn figure when their slide is shown (require_drawn below)
    n_widgets = len(check.wait_for_widgets(visible_only=True)["widgets"])
    page.evaluate(_FIRST_SLIDE)
    page.wait_for_timeout(500)
    seen: dict[int, tuple] = {}
    problems = []
    for _ in range(500):  # steps; the deck's last one ends the loop
        where = page.evaluate(_WHERE)
        new = [i for i, s in enumerate(where["shown"]) if s is True and i not in seen]
        for i in new:
            blank = check.require_drawn(i)
            if blank:
                problems.append(f"{blank} (slide {where['slide']})")
            widget = page.locator(".course-widget").nth(i)
            sliders = widget.locator(".widget-slider")
            moves = []
            for j in range(sliders.count()):
                slider = sliders.nth(j)
                if slider.locator(".noUi-handle").count() == 0 or slider.locator("[disabled]").count():
                    continue
                move, problem = check.move_slider(i, slider)
                moves.append(move)
                if problem:
                    problems.append(f"widget {i} (slide {where['slide']}): {problem}")
            check.settle(i)
            after = page.evaluate(_WHERE)
            if not page.evaluate(_PRESENTING) or after["shown"][i] is not True:
                problems.append(f"moving widget {i}'s sliders took the deck off its slide ({where['slide']})")
            seen[i] = (where["slide"], moves)
        if new:
            page.screenshot(path=str(out / f"lecture__{path.stem}__slide{where['slide']}.png"))
        before = page.evaluate(_WHERE)["active"]
        page.evaluate(_FORWARD)
        page.wait_for_timeout(300)
        if page.evaluate(_WHERE)["active"] == before:  # the last step
            break
    missing = sorted(set(range(n_widgets)) - set(seen))
    if missing:
        problems.append(f"widgets {missing} were on no slide the deck showed (stepping forward from the first)")
    problems += [f"the kernel raised {e} while the sliders moved" for e in check.callback_errors()]
    if problems:
        check.fail(problems)
    return seen


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("path", WIDGET_NOTEBOOKS, ids=[p.stem for p in WIDGET_NOTEBOOKS])
def test_notebook_widgets_work_in_the_lecture_deck(path, lecture_lab, lecture_page, browser_out):
    t0 = time.perf_counter()
    seen = present(lecture_page, lecture_lab, path, browser_out)
    print(f"\n{path.name}: presented in {time.perf_counter() - t0:.1f} s")
    for i, (slide, moves) in sorted(seen.items()):
        text = ", ".join(f"{label} {old}->{new} in {s * 1000:.0f} ms" for label, old, new, s in moves)
        print(f"  widget {i} on slide {slide}: {text}\n    {browser_out / f'lecture__{path.stem}__slide{slide}.png'}")
    assert seen
