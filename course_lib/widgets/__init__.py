"""Interactive widgets, one per idea of the lecture.

Each module holds pure compute functions (tested headlessly, timed in bench/) and a view class that
builds its figure once and updates artists in place (see ``_base.WidgetView``). A view draws on an
ipympl canvas of its own, so notebooks keep the inline backend for ordinary figures.

- ``elbo``: log p(x) = ELBO + KL(q || p(z|x)) and ELBO = reconstruction - prior matching, live.
- ``noising``: the forward process q(x^t | x^0) over t, for 1-D, 2-D and MNIST data.
- ``posterior``: the exact posterior p(x^0 | x^t), its mean (Tweedie), and a learned denoiser beside it.
- ``guidance``: guided sampling as the guidance strength gamma grows.

Submodules are imported on first use, so importing one widget does not import them all.
"""

from __future__ import annotations

import importlib

from ._base import WidgetView, has_ipympl

__all__ = ["WidgetView", "has_ipympl"]


def __getattr__(name: str):
    if name in {"elbo", "noising", "posterior", "guidance"}:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
