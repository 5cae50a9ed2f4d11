"""Read and write the idx format of MNIST / Fashion-MNIST (optionally gzip-compressed).

Layout: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, one
big-endian uint32 per dimension, then the values in C order.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from kdedge.errors import KdedgeError

UBYTE = 0x08
# larger than any idx dataset in use (EMNIST's biggest file is ~0.55 GB): a header asking for more is
# refused before anything is allocated or decompressed
MAX_BODY_BYTES = 2 * 2**30
_CHUNK = 1 << 20


def read_idx(path: Path, ndim: int, fix: str) -> np.ndarray:
    """Return the uint8 array stored in `path`; `fix` tells the user how to replace a bad file.

    The header is checked before the body is read, and the body is read in chunks up to the size the
    header gives, so neither a lying header nor a gzip bomb can make this allocate more than that."""
    try:
        with _open(path) as fh:
            shape = _header(fh, path, ndim, fix)
            expected = math.prod(shape)  # Python ints: no overflow
            body = bytearray()
            while len(body) <= expected and (chunk := fh.read(min(_CHUNK, expected + 1 - len(body)))):
                body += chunk
    except (OSError, EOFError, zlib.error) as exc:
        raise KdedgeError(f"{path}: cannot read ({exc}); {fix}") from None
    if len(body) != expected:
        found = f"more than {expected}" if len(body) > expected else str(len(body))  # reading stopped there
        raise KdedgeError(
            f"{path}: idx body has {found} bytes but the header shape {shape} needs {expected} "
            f"(file truncated or corrupt); {fix}"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _header(fh: BinaryIO, path: Path, ndim: int, fix: str) -> tuple[int, ...]:
    raw = fh.read(4)
    if len(raw) < 4:
        raise KdedgeError(f"{path}: idx header is truncated ({len(raw)} bytes); {fix}")
    zero, dtype, dims = struct.unpack(">HBB", raw)
    if zero != 0 or dtype != UBYTE or dims != ndim:
        raise KdedgeError(
            f"{path}: bad idx magic number 0x{raw.hex()} (expected 0x0000080{ndim}, "
            f"unsigned bytes with {ndim} dimension(s)); {fix}"
        )
    raw = fh.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise KdedgeError(f"{path}: idx header is truncated ({4 + len(raw)} bytes); {fix}")
    shape = struct.unpack(f">{ndim}I", raw)
    if 0 in shape:
        raise KdedgeError(f"{path}: idx header shape {shape} has a zero dimension (an empty or corrupt file); {fix}")
    if math.prod(shape) > MAX_BODY_BYTES:
        raise KdedgeError(f"{path}: idx header shape {shape} asks for {math.prod(shape):,} bytes, more than the "
                          f"{MAX_BODY_BYTES:,} any idx dataset needs (corrupt header); {fix}")
    return shape


def encode_idx(array: np.ndarray) -> bytes:
    """The idx bytes (uncompressed) of a uint8 array."""
    if array.dtype != np.uint8:
        raise ValueError(f"idx writer only supports uint8, got {array.dtype}")
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def gzip_bytes(data: bytes) -> bytes:
    # mtime=0 so the same array always gives the same file bytes
    return gzip.compress(data, compresslevel=9, mtime=0)


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]
