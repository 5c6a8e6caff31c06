"""WidgetView, the base of every widget: in-place updates, control checks, static fallback, pyplot untouched."""

import subprocess
import sys
import textwrap

import ipywidgets as W
import pytest

from course_lib.widgets import WidgetView


class Line(WidgetView):
    figsize = (3.0, 2.0)

    def _controls(self):
        return {"a": W.FloatSlider(value=1.0, min=0.0, max=3.0, description="a")}

    def _build(self, fig):
        self.ax = fig.add_subplot()
        (self.line,) = self.ax.plot([0, 1], [0, 1])

    def _update(self, a):
        self.line.set_ydata([0, a])


def test_update_changes_artists_in_place_and_times_itself():
    view = Line()
    fig, line = view.fig, view.line
    seconds = view.update(a=2.0)
    assert list(view.line.get_ydata()) == [0, 2.0] and seconds >= 0
    view.controls["a"].value = 2.5  # a slider move in the front end
    assert view.fig is fig and view.line is line and list(line.get_ydata()) == [0, 2.5]
    assert view.last_update_seconds == view.last_update_seconds  # not NaN


def test_unknown_controls_are_named():
    with pytest.raises(ValueError, match="b: not a control"):
        Line().update(b=1)


def test_display_bundle_has_the_live_widget_and_a_png_for_static_exports():
    bundle = Line()._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["image/png"][:4] == "iVBO"  # base64 of the PNG signature


def test_creating_a_view_leaves_the_pyplot_backend_alone():
    # `import ipympl` calls matplotlib.use(); a notebook's later figures must stay inline.
    code = textwrap.dedent("""
        import matplotlib
        matplotlib.use("agg")
        import ipywidgets as W
        from course_lib.widgets import WidgetView
        class V(WidgetView):
            def _controls(self): return {"a": W.FloatSlider()}
            def _build(self, fig): self.l, = fig.add_subplot().plot([0, 1])
            def _update(self, a): self.l.set_ydata([0, a])
        V()
        print(matplotlib.get_backend())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "agg"
