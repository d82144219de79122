"""Host settings of a run: JAX's persistent compilation cache, so that a second run of an
experiment loads its compiled programs instead of compiling them again.

The experiments call :func:`add_compile_cache_argument` on their parser and
:func:`use_compile_cache` first thing in ``main``. The cache folder is, in order: the one
given with ``--compile-cache DIR``; one already configured in this process (a test session's,
or the user's own ``jax.config``); ``$MEANFIELD_COMPILATION_CACHE``; or
``$XDG_CACHE_HOME/meanfield/jax`` (``~/.cache/meanfield/jax``). ``--no-compile-cache`` turns
it off. The cache holds XLA executables keyed by the program, its shapes, the backend and the
JAX version; deleting the folder is always safe.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["ENV", "add_compile_cache_argument", "default_cache_dir", "use_compile_cache"]

ENV = "MEANFIELD_COMPILATION_CACHE"


def default_cache_dir() -> Path:
    """$MEANFIELD_COMPILATION_CACHE, else $XDG_CACHE_HOME/meanfield/jax (~/.cache/...)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "meanfield" / "jax"


def add_compile_cache_argument(p: argparse.ArgumentParser) -> None:
    """--compile-cache DIR and --no-compile-cache (module docstring)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--compile-cache",
        type=Path,
        default=argparse.SUPPRESS,  # no "(default: None)" in --help; the help says what is used
        metavar="DIR",
        help="keep compiled programs in DIR for the next run; without it, a folder already "
        f"configured in jax, else ${ENV}, else ~/.cache/meanfield/jax",
    )
    group.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="compile everything afresh and keep nothing",
    )


def use_compile_cache(args: argparse.Namespace) -> Path | None:
    """Turn JAX's persistent compilation cache on as the flags say; the folder used, or None.
    Every program is cached, however short its compile (the experiments compile many small
    ones on CPU)."""
    import jax

    if getattr(args, "no_compile_cache", False):
        return None
    given = getattr(args, "compile_cache", None)
    configured = jax.config.jax_compilation_cache_dir
    if given is None and configured:
        return Path(configured)
    path = Path(given) if given is not None else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SystemExit(f"--compile-cache: cannot make the folder {path}: {err}") from err
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
