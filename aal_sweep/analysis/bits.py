"""The store's per-image correctness bits as packed matrices, and the counts the statistics need from them.

A row's `val_correct` is numpy.packbits (big bit order) of "image i right": ceil(n / 8) bytes. The
statistics need only counts: how many images a row gets right, and how many two rows both get right
(popcounts of a bitwise AND), from which every discordant count follows. They are computed on the packed
bytes, a block of rows at a time, never unpacked to one bool per image: at 1,000 attributes the pair rows
hold 2.5 GB of bits, 20 GB as bools.

    bits = Packed.of(trials["val_correct"], n)     # an Arrow-backed column is read in place, no copy
    ones = bits.ones(rows)                          # images right, per row
    both = bits.both(rows_a, rows_b)                # images right in both, per pair of rows

Bits past n (the padding of the last byte) are ignored, as numpy.unpackbits(count=n) ignores them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

_BLOCK_BYTES = 32 << 20  # bytes of bits gathered at once per side: bounds the temporary memory
_CACHE_BYTES = 1 << 20  # bytes of bits per step of a scan: its temporaries stay in the CPU's cache


class Packed:
    """The bit rows of one column: `has[i]` is True where row i holds a vector of n bits."""

    def __init__(self, chunks: list[np.ndarray], chunk_of: np.ndarray, rank: np.ndarray, has: np.ndarray, n: int):
        self._chunks, self._chunk_of, self._rank = chunks, chunk_of, rank
        self.has, self.n = has, n
        self.nbytes = (n + 7) // 8
        self._pad = np.uint8((0xFF >> (n % 8)) if n % 8 else 0)  # big bit order: padding is the low bits
        # the widest word that tiles a row: popcounts on uint32 are ~4x faster than on bytes
        self._word = next(
            w for w in (np.uint64, np.uint32, np.uint16, np.uint8) if self.nbytes % np.dtype(w).itemsize == 0
        )

    @classmethod
    def of(cls, column: pd.Series, n: int) -> Packed:
        """The rows of a `<split>_correct` column (Arrow-backed binary, or objects: bytes / None / NaN) as
        vectors of n bits. A row whose blob is not ceil(n / 8) bytes long counts as having none."""
        nbytes = (n + 7) // 8
        k = len(column)
        if isinstance(column.dtype, pd.ArrowDtype) and pa.types.is_binary(column.dtype.pyarrow_dtype):
            chunks, chunk_of, rank, has = [], np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, bool)
            start = 0
            for j, chunk in enumerate(column.array.__arrow_array__().chunks):
                view, got, where = _chunk_rows(chunk, nbytes)
                chunks.append(view)
                stop = start + len(chunk)
                chunk_of[start:stop], rank[start:stop], has[start:stop] = j, where, got
                start = stop
            return cls(chunks, chunk_of, rank, has, n)
        values = column.to_numpy(dtype=object)
        has = np.array([isinstance(v, (bytes, bytearray)) and len(v) == nbytes for v in values], dtype=bool)
        flat = b"".join(bytes(v) for v, h in zip(values, has) if h)
        matrix = np.frombuffer(flat, dtype=np.uint8).reshape(-1, nbytes) if nbytes else np.zeros((0, 0), np.uint8)
        rank = np.cumsum(has) - 1
        return cls([matrix], np.zeros(k, np.int64), np.where(has, rank, 0), has, n)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), nbytes) uint8: the bytes of rows `idx` (each must have a vector), padding cleared."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(self._chunks) == 1:
            out = self._chunks[0][self._rank[idx]]
        else:
            out = np.empty((len(idx), self.nbytes), dtype=np.uint8)
            which = self._chunk_of[idx]
            for j in np.unique(which):
                sel = which == j
                out[sel] = self._chunks[j][self._rank[idx[sel]]]
        if self._pad and len(out):
            out[:, -1] &= ~self._pad
        return out

    def ones(self, idx: np.ndarray) -> np.ndarray:
        """Per row of `idx`: the number of images right (int64)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.zeros(len(idx), dtype=np.int64)
        for s in range(0, len(idx), self._block_rows()):
            out[s : s + self._block_rows()] = self._count(self.rows(idx[s : s + self._block_rows()]))
        return out

    def both(self, a: np.ndarray, b: np.ndarray, other: Packed | None = None) -> np.ndarray:
        """Per k: the number of images right in both row a[k] (of self) and row b[k] (of `other`, default
        self): the popcount of their AND."""
        other = self if other is None else other
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        out = np.zeros(len(a), dtype=np.int64)
        step = self._block_rows()
        for s in range(0, len(a), step):
            x, y = self.rows(a[s : s + step]), other.rows(b[s : s + step])
            np.bitwise_and(x, y, out=x)
            out[s : s + step] = self._count(x, scratch=True)
        return out

    def scan(self, partner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every row i of the column: (images right, images right in both row i and row partner[i]);
        partner[i] = -1 (or a row without a vector): 0. One pass over the column in storage order, slices of
        the Arrow buffer read in place: the way to count a whole matrix, where gathering rows would copy
        every pair row once per count. The partners (the single rows, M of them) are gathered once."""
        partner = np.asarray(partner, dtype=np.int64)
        wanted = (partner >= 0) & self.has
        wanted[wanted] &= self.has[partner[wanted]]
        distinct, inverse = np.unique(np.where(wanted, partner, -1), return_inverse=True)
        zero = distinct[0] == -1  # rows without a partner AND with a row of zeros
        table = np.zeros((len(distinct), self.nbytes), dtype=np.uint8)
        table[int(zero) :] = self.rows(distinct[int(zero) :])
        ones = np.zeros(len(partner), dtype=np.int64)
        both = np.zeros(len(partner), dtype=np.int64)
        step = max(1, _CACHE_BYTES // max(self.nbytes, 1))  # blocks that stay in cache: one read of the bits
        for j, chunk in enumerate(self._chunks):
            rows = np.flatnonzero((self._chunk_of == j) & self.has)  # in storage order: rank 0, 1, ...
            for s in range(0, len(rows), step):
                block_rows = rows[s : s + step]
                block = chunk[self._rank[block_rows[0]] : self._rank[block_rows[-1]] + 1]  # a view, no copy
                ones[block_rows] = self._count(block)
                if self._pad:  # padding bits never count (the partners' are cleared already)
                    ones[block_rows] -= np.bitwise_count(block[:, -1] & self._pad)
                pair = table[inverse[block_rows]]
                np.bitwise_and(pair, block, out=pair)
                both[block_rows] = self._count(pair, scratch=True)
        return ones, both

    def _count(self, block: np.ndarray, scratch: bool = False) -> np.ndarray:
        """Set bits per row; scratch=True: `block` is a temporary, counted in place."""
        if block.shape[1] == 0:
            return np.zeros(len(block), dtype=np.int64)
        words = block.view(self._word)
        counts = np.bitwise_count(words, out=words) if scratch else np.bitwise_count(words)
        return counts.sum(axis=1, dtype=np.int64)

    def _block_rows(self) -> int:
        return max(1, _BLOCK_BYTES // max(self.nbytes, 1))


def _chunk_rows(chunk: pa.Array, nbytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Arrow binary chunk as ((rows with n bits) x nbytes uint8 matrix, has per row, its row in the
    matrix per row). Where every value is exactly nbytes long (or null), the matrix is a view of the
    Arrow buffer: the column is never copied."""
    k = len(chunk)
    if k == 0:
        return np.zeros((0, nbytes), np.uint8), np.zeros(0, bool), np.zeros(0, np.int64)
    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32, count=k + 1, offset=chunk.offset * 4)
    lengths = np.diff(offsets)
    valid = chunk.is_valid().to_numpy(zero_copy_only=False)
    has = valid & (lengths == nbytes) & (nbytes > 0)
    data = (
        np.frombuffer(chunk.buffers()[2], dtype=np.uint8) if chunk.buffers()[2] is not None else np.zeros(0, np.uint8)
    )
    rank = np.cumsum(has) - 1
    if has.all() or ((lengths[~has] == 0).all() and has.any()):  # contiguous: a view of the buffer
        first = offsets[np.argmax(has)]
        view = data[first : first + int(has.sum()) * nbytes].reshape(-1, nbytes)
    elif has.any():  # odd lengths in between (values of another size): copy the usable rows
        starts = offsets[:-1][has]
        view = np.stack([data[s : s + nbytes] for s in starts])
    else:
        view = np.zeros((0, nbytes), np.uint8)
    return view, has, np.where(has, rank, 0)
