"""A restricted unpickler for the CIFAR-10 python batches.

Unpickling can call anything the file names, so only the globals the real batches (and
Python 3 re-pickles of them) need are resolved: plain containers and numpy array
reconstruction. Any other global is refused before anything is called. The constructors that
allocate by a size given in the file (an array's shape, bytearray(n)) check that size first: an
array's bytes come from the file, so one bigger than the file is a lie, refused before allocating.
"""

from __future__ import annotations

import _codecs
import builtins
import io
import math
import pickle
from typing import Any

import numpy as np

# Take numpy's pickle helpers from numpy itself, so the module path they are pickled under
# (numpy.core in 1.x, numpy._core in 2.x) does not matter.
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1, np.uint8).__reduce_ex__(5)[0]


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 protocol-2 pickles store bytes as _codecs.encode(str, "latin1"); allow only that
    if encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickle(f"_codecs.encode with encoding {encoding!r}")
    return _codecs.encode(text, "latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    **{(f"numpy.{core}.multiarray", "scalar"): _SCALAR for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("core", "_core")},
    **{
        (mod, n): getattr(builtins, n)
        for mod in ("builtins", "__builtin__")  # __builtin__: Python 2 pickles, as the real files are
        for n in ("dict", "list", "tuple", "set", "frozenset")
    },
}
_SIZED = {("numpy", "ndarray"), ("builtins", "bytearray"), ("__builtin__", "bytearray"),
          *((f"numpy.{core}.multiarray", "_reconstruct") for core in ("core", "_core"))}


class UnsafePickle(Exception):
    """The pickle names a global outside the allow-list."""


class _Restricted(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._limit = len(data)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SIZED:
            return {"ndarray": self._ndarray, "bytearray": self._bytearray}.get(name, self._reconstruct)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickle(f"{module}.{name}") from None

    def _check(self, shape: Any, dtype: Any) -> None:
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        if not all(isinstance(d, int) and d >= 0 for d in dims):
            raise ValueError(f"array shape {shape!r} is not a list of sizes")
        nbytes = math.prod(dims) * np.dtype(dtype).itemsize
        if nbytes > self._limit:
            raise ValueError(f"an array of shape {list(dims)} needs {nbytes:,} bytes, more than the whole "
                             f"file ({self._limit:,} bytes)")

    def _ndarray(self, shape: Any = (0,), dtype: Any = float, *args: Any, **kwargs: Any) -> np.ndarray:
        if not args and not kwargs:  # no buffer: numpy would allocate the whole shape
            self._check(shape, dtype)
        return np.ndarray(shape, dtype, *args, **kwargs)

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        # the array class is passed back in as the name "numpy.ndarray", which resolves to _ndarray
        if subtype not in (np.ndarray, self._ndarray):
            raise UnsafePickle(f"_reconstruct of {subtype!r}")
        self._check(shape, dtype)
        return _RECONSTRUCT(np.ndarray, shape, dtype)

    def _bytearray(self, *args: Any) -> bytearray:
        if args and isinstance(args[0], int) and args[0] > self._limit:
            raise ValueError(f"bytearray({args[0]:,}) is larger than the whole file ({self._limit:,} bytes)")
        return bytearray(*args)


def safe_loads(data: bytes) -> Any:
    """Unpickle CIFAR-style data; the real files are Python 2 pickles, hence encoding='bytes'."""
    try:
        return _Restricted(data).load()
    except (MemoryError, OverflowError) as exc:  # a length field in the pickle itself beyond any memory
        raise ValueError(f"it asks for more memory than exists ({type(exc).__name__})") from None
