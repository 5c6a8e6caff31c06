"""The pattern every widget follows: pure compute functions + a thin view that updates artists in place.

A view subclasses ``WidgetView``: ``_controls()`` returns its ipywidgets, ``_build(fig)`` makes the
figure's artists once, and ``_update(**values)`` calls the widget's pure compute function and changes
artists (``set_data``, ``set_offsets``, ``set_height``, ...). Every control change calls ``update``,
which times itself (``last_update_seconds``) and redraws with ``draw_idle``.

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

__all__ = ["WidgetView", "cache_axes_rasters", "cache_raster", "has_ipympl"]


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
                from ipympl.backend_nbagg import Canvas, FigureManager

            canvas = Canvas(self.fig)
            FigureManager(canvas, 0)
            canvas.header_visible = False
            canvas.toolbar_visible = False
            canvas.resizable = False
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(self.fig)
        self._build(self.fig)
        self.last_update_seconds = float("nan")
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
        t0 = time.perf_counter()
        self._update(**self.values())
        self.fig.canvas.draw_idle()
        self.last_update_seconds = time.perf_counter() - t0
        if self._output is not None:
            self._show_png_in_output()
        return self.last_update_seconds

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
