"""Slides: which cells of a notebook start a slide in a presentation (RISE-style ``slideshow`` metadata).

A markdown cell that starts with a # or ## heading starts a slide, ### a sub-slide; every other cell continues the
current one. ``python -m course_lib slides`` writes this into the master notebooks; the student build keeps it.
"""

from __future__ import annotations

import re

__all__ = ["HEADING", "add_slide_metadata"]

#: A markdown heading at the start of a cell: group 1 is its #s.
HEADING = re.compile(r"^\s*(#{1,6})\s")


def add_slide_metadata(nb, overwrite: bool = False):
    """RISE slide metadata, in place: a markdown cell starting with a # or ## heading starts a slide, ### a
    sub-slide; every other cell continues the current one ("-"). Existing choices are kept unless ``overwrite``."""
    for cell in nb.cells:
        meta = cell.setdefault("metadata", {})
        if "slideshow" in meta and not overwrite:
            continue
        kind = "-"
        if cell.cell_type == "markdown":
            m = HEADING.match(cell.source)
            if m:
                kind = "slide" if len(m.group(1)) <= 2 else "subslide"
        meta["slideshow"] = {"slide_type": kind}
    return nb
