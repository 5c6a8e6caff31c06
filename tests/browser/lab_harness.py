"""Check one notebook's widgets in JupyterLab: run all cells, see every widget render, move every slider.

``check_widget_notebook(page, lab, relpath, out_dir)`` opens the notebook in a browser tab, runs all
cells (Lab's own ``notebook:run-all-cells`` command), waits for the kernel to go idle, and raises
``WidgetCheckFailed`` (an AssertionError) listing what went wrong:

- a cell raised, or a code cell did not run;
- text that ipywidgets shows when a widget cannot be displayed ("Error displaying widget", its error
  widget, "Failed to load model class"/"Failed to create view") or has not been ("Loading widget..."),
  once the widgets had ``WIDGET_TIMEOUT`` seconds to render;
- no course widget (``.course-widget``) on the page, a widget without a figure (an ipympl canvas, or
  the image of the fallback) or with a blank one, or without a slider;
- a slider that does not move with the arrow keys, or whose move does not change the figure's pixels
  within ``MOVE_TIMEOUT`` (1 s; ``COURSE_BROWSER_MOVE_TIMEOUT`` overrides it on an overloaded machine),
  timed on the browser's clock from just before the first key press to the canvas draw that changed
  the pixels (each move starts from an idle kernel and a figure that holds still);
- an exception the kernel reported outside a cell: a widget callback that raised (its traceback goes
  to Lab's log console, not to the notebook, so it is read off the kernel's websocket).

Each widget is saved as ``<notebook>__widget<i>__before.png`` (rendered, before any move) and
``__after.png`` (after all its sliders moved) in ``out_dir``; on a failure the tab is saved as
``<notebook>__failure.png``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

RUN_TIMEOUT = float(os.environ.get("COURSE_BROWSER_RUN_TIMEOUT", "900"))  # run all cells, FAST
OPEN_TIMEOUT = 120.0  # open the notebook and start its kernel
WIDGET_TIMEOUT = 60.0  # widgets rendered and figures drawn after the kernel went idle
MOVE_TIMEOUT = float(os.environ.get("COURSE_BROWSER_MOVE_TIMEOUT", "1.0"))  # a slider move shows in the figure
KEY_PRESSES = 3  # arrow-key steps per slider move

ERROR_TEXTS = ("Error displaying widget", "Failed to load model class", "Failed to load view class",
               "Failed to create view", "Loading widget")


class WidgetCheckFailed(AssertionError):
    """The notebook's widgets do not work in JupyterLab; the message lists every problem found."""


@dataclass
class WidgetReport:
    index: int
    before: Path
    after: Path
    moves: list = field(default_factory=list)  # (slider label, old value, new value, seconds until the figure changed)
    width: tuple = (0, 0)  # (px the widget needs, px its output area has) at the test's 1600 px wide window


# -- JavaScript run in the page (window.jupyterapp: the server runs with expose_app_in_browser) -----

_PANEL_READY = """(path) => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.context || panel.context.path !== path || !panel.context.isReady) return false;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle' && panel.content.widgets.length > 0;
}"""

_RUN_ALL = """() => {
  const app = window.jupyterapp;
  app.shell.collapseLeft();
  app.shell.collapseRight();
  window.__courseRunAll = null;
  app.commands.execute('notebook:run-all-cells').then(
    (r) => { window.__courseRunAll = 'done: ' + r; },
    (e) => { window.__courseRunAll = 'rejected: ' + e; });
}"""

_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {
    kernel: kernel ? kernel.status : 'none',
    runAll: window.__courseRunAll,
    cells: panel.content.widgets.map((cell, i) => {
      const m = cell.model;
      if (m.type !== 'code') return {index: i, type: m.type};
      const errors = m.outputs.toJSON().filter((o) => o.output_type === 'error')
        .map((o) => o.ename + ': ' + o.evalue);
      return {index: i, type: 'code', blank: m.sharedModel.getSource().trim() === '',
              count: m.executionCount, state: m.executionState, errors};
    }),
  };
}"""

# Installed once per tab as window.__course: find the course widgets, their figures (ipympl's canvas,
# or the fallback's image), a checksum of a figure's pixels and whether it has drawn anything (not one
# flat colour), and a watch on a canvas's draws (the time of each, browser clock) for slider moves.
_HELPERS = """() => {
  if (window.__course) return;
  const notebook = () => window.jupyterapp.shell.currentWidget.content.node;
  const widgetsOf = () => Array.from(notebook().querySelectorAll('.course-widget'));
  const figureOf = (w) => {
    const canvas = w.querySelector('.jupyter-matplotlib-canvas-div canvas');
    return {canvas, img: canvas ? null : w.querySelector('img')};
  };
  const pixels = ({canvas, img}) => {
    if (canvas) {
      if (!canvas.width || !canvas.height) return null;
      return canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    }
    if (!img || !img.complete || !img.naturalWidth) return null;
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
    return ctx.getImageData(0, 0, c.width, c.height).data;
  };
  const digest = (fig) => {
    const data = pixels(fig);
    if (!data) return {sum: null, drawn: false};
    let h = 2166136261, drawn = false;
    for (let k = 0; k < data.length; k++) {
      h = Math.imul(h ^ data[k], 16777619);
      if (!drawn && data[k] !== data[k % 4]) drawn = true;
    }
    return {sum: (h >>> 0).toString(16) + ':' + data.length, drawn};
  };
  window.__course = {
    scan(texts) {
      const nb = notebook();
      // only outputs count: a cell's source or a markdown cell may well mention these words
      const outputs = Array.from(nb.querySelectorAll('.jp-OutputArea')).map((o) => o.innerText).join('\\n');
      const shown = texts.filter((t) => outputs.includes(t));
      for (const e of nb.querySelectorAll('.jupyter-widgets-error-widget')) {
        // ipywidgets' error widget shows its message when clicked
        if (e.classList.contains('icon-error') && e.parentElement) e.parentElement.click();
        const lines = e.innerText.split('\\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('[Open Browser'));
        shown.push('an ipywidgets error widget: ' + JSON.stringify(lines.slice(0, 2).join(' ').slice(0, 300)));
      }
      const widgets = widgetsOf().map((w) => {
        const fig = figureOf(w), {canvas, img} = fig;
        const size = canvas ? [canvas.width, canvas.height] : (img ? [img.naturalWidth, img.naturalHeight] : null);
        const sliders = Array.from(w.querySelectorAll('.widget-slider')).map((s) => ({
          disabled: !s.querySelector('.noUi-handle') || s.querySelector('[disabled]') !== null}));
        // [px the widget needs up to its figure's right edge, px its output area has]: a widget wider
        // than its output area is cut off or scrolled for the student
        const left = w.getBoundingClientRect().left, area = w.closest('.jp-OutputArea-output') || w.parentElement;
        const el = canvas || img;
        const width = [Math.round((el ? el.getBoundingClientRect().right : left) - left),
                       Math.round(area.getBoundingClientRect().right - left)];
        // on screen: rendered (not under display: none), not hidden or transparent, and inside the viewport (a deck
        // may keep its other slides laid out but hidden, or move them out of view)
        const r = w.getBoundingClientRect();
        const visible = w.getClientRects().length > 0
          && (!w.checkVisibility || w.checkVisibility({opacityProperty: true, visibilityProperty: true}))
          && r.bottom > 0 && r.right > 0 && r.top < window.innerHeight && r.left < window.innerWidth;
        return Object.assign({figure: canvas ? 'canvas' : (img ? 'img' : null), size, sliders, width, visible},
                             digest(fig));
      });
      return {shown, widgets};
    },
    sum(i) { return digest(figureOf(widgetsOf()[i])).sum; },
    watch(i) {  // count the canvas's draws from now on; returns the browser's clock
      const {canvas} = figureOf(widgetsOf()[i]);
      if (canvas && !canvas.__courseDraws) {
        const ctx = canvas.getContext('2d');
        canvas.__courseDraws = {n: 0, last: 0};
        for (const name of ['drawImage', 'putImageData']) {
          const original = ctx[name];
          ctx[name] = function (...args) {
            const r = original.apply(this, args);
            canvas.__courseDraws.n += 1; canvas.__courseDraws.last = performance.now();
            return r;
          };
        }
      }
      if (canvas) canvas.__courseSeen = -1;
      return performance.now();
    },
    poll(i, before) {  // has the figure changed from `before`, and when (browser clock)?
      const fig = figureOf(widgetsOf()[i]);
      const draws = fig.canvas && fig.canvas.__courseDraws;
      if (draws && draws.n === fig.canvas.__courseSeen) return {changed: false};
      if (draws) fig.canvas.__courseSeen = draws.n;
      const sum = digest(fig).sum;
      return {changed: sum !== before, at: draws && draws.n ? draws.last : performance.now()};
    },
  };
}"""

_WIDGETS = """(texts) => window.__course.scan(texts)"""


# A slider's readout (else its aria value) and its handle's position: a move shows in the position even
# when the readout rounds it away.
_SLIDER_VALUE = """(s) => {
  const readout = s.querySelector('.widget-readout');
  const handle = s.querySelector('.noUi-handle');
  const origin = s.querySelector('.noUi-origin');
  const aria = handle ? handle.getAttribute('aria-valuenow') : '';
  const shown = (readout && readout.innerText.trim()) || aria || '';
  return [shown, (origin ? origin.style.transform : '') + '|' + aria];
}"""


def _decode_kernel_frame(payload):
    """A kernel websocket frame as a dict (JupyterLab 4's v1 binary protocol, or the JSON one); None if neither."""
    try:
        if isinstance(payload, str):
            msg = json.loads(payload)
            return {"channel": msg.get("channel"), "header": msg["header"], "parent_header": msg["parent_header"],
                    "content": msg["content"]}
        n = int.from_bytes(payload[:8], "little")
        offsets = [int.from_bytes(payload[8 * (k + 1):8 * (k + 2)], "little") for k in range(n)]
        parts = [payload[offsets[k]:offsets[k + 1]] for k in range(min(n - 1, 5))]
        return {"channel": parts[0].decode(), "header": json.loads(parts[1]), "parent_header": json.loads(parts[2]),
                "content": json.loads(parts[4])}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def watch_kernel_errors(page) -> list[dict]:
    """From now on, collect every exception a kernel reports to this tab: iopub ``error`` messages and
    tracebacks on stderr, each with the request that caused it (``parent``: ``execute_request`` for a
    cell, ``comm_msg`` for a widget's callback). Call it before the notebook is opened."""
    seen: list[dict] = []

    def on_frame(payload):
        msg = _decode_kernel_frame(payload)
        if msg is None or msg["channel"] != "iopub":
            return
        kind, content = msg["header"].get("msg_type"), msg["content"]
        text = None
        if kind == "error":
            text = f"{content.get('ename')}: {content.get('evalue')}"
        elif kind == "stream" and content.get("name") == "stderr" and "Traceback" in content.get("text", ""):
            text = content["text"].strip().splitlines()[-1]
        if text is not None:
            seen.append({"time": time.monotonic(), "parent": msg["parent_header"].get("msg_type"), "text": text})

    def on_websocket(ws):
        if "/api/kernels/" in ws.url:
            ws.on("framereceived", on_frame)

    page.on("websocket", on_websocket)
    return seen


def _shown(shown: list[str]) -> str:
    return ", ".join(t if t.startswith("an ipywidgets error widget") else repr(t) for t in shown)


class NotebookCheck:
    """One notebook in one browser tab; each step raises ``WidgetCheckFailed`` with what it found."""

    def __init__(self, page, lab, relpath: str, out_dir: Path):
        self.page, self.lab, self.relpath, self.out_dir = page, lab, relpath, Path(out_dir)
        self.kernel_errors = watch_kernel_errors(page)

    # -- helpers ------------------------------------------------------------------------------
    def fail(self, problems: list[str], widget: int | None = None):
        """Raise with every problem; the tab (scrolled to ``widget`` when given) is saved as a screenshot."""
        shot = self.out_dir / f"{Path(self.relpath).stem}__failure.png"
        try:
            if widget is not None:
                self.page.locator(".course-widget").nth(widget).scroll_into_view_if_needed(timeout=5000)
            self.page.screenshot(path=str(shot))
        except Exception:  # the report matters more than the picture
            shot = "none"
        raise WidgetCheckFailed(f"{self.relpath}: " + "; ".join(problems)
                                + f"\n(screenshot: {shot}; server log: {self.lab.log})")

    def widgets(self) -> dict:
        return self.page.evaluate(_WIDGETS, list(ERROR_TEXTS))

    def figure_sum(self, i: int) -> str | None:
        return self.page.evaluate("(i) => window.__course.sum(i)", i)

    def callback_errors(self, since: float = 0.0) -> list[str]:
        """Exceptions the kernel raised outside a cell's execution (widget callbacks), counted."""
        texts = [e["text"] for e in self.kernel_errors if e["parent"] != "execute_request" and e["time"] >= since]
        return [f"{t} (x{texts.count(t)})" if texts.count(t) > 1 else t for t in dict.fromkeys(texts)]

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until the kernel has been idle for three polls in a row (100 ms apart)."""
        deadline, quiet = time.monotonic() + timeout, 0
        while quiet < 3 and time.monotonic() < deadline:
            quiet = quiet + 1 if self.page.evaluate(_STATE)["kernel"] == "idle" else 0
            self.page.wait_for_timeout(100)

    # -- steps --------------------------------------------------------------------------------
    def open_and_run(self) -> None:
        """Open the notebook, run all cells, wait until the kernel is idle; fail on a cell error."""
        page = self.page
        page.goto(f"{self.lab.url}/lab/tree/{quote(self.relpath)}?token={self.lab.token}&reset",
                  wait_until="domcontentloaded")
        try:
            page.wait_for_function(_PANEL_READY, arg=self.relpath, timeout=OPEN_TIMEOUT * 1000, polling=250)
        except Exception as e:
            dialog = page.locator(".jp-Dialog")
            extra = f"; a dialog is open: {dialog.first.inner_text()!r}" if dialog.count() else ""
            self.fail([f"JupyterLab did not open it with an idle kernel within {OPEN_TIMEOUT:.0f} s{extra} "
                       f"({type(e).__name__})"])
        page.evaluate(_HELPERS)
        page.evaluate(_RUN_ALL)
        deadline, quiet = time.monotonic() + RUN_TIMEOUT, 0
        while True:
            st = page.evaluate(_STATE)
            if st["kernel"] in ("dead", "unknown", "none") or st["kernel"].startswith("autorestart"):
                self.fail([f"the kernel is {st['kernel']}"])
            running = [c["index"] for c in st["cells"] if c.get("state") == "running"]
            busy = st["runAll"] is None or st["kernel"] != "idle" or running
            quiet = 0 if busy else quiet + 1
            if quiet >= 3:  # idle three polls in a row: the kernel idles for a moment between cells
                break
            if time.monotonic() > deadline:
                self.fail([f"still running after {RUN_TIMEOUT:.0f} s (kernel {st['kernel']}, "
                           f"cells running: {running})"])
            page.wait_for_timeout(300)
        problems = [f"cell {c['index']} raised {e}" for c in st["cells"] for e in c.get("errors", [])]
        if problems:
            self.fail(problems)
        unrun = [c["index"] for c in st["cells"] if c["type"] == "code" and not c["blank"] and c["count"] is None]
        if unrun:
            self.fail([f"code cells {unrun} did not run ({st['runAll']})"])

    def wait_for_widgets(self, visible_only: bool = False) -> dict:
        """Wait until every course widget shows a drawn figure and nothing is loading; fail otherwise.

        ``visible_only``: require a drawn figure only of the widgets on screen (a deck hides the other slides, and
        the front end may leave a hidden canvas undrawn until its slide is shown; ``require_drawn`` checks it then).
        """
        deadline = time.monotonic() + WIDGET_TIMEOUT
        while True:
            w = self.widgets()
            if visible_only:
                w["widgets"] = [x if x["visible"] else dict(x, drawn=True) for x in w["widgets"]]
            errors = [t for t in w["shown"] if t != "Loading widget"]
            ready = w["widgets"] and all(x["drawn"] for x in w["widgets"]) and not w["shown"]
            if errors or ready or time.monotonic() > deadline:
                break
            self.page.wait_for_timeout(250)
        problems, first_bad = [], None
        if w["shown"]:
            problems.append("the notebook shows " + _shown(w["shown"])
                            + f" {WIDGET_TIMEOUT:.0f} s after the kernel went idle" * (not errors))
        if not w["widgets"]:
            problems.append("no course widget (.course-widget) is displayed: is the ipywidgets front-end "
                            "extension installed, and does a cell display a WidgetView?")
        for i, x in enumerate(w["widgets"]):
            if first_bad is None and (x["figure"] is None or not x["drawn"]):
                first_bad = i
            if x["figure"] is None:
                problems.append(f"widget {i} has no figure (no ipympl canvas: is ipympl's front-end extension "
                                "installed?)")
            elif x["figure"] == "canvas" and not x["size"][0]:
                problems.append(f"widget {i}'s figure is blank: its ipympl canvas is 0 x 0 px, the front end never "
                                "sized it (one known cause: fig.canvas.draw() called before the view is displayed; "
                                "fig.draw_without_rendering() does not do this)")
            elif not x["drawn"]:
                problems.append(f"widget {i}'s figure ({x['figure']}, {x['size'][0]} x {x['size'][1]} px) is blank")
            if not [s for s in x["sliders"] if not s["disabled"]]:
                problems.append(f"widget {i} has no slider to move")
        problems += [f"the kernel raised {e} while the widgets were shown" for e in self.callback_errors()]
        if problems:
            self.fail(problems, widget=first_bad)
        return w

    def require_drawn(self, i: int) -> str | None:
        """Wait up to WIDGET_TIMEOUT for widget i's figure to be drawn; the problem if it is not, else None."""
        deadline = time.monotonic() + WIDGET_TIMEOUT
        while True:
            x = self.widgets()["widgets"][i]
            if x["drawn"]:
                return None
            if time.monotonic() > deadline:
                return f"widget {i}'s figure ({x['figure']}, {x['size']} px) is blank on its slide"
            self.page.wait_for_timeout(250)

    def settle(self, i: int, timeout: float = 10.0) -> str | None:
        """Wait for an idle kernel and a figure that holds still (the last move's redraw has landed)."""
        self.wait_idle()
        deadline, last = time.monotonic() + timeout, self.figure_sum(i)
        while time.monotonic() < deadline:
            self.page.wait_for_timeout(150)
            now = self.figure_sum(i)
            if now == last:
                break
            last = now
        return last

    @staticmethod
    def slider_value(slider) -> tuple[str, str]:
        """What the slider shows (its readout, else its aria value) and where its handle is."""
        return slider.evaluate(_SLIDER_VALUE)

    def move_slider(self, i: int, slider) -> tuple[tuple, str | None]:
        """Move one slider by arrow keys; ``(label, old, new, seconds until the figure changed)`` and a problem.

        The time runs from just before the first key press to the canvas draw that changed the figure,
        both on the browser's clock (the canvas's draws are watched, so polling costs next to nothing).
        """
        handle = slider.locator(".noUi-handle").first
        label = slider.locator(".widget-label").first.inner_text().strip() or "(no label)"
        before = self.settle(i)
        (old, old_pos) = (new, new_pos) = self.slider_value(slider)
        handle.focus()
        for key in ("ArrowRight", "ArrowLeft"):  # at its maximum, move it down instead
            t_key = self.page.evaluate("(i) => window.__course.watch(i)", i)
            for _ in range(KEY_PRESSES):
                handle.press(key)
            new, new_pos = self.slider_value(slider)
            if new_pos != old_pos:
                break
        if new_pos == old_pos:
            return (label, old, new, None), f"the slider {label!r} did not move with the arrow keys"
        wall = time.monotonic()
        while time.monotonic() - wall < MOVE_TIMEOUT + 0.5:  # a little longer: a draw in time may show late
            r = self.page.evaluate("(a) => window.__course.poll(a[0], a[1])", [i, before])
            if r["changed"]:
                seconds = (r["at"] - t_key) / 1000.0
                if seconds <= MOVE_TIMEOUT:
                    return (label, old, new, seconds), None
                return (label, old, new, seconds), (f"moving the slider {label!r} from {old} to {new} changed its "
                                                    f"figure only after {seconds:.2f} s (> {MOVE_TIMEOUT:g} s)")
            self.page.wait_for_timeout(20)
        return (label, old, new, None), (f"moving the slider {label!r} from {old} to {new} did not change "
                                         f"its figure within {MOVE_TIMEOUT:g} s")

    def move_sliders(self) -> list[WidgetReport]:
        """Screenshot each widget, move each of its sliders, screenshot it again."""
        stem = Path(self.relpath).stem
        reports, problems, start, first_bad = [], [], time.monotonic(), None
        widgets, scan = self.page.locator(".course-widget"), self.widgets()["widgets"]
        for i in range(widgets.count()):
            widget = widgets.nth(i)
            widget.scroll_into_view_if_needed()
            rep = WidgetReport(i, self.out_dir / f"{stem}__widget{i}__before.png",
                               self.out_dir / f"{stem}__widget{i}__after.png", width=tuple(scan[i]["width"]))
            widget.screenshot(path=str(rep.before))
            sliders = widget.locator(".widget-slider")
            for j in range(sliders.count()):
                slider = sliders.nth(j)
                if slider.locator(".noUi-handle").count() == 0 or slider.locator("[disabled]").count():
                    continue
                move, problem = self.move_slider(i, slider)
                rep.moves.append(move)
                if problem:
                    problems.append(f"widget {i}: {problem}")
                    first_bad = i if first_bad is None else first_bad
            self.settle(i)  # the kernel has handled every move (and reported what raised), the figure is still
            widget.screenshot(path=str(rep.after))
            reports.append(rep)
        problems += [f"the kernel raised {e} while the sliders moved" for e in self.callback_errors(since=start)]
        w = self.widgets()
        if w["shown"]:
            problems.append("after the moves the notebook shows " + _shown(w["shown"]))
        if problems:
            self.fail(problems, widget=first_bad)
        return reports


def check_widget_notebook(page, lab, relpath: str, out_dir: Path) -> list[WidgetReport]:
    """Open ``relpath`` (relative to the server's root), run it, check its widgets, move their sliders."""
    check = NotebookCheck(page, lab, relpath, out_dir)
    check.open_and_run()
    check.wait_for_widgets()
    return check.move_sliders()
