"""Save and load results with their full configuration, package versions and git revision.

Results files are strict JSON. JSON has no number for an overflow or an undefined value, so a
non-finite float is stored as a one-key object, ``{"__float__": "inf"}``, ``"-inf"`` or
``"nan"`` (:data:`NONFINITE_KEY`), which :func:`load_json` and :func:`load_jsonl` read back as
the float: an overflow (inf) stays distinct from an undefined value (NaN), and both from a
value that is absent (null). Files written before this convention, where every non-finite
float is null, read as before. In CSV files the three are the cells ``inf``, ``-inf`` and
``nan`` (what Python's ``float`` reads). A :class:`meanfield.Block` or a layer tree is stored
as its name, which :func:`meanfield.layers.network_from_name` reads back. A results file that
is not valid JSON (a write cut short, a damaged disk) raises :class:`CorruptFileError`, which
names the file.

Every write is atomic: the file is written to a temporary name in the same folder, flushed to
disk, then renamed over the target, so a crash leaves either the old file or the new one. The
file gets the permissions of a plain ``open(path, "w")`` (0o666 less the umask, so 0o644 under
the usual umask 0o022), not the owner-only 0o600 of the temporary file. No science module is
imported here.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

# Name in the record -> distribution name (the distribution of `meanfield` is meanfield-resnet;
# the index's `meanfield` is an unrelated project).
_PACKAGES = {
    "meanfield": "meanfield-resnet",
    **{name: name for name in ("jax", "jaxlib", "numpy", "scipy", "flax", "optax", "matplotlib")},
}


def git_revision(path: str | os.PathLike | None = None) -> str | None:
    """The git commit of the checkout holding ``path`` (default: this package), or None."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment() -> dict[str, Any]:
    """Versions of Python and the packages that produced a result, the device and git revision."""
    versions = {}
    for name, dist in _PACKAGES.items():
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "git_revision": git_revision(),
        "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if "jax" in sys.modules:
        jax = sys.modules["jax"]
        env["jax_backend"] = jax.default_backend()
        env["jax_devices"] = [str(d) for d in jax.devices()]
        env["jax_enable_x64"] = bool(jax.config.jax_enable_x64)
    return env


# The key of the one-key object that stands for a non-finite float in a results file.
NONFINITE_KEY = "__float__"
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
# Objects stored by their name: presets (meanfield.Block) and layer trees (meanfield.layers),
# recognized by their module (this module imports neither: it sits below them).
_NAMED_MODULES = ("meanfield.core.architecture", "meanfield.layers.")


def _nonfinite_text(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _network_name(obj: Any) -> str | None:
    """The name of a Block or layer tree (what ``layers.network_from_name`` reads), else None."""
    module = type(obj).__module__
    if isinstance(obj, type) or not module.startswith(_NAMED_MODULES):
        return None
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) else None


def to_jsonable(obj: Any) -> Any:
    """``obj`` as strict JSON values: arrays to (nested) lists, NaN and ±inf to
    ``{"__float__": "nan" | "inf" | "-inf"}``, paths to strings, a Block or a layer tree to
    its name (also as a mapping key)."""
    if isinstance(obj, Mapping):
        return {_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
        if arr.ndim == 0:
            return to_jsonable(arr.item())
        return [to_jsonable(v) for v in arr.tolist()]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {NONFINITE_KEY: _nonfinite_text(obj)}
    if isinstance(obj, (np.generic,)):
        return to_jsonable(obj.item())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    name = _network_name(obj)
    return obj if name is None else name


def _key(k: Any) -> str:
    name = _network_name(k)
    return name if name is not None else str(k)


def _decode_object(d: dict[str, Any]) -> Any:
    """A JSON object as read: a tagged non-finite float back to the float, else the dict."""
    if len(d) == 1 and isinstance(d.get(NONFINITE_KEY), str) and d[NONFINITE_KEY] in _NONFINITE:
        return _NONFINITE[d[NONFINITE_KEY]]
    return d


def from_jsonable(obj: Any) -> Any:
    """The inverse of :func:`to_jsonable` on parsed JSON: each ``{"__float__": ...}`` object
    back to its float (for JSON parsed elsewhere, e.g. ``json.loads``)."""
    if isinstance(obj, dict):
        return _decode_object({k: from_jsonable(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    return obj


class CorruptFileError(json.JSONDecodeError):
    """A results or metrics file that is not valid JSON (truncated or damaged); the message
    names the file. A :class:`json.JSONDecodeError` (so a ``ValueError``)."""

    def __init__(self, path: str | os.PathLike, err: json.JSONDecodeError, line: int | None = None):
        where = f"line {line if line is not None else err.lineno}"
        what = "is empty" if not err.doc.strip() else "is truncated or corrupt"
        message = (
            f"{os.fspath(path)} {what}: not valid JSON ({err.msg}: {where}, column "
            f"{err.colno}); a write was cut short or the file was damaged: run again, or "
            "restore the file"
        )
        ValueError.__init__(self, message)
        self.msg, self.doc, self.pos = message, err.doc, err.pos
        self.lineno, self.colno, self.path = line or err.lineno, err.colno, Path(path)
        self._given = (path, err, line)

    def __reduce__(self):  # pickled (e.g. from a worker process) as it was made
        return type(self), self._given


_UMASK_LOCK = threading.Lock()


def _current_umask() -> int:
    """The process umask, read without changing it where the system allows.

    Linux reports it in /proc/self/status; elsewhere the only way is to set a value and put the
    old one back (``os.umask``), done under a lock so that two writers here cannot interleave.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)  # the most restrictive value while it is held
        os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    The file's mode is 0o666 less the umask, as for a file opened for writing; the temporary
    file from :func:`tempfile.mkstemp` would otherwise carry its 0o600 to the target.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, like :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# A non-finite float as json.dumps(..., indent=1) lays it out, over three lines. Outside a string
# only: inside one, a line break and a quote are escaped.
_INDENTED_TAG = re.compile(r'\{\s*"' + NONFINITE_KEY + r'": ("(?:inf|-inf|nan)")\s*\}')


def _dumps(path: str | os.PathLike, obj: Any, **kwargs) -> str:
    try:
        text = json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)
    except TypeError as err:  # an object JSON cannot hold: say which file was being written
        raise TypeError(f"cannot write {os.fspath(path)}: {err}") from err
    # Each non-finite float on one line, as the numbers around it.
    return (
        _INDENTED_TAG.sub(r'{"' + NONFINITE_KEY + r'": \1}', text) if "indent" in kwargs else text
    )


def save_json(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (arrays allowed) as JSON, atomically."""
    return atomic_write_text(path, _dumps(path, payload, indent=1) + "\n")


def save_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines (one object per line), atomically."""
    lines = [_dumps(path, r) for r in rows]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def _read_text(path: str | os.PathLike) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as err:
        not_text = json.JSONDecodeError(f"not UTF-8 text ({err.reason})", "", 0)
        raise CorruptFileError(path, not_text) from err


def load_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a JSON lines file (non-finite floats back as floats). Raises
    :class:`CorruptFileError`, naming the file and line, where a line is not valid JSON."""
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line, object_hook=_decode_object))
            except json.JSONDecodeError as err:
                raise CorruptFileError(path, err, line=number) from None
    return rows


def load_json(path: str | os.PathLike) -> dict[str, Any]:
    """The content of a JSON results file (non-finite floats back as floats). Raises
    :class:`CorruptFileError`, naming the file, where it is not valid JSON."""
    try:
        return json.loads(_read_text(path), object_hook=_decode_object)
    except json.JSONDecodeError as err:
        raise CorruptFileError(path, err) from None


def _csv_cell(value: Any) -> Any:
    """A cell as written: non-finite floats as ``inf``, ``-inf``, ``nan``, None empty."""
    if isinstance(value, dict) and len(value) == 1 and NONFINITE_KEY in value:
        return value[NONFINITE_KEY]
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def save_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV (columns from the first row), atomically; non-finite floats as
    ``inf``, ``-inf`` and ``nan``, None as an empty cell."""
    rows = [{k: _csv_cell(v) for k, v in to_jsonable(r).items()} for r in rows]
    if not rows:
        raise ValueError("rows must not be empty")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def _can_create_in(folder: Path) -> str | None:
    """None when a folder can be made in ``folder`` (tried: a permission check alone misses
    read-only file systems, and root passes every permission check), else the reason."""
    try:
        probe = tempfile.mkdtemp(prefix=".meanfield-probe-", dir=folder)
    except OSError as err:
        return err.strerror or str(err)
    os.rmdir(probe)
    return None


def output_folder(value: str) -> str:
    """``value`` as the folder under which run folders are made, checked before any work: it
    must be a folder or not exist yet, and a folder must be creatable in the nearest existing
    folder on its path (tried, and removed at once). The experiments use it as the argparse
    type of ``--out`` (:func:`add_out_argument`), so a bad ``--out`` is one line and exit code
    2, not a traceback after the computation. Raises ``argparse.ArgumentTypeError``."""
    import argparse

    path = Path(value)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is" if existing == path else f"lies under {str(existing)!r}, which is"
        raise argparse.ArgumentTypeError(f"{str(path)!r} {what} not a folder")
    reason = None if os.access(existing, os.W_OK | os.X_OK) else "permission denied"
    reason = reason or _can_create_in(existing)
    if reason is not None:
        raise argparse.ArgumentTypeError(f"cannot write into {str(existing)!r} ({reason})")
    return value  # as given: it is saved with the run's configuration


def add_out_argument(parser) -> None:
    """The experiments' ``--out`` flag (:func:`output_folder`)."""
    parser.add_argument(
        "--out",
        type=output_folder,
        default="runs",
        help="folder under which a new run folder is made",
    )


def new_run_dir(base: str | os.PathLike, name: str) -> Path:
    """A fresh folder ``base/name-YYYYmmdd-HHMMSS[-k]`` for one run's outputs."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(base)
    for k in range(1000):
        path = base / (f"{name}-{stamp}" + (f"-{k}" if k else ""))
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a new run folder under {base}")


@contextlib.contextmanager
def run_folder(base: str | os.PathLike, name: str, *, keep=None):
    """A fresh run folder (:func:`new_run_dir`) for the body of a ``with`` statement, removed
    with everything in it when the body fails (an exception, Ctrl-C, ``sys.exit``), together
    with the folders of ``base`` that it had to create: a run that fails leaves nothing
    behind. ``keep(path)``, when given, keeps a failed run's folder where it returns True
    (the trainer: a run with a checkpoint is resumed, not removed)."""
    base = Path(base)
    made = [p for p in (base, *base.parents) if not p.exists()]
    path = new_run_dir(base, name)
    try:
        yield path
    except BaseException:
        if keep is None or not keep(path):
            shutil.rmtree(path, ignore_errors=True)
            for folder in made:  # innermost first; only while empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
