"""Reading CIFAR-10's python-version batch files without running pickle code.

A batch is a pickled dict of NumPy arrays and lists, and ``pickle.load`` on it would import
and call whatever the file names. :func:`load` admits only what a batch holds: pickle
protocol 2, NumPy's array reconstruction (under its NumPy 1 or NumPy 2 module name),
``numpy.ndarray`` and ``numpy.dtype`` of plain numeric types, and latin-1 byte strings. The
arrays come back as :class:`ArraySpec` records whose shape, dtype and byte count are checked
before NumPy sees them (:meth:`ArraySpec.array`). A damaged file raises an exception of some
kind; :mod:`meanfield.training.data` turns every one into its ``DataError`` naming the file.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools

import numpy as np

__all__ = ["ArraySpec", "load"]

# Plain numeric dtypes an array in a batch may have (no object, structured or void types).
_DTYPES = frozenset(f"{k}{s}" for k in "iu" for s in (1, 2, 4, 8)) | {"b1", "f2", "f4", "f8"}


def _refuse_state(*_) -> None:
    raise pickle.UnpicklingError("refusing to set the state of a global")


class _Latin1:
    """Stands in for ``_codecs.encode``: Python 3 writes bytes at pickle protocol 2 as
    ``_codecs.encode(text, "latin1")``; this admits that one call, not the codec machinery."""

    __slots__ = ()
    __setstate__ = staticmethod(_refuse_state)

    def __new__(cls, text: str, encoding: str) -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError(f"refusing _codecs.encode({text!r:.40}, {encoding!r:.40})")
        return text.encode("latin-1")


class _Ndarray:
    """Stands in for ``numpy.ndarray``, which a batch names only as the first argument of the
    array reconstruction; calling it (an array of any size or dtype) is refused."""

    __slots__ = ()
    __setstate__ = staticmethod(_refuse_state)

    def __new__(cls, *args, **kwargs):
        raise pickle.UnpicklingError("refusing to call numpy.ndarray")


class _DtypeSpec:
    """Stands in for ``numpy.dtype(spec, align, copy)`` while unpickling: it records the spec
    and the byte order of its state, and NumPy builds the dtype only once all is checked."""

    def __init__(self, spec: str, align: bool = False, copy: bool = False):
        if not isinstance(spec, str) or spec not in _DTYPES:
            raise pickle.UnpicklingError(f"refusing numpy dtype {spec!r:.40}")
        self.spec, self.byteorder = spec, "="

    def __setstate__(self, state: tuple) -> None:
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("|", "<", ">", "=")):
            raise pickle.UnpicklingError(f"refusing numpy dtype state {state!r:.80}")
        if state[1] in ("<", ">"):
            self.byteorder = state[1]

    def dtype(self) -> np.dtype:
        return np.dtype(self.spec).newbyteorder(self.byteorder)


class ArraySpec:
    """Stands in for ``numpy._core.multiarray._reconstruct(ndarray, (0,), b"b")`` (how NumPy
    pickles an array, followed by ``__setstate__``): it records shape, dtype and bytes, and
    :meth:`array` checks them before NumPy sees them."""

    def __init__(self, cls: type, shape: tuple, typecode: bytes):
        if cls is not _Ndarray or shape != (0,) or typecode != b"b":
            raise pickle.UnpicklingError(
                f"refusing numpy _reconstruct({cls!r:.40}, {shape!r:.40}, {typecode!r:.40})"
            )
        self.state = None

    def __setstate__(self, state: tuple) -> None:
        self.state = state

    def array(self) -> np.ndarray:
        state = self.state
        if not (isinstance(state, tuple) and len(state) == 5):
            raise ValueError(f"an array's state must be a 5-tuple, got {state!r:.80}")
        _, shape, spec, fortran, raw = state
        if not isinstance(spec, _DtypeSpec) or not isinstance(raw, bytes):
            raise ValueError(f"an array's state must hold a dtype and bytes, got {state!r:.80}")
        if not isinstance(shape, tuple) or not all(
            type(s) is int and 0 <= s <= len(raw) for s in shape
        ):
            raise ValueError(f"an array's shape must be a tuple of sizes, got {shape!r:.80}")
        dtype = spec.dtype()
        if math.prod(shape) * dtype.itemsize != len(raw):
            raise ValueError(f"an array of shape {shape} {dtype} cannot hold {len(raw)} bytes")
        flat = np.frombuffer(raw, dtype=dtype)
        return flat.reshape(shape, order="F" if fortran else "C")  # read-only; callers copy


# The globals a CIFAR-10 python-version batch references: numpy's array reconstruction (under
# its NumPy 1 or NumPy 2 module name), ndarray and dtype, and (in files written by Python 3 at
# protocol 2) the latin-1 encoding of byte strings. Nothing else is ever imported or called,
# and NumPy itself only sees the arrays' checked shapes, dtypes and bytes.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ArraySpec,
    ("numpy._core.multiarray", "_reconstruct"): ArraySpec,
    ("numpy", "ndarray"): _Ndarray,
    ("numpy", "dtype"): _DtypeSpec,
    ("_codecs", "encode"): _Latin1,
}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED_GLOBALS` (a malicious pickle cannot
    import or call anything else) and refuses persistent ids."""

    def find_class(self, module: str, name: str):
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing global {module!r:.80}.{name!r:.80}")
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id")


def _check_opcodes(blob: bytes) -> None:
    """Refuse opcodes past pickle protocol 2 (what the batches are written in: the protocol 5
    buffers, BYTEARRAY8 and the like, are not in a batch, and a damaged length in one trips
    CPython) and memo indices beyond the opcodes read so far (picklers number them
    consecutively; a damaged one would make the unpickler allocate a memo of that size)."""
    for count, (op, arg, pos) in enumerate(pickletools.genops(blob)):
        if op.proto > 2:
            raise pickle.UnpicklingError(
                f"refusing opcode {op.name} at byte {pos} (a CIFAR-10 batch is pickle protocol 2)"
            )
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) <= count:
            raise pickle.UnpicklingError(f"refusing memo index {arg} at byte {pos}")


def load(blob: bytes):
    """The object pickled in ``blob``, read with the restricted unpickler."""
    _check_opcodes(blob)
    # From memory: a damaged length field reads to the end of the data instead of allocating
    # what it claims.
    return _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
