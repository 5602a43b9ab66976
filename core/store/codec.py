"""How the values of one metric chunk are kept: typed arrays, bit for bit as logged, compressed where it pays.

A chunk holds one flush of one metric of one run: its steps, epochs, values and wall times, each encoded on its own:

- integers (steps, epochs) as differences from the previous one: a constant difference (every step logged) is 17
  bytes whatever the length; a few runs of one value (the epoch of each step) are each run's start and value;
  up to 4,096 values within 65,535 of the first (a summary's steps) are 2-byte offsets from it; anything else is
  the differences, byte-shuffled and zlib-compressed;
- floats (values, wall times) keep their exact 64-bit patterns. Values the trainer computed in float32 come back
  bit-identical from float32, so they are kept in 4 bytes, as they are: XOR, shuffle and zlib saved only 10-15% of
  those 4 bytes (a loss's low mantissa bits are noise) at 90% of a flush's encoding time. Other floats (wall times,
  host-side values) are XORed with the one before (a smooth series shares sign, exponent and the top of the
  mantissa with its neighbour, which leaves zeros), byte-shuffled and zlib-compressed: 8 bytes become about 5.
  NaN (with its payload), +-Inf, -0.0 and subnormals survive unchanged.

Every encoding starts with one tag byte; a compressed form that is not smaller than the plain bytes is stored plain.
Decoding is numpy only: no Python per value.
"""

from __future__ import annotations

import zlib

import numpy as np

_SMALL = 128  # floats up to this many are stored plain
_LEVEL = 1  # zlib's fastest level: within a few % of the best ratio on these shuffled arrays, at a third of the time
_CONSTANT, _RUNS, _OFFSETS, _INTS, _INTS_PLAIN = b"c", b"r", b"o", b"i", b"I"
_FLOATS32, _FLOATS32_PLAIN, _FLOATS64, _FLOATS64_PLAIN = b"f", b"F", b"d", b"D"


def _shuffle(a: np.ndarray) -> bytes:
    """Byte k of every element together, for each k: the slowly changing high bytes become long zero runs."""
    return np.ascontiguousarray(a.view(np.uint8).reshape(-1, a.itemsize).T).tobytes()


def _unshuffle(data: bytes, dtype: np.dtype, n: int) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    return np.ascontiguousarray(np.frombuffer(data, np.uint8).reshape(size, n).T).view(dtype).reshape(n)


def _pack(tag_z: bytes, tag_plain: bytes, shuffled: bytes, plain: bytes) -> bytes:
    packed = zlib.compress(shuffled, _LEVEL)
    return tag_z + packed if len(packed) < len(plain) else tag_plain + plain


# ---------------------------------------------------------------------- integers
def encode_ints(values: np.ndarray) -> bytes:
    """int64 array -> bytes (see the module docstring)."""
    a = np.asarray(values, dtype=np.int64)
    if a.size == 0:
        return _INTS_PLAIN
    deltas = np.diff(a)
    if a.size == 1 or (deltas == deltas[0]).all():
        step = int(deltas[0]) if a.size > 1 else 0
        return _CONSTANT + np.array([a[0], step], dtype=np.int64).tobytes()
    starts = np.flatnonzero(deltas) + 1
    if starts.size * 16 <= a.size:  # few runs of one value (an epoch number per step): each run's start and value
        firsts = np.concatenate([[0], starts])
        return _RUNS + np.concatenate([firsts, a[firsts]]).astype(np.int64).tobytes()
    if a.size <= 4096 and 0 <= (a - a[0]).min() and (a - a[0]).max() < 65536:  # a summary's steps: 2 bytes each
        return _OFFSETS + a[:1].tobytes() + (a - a[0]).astype(np.uint16).tobytes()
    diffs = np.concatenate([a[:1], deltas])  # wraps around on overflow, and back on decoding: exact for any int64
    return _pack(_INTS, _INTS_PLAIN, _shuffle(diffs), a.tobytes())


def decode_ints(data: bytes, n: int) -> np.ndarray:
    """bytes from `encode_ints` -> the int64 array of length `n`."""
    tag, body = data[:1], data[1:]
    if tag == _CONSTANT:
        first, step = np.frombuffer(body, dtype=np.int64)
        return first + step * np.arange(n, dtype=np.int64)
    if tag == _RUNS:
        firsts, values = np.frombuffer(body, dtype=np.int64).reshape(2, -1)
        return np.repeat(values, np.diff(np.append(firsts, n)))
    if tag == _OFFSETS:
        return np.frombuffer(body, dtype=np.int64, count=1)[0] + np.frombuffer(body, np.uint16, n, 8).astype(np.int64)
    if tag == _INTS_PLAIN:
        return np.frombuffer(body, dtype=np.int64, count=n).copy()
    if tag == _INTS:
        return np.cumsum(_unshuffle(zlib.decompress(body), np.int64, n), dtype=np.int64)
    raise ValueError(f"unknown integer encoding {tag!r}")


# ---------------------------------------------------------------------- floats
def encode_floats(values: np.ndarray) -> bytes:
    """float64 array -> bytes, exact to the bit (see the module docstring)."""
    a = np.ascontiguousarray(values, dtype=np.float64)
    if a.size == 0:
        return _FLOATS64_PLAIN
    with np.errstate(over="ignore", invalid="ignore"):  # a value beyond float32 becomes inf: not narrow
        narrow = a.astype(np.float32)
    if np.array_equal(narrow.astype(np.float64).view(np.uint64), a.view(np.uint64)):
        return _FLOATS32_PLAIN + narrow.tobytes()  # see the module docstring: zlib barely pays on float32 values
    return _encode_float64(a)


def encode_float_rows(values: np.ndarray) -> list[bytes]:
    """`encode_floats` of each row of a (rows, n) array, bit for bit, the float32 test made for every row at once
    (a population's flush writes a chunk for each metric of each member)."""
    a = np.ascontiguousarray(values, dtype=np.float64)
    if a.shape[1] == 0:
        return [_FLOATS64_PLAIN] * a.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):  # a value beyond float32 becomes inf: not narrow
        narrow = a.astype(np.float32)
    exact = (narrow.astype(np.float64).view(np.uint64) == a.view(np.uint64)).all(axis=1)
    # float32-exact values: plain (see the module docstring: zlib barely pays there); others below
    return [_FLOATS32_PLAIN + narrow[i].tobytes() if exact[i] else _encode_float64(a[i]) for i in range(a.shape[0])]


def _encode_float64(a: np.ndarray) -> bytes:
    """Values float32 cannot hold: plain up to _SMALL of them, else XORed, shuffled and compressed where it pays."""
    if a.size <= _SMALL:
        return _FLOATS64_PLAIN + a.tobytes()
    bits = a.view(np.uint64)
    xored = bits.copy()
    xored[1:] ^= bits[:-1]
    return _pack(_FLOATS64, _FLOATS64_PLAIN, _shuffle(xored), a.tobytes())


def decode_floats(data: bytes, n: int) -> np.ndarray:
    """bytes from `encode_floats` -> the float64 array of length `n`, bit-identical to what was encoded."""
    tag, body = data[:1], data[1:]
    if tag == _FLOATS64_PLAIN:
        return np.frombuffer(body, dtype=np.float64, count=n).copy()
    if tag == _FLOATS32_PLAIN:
        return np.frombuffer(body, dtype=np.float32, count=n).astype(np.float64)
    if tag in (_FLOATS32, _FLOATS64):
        wide = tag == _FLOATS64
        xored = _unshuffle(zlib.decompress(body), np.uint64 if wide else np.uint32, n)
        bits = np.bitwise_xor.accumulate(xored)
        return bits.view(np.float64) if wide else bits.view(np.float32).astype(np.float64)
    raise ValueError(f"unknown float encoding {tag!r}")
