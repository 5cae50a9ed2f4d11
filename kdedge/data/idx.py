"""Read and write the idx format of MNIST / Fashion-MNIST (optionally gzip-compressed).

Layout: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, one
big-endian uint32 per dimension, then the values in C order.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from kdedge.errors import KdedgeError

UBYTE = 0x08


def read_idx(path: Path, ndim: int, fix: str) -> np.ndarray:
    """Return the uint8 array stored in `path`; `fix` tells the user how to replace a bad file."""
    raw = _read_bytes(path, fix)
    if len(raw) < 4:
        raise KdedgeError(f"{path}: idx header is truncated ({len(raw)} bytes); {fix}")
    zero, dtype, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != UBYTE or dims != ndim:
        raise KdedgeError(
            f"{path}: bad idx magic number 0x{raw[:4].hex()} (expected 0x0000080{ndim}, "
            f"unsigned bytes with {ndim} dimension(s)); {fix}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise KdedgeError(f"{path}: idx header is truncated ({len(raw)} bytes); {fix}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise KdedgeError(
            f"{path}: idx body has {len(raw) - header} bytes but the header shape {shape} "
            f"needs {expected} (file truncated or corrupt); {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def encode_idx(array: np.ndarray) -> bytes:
    """The idx bytes (uncompressed) of a uint8 array."""
    if array.dtype != np.uint8:
        raise ValueError(f"idx writer only supports uint8, got {array.dtype}")
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def gzip_bytes(data: bytes) -> bytes:
    # mtime=0 so the same array always gives the same file bytes
    return gzip.compress(data, compresslevel=9, mtime=0)


def _read_bytes(path: Path, fix: str) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise KdedgeError(f"{path}: cannot read ({exc}); {fix}") from None
