"""Writing figures to disk: the formats matplotlib can write, the experiments' ``--formats``
flag and :func:`save_figure`, which checks every format before it writes anything, including
the programs a format needs (:func:`missing_programs`: the pgf backend runs a TeX engine)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path


def figure_formats() -> tuple[str, ...]:
    """The file formats :func:`save_figure` can write: matplotlib's, by file extension."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted(FigureCanvasBase.get_supported_filetypes()))


def missing_programs(fmt: str) -> list[str]:
    """The programs that matplotlib needs to write ``fmt`` with the current settings and that
    are not on the PATH: the TeX engine of the pgf backend (``rcParams["pgf.texsystem"]``,
    which it runs to measure text), LaTeX and dvipng where ``text.usetex`` is on, Ghostscript
    (or xpdf's ps2pdf and pdftops) for PostScript where ``ps.usedistiller`` asks for it."""
    from matplotlib import rcParams

    need = []
    if fmt == "pgf":
        need.append(rcParams["pgf.texsystem"])
    if rcParams["text.usetex"]:
        need.append("latex")
        need += ["dvipng"] if fmt not in ("pdf", "ps", "eps", "svg", "svgz", "pgf") else []
    if fmt in ("ps", "eps") and rcParams["ps.usedistiller"] == "ghostscript":
        need.append("gs")
    if fmt in ("ps", "eps") and rcParams["ps.usedistiller"] == "xpdf":
        need += ["ps2pdf", "pdftops"]
    return [program for program in need if shutil.which(program) is None]


def _unwritable_message(fmt: str, missing: Sequence[str]) -> str:
    how = "install it or choose another format"
    if fmt == "pgf":
        how = (
            "matplotlib's pgf backend runs rcParams['pgf.texsystem'] to measure text: install "
            "a TeX distribution, set pgf.texsystem to an installed engine, or choose another "
            "format"
        )
    return f"figure format {fmt!r} needs {' and '.join(missing)}, not found on the PATH; {how}"


def _figure_format(value: str) -> str:
    """argparse type of ``--formats``: a known format whose programs are missing is refused
    here, when the command line is read; an unknown one is left to argparse's choices."""
    if value in figure_formats():
        missing = missing_programs(value)
        if missing:
            raise argparse.ArgumentTypeError(_unwritable_message(value, missing))
    return value


def add_formats_argument(parser) -> None:
    """The experiments' ``--formats`` flag, checked by argparse when the command line is read
    (the format is known and the programs it needs are there), so that a bad format stops a
    run before it computes anything."""
    formats = figure_formats()
    parser.add_argument(
        "--formats",
        nargs="+",
        default=["png", "pdf"],
        type=_figure_format,
        choices=formats,
        metavar="FORMAT",
        help=f"figure formats, any of {' '.join(formats)} (default: png pdf)",
    )


def save_figure(fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``stem.<fmt>`` for each format (written to a temp name, then renamed).
    Every format, and the programs it needs (:func:`missing_programs`), is checked before
    anything is written."""
    known = figure_formats()
    bad = [f for f in formats if f not in known]
    if isinstance(formats, str) or bad:
        raise ValueError(f"formats must be a sequence of {', '.join(known)}; got {formats!r}")
    for fmt in formats:
        missing = missing_programs(fmt)
        if missing:
            raise RuntimeError(_unwritable_message(fmt, missing))
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    engine = fig.get_layout_engine()
    try:
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                fig.savefig(tmp, format=fmt, dpi=150)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            paths.append(path)
            # The layout the first format computed is kept for the others (positions are in
            # figure coordinates): constrained layout is a third of the drawing time.
            fig.set_layout_engine("none")
    finally:
        fig.set_layout_engine(engine)
    return paths
