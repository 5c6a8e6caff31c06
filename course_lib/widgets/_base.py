"""The pattern every widget follows: pure compute functions + a thin view that updates artists in place.

A view subclasses ``WidgetView``: ``_controls()`` returns its ipywidgets, ``_build(fig)`` makes the
figure's artists once, and ``_update(**values)`` calls the widget's pure compute function and changes
artists (``set_data``, ``set_offsets``, ``set_height``, ...). Every control change calls ``update``,
which times itself (``last_update_seconds``: the widget's compute and artist changes) and redraws: once a
front end shows the canvas, at once (``fig.canvas.draw()``, ``last_draw_seconds``), which renders the figure
and pushes the frame; before that with ``draw_idle``.

Where the time of a slider move went (issue 15, ``bench/browser_latency.py``): ``draw_idle`` on ipympl's
canvas is a round trip (a "draw" message to the browser, which asks back for the frame), and ipympl encodes
each frame (a diff against the last one) as a PNG with Pillow's default compression, 20-50 ms for a
1100 x 500 figure. The canvas here (``_fast_canvas_class``) draws at once when a front end is connected and
encodes the same pixels as a PNG without filters at zlib level 1 (~3 ms; the browser decodes the same image);
its renderer draws text from cached layouts and glyph bitmaps (``install_text_cache``: text was most of a draw).

The figure gets an ipympl canvas of its own (an interactive widget in JupyterLab) whatever the
notebook's matplotlib backend, so ordinary figures stay inline and export to HTML as pictures.
Without ipympl the view falls back to re-showing a PNG inside an ``Output`` widget. When displayed,
the view also carries a PNG of its first state, which static exports (HTML, nbviewer) show.
"""

from __future__ import annotations

import base64
import io
import time
from contextlib import contextmanager

import numpy as np
from matplotlib.figure import Figure

__all__ = ["WidgetView", "cache_axes_rasters", "cache_raster", "has_ipympl", "install_text_cache", "png_rgba"]


@contextmanager
def _keep_pyplot_backend():
    """Undo the backend switch that ``import ipympl`` makes (its ``__init__`` calls ``matplotlib.use``).

    Without this, every pyplot figure after a notebook's first widget became an ipympl widget: not
    inline, and missing from the HTML export.
    """
    import matplotlib

    before = dict.__getitem__(matplotlib.rcParams, "backend")  # without resolving the "auto" sentinel
    try:
        yield
    finally:
        if dict.__getitem__(matplotlib.rcParams, "backend") != before:
            if isinstance(before, str):
                matplotlib.use(before)
            else:
                dict.__setitem__(matplotlib.rcParams, "backend", before)


def has_ipympl() -> bool:
    """True when ipympl (the interactive matplotlib widget) is installed. Leaves pyplot's backend alone."""
    try:
        with _keep_pyplot_backend():
            import ipympl.backend_nbagg  # noqa: F401
    except Exception:
        return False
    return True


class WidgetView:
    """Base class of every widget view: a figure built once, controls, in-place updates.

    Attributes: ``fig`` (the matplotlib Figure), ``controls`` (name -> ipywidget with a ``value``),
    ``last_update_seconds``. ``update(**values)`` sets controls programmatically and redraws (what
    the tests and the benchmark call); ``widget()`` is the layout shown in a notebook.
    """

    figsize: tuple[float, float] = (10.0, 4.5)
    #: extra horizontal padding (inches) for the one-time layout, for tick labels that may grow later
    layout_w_pad: float | None = None

    def __init__(self):
        self.controls: dict = self._controls()
        self.fig = Figure(figsize=self.figsize, layout="constrained")
        self._output = None
        if has_ipympl():
            with _keep_pyplot_backend():
                from ipympl.backend_nbagg import FigureManager

            canvas = _fast_canvas_class()(self.fig)
            FigureManager(canvas, 0)
            canvas.header_visible = False
            canvas.toolbar_visible = False
            canvas.resizable = False
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(self.fig)
        self._build(self.fig)
        self.last_update_seconds = float("nan")
        self.last_draw_seconds = float("nan")
        self.update()
        self._freeze_layout()
        for w in self.controls.values():
            w.observe(self._on_change, names="value")

    # -- to implement -------------------------------------------------------------------------
    def _controls(self) -> dict:
        return {}

    def _build(self, fig: Figure) -> None:
        raise NotImplementedError

    def _update(self, **values) -> None:
        raise NotImplementedError

    # -- machinery ----------------------------------------------------------------------------
    def _freeze_layout(self):
        # Lay the figure out once, then freeze it: constrained layout on every slider move cost as much as
        # the rest of the draw, and what a slider moves (data, titles) does not change the layout.
        engine = self.fig.get_layout_engine()
        if engine is None:
            return
        if self.layout_w_pad is not None:
            engine.set(w_pad=self.layout_w_pad)
        engine.execute(self.fig)
        self.fig.set_layout_engine("none")

    def values(self) -> dict:
        """The current control values, by name."""
        return {k: w.value for k, w in self.controls.items()}

    def _on_change(self, _change=None):
        self.update()

    def update(self, **values) -> float:
        """Set the named controls (if given) and redraw once; returns the seconds the redraw took."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise ValueError(f"{unknown[0]}: not a control of this widget; its controls are {sorted(self.controls)}")
        for k, v in values.items():
            w = self.controls[k]
            w.unobserve(self._on_change, names="value")
            try:
                w.value = v
            finally:
                w.observe(self._on_change, names="value")
        from .._runtime import threads_for

        t0 = time.perf_counter()
        # one CPU thread (the kit's policy for small models; COURSE_THREADS overrides): a widget's tensors are
        # small, and two threads on a 2-core machine with the other core busy made a 3 ms update take 30-160 ms
        with threads_for(None):
            self._update(**self.values())
        self.last_update_seconds = time.perf_counter() - t0
        self._redraw()
        if self._output is not None:
            self._show_png_in_output()
        return self.last_update_seconds

    def _redraw(self) -> None:
        """Show the artists' new state: render and push the frame now when a front end shows the canvas.

        ipympl's ``draw_idle`` sends a "draw" message to the browser, which asks back for the frame: a round trip
        through the server on every slider move. Once the front end has said it is there (ipympl then stops
        syncing ``_data_url``), ``draw()`` renders and sends the frame at once. Before that (headless, or not yet
        displayed) ``draw_idle`` as before: drawing before the view exists leaves it blank.
        """
        canvas = self.fig.canvas
        t0 = time.perf_counter()
        if self._front_end_connected():
            canvas.draw()
            self.last_draw_seconds = time.perf_counter() - t0
        else:
            canvas.draw_idle()

    def _front_end_connected(self) -> bool:
        """True once a front end has shown the ipympl canvas (it said "initialized"; ipympl stopped syncing
        ``_data_url``): then ``update`` draws and pushes each frame itself."""
        return getattr(self.fig.canvas, "syncing_data_url", True) is False

    def png(self) -> bytes:
        """The figure as it is now, as PNG bytes."""
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=100)
        return buf.getvalue()

    def _show_png_in_output(self):
        from IPython.display import Image, display

        with self._output:
            self._output.clear_output(wait=True)
            display(Image(self.png()))

    def widget(self):
        """The layout: the controls in a wrapping row above the figure.

        Controls beside a 10-inch figure made the widget wider than a laptop's notebook column
        (the browser tests measured 1424 px); above it, the width is the figure's.
        """
        import ipywidgets as W

        items = list(self.controls.values()) + list(getattr(self, "buttons", {}).values())
        controls = W.Box(items, layout=W.Layout(display="flex", flex_flow="row wrap", align_items="center"))
        if has_ipympl():
            view = self.fig.canvas
        else:
            self._output = self._output or W.Output()
            self._show_png_in_output()
            view = self._output
        box = W.VBox([controls, view])
        box.add_class("course-widget")
        return box

    def _repr_mimebundle_(self, **kwargs):
        # The live widget for JupyterLab, plus a PNG for static exports that cannot run widgets.
        bundle = self.widget()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data = dict(data)
        data["image/png"] = base64.b64encode(self.png()).decode()
        return data


def png_rgba(rgba: np.ndarray, level: int = 1) -> bytes:
    """An (h, w, 4) uint8 RGBA array as PNG bytes: no row filters, zlib ``level`` (1: fast).

    Pillow's default (adaptive filters, zlib level 6) took 20-50 ms for a widget's 1100 x 500 frame; this takes
    ~3 ms for the same pixels (the PNG is lossless either way; at most a few tens of kB more on localhost).
    """
    import struct
    import zlib

    h, w, _ = rgba.shape
    raw = np.empty((h, 4 * w + 1), np.uint8)
    raw[:, 0] = 0  # filter type 0 (none) for every row
    raw[:, 1:] = rgba.reshape(h, 4 * w)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, level)) + chunk(b"IEND", b""))


_IDENTITY_26_6 = np.array([[0x10000, 0], [0, 0x10000]])  # FreeType's identity matrix (16.16 fixed point)


def install_text_cache(renderer, max_glyphs: int = 50_000, max_layouts: int = 2_000) -> bool:
    """Draw this ``RendererAgg``'s text from cached string layouts and glyph bitmaps: the same pixels, faster.

    Text was most of a widget's draw (ElboView: 80%; tick labels that move, titles and value labels that change
    on every slider move), and Agg lays out every string and renders every glyph with FreeType on every draw.
    Here a string's layout is kept per (string, font properties, dpi), and a glyph's bitmap per (font, size,
    dpi, glyph, hinting, sub-pixel offset): FreeType renders a glyph translated by a whole number of pixels as
    the same bitmap shifted, so the cached bitmap is pasted where matplotlib would have rendered it (pixel for
    pixel the same as matplotlib 3.11's ``RendererAgg.draw_text``, which this mirrors). Rotated text, mathtext
    and unantialiased text are drawn as before; on a matplotlib whose private methods differ nothing changes.
    Returns whether the cache is installed.
    """
    import inspect
    import types

    from matplotlib.backends import backend_agg

    if getattr(renderer, "_course_text_cache", None) is not None:
        return True
    base = backend_agg.RendererAgg
    try:
        from matplotlib.ft2font import RenderMode

        expected = ["self", "gc", "x", "y", "s", "prop", "angle", "ismath", "mtext"]
        if (type(renderer) is not base or list(inspect.signature(base.draw_text).parameters) != expected
                or not hasattr(base, "_draw_text_glyphs_and_boxes") or not hasattr(base, "_prepare_font")):
            return False
    except (ImportError, TypeError, ValueError):
        return False
    glyphs: dict = {}
    layouts: dict = {}
    renderer._course_text_cache = (glyphs, layouts)

    def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if ismath or angle != 0 or not gc.get_antialiased():
            return base.draw_text(self, gc, x, y, s, prop, angle, ismath, mtext)
        features = mtext.get_fontfeatures() if mtext is not None else None
        language = mtext.get_language() if mtext is not None else None
        flags = backend_agg.get_hinting_flag()
        size = prop.get_size_in_points()
        font_key = (tuple(prop.get_family()), prop.get_slant(), prop.get_variant(), prop.get_weight(),
                    prop.get_stretch(), size, prop.get_file(), prop.get_math_fontfamily())
        key = (s, font_key, self.dpi, None if features is None else tuple(features), language, flags)
        items = layouts.get(key)
        if items is None:
            font = self._prepare_font(prop)
            items = [(item.ft_object, item.glyph_index, item.x, item.y)
                     for item in font._layout(s, flags=flags, features=features, language=language)]
            if len(layouts) >= max_layouts:
                layouts.clear()
            layouts[key] = items
        height, dpi = self.height, self.dpi
        paste = self._renderer.draw_text_image
        for font, index, dx, dy in items:
            # where RendererAgg._draw_text_glyphs_and_boxes puts the glyph (angle 0), in 1/64 px
            tx, ty = round(0x40 * (x + dx)), round(0x40 * (height - y + dy))
            gkey = (id(font), font.fname, size, dpi, index, flags, tx & 63, ty & 63)
            glyph = glyphs.get(gkey)
            if glyph is None:
                font.set_size(size, dpi)
                font._set_transform(_IDENTITY_26_6, [tx & 63, ty & 63])
                bitmap = font._render_glyph(index, flags, RenderMode.NORMAL)
                glyph = (np.array(bitmap.buffer), bitmap.left, bitmap.top)
                if len(glyphs) >= max_glyphs:
                    glyphs.clear()
                glyphs[gkey] = glyph
            buffer, left, top = glyph
            paste(buffer, left + (tx >> 6), int(height) - (top + (ty >> 6)) + buffer.shape[0], 0, gc)

    renderer.draw_text = types.MethodType(draw_text, renderer)
    return True


_FAST_CANVAS = None


def _fast_canvas_class():
    """ipympl's ``Canvas`` with a faster frame encoder (``png_rgba``); the same widget model and front end."""
    global _FAST_CANVAS
    if _FAST_CANVAS is not None:
        return _FAST_CANVAS
    with _keep_pyplot_backend():
        from ipympl.backend_nbagg import Canvas

    class FastCanvas(Canvas):
        def get_renderer(self):
            renderer = super().get_renderer()
            install_text_cache(renderer)
            return renderer

        def get_diff_image(self):
            # matplotlib's FigureCanvasWebAggCore.get_diff_image (3.11), with png_rgba for Pillow's encoder
            if not self._png_is_old:
                return None
            pixels = np.asarray(self.get_renderer().buffer_rgba())
            buff = pixels.view(np.uint32).squeeze(2)
            if (self._force_full or buff.shape != self._last_buff.shape
                    or (pixels[:, :, 3] != 255).any()):  # transparency: cannot be drawn over the last frame
                self.set_image_mode("full")
                output = buff
            else:
                self.set_image_mode("diff")
                output = np.where(buff != self._last_buff, buff, 0)
            self._last_buff = buff.copy()
            self._force_full = False
            self._png_is_old = False
            return png_rgba(output.view(np.uint8).reshape((*output.shape, 4)))

    _FAST_CANVAS = FastCanvas
    return FastCanvas


def cache_raster(artist, key=None, max_entries: int = 4) -> None:
    """Draw ``artist`` from a cached picture of itself on the Agg canvas (ipympl, PNG export).

    ipympl has no blitting: every slider move re-renders the whole figure, and the static parts (legends,
    axes whose limits do not move, their tick labels) cost most of it in text rendering. This renders the
    artist once, alone, into an offscreen Agg buffer of the canvas's size and then pastes that picture at
    the same place in the same drawing order (pixel for pixel the same, at a fraction of the cost). The
    picture is made the second time a (canvas size, dpi, ``key()``) is drawn (``key``: e.g. an axis's view
    limits), so parts that change on every move cost nothing extra; vector outputs (PDF, SVG) draw as before.
    """
    from matplotlib.backends.backend_agg import RendererAgg

    draw = artist.draw
    cache: dict = {}
    seen: dict = {}

    def cached_draw(renderer, *args, **kwargs):
        if type(renderer) is not RendererAgg or not artist.get_visible():
            return draw(renderer, *args, **kwargs)
        k = (renderer.width, renderer.height, renderer.dpi, None if key is None else key())
        entry = cache.get(k)
        if entry is None and k not in seen:  # a key seen once (limits that keep moving): draw as before
            seen[k] = None
            if len(seen) > 64:
                seen.pop(next(iter(seen)))
            return draw(renderer, *args, **kwargs)
        if entry is None:
            off = RendererAgg(renderer.width, renderer.height, renderer.dpi)
            draw(off, *args, **kwargs)
            rgba = np.asarray(off.buffer_rgba())
            rows = np.flatnonzero(rgba[:, :, 3].any(axis=1))
            cols = np.flatnonzero(rgba[:, :, 3].any(axis=0))
            if rows.size:
                r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
                entry = (int(c0), int(renderer.height - r1), rgba[r0:r1, c0:c1][::-1].copy())
            else:
                entry = (0, 0, None)
            if len(cache) >= max_entries:
                cache.pop(next(iter(cache)))
            cache[k] = entry
        x, y, im = entry
        if im is not None:
            gc = renderer.new_gc()
            renderer.draw_image(gc, x, y, im)
            gc.restore()
        artist.stale = False

    artist.draw = cached_draw


def cache_axes_rasters(fig, *extra) -> None:
    """``cache_raster`` for every axis of ``fig`` (re-made when its axes' view limits move), every legend and
    the ``extra`` artists (static ones: drawn the same on every slider move); all re-made if the layout or
    their texts change."""
    def layout():
        return tuple(tuple(ax.bbox.bounds) for ax in fig.axes)

    def texts(artist):
        return tuple(t.get_text() for t in artist.findobj(lambda a: hasattr(a, "get_text")))

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            cache_raster(axis, key=lambda ax=ax, axis=axis: (tuple(axis.get_view_interval()), axis.label.get_text(),
                                                             layout()))
    for artist in [*(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None), *fig.legends, *extra]:
        cache_raster(artist, key=lambda artist=artist: (texts(artist), layout()))
