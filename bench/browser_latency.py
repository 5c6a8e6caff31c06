"""Key press -> changed figure on screen, for every course widget and slider, in JupyterLab driven by Chromium.

A benchmark, not a test: it starts JupyterLab as ``tests/browser`` does (its settings, FAST kernels), opens each
widget notebook, runs all cells, and for every widget and every slider makes N single arrow-key moves, each from
an idle kernel and a figure that holds still. A move's latency runs on the browser's clock from just before the
key press to the canvas draw that changed the figure's pixels (``tests/browser/lab_harness.py``'s watch: the
canvas's ``drawImage``/``putImageData`` calls and a checksum of its pixels), and to the next animation frame after
that draw (the frame the user sees). It prints one markdown table per notebook (median, p95, n, the load average)
and a breakdown of where the time went, from

- the browser: the kernel websocket's frames (slider value sent, ipympl's "draw" request received and sent back,
  the PNG frame received), the frame's image decoded, ``toDataURL`` calls (ipympl re-encodes its canvas on every
  frame), the canvas draw and the animation frame after it;
- the kernel (instrumented once the notebook has run): the view's ``update`` (its compute and artist changes,
  ``last_update_seconds``), ``fig.canvas.draw`` (the Agg render), ``get_diff_image`` (the PNG encode) and the
  PNG's size. Both clocks are the machine's wall clock (the browser's ``timeOrigin + now()``).

Usage::

    .venv/bin/python bench/browser_latency.py [-n 20] [--notebooks 01 04 05 08] [--out FILE.md]

``COURSE_LATENCY_N`` sets N too. Needs /usr/bin/chromium (``COURSE_CHROMIUM``) and playwright, as the browser
tests do; ``COURSE_DATA_DIR`` passes through to the kernels. The kernels import ``course_lib`` as this environment
resolves it: to measure another version of the widgets (e.g. before a change), put a copy of that ``course_lib``
first on ``PYTHONPATH``. Take figures on an otherwise idle machine: the load average is printed with each table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))

import conftest as browser_conf  # noqa: E402  (the browser tests' server and browser settings)
import lab_harness  # noqa: E402
from lab_harness import NotebookCheck  # noqa: E402

NOTEBOOKS = {
    "01": "notebooks/01_latent_variables_and_the_elbo.ipynb",
    "04": "notebooks/04_forward_noising.ipynb",
    "05": "notebooks/05_posterior_means_and_tweedie.ipynb",
    "06": "notebooks/06_training_diffusion_on_toys.ipynb",
    "08": "notebooks/08_conditioning_and_guidance.ipynb",
}
# what each notebook's widgets are, in display order (for the tables)
WIDGET_NAMES = {
    "01": ["ElboView"],
    "04": ["NoisingView1D (trimodal)", "NoisingView2D (eight Gaussians)", "NoisingView2D (two moons)",
           "NoisingViewImages (MNIST)"],
    "05": ["PosteriorMeanView 1-D", "PosteriorMeanView 2-D"],
    "06": ["PosteriorMeanView 2-D (trained)"],
    "08": ["ToyGuidanceView", "MnistGuidanceView"],
}

# -- browser instrumentation, installed before the page loads ------------------------------------------------
# Every kernel websocket frame (sent and received) that is a comm message, with the wall-clock time; blob
# images' load events (ipympl decodes each frame into an Image); toDataURL calls and their duration.
_INIT_SCRIPT = r"""
(() => {
  const now = () => performance.timeOrigin + performance.now();
  const log = window.__h15 = {events: []};
  const push = (e) => { if (log.events.length < 20000) log.events.push(e); };
  const decode = (data) => {
    try {
      if (typeof data === 'string') {
        const m = JSON.parse(data);
        return {channel: m.channel, type: m.header && m.header.msg_type, content: m.content,
                nbuf: (m.buffers || []).length};
      }
      const buf = data instanceof ArrayBuffer ? data : data.buffer;
      const dv = new DataView(buf);
      const n = Number(dv.getBigUint64(0, true));
      const off = [];
      for (let k = 0; k < n; k++) off.push(Number(dv.getBigUint64(8 * (k + 1), true)));
      const td = new TextDecoder();
      const part = (k) => td.decode(new Uint8Array(buf, off[k], off[k + 1] - off[k]));
      const header = JSON.parse(part(1));
      return {channel: part(0), type: header.msg_type, content: JSON.parse(part(4)), nbuf: n - 6,
              size: buf.byteLength};
    } catch (e) { return null; }
  };
  const classify = (dir, data) => {
    if (data instanceof Blob) return;  // not the v1 protocol
    const m = decode(data);
    if (!m || m.type !== 'comm_msg') return;
    const d = m.content && m.content.data || {};
    let what = d.method || '?';
    if (d.method === 'update' && d.state) what = 'update:' + Object.keys(d.state).join(',');
    if (d.method === 'custom' && d.content) {
      let c = d.content;
      if (typeof c.data === 'string') { try { c = JSON.parse(c.data); } catch (e) {} }
      what = 'custom:' + (c.type || '?');
    }
    push({t: now(), dir, what, size: m.size || 0});
  };
  const Native = window.WebSocket;
  const send = Native.prototype.send;
  Native.prototype.send = function (data) {
    if (this.url && this.url.includes('/api/kernels/')) classify('out', data);
    return send.call(this, data);
  };
  window.WebSocket = function (...args) {
    const ws = new Native(...args);
    if (String(args[0]).includes('/api/kernels/')) {
      ws.addEventListener('message', (ev) => classify('in', ev.data));
    }
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
  const src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, 'src');
  Object.defineProperty(HTMLImageElement.prototype, 'src', {
    get() { return src.get.call(this); },
    set(v) {
      if (typeof v === 'string' && v.startsWith('blob:')) {
        const t0 = now();
        push({t: t0, dir: 'img', what: 'src'});
        this.addEventListener('load', () => push({t: now(), dir: 'img', what: 'load'}), {once: true});
      }
      src.set.call(this, v);
    },
  });
  const toDataURL = HTMLCanvasElement.prototype.toDataURL;
  HTMLCanvasElement.prototype.toDataURL = function (...args) {
    const t0 = now();
    const r = toDataURL.apply(this, args);
    push({t: t0, dir: 'js', what: 'toDataURL', ms: now() - t0, px: this.width * this.height});
    return r;
  };
})();
"""

# After the harness's watch(i) wrapped the canvas's drawImage: the wall-clock time of each draw and of the
# animation frame after it.
_WATCH_PAINT = """(i) => {
  const now = () => performance.timeOrigin + performance.now();
  const w = Array.from(window.jupyterapp.shell.currentWidget.content.node.querySelectorAll('.course-widget'))[i];
  const canvas = w.querySelector('.jupyter-matplotlib-canvas-div canvas');
  if (canvas && !canvas.__h15) {
    const ctx = canvas.getContext('2d');
    canvas.__h15 = true;
    for (const name of ['drawImage', 'putImageData']) {
      const inner = ctx[name];
      ctx[name] = function (...args) {
        const r = inner.apply(this, args);
        const t = now();
        window.__h15.events.push({t, dir: 'canvas', what: 'draw'});
        requestAnimationFrame(() => window.__h15.events.push({t: now(), dir: 'canvas', what: 'frame'}));
        return r;
      };
    }
  }
  window.__h15.events = [];
  return {epoch: now(), clock: performance.now()};
}"""

# Kernel-side instrumentation: every WidgetView's update and its canvas's draw, PNG encode and send.
_KERNEL_SETUP = r"""
def __h15_setup():
    import gc, time
    from course_lib.widgets._base import WidgetView
    log = globals().setdefault('__h15_log', [])
    def wrap(obj, name, kind, view):
        inner = getattr(obj, name)
        if getattr(inner, '__h15', False):
            return
        def timed(*a, **k):
            t0 = time.time()
            r = inner(*a, **k)
            e = {'kind': kind, 't0': t0 * 1e3, 't1': time.time() * 1e3, 'view': type(view).__name__}
            if kind == 'png':
                e['bytes'] = len(r) if r else 0
            if kind == 'update':
                e['last_update_seconds'] = getattr(view, 'last_update_seconds', None)
            log.append(e)
            return r
        timed.__h15 = True
        setattr(obj, name, timed)
    n = 0
    for view in [o for o in gc.get_objects() if isinstance(o, WidgetView)]:
        wrap(view, 'update', 'update', view)
        wrap(view.fig, 'draw', 'render', view)
        c = view.fig.canvas
        for name, kind in (('draw', 'draw'), ('get_diff_image', 'png'), ('send_binary', 'send'),
                           ('draw_idle', 'draw_idle')):
            if hasattr(c, name):
                wrap(c, name, kind, view)
        n += 1
    return n
print(__h15_setup())
"""

_KERNEL_DUMP = "import json as __h15_json; print(__h15_json.dumps(__h15_log)); __h15_log.clear()"

# Run code in the notebook's kernel without touching the notebook; resolves to its stdout.
_EXECUTE = """(code) => new Promise((resolve, reject) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  let out = '';
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') out += msg.content.text;
    if (msg.header.msg_type === 'error') out += 'ERROR ' + msg.content.ename + ': ' + msg.content.evalue;
  };
  future.done.then(() => resolve(out), reject);
})"""


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def quantile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[k]


@contextmanager
def jupyterlab(out_dir: Path):
    """A JupyterLab server as tests/browser/conftest.py's ``lab`` fixture starts it."""
    home = Path(tempfile.mkdtemp(prefix="h15lab-"))
    cmd, env, port, token = browser_conf.lab_command(home)
    with browser_conf.served(cmd, env=env, log=out_dir / "jupyterlab.log", port=port, token=token) as lab:
        yield lab


def _first(events, dir_, what, after, prefix=False):
    for e in events:
        if e["dir"] == dir_ and e["t"] >= after and (e["what"].startswith(what) if prefix else e["what"] == what):
            return e
    return None


def breakdown(events: list[dict], kernel: list[dict], t_key: float, t_draw: float) -> dict:
    """The segments of one move (ms), from the browser's websocket/image/canvas events and the kernel's log.

    The first slider value sent after the key, the kernel's first update after it, the ipympl draw request
    it sent (received by the browser, sent back), the kernel's draw and PNG encode, the frame received,
    decoded, drawn, shown; segments that could not be matched are left out."""
    seg = {}
    sent = _first(events, "out", "update:", t_key, prefix=True)
    upd = next((k for k in kernel if k["kind"] == "update" and sent and k["t0"] >= sent["t"] - 5), None)
    # the frame that changed the figure: the last binary frame received before the changing draw
    frames = [e for e in events if e["dir"] == "in" and e["what"] == "custom:binary" and e["t"] <= t_draw + 1]
    frame = frames[-1] if frames else None
    draws = [k for k in kernel if k["kind"] == "draw" and frame and k["t1"] <= frame["t"] + 5]
    kdraw = draws[-1] if draws else None
    pngs = [k for k in kernel if k["kind"] == "png" and kdraw and kdraw["t0"] <= k["t0"] <= kdraw["t1"] + 1]
    png = pngs[-1] if pngs else None
    if sent:
        seg["key→value sent"] = sent["t"] - t_key
    if sent and upd:
        seg["value sent→kernel update"] = upd["t0"] - sent["t"]
        seg["update() in all"] = upd["t1"] - upd["t0"]
        seg["compute (last_update_seconds)"] = 1e3 * (upd.get("last_update_seconds") or float("nan"))
    req_in = _first(events, "in", "custom:draw", sent["t"] if sent else t_key)
    req_out = _first(events, "out", "custom:draw", req_in["t"]) if req_in else None
    if upd and req_in and req_in["t"] < (frame["t"] if frame else 1e30):
        seg["update→draw request in browser"] = req_in["t"] - upd["t1"]
        if req_out:
            seg["browser→draw request sent back"] = req_out["t"] - req_in["t"]
            if kdraw and kdraw["t0"] >= req_out["t"] - 5:
                seg["draw request→kernel draw"] = kdraw["t0"] - req_out["t"]
    if kdraw:
        seg["kernel draw (render+encode+send)"] = kdraw["t1"] - kdraw["t0"]
        renders = [k for k in kernel if k["kind"] == "render" and kdraw["t0"] <= k["t0"] <= kdraw["t1"]]
        if renders:
            seg["render (fig.draw)"] = renders[-1]["t1"] - renders[-1]["t0"]
    if png:
        seg["PNG encode (get_diff_image)"] = png["t1"] - png["t0"]
        seg["PNG kB"] = png.get("bytes", 0) / 1e3
    if kdraw and frame:
        seg["kernel sent→frame in browser"] = frame["t"] - kdraw["t1"]
    if frame:
        src = _first(events, "img", "src", frame["t"])
        load = _first(events, "img", "load", frame["t"])
        if load:
            seg["frame in→image decoded"] = load["t"] - frame["t"]
            seg["decoded→canvas draw"] = t_draw - load["t"]
        tdu = [e for e in events if e["what"] == "toDataURL" and frame["t"] <= e["t"] <= t_draw]
        if tdu:
            seg["toDataURL (ipympl, per frame)"] = sum(e["ms"] for e in tdu)
        del src
    return seg


def measure_notebook(page, lab, key: str, n: int, out_dir: Path, log=print) -> list[dict]:
    relpath = NOTEBOOKS[key]
    check = NotebookCheck(page, lab, relpath, out_dir)
    t0 = time.perf_counter()
    check.open_and_run()
    check.wait_for_widgets()
    log(f"{relpath}: ran in {time.perf_counter() - t0:.0f} s")
    out = page.evaluate(_EXECUTE, _KERNEL_SETUP)
    log(f"  kernel instrumented: {out.strip()} views")
    names = WIDGET_NAMES.get(key, [])
    rows = []
    widgets = page.locator(".course-widget")
    for i in range(widgets.count()):
        widget = widgets.nth(i)
        widget.scroll_into_view_if_needed()
        name = names[i] if i < len(names) else f"widget {i}"
        sliders = widget.locator(".widget-slider")
        for j in range(sliders.count()):
            slider = sliders.nth(j)
            if slider.locator(".noUi-handle").count() == 0 or slider.locator("[disabled]").count():
                continue
            label = slider.locator(".widget-label").first.inner_text().strip() or f"slider {j}"
            handle = slider.locator(".noUi-handle").first
            direction = "ArrowRight"
            lat, shown, segs, missed = [], [], [], 0
            page.evaluate(_EXECUTE, _KERNEL_DUMP)  # clear the kernel's log; each move's dump clears it after
            for _rep in range(n):
                before = check.settle(i)  # an idle kernel (the last dump ran) and a still figure
                old = check.slider_value(slider)[1]
                handle.focus()
                moved = False
                for _ in range(2):
                    w = page.evaluate(_WATCH_PAINT_AND_KEY, i)
                    handle.press(direction)
                    if check.slider_value(slider)[1] != old:
                        moved = True
                        break
                    direction = "ArrowLeft" if direction == "ArrowRight" else "ArrowRight"
                if not moved:
                    log(f"  {name} / {label}: the slider does not move")
                    break
                t_key = w["epoch"]
                wall, hit = time.monotonic(), None
                while time.monotonic() - wall < 10:
                    r = page.evaluate("(a) => window.__course.poll(a[0], a[1])", [i, before])
                    if r["changed"]:
                        hit = r
                        break
                    page.wait_for_timeout(10)
                if hit is None:
                    missed += 1
                    continue
                page.wait_for_timeout(60)  # the animation frame after the draw
                events = page.evaluate("() => window.__h15.events")
                t_draw_epoch = hit["at"] - w["clock"] + w["epoch"]
                lat.append(t_draw_epoch - t_key)
                frame = next((e["t"] for e in events if e["dir"] == "canvas" and e["what"] == "frame"
                              and e["t"] >= t_draw_epoch - 0.5), None)
                if frame is not None:
                    shown.append(frame - t_key)
                check.settle(i)
                kernel = json.loads(page.evaluate(_EXECUTE, _KERNEL_DUMP).strip() or "[]")
                events = page.evaluate("() => window.__h15.events")
                segs.append(breakdown(events, kernel, t_key, t_draw_epoch))
            row = {"notebook": key, "widget": name, "index": i, "slider": label, "n": len(lat), "missed": missed,
                   "median": statistics.median(lat) if lat else float("nan"), "p95": quantile(lat, 0.95),
                   "max": max(lat) if lat else float("nan"),
                   "shown_median": statistics.median(shown) if shown else float("nan"),
                   "shown_p95": quantile(shown, 0.95), "load": load_average(), "segments": segs}
            log(f"  {name} / {label}: median {row['median']:.0f} ms, p95 {row['p95']:.0f} ms (n = {len(lat)}, "
                f"load {row['load']})")
            rows.append(row)
    return rows


# The watch (harness) + our paint watch, then the time just before the key press.
_WATCH_PAINT_AND_KEY = ("(i) => { window.__course.watch(i); return (" + _WATCH_PAINT + ")(i); }")


def table(rows: list[dict]) -> str:
    lines = ["| notebook | widget | slider | median ms | p95 ms | max ms | shown (next frame) median / p95 ms | n "
             "| load (1/5/15 min) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        miss = f" ({r['missed']} missed)" if r["missed"] else ""
        lines.append(f"| {r['notebook']} | {r['widget']} | {r['slider']} | {r['median']:.0f} | {r['p95']:.0f} | "
                     f"{r['max']:.0f} | {r['shown_median']:.0f} / {r['shown_p95']:.0f} | {r['n']}{miss} | "
                     f"{r['load']} |")
    return "\n".join(lines)


SEGMENTS = ["key→value sent", "value sent→kernel update", "update() in all", "compute (last_update_seconds)",
            "update→draw request in browser", "browser→draw request sent back", "draw request→kernel draw",
            "kernel draw (render+encode+send)", "render (fig.draw)", "PNG encode (get_diff_image)", "PNG kB",
            "kernel sent→frame in browser", "frame in→image decoded", "toDataURL (ipympl, per frame)",
            "decoded→canvas draw"]


def breakdown_table(rows: list[dict]) -> str:
    present = [s for s in SEGMENTS if any(s in seg for r in rows for seg in r["segments"])]
    short = {"compute (last_update_seconds)": "last_update_seconds"}
    lines = ["| widget / slider | " + " | ".join(short.get(s, s) for s in present) + " |",
             "|---|" + "---|" * len(present)]
    for r in rows:
        cells = []
        for s in present:
            vals = [seg[s] for seg in r["segments"] if s in seg]
            cells.append(f"{statistics.median(vals):.1f}" if vals else "–")
        lines.append(f"| {r['notebook']} {r['widget']} / {r['slider']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=int(os.environ.get("COURSE_LATENCY_N", "20")),
                   help="single arrow-key moves per slider (default 20, or COURSE_LATENCY_N)")
    p.add_argument("--notebooks", nargs="*", default=["01", "04", "05", "08"], choices=sorted(NOTEBOOKS))
    p.add_argument("--out", type=Path, default=None, help="also write the tables (markdown) here")
    p.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    args = p.parse_args(argv)
    if not browser_conf.CHROMIUM.is_file():
        print(f"needs Chromium at {browser_conf.CHROMIUM}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    out_dir = Path(os.environ.get("COURSE_BROWSER_OUT", ROOT / "build" / "browser-latency")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    lab_harness.RUN_TIMEOUT = max(lab_harness.RUN_TIMEOUT, 1200)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    rows = []
    with jupyterlab(out_dir) as lab, sync_playwright() as pw:
        profile = Path(tempfile.mkdtemp(prefix="h15chromium-"))
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(browser_conf.CHROMIUM), headless=True,
            args=browser_conf.CHROMIUM_ARGS, viewport=browser_conf.VIEWPORT, device_scale_factor=1)
        context.add_init_script(_INIT_SCRIPT)
        try:
            for key in args.notebooks:
                page = context.new_page()
                page.set_default_timeout(120_000)
                try:
                    rows += measure_notebook(page, lab, key, args.n, out_dir)
                except AssertionError as e:
                    print(f"{key}: FAILED: {e}", file=sys.stderr)
                finally:
                    page.close()
                    lab.shutdown_kernels()
        finally:
            context.close()
    text = (f"Key press → changed figure (browser clock; {args.n} single arrow-key moves per slider, each from an "
            f"idle kernel and a still figure); started {started}, {os.cpu_count()} cores, load at the end "
            f"{load_average()}\n\n{table(rows)}\n\nWhere the time went (medians, ms; wall clock of browser and "
            f"kernel):\n\n{breakdown_table(rows)}\n")
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
