"""Label Studio's brush RLE, written from its documented definition.

Label Studio stores a brush mask as a list of byte values (``value.rle`` with ``format: "rle"``):
the bit stream of a run-length coding of the mask's **RGBA** pixels, row-major, every pixel four
equal values (0 background, 255 object). The stream, most significant bit first:

- header: 32 bits number of values ``n`` (= 4 x H x W), 5 bits ``word size - 1`` (8 bits here),
  four times 4 bits ``size_i - 1``, the bit widths of the run lengths (3, 4, 8, 16 here);
- then chunks until ``n`` values are read: 1 bit ``repeat``, 2 bits ``i`` (which width), ``size_i``
  bits ``length - 1``; a repeat chunk then holds one value (word size bits) repeated ``length``
  times, a literal chunk ``length`` values;
- zero bits pad the last byte.

:func:`encode_mask` writes repeat chunks only (the masks are long runs); :func:`decode_rle` reads
both kinds.
"""
from __future__ import annotations

import numpy as np

WORD_BITS = 8
RUN_BITS = (3, 4, 8, 16)


class _BitWriter:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, value: int, bits: int) -> None:
        if value < 0 or value >= 1 << bits:
            raise ValueError(f"RLE: value {value} does not fit in {bits} bits")
        self.parts.append(format(value, f"0{bits}b"))

    def to_bytes(self) -> list[int]:
        bits = "".join(self.parts)
        bits += "0" * (-len(bits) % 8)
        return list(int(bits, 2).to_bytes(len(bits) // 8, "big")) if bits else []


def encode_values(values: np.ndarray) -> list[int]:
    """RLE of a 1-D array of byte values (0..255) as Label Studio's list of ints."""
    values = np.asarray(values).ravel()
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError("RLE: values must be bytes (0..255)")
    n = int(values.size)
    w = _BitWriter()
    w.write(n, 32)
    w.write(WORD_BITS - 1, 5)
    for s in RUN_BITS:
        w.write(s - 1, 4)
    if n:
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        lengths = np.diff(np.r_[starts, n])
        longest = 1 << RUN_BITS[-1]
        for start, length in zip(starts.tolist(), lengths.tolist()):
            value = int(values[start])
            while length > 0:
                chunk = min(length, longest)
                size_id = next(i for i, s in enumerate(RUN_BITS) if chunk <= 1 << s)
                w.write(1, 1)
                w.write(size_id, 2)
                w.write(chunk - 1, RUN_BITS[size_id])
                w.write(value, WORD_BITS)
                length -= chunk
    return w.to_bytes()


def encode_mask(mask: np.ndarray) -> list[int]:
    """Label Studio ``rle`` of an ``H x W`` boolean mask (RGBA, 255 where the mask is set)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE: the mask must be H x W, got shape {mask.shape}")
    return encode_values(np.repeat(mask.astype(bool).ravel().astype(np.uint8) * 255, 4))


def decode_rle(rle) -> np.ndarray:
    """The byte values (1-D ``uint8``) of a Label Studio RLE list (both chunk kinds)."""
    data = bytes(int(b) for b in rle)
    bits = "".join(format(b, "08b") for b in data)
    pos = 0

    def read(k: int) -> int:
        nonlocal pos
        if pos + k > len(bits):
            raise ValueError("RLE: the stream ends early")
        v = int(bits[pos : pos + k], 2) if k else 0
        pos += k
        return v

    n = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(n, dtype=np.uint8)
    i = 0
    while i < n:
        repeat = read(1)
        length = read(sizes[read(2)]) + 1
        if i + length > n:
            raise ValueError("RLE: a run goes past the declared length")
        if repeat:
            out[i : i + length] = read(word)
        else:
            for j in range(length):
                out[i + j] = read(word)
        i += length
    return out


def decode_mask(rle, height: int, width: int) -> np.ndarray:
    """``H x W`` boolean mask from a Label Studio RLE (alpha channel > 0)."""
    values = decode_rle(rle)
    if values.size != 4 * height * width:
        raise ValueError(f"RLE: {values.size} values, expected 4 x {height} x {width}")
    return values.reshape(height, width, 4)[..., 3] > 0
