"""Writing figures to disk: the formats matplotlib can write, the experiments' ``--formats``
flag and :func:`save_figure`, which checks every format before it writes anything."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def figure_formats() -> tuple[str, ...]:
    """The file formats :func:`save_figure` can write: matplotlib's, by file extension."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted(FigureCanvasBase.get_supported_filetypes()))


def add_formats_argument(parser) -> None:
    """The experiments' ``--formats`` flag, checked by argparse when the command line is read,
    so that a bad format stops a run before it computes anything."""
    formats = figure_formats()
    parser.add_argument(
        "--formats",
        nargs="+",
        default=["png", "pdf"],
        choices=formats,
        metavar="FORMAT",
        help=f"figure formats, any of {' '.join(formats)} (default: png pdf)",
    )


def save_figure(fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``stem.<fmt>`` for each format (written to a temp name, then renamed).
    Every format is checked before anything is written."""
    known = figure_formats()
    bad = [f for f in formats if f not in known]
    if isinstance(formats, str) or bad:
        raise ValueError(f"formats must be a sequence of {', '.join(known)}; got {formats!r}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    engine = fig.get_layout_engine()
    try:
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            tmp = path.with_name(f".{path.name}.tmp")
            fig.savefig(tmp, format=fmt, dpi=150)
            os.replace(tmp, path)
            paths.append(path)
            # The layout the first format computed is kept for the others (positions are in
            # figure coordinates): constrained layout is a third of the drawing time.
            fig.set_layout_engine("none")
    finally:
        fig.set_layout_engine(engine)
    return paths
