"""The binary WebSocket volume message: a 32-byte header, then the volume.

Header, little-endian (struct `<4sBBHIIIIQ`):

| offset | type   | field                                   |
| ------ | ------ | --------------------------------------- |
| 0      | 4s     | magic `b"EITV"`                         |
| 4      | u8     | version (1)                             |
| 5      | u8     | dtype code: 1 = float16, 2 = float32    |
| 6      | u16    | header length in bytes (32)             |
| 8      | u32    | P (planes, bottom to top)               |
| 12     | u32    | R (rows, anterior to posterior)         |
| 16     | u32    | C (columns, patient right to left)      |
| 20     | u32    | reserved (0)                            |
| 24     | u64    | seq of the frame                        |

Data: P*R*C values of the dtype, little-endian, C order over (P, R, C), starting at the header
length (32, so float32/float16 typed-array views in a browser are aligned).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"EITV"
VERSION = 1
HEADER = struct.Struct("<4sBBHIIIIQ")
DTYPE_CODES = {"float16": 1, "float32": 2}
CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}


@dataclass(frozen=True)
class VolumeHeader:
    dtype: str
    shape: tuple[int, int, int]
    seq: int


def pack_volume(dtype: str, shape: tuple[int, int, int], seq: int, data: bytes) -> bytes:
    """Header + data, one bytes object shared by every viewer."""
    p, r, c = shape
    return HEADER.pack(MAGIC, VERSION, DTYPE_CODES[dtype], HEADER.size, p, r, c, 0, seq) + data


def unpack_volume(message: bytes) -> tuple[VolumeHeader, np.ndarray]:
    """Parse a binary volume message (for Python clients and tests)."""
    magic, version, code, hlen, p, r, c, _, seq = HEADER.unpack_from(message)
    if magic != MAGIC or version != VERSION:
        raise ValueError("not an eitmon volume message")
    dtype = CODE_DTYPES[code]
    arr = np.frombuffer(message, dtype=np.dtype(dtype).newbyteorder("<"), offset=hlen)
    return VolumeHeader(dtype, (p, r, c), seq), arr.reshape(p, r, c)
