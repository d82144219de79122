"""Save and load results with their full configuration, package versions and git revision.

Every write is atomic: the file is written to a temporary name in the same folder, flushed to
disk, then renamed over the target, so a crash leaves either the old file or the new one. The
file gets the permissions of a plain ``open(path, "w")`` (0o666 less the umask, so 0o644 under
the usual umask 0o022), not the owner-only 0o600 of the temporary file. No science module is
imported here.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import platform
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


def to_jsonable(obj: Any) -> Any:
    """Arrays to (nested) lists; NaN and ±inf to None (JSON has no such numbers); paths to
    strings."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
        if arr.ndim == 0:
            return to_jsonable(arr.item())
        return [to_jsonable(v) for v in arr.tolist()]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.generic,)):
        return to_jsonable(obj.item())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


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


def save_json(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (arrays allowed) as JSON, atomically."""
    text = json.dumps(to_jsonable(payload), indent=1, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def save_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines (one object per line), atomically."""
    lines = [json.dumps(to_jsonable(r), allow_nan=False) for r in rows]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def load_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_json(path: str | os.PathLike) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV (columns from the first row), atomically."""
    rows = [to_jsonable(r) for r in rows]
    if not rows:
        raise ValueError("rows must not be empty")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def output_folder(value: str) -> str:
    """``value`` as the folder under which run folders are made, checked before any work: it
    must be a folder or not exist yet, and the nearest existing folder on its path must be
    writable. The experiments use it as the argparse type of ``--out``
    (:func:`add_out_argument`), so a bad ``--out`` is one line and exit code 2, not a traceback
    after the computation. Raises ``argparse.ArgumentTypeError``."""
    import argparse

    path = Path(value)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is" if existing == path else f"lies under {str(existing)!r}, which is"
        raise argparse.ArgumentTypeError(f"{str(path)!r} {what} not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write into {str(existing)!r}")
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
