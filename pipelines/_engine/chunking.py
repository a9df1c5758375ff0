"""Content-defined cuts: where a source's items are split into batches, decided by the items.

Cutting by count (256, 512, ...) ties every batch to its position: insert one item and every
later batch shifts, gets a new key, and is computed again. Here, as rsync, restic, borg and
FastCDC do over bytes, the cut falls after an item whose hash has some bits zero, so a cut
depends on that item and on how far the batch has come, never on what came long before.
Inserting, removing or editing an item changes the batch around it; the cuts after it fall
where they fell before, and those batches keep their content, hence their keys.

Each row gets a 64-bit hash of its Arrow-encoded values (``row_hashes``), computed with NumPy
column by column (a string is hashed like a list of bytes), so hashing costs a few NumPy
passes over the batch's buffers, not a Python call per item. It decides cuts only; a batch's
key stays the digest of its bytes, so a collision can move a cut but never mix two items up.

``Cutter`` applies FastCDC's normalized chunking to those hashes: no cut before ``minimum``
items, a hard test (more bits zero) before ``average``, an easy one after, a forced cut at
``maximum``; batch sizes then cluster around ``average``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.define import codec

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NULL = np.uint64(0x6A09E667F3BCC909)
AVERAGE = 256  # items a source batch holds on average, in its first 131,072 items
LEVELS: tuple[tuple[int | None, int], ...] = ((1 << 17, AVERAGE), (1 << 20, 2048), (None, 16384))
# For a source whose batches bind no work to their size (every stage that follows them batch by
# batch reuses items one by one, ``item_reuse.wide_cuts``): a batch is then only a unit of
# storage, and each costs a file and a ledger record on every stage, so batches grow quickly.
WIDE_LEVELS: tuple[tuple[int | None, int], ...] = ((1 << 12, AVERAGE), (1 << 16, 4096), (None, 65536))
_U64 = np.uint64


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, vectorised: every input bit moves every output bit."""
    x = x.astype(_U64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> _U64(30)
        x *= _M1
        x ^= x >> _U64(27)
        x *= _M2
        x ^= x >> _U64(31)
    return x


def _combine(h: np.ndarray, other: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _mix(h * _GOLDEN + other)


def row_hashes(table: pa.Table) -> np.ndarray:
    """One 64-bit hash per row of ``table``, from its values (the ``_item`` column left out)."""
    h = np.full(table.num_rows, 0x243F6A8885A308D3, dtype=_U64)
    for name in table.column_names:
        if name == codec.ITEM_COLUMN:
            continue
        column = table.column(name)
        arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        h = _combine(h, array_hashes(arr))
    return h


def array_hashes(arr: pa.Array) -> np.ndarray:
    """One 64-bit hash per element of an Arrow array (nulls hash alike, whatever their slot holds)."""
    n = len(arr)
    t = arr.type
    if n == 0:
        return np.zeros(0, dtype=_U64)
    if pa.types.is_null(t):
        return np.full(n, _NULL, dtype=_U64)
    if pa.types.is_dictionary(t):
        values = array_hashes(arr.dictionary)
        h = values[np.asarray(arr.indices.fill_null(0), dtype=np.int64)] if len(values) else np.zeros(n, _U64)
    elif isinstance(t, pa.ExtensionType):
        return array_hashes(arr.storage)
    elif pa.types.is_boolean(t):
        h = _mix(np.asarray(arr.fill_null(False), dtype=_U64) + _U64(1))
    elif pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        h = _var_bytes(arr)
    elif pa.types.is_fixed_size_binary(t) or pa.types.is_decimal(t) or _fixed_width(t):
        h = _fixed_bytes(arr)
    elif pa.types.is_struct(t):
        h = np.full(n, 0x13198A2E03707344, dtype=_U64)
        for i in range(t.num_fields):
            h = _combine(h, array_hashes(arr.field(i)))
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        offsets = np.asarray(arr.offsets, dtype=np.int64)
        child = arr.values.slice(offsets[0], offsets[-1] - offsets[0])
        h = _segments(array_hashes(child), offsets - offsets[0])
    elif pa.types.is_fixed_size_list(t):
        size = t.list_size
        child = arr.values.slice(arr.offset * size, n * size)
        h = _segments(array_hashes(child), np.arange(0, (n + 1) * size, size, dtype=np.int64))
    else:  # unions, run-end encoded, views...: a digest per value, in Python (rare)
        h = np.array(
            [
                int.from_bytes(hashlib.blake2b(repr(v).encode(), digest_size=8).digest(), "little")
                for v in arr.to_pylist()
            ],
            dtype=_U64,
        )
    if arr.null_count:
        h = np.where(np.asarray(arr.is_null()), _NULL, h)
    return h


def _fixed_width(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t)) and t.bit_width in (
        8,
        16,
        32,
        64,
    )


def _fixed_bytes(arr: pa.Array) -> np.ndarray:
    """Fixed-width values: their bytes, one row after the other."""
    n, width = len(arr), arr.type.byte_width
    data = np.frombuffer(arr.buffers()[1], dtype=np.uint8)[arr.offset * width : (arr.offset + n) * width]
    if width in (1, 2, 4, 8):
        return _mix(data.view(f"<u{width}").astype(_U64) + _U64(width))
    return _segments(_BYTES[data], np.arange(0, (n + 1) * width, width, dtype=np.int64))


SEGMENT_BYTES = 1 << 20  # string bytes hashed at once: each byte takes a few 64-bit temporaries


def _var_bytes(arr: pa.Array) -> np.ndarray:
    """Strings and binaries: a list of bytes each.

    Rows are hashed in groups of at most ``SEGMENT_BYTES`` bytes (a longer string alone), so
    memory stays a few words per byte of one group, not of the whole window: 16,384 JSON lines
    took some 130 MB of temporaries at once. A row's hash does not depend on its group.
    """
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    raw = np.frombuffer(arr.buffers()[1], dtype=np.int64 if large else np.int32)
    offsets = raw[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)
    buffer = arr.buffers()[2]
    data = (
        np.frombuffer(buffer, dtype=np.uint8)[offsets[0] : offsets[-1]] if buffer is not None else np.zeros(0, np.uint8)
    )
    offsets -= offsets[0]
    n = len(arr)
    out = np.empty(n, dtype=_U64)
    row = 0
    while row < n:
        end = max(row + 1, int(np.searchsorted(offsets, offsets[row] + SEGMENT_BYTES, "right")) - 1)
        lo, hi = offsets[row], offsets[end]
        out[row:end] = _segments(_BYTES[data[lo:hi]], offsets[row : end + 1] - lo)
        row = end
    return out


def _segments(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Hash each ``values[offsets[i]:offsets[i+1]]`` as an ordered sequence (a polynomial hash).

    A segment ``v_0 .. v_m`` hashes to ``sum(v_p * R**p)`` mod 2**64, computed for all
    segments at once: one cumulative sum of ``v_g * R**g`` over global positions ``g``, then
    each segment's difference times ``R**-start`` (``R`` is odd, so it has an inverse).
    """
    lengths = np.diff(offsets)
    starts = offsets[:-1]
    with np.errstate(over="ignore"):
        if len(values):
            power, inverse = _powers(len(values))
            sums = np.concatenate([np.zeros(1, _U64), np.cumsum(values * power, dtype=_U64)])
            poly = (sums[offsets[1:]] - sums[starts]) * inverse[np.minimum(starts, len(values) - 1)]
        else:
            poly = np.zeros(len(lengths), dtype=_U64)
        return _mix(poly + lengths.astype(_U64) * _GOLDEN + _NULL)


_R = 0x9FB21C651E98DF25  # odd
_R_INV = pow(_R, -1, 1 << 64)
_POWERS: list[np.ndarray] = [np.ones(1, _U64), np.ones(1, _U64)]
_CACHED = 1 << 20


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``R**g`` and ``R**-g`` for ``g < n`` (kept for up to a million positions)."""
    if len(_POWERS[0]) >= n:
        return _POWERS[0][:n], _POWERS[1][:n]
    with np.errstate(over="ignore"):
        size = max(n, min(2 * len(_POWERS[0]), _CACHED))
        power = np.cumprod(np.full(size, _R, dtype=_U64), dtype=_U64)
        inverse = np.cumprod(np.full(size, _R_INV, dtype=_U64), dtype=_U64)
        power = np.concatenate([np.ones(1, _U64), power[:-1]])
        inverse = np.concatenate([np.ones(1, _U64), inverse[:-1]])
    if size <= _CACHED:
        _POWERS[:] = [power, inverse]
    return power[:n], inverse[:n]


_BYTES = _mix(np.arange(256, dtype=_U64) + _U64(0x1000))  # a random-looking word per byte value


def _top_bits(count: int) -> np.uint64:
    count = max(0, min(count, 63))
    return _U64(((1 << count) - 1) << (64 - count)) if count else _U64(0)


@dataclass(frozen=True, slots=True)
class Cutter:
    """FastCDC's normalized chunking over item hashes (sizes in items).

    The hard mask has two bits more than ``average`` asks for, the easy mask two fewer
    (FastCDC's normalization level 2), so a batch rarely ends far from ``average``. A batch
    also ends once its items reach ``max_bytes`` (big items: long texts, images), a bound that
    depends only on the batch's own items, so it resynchronises like the hash cuts do.
    ``fixed``: every batch has exactly ``maximum`` items, whatever the hashes (a source's
    ``batch_size``).
    """

    minimum: int = AVERAGE // 4
    average: int = AVERAGE
    maximum: int = AVERAGE * 4
    max_bytes: int = 64 << 20
    fixed: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.average <= self.maximum:
            raise ValueError(
                f"batch sizes need 1 <= minimum <= average <= maximum, got "
                f"{self.minimum}, {self.average}, {self.maximum}"
            )

    @classmethod
    def for_source(cls, batch_size: int | None, position: int = 0, *, wide: bool = False) -> Cutter:
        """The cuts for a batch that starts at item ``position`` of a source.

        Every ``batch_size`` items when the source fixes it; else content-defined, with an
        average that grows with the position (``LEVELS``): small batches for the first
        131,072 items, larger ones for long sources, whose fixed cost per batch would
        otherwise dominate cheap items. The level depends on where a batch starts, so an
        insertion moves a level's edge by one item: the batches around that edge may change,
        then the cuts fall in step again. ``wide``: the levels of ``WIDE_LEVELS``.
        """
        if batch_size:
            return cls(batch_size, batch_size, batch_size, max_bytes=1 << 62, fixed=True)
        levels = WIDE_LEVELS if wide else LEVELS
        average = next(avg for end, avg in levels if end is None or position < end)
        return _LEVEL_CUTTERS.setdefault(average, cls(average // 4, average, average * 4))

    def next_cut(self, hashes: np.ndarray, *, final: bool, sizes: np.ndarray | None = None) -> int | None:
        """How many of the leading items (``hashes``) form the next batch; ``None``: read more first.

        ``sizes``: the items' sizes in bytes, for the ``max_bytes`` bound. ``final``: no more
        items will come, so the rest forms batches whatever the hashes say.
        """
        n = len(hashes)
        if n == 0:
            return None
        limit = self.maximum
        if sizes is not None and len(sizes) and not self.fixed:
            over = np.flatnonzero(np.cumsum(sizes[:limit]) >= self.max_bytes)
            if len(over):
                limit = max(1, int(over[0]) + 1)
        if self.fixed:
            return limit if n >= limit else (n if final else None)
        bits = max(1, round(np.log2(self.average)))
        hard, easy = _top_bits(bits + 2), _top_bits(bits - 2)  # the easy bits are among the hard ones
        lo = min(self.minimum, limit) - 1
        window = hashes[lo : min(n, limit)]
        for i in np.flatnonzero((window & easy) == 0):  # easy candidates include the hard ones
            at = lo + int(i)
            if at + 1 >= self.average or (hashes[at] & hard) == 0:
                return at + 1
        if n >= limit:
            return limit
        return n if final else None


_LEVEL_CUTTERS: dict[int, Cutter] = {}


def row_sizes(table: pa.Table) -> np.ndarray:
    """Each row's size in bytes, about: exact for flat columns, shared out evenly for nested ones."""
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    if not table.num_rows:
        return sizes
    for name in table.column_names:
        column = table.column(name)
        arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        t = arr.type
        if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
            large = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
            offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64 if large else np.int32)
            sizes += np.diff(offsets[arr.offset : arr.offset + len(arr) + 1]).astype(np.int64) + 8
        elif _fixed_width(t):
            sizes += t.byte_width
        else:
            sizes += max(1, arr.nbytes // len(arr))
    return sizes
