"""A restricted unpickler for the CIFAR-10 python batches.

Unpickling can call anything the file names, so only the globals the real batches (and
Python 3 re-pickles of them) need are resolved: plain containers and numpy array
reconstruction. Any other global is refused before anything is called.
"""

from __future__ import annotations

import _codecs
import builtins
import io
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
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _SCALAR for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("core", "_core")},
    **{
        (mod, n): getattr(builtins, n)
        for mod in ("builtins", "__builtin__")  # __builtin__: Python 2 pickles, as the real files are
        for n in ("dict", "list", "tuple", "set", "frozenset", "bytearray")
    },
}


class UnsafePickle(Exception):
    """The pickle names a global outside the allow-list."""


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickle(f"{module}.{name}") from None


def safe_loads(data: bytes) -> Any:
    """Unpickle CIFAR-style data; the real files are Python 2 pickles, hence encoding='bytes'."""
    return _Restricted(io.BytesIO(data), encoding="bytes").load()
