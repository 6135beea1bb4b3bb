"""Reader for the IDX format of the original MNIST files, gzipped or not.

An IDX file is a 4-byte magic number ``0, 0, type, ndim``, then ``ndim``
big-endian uint32 sizes, then the values in row-major order, big-endian.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from rnnkit.errors import UserError

DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""The value type of each IDX type code."""

_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: Path) -> np.ndarray:
    """The array stored in the IDX file ``path`` (``.gz`` compression is detected
    from the content, not the name), in native byte order.

    Raises:
        UserError: the file cannot be read, is not IDX, or is cut short.
    """
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"cannot read {path}: {error}") from None

    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in DTYPES or raw[3] == 0:
        raise UserError(
            f"{path} is not an IDX file (it should start with 0x0000, a type code "
            f"in {sorted(hex(code) for code in DTYPES)} and the number of dimensions; "
            f"got {raw[:4].hex() or 'an empty file'})"
        )
    dtype, ndim = DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path} is cut short: its header needs {header} bytes, the file has {len(raw)}")
    shape = tuple(int(size) for size in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise UserError(
            f"{path} has {len(raw)} bytes, but its header announces shape {shape} "
            f"of {dtype.itemsize}-byte values, {expected} bytes in all"
        )
    values = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))
