"""CIFAR-10 from the standard python-version batches, as NumPy arrays.

The data set is the folder ``cifar-10-batches-py`` of the official archive
(``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``; each batch a pickled
dict with ``data``, a 10000 x 3072 uint8 array of channel-first 32x32 RGB images, and
``labels``). The paper's validation set is the test batch.

Where the folder is looked for (:func:`find`): in the ``data_dir`` argument (``--data-dir`` of
the experiments) alone when one is given; otherwise in the environment variable
``CIFAR10_DIR``, then ``data/`` under the current directory, then the cache folder
``$XDG_CACHE_HOME/meanfield`` (default ``~/.cache/meanfield``). Each place may be the folder
itself or a folder that contains ``cifar-10-batches-py``. If it is not found, :func:`load`
(unless ``download_missing=False``) fetches the official archive into ``data_dir`` or the
cache folder, checks its MD5 checksum and unpacks it; if that fails, the error says where the
folder was looked for and how to put it there. Nothing is ever downloaded by the tests.

Images stay uint8 in NHWC order (50000 x 32 x 32 x 3 is 147 MiB, cheap to keep on an
accelerator); :class:`CIFAR10` carries the per-channel mean and standard deviation of the
training images on the [0, 1] scale, which the trainer applies on the device
(:func:`normalize`). Shuffling is deterministic per (seed, epoch): :func:`epoch_order`.

Example (with the data present)::

    data = load(train_size=5000)
    data.x_train.shape, data.mean    # (5000, 32, 32, 3), (0.4914, 0.4822, 0.4465)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from meanfield.training import batchfile

__all__ = [
    "ARCHIVE_MD5",
    "ARCHIVE_URL",
    "CIFAR10",
    "FOLDER",
    "channel_stats",
    "DataError",
    "default_locations",
    "download",
    "epoch_order",
    "find",
    "load",
    "normalize",
    "read_batch",
    "synthetic",
]

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"  # the official archive's published checksum
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


class DataError(RuntimeError):
    """The data set is missing or damaged; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class CIFAR10:
    """Train and validation (test-batch) images, uint8 NHWC, with integer labels.

    ``mean`` and ``std`` are per channel (R, G, B) on the [0, 1] scale, computed from
    ``x_train`` (the images actually trained on).
    """

    x_train: np.ndarray  # (N, 32, 32, 3) uint8
    y_train: np.ndarray  # (N,) int32 in 0..9
    x_test: np.ndarray  # (M, 32, 32, 3) uint8: the paper's validation set
    y_test: np.ndarray  # (M,) int32
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...]
    source: str  # the folder read, or "synthetic"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "meanfield"


def default_locations() -> list[Path]:
    """Where :func:`find` looks when no folder is named: ``$CIFAR10_DIR``, ``data/``, cache."""
    places = []
    env = os.environ.get("CIFAR10_DIR")
    if env:
        places.append(Path(env))
    return places + [Path("data"), _cache_dir()]


def _as_folder(place: Path) -> Path | None:
    for cand in (place, place / FOLDER):
        if (cand / TRAIN_BATCHES[0]).is_file() or (cand / TEST_BATCH).is_file():
            return cand
    return None


def _places(data_dir: str | os.PathLike | None) -> list[Path]:
    # A folder named by the user is the only place looked at: they mean that folder.
    return [Path(data_dir)] if data_dir is not None else default_locations()


def find(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The ``cifar-10-batches-py`` folder: in ``data_dir`` (the folder or its parent) when
    given, else the first of :func:`default_locations` that holds it; None when absent."""
    for place in _places(data_dir):
        found = _as_folder(place)
        if found is not None:
            return found
    return None


_HOW_TO = (
    f"Get the python version of CIFAR-10 ({ARCHIVE_URL}), unpack it, and pass the folder with "
    f"--data-dir or set CIFAR10_DIR."
)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_member(member: tarfile.TarInfo, dest: Path, archive: Path) -> None:
    """Refuse a member that is not a plain file or folder, or whose path leaves ``dest``."""
    name = member.name
    target = (dest / name).resolve()
    inside = target == dest or dest in target.parents
    escapes = os.path.isabs(name) or ".." in Path(name).parts or not inside
    if escapes or not (member.isfile() or member.isdir()):
        raise DataError(f"refusing to unpack {name!r} from {archive}")


def _safe_extract(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest``: plain files and folders inside ``dest`` only.

    Every member is checked first (nothing is written when one fails), then tarfile's "data"
    filter (Python 3.11.4+) unpacks them, which also drops modes such as setuid and rejects
    what it finds unsafe; Python 3.12+ warns when no filter is named. Where the filter does
    not exist (3.11.0 to 3.11.3), the checks here are the safeguard.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, dest, archive)
        if hasattr(tarfile, "data_filter"):
            try:
                tar.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as err:
                raise DataError(f"refusing to unpack {archive}: {err}") from err
        else:  # Python 3.11.0 to 3.11.3
            tar.extractall(dest, members=members)


def download(
    dest: str | os.PathLike | None = None,
    *,
    url: str = ARCHIVE_URL,
    md5: str = ARCHIVE_MD5,
    timeout: float = 60.0,
) -> Path:
    """Fetch the archive from ``url``, check its MD5, unpack it into ``dest`` (default: the
    cache folder) and return the ``cifar-10-batches-py`` folder inside it.

    The archive is written to a temporary file first and unpacked into a temporary folder that
    is renamed into place at the end, so an interrupted download leaves nothing half-written.
    """
    dest = Path(dest) if dest is not None else _cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        archive = Path(tmp) / "cifar-10-python.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(archive, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
        except OSError as err:  # URLError, timeouts and HTTP errors are OSErrors
            raise DataError(f"could not download it from {url}: {err}. {_HOW_TO}") from err
        got = _md5(archive)
        if got != md5:
            raise DataError(
                f"the archive from {url} has MD5 {got}, expected {md5}: it is damaged or not "
                f"the official file. {_HOW_TO}"
            )
        unpacked = Path(tmp) / "unpacked"
        _safe_extract(archive, unpacked)
        folder = _as_folder(unpacked)
        if folder is None:
            raise DataError(f"the archive from {url} does not contain {FOLDER}/")
        target = dest / FOLDER
        if target.exists():
            shutil.rmtree(target)
        os.replace(folder, target)
    return target


_DAMAGED = (
    f"The file is truncated or damaged; delete the folder and get the data set again. {_HOW_TO}"
)


def _unpickle(path: Path):
    """The object pickled in ``path``, read with :func:`meanfield.training.batchfile.load`; any
    failure (a refused global, truncation, garbage, memory) becomes a :class:`DataError` naming the
    file."""
    try:
        return batchfile.load(path.read_bytes())
    except Exception as err:
        size = path.stat().st_size if path.is_file() else 0
        raise DataError(
            f"cannot read {path} ({size} bytes): {type(err).__name__}: {str(err)[:200]}. {_DAMAGED}"
        ) from err


def _batch_arrays(batch: dict) -> tuple[np.ndarray | None, np.ndarray | list]:
    """(data, labels) of an unpickled batch; (None, its keys) when one is missing."""
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        return None, sorted(map(str, batch))
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, batchfile.ArraySpec):
        raise DataError(f"'data' must be a uint8 array, got {type(data).__name__}")
    if isinstance(labels, batchfile.ArraySpec):
        labels = labels.array()
    if not isinstance(labels, (list, tuple, np.ndarray)):
        raise DataError(f"'labels' must be a list of integers, got {type(labels).__name__}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        raise DataError("'labels' must be a list of integers")
    return data.array(), np.asarray(labels, dtype=np.int64)


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images (N, 32, 32, 3) uint8 NHWC and labels (N,) int32.

    Raises :class:`DataError` naming the file when it is missing, truncated, damaged or not a
    CIFAR-10 batch. The pickle is read by an unpickler that admits only what a batch holds
    (protocol 2; NumPy's array reconstruction, ``ndarray`` and ``dtype`` of plain numeric
    types; latin-1 byte strings), so a malicious file cannot import or run anything.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing CIFAR-10 batch file {path}. {_HOW_TO}")
    batch = _unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (a pickled dict), got {type(batch)}")
    try:
        data, labels = _batch_arrays(batch)
    except Exception as err:  # a damaged file can hold anything the unpickler admits
        raise DataError(f"{path} is not a CIFAR-10 batch: {str(err)[:200]}. {_DAMAGED}") from err
    if data is None:
        raise DataError(f"{path} has no 'data' or 'labels' entry (keys: {labels})")
    n = labels.shape[0] if labels.ndim == 1 else -1
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape != (n, 3072):
        raise DataError(
            f"{path}: 'data' must be uint8 of shape (N, 3072) with N = {n} labels, got "
            f"{data.dtype} {data.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels must lie in 0..9, got {labels.min()}..{labels.max()}")
    images = data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)  # channel-first rows -> NHWC
    return np.ascontiguousarray(images), labels.astype(np.int32)


def _read_classes(folder: Path) -> tuple[str, ...]:
    path = folder / META
    if not path.is_file():
        return tuple(str(i) for i in range(NUM_CLASSES))
    meta = _unpickle(path)
    names = meta.get(b"label_names", meta.get("label_names", [])) if isinstance(meta, dict) else 0
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{path} is not CIFAR-10's batches.meta (a dict with 'label_names')")
    try:
        return tuple(n.decode() if isinstance(n, bytes) else n for n in names)
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read the class names in {path}: {err}. {_DAMAGED}") from err


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (population) of uint8 NHWC images on [0, 1].

    Computed from exact integer sums, so the result does not depend on summation order.
    """
    x = images.reshape(-1, images.shape[-1])
    count = x.shape[0]
    s1 = x.sum(axis=0, dtype=np.int64)
    s2 = np.einsum("ij,ij->j", x.astype(np.int64), x.astype(np.int64))
    mean = s1 / count
    var = s2 / count - mean**2
    return tuple(float(m / 255.0) for m in mean), tuple(float(np.sqrt(v) / 255.0) for v in var)


def _check_size(name: str, value: int | None, available: int) -> int:
    if value is None:
        return available
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")
    if value > available:
        raise ValueError(f"{name} must be <= {available} (the images available), got {value}")
    return int(value)


def load(
    data_dir: str | os.PathLike | None = None,
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    download_missing: bool = True,
) -> CIFAR10:
    """Read CIFAR-10 (see the module docstring for where it is looked for).

    Args:
        data_dir: the ``cifar-10-batches-py`` folder or a folder containing it.
        train_size: use the first ``train_size`` training images (all 50,000 by default); only
            the batch files needed are read.
        test_size: use the first ``test_size`` images of the test batch (all 10,000).
        download_missing: when the data set is nowhere to be found, download it into the cache
            folder (checksum-verified); when False, raise :class:`DataError` instead.
    """
    folder = find(data_dir)
    if folder is None:
        searched = ", ".join(str(p) for p in _places(data_dir))
        if not download_missing:
            raise DataError(f"CIFAR-10 not found (looked for {FOLDER}/ in: {searched}). {_HOW_TO}")
        try:
            folder = download(data_dir)
        except DataError as err:
            raise DataError(f"CIFAR-10 not found (looked in: {searched}) and {err}") from err
    per_batch = 10_000
    n_train = _check_size("train_size", train_size, per_batch * len(TRAIN_BATCHES))
    xs, ys = [], []
    for name in TRAIN_BATCHES:
        if sum(len(y) for y in ys) >= n_train:
            break
        x, y = read_batch(folder / name)
        xs.append(x)
        ys.append(y)
    x_train, y_train = np.concatenate(xs), np.concatenate(ys)
    n_train = _check_size("train_size", train_size, len(y_train))
    x_test, y_test = read_batch(folder / TEST_BATCH)
    n_test = _check_size("test_size", test_size, len(y_test))
    x_train, y_train = x_train[:n_train], y_train[:n_train]
    mean, std = channel_stats(x_train)
    return CIFAR10(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test[:n_test],
        y_test=y_test[:n_test],
        mean=mean,
        std=std,
        classes=_read_classes(folder),
        source=str(folder),
    )


def synthetic(train_size: int = 512, test_size: int = 256, *, seed: int = 0) -> CIFAR10:
    """A learnable stand-in with CIFAR-10's shapes (for plumbing checks without the data).

    Each class is a fixed random 32x32x3 pattern; an image is its class pattern plus noise,
    so a small network learns it quickly. Not CIFAR-10: results on it mean nothing about it.
    """
    rng = np.random.default_rng(seed)
    patterns = rng.normal(0.0, 1.0, (NUM_CLASSES, *IMAGE_SHAPE))

    def draw(n):
        y = rng.integers(0, NUM_CLASSES, n)
        x = patterns[y] + rng.normal(0.0, 1.0, (n, *IMAGE_SHAPE))
        return np.clip(128 + 40 * x, 0, 255).astype(np.uint8), y.astype(np.int32)

    x_train, y_train = draw(train_size)
    x_test, y_test = draw(test_size)
    mean, std = channel_stats(x_train)
    return CIFAR10(
        x_train, y_train, x_test, y_test, mean, std, tuple(map(str, range(10))), "synthetic"
    )


def normalize(images, mean: Sequence[float], std: Sequence[float], dtype=None):
    """(images / 255 - mean) / std per channel; works on NumPy or JAX arrays (uint8 in)."""
    import jax.numpy as jnp

    x = jnp.asarray(images, dtype=dtype or jnp.float32) / 255.0
    shape = (1,) * (x.ndim - 1) + (-1,)  # explicit broadcasting over the channel axis
    mean = jnp.asarray(mean, x.dtype).reshape(shape)
    std = jnp.asarray(std, x.dtype).reshape(shape)
    return (x - mean) / std


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The order in which run ``seed`` visits the ``size`` training images in ``epoch``.

    A permutation from NumPy's PCG64 seeded with (seed, epoch): the same on every machine and
    independent of how many other seeds are trained beside it.
    """
    return np.random.default_rng([int(seed), int(epoch)]).permutation(size)
