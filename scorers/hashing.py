"""XXH64, XXH32 and text-to-bytes helpers compiled with numba, for hashing whole batches at once.

`xxh64(data, start, end, seed)` equals `xxhash.xxh64_intdigest(data[start:end], seed)`, and
`xxh32` equals `xxhash.xxh32_intdigest`; the tests check both on random inputs of every length class.
"""

from __future__ import annotations

import sys

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

_P1 = np.uint64(11400714785074694791)
_P2 = np.uint64(14029467366897019727)
_P3 = np.uint64(1609587929392839161)
_P4 = np.uint64(9650029242287828579)
_P5 = np.uint64(2870177450012600261)


@nb.njit(inline="always")
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _unaligned_load(bits: int):
    """An intrinsic: the little-endian unsigned integer of bits/8 bytes at data[pos] (data: a
    uint8 array), as a uint64, by one unaligned load. LLVM does not merge the byte-by-byte shifts
    this replaces, which cost XXH64 most of its speed."""

    @intrinsic
    def load(typingctx, data, pos):
        if not (isinstance(data, types.Array) and data.dtype == types.uint8 and data.layout == "C"):
            return None  # a strided view would make the bytes at data[pos] non-adjacent

        def codegen(context, builder, signature, args):
            array, index = args
            base = context.make_array(signature.args[0])(context, builder, array).data
            word = builder.load(builder.bitcast(builder.gep(base, [index]), ir.IntType(bits).as_pointer()), align=1)
            return word if bits == 64 else builder.zext(word, ir.IntType(64))

        return types.uint64(data, pos), codegen

    return load


if sys.byteorder != "little":  # pragma: no cover
    raise ImportError("thresher.scorers.hashing reads words as little-endian: a big-endian machine needs a port")
_load_u64, _load_u32 = _unaligned_load(64), _unaligned_load(32)


@nb.njit(inline="always")
def fmix64(h):
    """MurmurHash3's 64-bit finaliser: a bijection that spreads every input bit."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


@nb.njit(inline="always")
def _round(acc, lane):
    acc = acc + lane * _P2
    acc = _rotl(acc, 31)
    return acc * _P1


@nb.njit(inline="always")
def _merge(acc, val):
    acc ^= _round(np.uint64(0), val)
    return acc * _P1 + _P4


@nb.njit(inline="always")
def _xxh64_head(d, p, end, seed):
    """XXH64's 32-byte stripes and the length: (state, where the tail starts)."""
    n = end - p
    if n >= 32:
        v1 = seed + _P1 + _P2
        v2 = seed + _P2
        v3 = seed
        v4 = seed - _P1
        limit = end - 32
        while p <= limit:
            v1 = _round(v1, _load_u64(d, p))
            v2 = _round(v2, _load_u64(d, p + 8))
            v3 = _round(v3, _load_u64(d, p + 16))
            v4 = _round(v4, _load_u64(d, p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge(h, v1)
        h = _merge(h, v2)
        h = _merge(h, v3)
        h = _merge(h, v4)
    else:
        h = seed + _P5
    return h + np.uint64(n), p


@nb.njit(inline="always")
def _xxh64_word(h, word):
    h ^= _round(np.uint64(0), word)
    return _rotl(h, 27) * _P1 + _P4


@nb.njit(inline="always")
def _xxh64_half(h, half):
    h ^= half * _P1
    return _rotl(h, 23) * _P2 + _P3


@nb.njit(inline="always")
def _xxh64_byte(h, byte):
    h ^= byte * _P5
    return _rotl(h, 11) * _P1


@nb.njit(inline="always")
def _xxh64_avalanche(h):
    h ^= h >> np.uint64(33)
    h *= _P2
    h ^= h >> np.uint64(29)
    h *= _P3
    h ^= h >> np.uint64(32)
    return h


@nb.njit(cache=True)
def xxh64(d, start, end, seed):
    """XXH64 of the bytes d[start:end] (d: uint8 array)."""
    h, p = _xxh64_head(d, start, end, np.uint64(seed))
    while p + 8 <= end:
        h = _xxh64_word(h, _load_u64(d, p))
        p += 8
    if p + 4 <= end:
        h = _xxh64_half(h, _load_u32(d, p))
        p += 4
    while p < end:
        h = _xxh64_byte(h, np.uint64(d[p]))
        p += 1
    return _xxh64_avalanche(h)


XXH64_PAIR_READS_PAST = 24  # bytes past the longer end that xxh64_pair may read


@nb.njit(inline="always")
def xxh64_pair(d, start0, end0, start1, end1, seed):
    """XXH64 of d[start0:end0] and of d[start1:end1], tails interleaved and predicated as in
    xxh32_pair (three 8-byte steps, one 4-byte step, three byte steps, each kept only inside its
    bytes). The caller keeps max(end0, end1) + XXH64_PAIR_READS_PAST <= len(d)."""
    seed = np.uint64(seed)
    h0, p0 = _xxh64_head(d, start0, end0, seed)
    h1, p1 = _xxh64_head(d, start1, end1, seed)
    r0, r1 = end0 - p0, end1 - p1  # < 32 each
    for k in range(3):
        w0 = _xxh64_word(h0, _load_u64(d, p0 + 8 * k))
        w1 = _xxh64_word(h1, _load_u64(d, p1 + 8 * k))
        h0 = w0 if 8 * k + 8 <= r0 else h0
        h1 = w1 if 8 * k + 8 <= r1 else h1
    p0, p1 = p0 + (r0 & ~7), p1 + (r1 & ~7)
    f0 = _xxh64_half(h0, _load_u32(d, p0))
    f1 = _xxh64_half(h1, _load_u32(d, p1))
    h0 = f0 if r0 & 4 else h0
    h1 = f1 if r1 & 4 else h1
    p0, p1 = p0 + (r0 & 4), p1 + (r1 & 4)
    r0, r1 = r0 & 3, r1 & 3
    for k in range(3):
        b0 = _xxh64_byte(h0, np.uint64(d[p0 + k]))
        b1 = _xxh64_byte(h1, np.uint64(d[p1 + k]))
        h0 = b0 if k < r0 else h0
        h1 = b1 if k < r1 else h1
    return _xxh64_avalanche(h0), _xxh64_avalanche(h1)


_M32 = np.uint64(0xFFFFFFFF)
_Q1 = np.uint64(0x9E3779B1)
_Q2 = np.uint64(0x85EBCA77)
_Q3 = np.uint64(0xC2B2AE3D)
_Q4 = np.uint64(0x27D4EB2F)
_Q5 = np.uint64(0x165667B1)


@nb.njit(inline="always")
def _rotl32(x, r):
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & _M32


@nb.njit(inline="always")
def _round32(acc, lane):
    return (_rotl32((acc + lane * _Q2) & _M32, 13) * _Q1) & _M32


@nb.njit(inline="always")
def _xxh32_head(d, p, end, seed):
    """XXH32's 16-byte stripes and the length: (state, where the tail starts)."""
    n = end - p
    if n >= 16:
        v1 = (seed + _Q1 + _Q2) & _M32
        v2 = (seed + _Q2) & _M32
        v3 = seed
        v4 = (seed - _Q1) & _M32
        limit = end - 16
        while p <= limit:
            v1 = _round32(v1, _load_u32(d, p))
            v2 = _round32(v2, _load_u32(d, p + 4))
            v3 = _round32(v3, _load_u32(d, p + 8))
            v4 = _round32(v4, _load_u32(d, p + 12))
            p += 16
        h = _rotl32(v1, 1) + _rotl32(v2, 7) + _rotl32(v3, 12) + _rotl32(v4, 18)
    else:
        h = seed + _Q5
    return (h + np.uint64(n)) & _M32, p


@nb.njit(inline="always")
def _xxh32_word(h, word):
    return (_rotl32((h + word * _Q3) & _M32, 17) * _Q4) & _M32


@nb.njit(inline="always")
def _xxh32_byte(h, byte):
    return (_rotl32((h + byte * _Q5) & _M32, 11) * _Q1) & _M32


@nb.njit(inline="always")
def _xxh32_avalanche(h):
    h ^= h >> np.uint64(15)
    h = (h * _Q2) & _M32
    h ^= h >> np.uint64(13)
    h = (h * _Q3) & _M32
    return h ^ (h >> np.uint64(16))


@nb.njit(cache=True)
def xxh32(d, start, end, seed):
    """XXH32 of the bytes d[start:end] (d: uint8 array), as a uint64 below 2^32. The 32-bit
    arithmetic runs in 64-bit registers, masked after every step that can carry past bit 31."""
    h, p = _xxh32_head(d, start, end, np.uint64(seed) & _M32)
    while p + 4 <= end:
        h = _xxh32_word(h, _load_u32(d, p))
        p += 4
    while p < end:
        h = _xxh32_byte(h, np.uint64(d[p]))
        p += 1
    return _xxh32_avalanche(h)


XXH32_PAIR_READS_PAST = 12  # bytes past the longer end that xxh32_pair may read


@nb.njit(inline="always")
def xxh32_pair(d, start0, end0, start1, end1, seed):
    """XXH32 of d[start0:end0] and of d[start1:end1], their tails interleaved: each always
    takes three word steps and three byte steps and keeps only those inside its bytes, so the
    two dependency chains run side by side with no branch to mispredict (short strings such as
    shingles: about 1.3x the hashes per second of two xxh32 calls). The caller keeps
    max(end0, end1) + XXH32_PAIR_READS_PAST <= len(d)."""
    seed = np.uint64(seed) & _M32
    h0, p0 = _xxh32_head(d, start0, end0, seed)
    h1, p1 = _xxh32_head(d, start1, end1, seed)
    r0, r1 = end0 - p0, end1 - p1  # < 16 each
    for k in range(3):
        w0 = _xxh32_word(h0, _load_u32(d, p0 + 4 * k))
        w1 = _xxh32_word(h1, _load_u32(d, p1 + 4 * k))
        h0 = w0 if 4 * k + 4 <= r0 else h0
        h1 = w1 if 4 * k + 4 <= r1 else h1
    p0, p1 = p0 + (r0 & ~3), p1 + (r1 & ~3)
    r0, r1 = r0 & 3, r1 & 3
    for k in range(3):
        b0 = _xxh32_byte(h0, np.uint64(d[p0 + k]))
        b1 = _xxh32_byte(h1, np.uint64(d[p1 + k]))
        h0 = b0 if k < r0 else h0
        h1 = b1 if k < r1 else h1
    return _xxh32_avalanche(h0), _xxh32_avalanche(h1)


@nb.njit(inline="always")
def fmix32(h):
    """MurmurHash3's 32-bit finaliser on a value below 2^32 (kept in a uint64)."""
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & _M32
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & _M32
    return h ^ (h >> np.uint64(16))


@nb.njit(cache=True)
def hash_documents(data, offsets, seed):
    """XXH64 of each document's bytes data[offsets[i]:offsets[i+1]]."""
    out = np.empty(len(offsets) - 1, np.uint64)
    for i in range(len(out)):
        out[i] = xxh64(data, offsets[i], offsets[i + 1], seed)
    return out


_KEEP = np.zeros(128, np.uint8)  # ASCII letters and digits
_KEEP[[*range(48, 58), *range(65, 91), *range(97, 123)]] = 1
_SPACE = np.zeros(128, np.uint8)  # ASCII whitespace
_SPACE[[32, *range(9, 14)]] = 1
_LOWER = np.arange(128, dtype=np.uint8)  # ASCII A-Z -> a-z
_LOWER[65:91] += 32


@nb.njit(cache=True)
def _strip_punct(data, offsets, lowered, lowered_offsets, rows, keep, space, lower):
    """Lowercase ASCII, drop punctuation, turn whitespace runs into one space, trim; per
    document, on UTF-8 bytes. Document rows[k] (rows ascending) is read from
    lowered[lowered_offsets[k]:...] instead (a non-ASCII document, lowercased by Arrow's Unicode
    rules, whose length can change).

    ASCII letters/digits and non-ASCII characters are kept, ASCII punctuation is dropped, ASCII
    whitespace, NBSP and U+2000-U+200B spaces separate words, other general punctuation
    (U+2010-U+206F: dashes, quotes, ellipsis) is dropped. An ASCII byte takes no branch: it is
    always written and the write position moves only when it is kept (a third faster than
    branching on every word boundary and punctuation mark).
    """
    n_docs = len(offsets) - 1
    out = np.empty(len(data) + len(lowered) + 1, np.uint8)  # + 1: the last unconditional write
    out_off = np.zeros(n_docs + 1, np.int64)
    o, k_row = 0, 0
    for i in range(n_docs):
        src, p, end = data, offsets[i], offsets[i + 1]
        if k_row < len(rows) and rows[k_row] == i:
            src, p, end = lowered, lowered_offsets[k_row], lowered_offsets[k_row + 1]
            k_row += 1
        pending_space = 0
        start = o
        while p < end:
            c = src[p]
            if c < 128:
                k = keep[c]
                out[o] = 32  # the space before a kept byte that follows whitespace
                o += pending_space & k & (o > start)
                out[o] = lower[c]
                o += k
                pending_space = (pending_space | space[c]) & (1 - k)
                p += 1
                continue
            n = 2 if c < 0xE0 else (3 if c < 0xF0 else 4)
            if c == 0xC2 and p + 1 < end and src[p + 1] == 0xA0:  # NBSP
                pending_space = 1
            elif c == 0xE2 and p + 2 < end and src[p + 1] == 0x80 and src[p + 2] <= 0x8B:
                pending_space = 1  # U+2000..U+200B spaces
            elif c == 0xE2 and p + 2 < end and (src[p + 1] == 0x80 or src[p + 1] == 0x81):
                pass  # U+2010..U+207F punctuation: dropped
            else:
                if pending_space and o > start:
                    out[o] = 32
                    o += 1
                pending_space = 0
                for j in range(min(n, end - p)):
                    out[o] = src[p + j]
                    o += 1
            p += n
        out_off[i + 1] = o
    return out[:o], out_off


def normalize_for_hashing(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Lowercase, punctuation removed, whitespace runs -> one space, trimmed (nulls -> "").
    Equal to Arrow's utf8_lower and then the strip: the kernel lowercases ASCII itself, and only
    the documents with non-ASCII bytes go through utf8_lower (most of a web corpus is ASCII, and
    utf8_lower over all of it cost as much as the strip)."""
    text = filled_array(text)
    rows = np.flatnonzero(~pc.string_is_ascii(text).to_numpy(zero_copy_only=False))
    lowered, lowered_offsets = string_buffers(pc.utf8_lower(text.take(rows)))
    data, offsets = string_buffers(text)
    out, out_off = _strip_punct(data, offsets, lowered, lowered_offsets, rows, _KEEP, _SPACE, _LOWER)
    return pa.LargeStringArray.from_buffers(len(out_off) - 1, pa.py_buffer(out_off), pa.py_buffer(out))


def filled_array(strings: pa.Array | pa.ChunkedArray | list) -> pa.Array:
    """One contiguous string array, nulls as "": what the byte-level kernels read."""
    strings = pa.array(strings, pa.string()) if isinstance(strings, list) else strings
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks() if strings.num_chunks else pa.array([], strings.type)
    return pc.fill_null(strings, "")


def string_buffers(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(data bytes, offsets[n+1]) of a large_string array, zero-copy."""
    text = text.cast(pa.large_string())
    n = len(text)
    _, off_buf, data_buf = text.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64)[text.offset: text.offset + n + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets


def string_hashes(strings: pa.Array | pa.ChunkedArray, seed: int = 0) -> np.ndarray:
    """XXH64 of each string's UTF-8 bytes (nulls hash as the empty string), as uint64."""
    return hash_documents(*string_buffers(filled_array(strings)), seed)


def find_sorted(keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position, found) of each query value in the sorted array `keys` (binary search)."""
    if len(keys) == 0:
        return np.zeros(len(query), np.int64), np.zeros(len(query), dtype=bool)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return pos, keys[pos] == query


@nb.njit(cache=True)
def word_spans(data, offsets):
    """Start/end byte positions of the space-separated words of each document, with doc offsets."""
    n_docs = len(offsets) - 1
    bound = (offsets[n_docs] - offsets[0]) // 2 + n_docs  # a word takes a byte and a separator
    starts = np.empty(bound, np.int64)
    ends = np.empty(bound, np.int64)
    doc_words = np.zeros(n_docs + 1, np.int64)
    w = 0
    for i in range(n_docs):
        a, b = offsets[i], offsets[i + 1]
        inword = False
        for p in range(a, b):
            if data[p] != 32:
                if not inword:
                    starts[w] = p
                    inword = True
            elif inword:
                ends[w] = p
                w += 1
                inword = False
        if inword:
            ends[w] = b
            w += 1
        doc_words[i + 1] = w
    return starts[:w], ends[:w], doc_words


def dedup_key(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Lowercased, whitespace-collapsed text: copies differing only in case or spacing collide."""
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(text), r"\s+", " "))


def text_hashes(text: pa.Array | pa.ChunkedArray, seed: int = 0) -> np.ndarray:
    """XXH64 of each document's dedup key."""
    return string_hashes(dedup_key(text), seed)
