"""Label Studio's brush RLE: the ``value.rle`` of a ``brushlabels`` region.

Label Studio stores a brush mask as the RGBA image of the mask (row-major, 4 bytes per
pixel, 255 where the mask is, 0 elsewhere), run-length packed into a bit stream by
thi.ng's ``rle-pack`` and sent as a list of byte values. The stream, most significant bit
first:

- 32 bits: the number of values (``height * width * 4``);
- 5 bits: the word size minus 1 (8-bit words: 7);
- 4 x 4 bits: the four run-length field sizes minus 1 (3, 4, 8 and 16 bits);
- then blocks, until all values are covered: 1 bit repeat flag, 2 bits choosing a
  run-length field size, that many bits holding the block length minus 1, and then one
  word (repeat flag 1: the value of the whole run) or one word per value (flag 0);
- zero bits up to a whole byte.

:func:`encode` writes what ``label_studio_converter.brush.mask2rle`` writes (byte for
byte, including its choice of the smallest field for a run, its runs of more than 65,536
values in pieces of 65,536, its single values as one-value literal blocks and its padding
of 1 to 8 zero bits); :func:`decode` reads any such stream as Label Studio's frontend does.
Dense arrays exist only for one mask at a time.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

WORD_BITS = 8
RUN_FIELD_BITS = (3, 4, 8, 16)
"""The four run-length field sizes Label Studio's converter writes."""
_LIMITS = np.array([2 ** b for b in RUN_FIELD_BITS[:3]])  # longest run each of the first three fields holds
_PIECE = 2 ** 16  # longest run one 16-bit field holds


def encode(mask: np.ndarray) -> list[int]:
    """The brush RLE (a list of byte values) of a binary ``(h, w)`` mask."""
    flat = np.asarray(mask).reshape(-1) > 0
    if flat.size == 0:
        raise ValueError("empty mask")
    cut = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], cut])
    lengths = np.diff(np.concatenate([starts, [flat.size]])) * 4  # 4 channels per pixel
    values = np.where(flat[starts], 255, 0)
    # runs over 256 values take the 16-bit field, in pieces of at most 65,536
    pieces = np.where(lengths > _LIMITS[-1], -(-lengths // _PIECE), 1)
    run = np.repeat(np.arange(len(lengths)), pieces)
    first = np.cumsum(pieces) - pieces
    k = np.arange(len(run)) - first[run]  # piece index within its run
    plen = np.where(k < pieces[run] - 1, _PIECE, lengths[run] - (pieces[run] - 1) * _PIECE)
    big = lengths[run] > _LIMITS[-1]
    field = np.where(big, 3, np.searchsorted(_LIMITS, plen))  # smallest field that holds the length
    flag = (lengths[run] > 1).astype(np.int64)  # a run of one value is a one-value literal block
    widths = np.stack([np.ones_like(field), np.full_like(field, 2), np.asarray(RUN_FIELD_BITS)[field],
                       np.full_like(field, WORD_BITS)], axis=1)
    vals = np.stack([flag, field, plen - 1, values[run]], axis=1)
    header_vals = np.array([flat.size * 4, WORD_BITS - 1, *[b - 1 for b in RUN_FIELD_BITS]], dtype=np.int64)
    header_widths = np.array([32, 5, 4, 4, 4, 4], dtype=np.int64)
    bits = _bits(np.concatenate([header_vals, vals.reshape(-1)]),
                 np.concatenate([header_widths, widths.reshape(-1)]))
    bits = np.concatenate([bits, np.zeros(8 - len(bits) % 8, dtype=np.uint8)])  # 1 to 8, as the converter pads
    return np.packbits(bits).tolist()


def _bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Each value written in its width of bits, most significant first, all concatenated."""
    values = np.asarray(values, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    owner = np.repeat(np.arange(len(values)), widths)
    offset = np.arange(len(owner)) - np.repeat(np.cumsum(widths) - widths, widths)
    shift = widths[owner] - 1 - offset
    return ((values[owner] >> shift) & 1).astype(np.uint8)


class _Bits:
    """A most-significant-bit-first reader over bytes."""

    def __init__(self, data: Sequence[int]):
        self.bits = np.unpackbits(np.asarray(data, dtype=np.uint8))
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > len(self.bits):
            raise ValueError("brush RLE ends inside a block")
        v = 0
        for b in self.bits[self.pos:self.pos + n].tolist():
            v = (v << 1) | b
        self.pos += n
        return v


def decode_values(rle: Sequence[int]) -> np.ndarray:
    """The flat uint8 values (RGBA, row-major) a brush RLE holds."""
    src = _Bits(rle)
    num = src.read(32)
    word = src.read(5) + 1
    sizes = [src.read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8)
    i = 0
    while i < num:
        repeat = src.read(1)
        j = i + 1 + src.read(sizes[src.read(2)])
        if j > num:
            raise ValueError(f"brush RLE block runs to value {j}, past the {num} values it declares")
        if repeat:
            out[i:j] = src.read(word)
        else:
            for t in range(i, j):
                out[t] = src.read(word)
        i = j
    return out


def decode(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """The binary ``(h, w)`` uint8 mask of a brush RLE (its alpha channel > 0)."""
    values = decode_values(rle)
    if len(values) != height * width * 4:
        raise ValueError(f"brush RLE holds {len(values)} values, a {height}x{width} RGBA image has "
                         f"{height * width * 4}")
    return (values.reshape(height, width, 4)[:, :, 3] > 0).astype(np.uint8)
