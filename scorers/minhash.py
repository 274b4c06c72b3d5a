"""MinHash signatures for whole batches, LSH banding, candidate pairs and their exact Jaccard.

Signatures equal datasketch's `MinHash(num_perm, seed, hashfunc=..., scheme=...)` updated with the
same shingles (word n-grams of the normalised text, joined by one space), for each of datasketch's
permutation schemes: `affine32` (its default since 2.0: xxh32 of the shingle, MurmurHash3 fmix32
pre-mix, a*h+b mod 2^32; hashfunc=xxhash.xxh32_intdigest), `affine64` (xxh64, fmix64, mod 2^64;
hashfunc=xxhash.xxh64_intdigest) and `legacy` (xxh64, (a*h+b) mod 2^61-1 cut to 32 bits). The
permutation parameters are drawn exactly as datasketch draws them, so signatures are interchangeable.
"""

from __future__ import annotations

from functools import lru_cache

import numba as nb
import numpy as np
import pyarrow as pa

from thresher.scorers.hashing import (
    XXH32_PAIR_READS_PAST,
    XXH64_PAIR_READS_PAST,
    fmix32,
    fmix64,
    normalize_for_hashing,
    string_buffers,
    xxh32,
    xxh32_pair,
    xxh64,
    xxh64_pair,
)

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64((1 << 32) - 1)
SCHEMES = ("legacy", "affine32", "affine64")
_LEGACY, _AFFINE64, _AFFINE32 = 0, 1, 2  # the kernel's codes for them
_CODES = {"legacy": _LEGACY, "affine64": _AFFINE64, "affine32": _AFFINE32}


def permutations(num_perm: int, seed: int, scheme: str = "legacy") -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutation parameters (a, b) for this seed and scheme (uint32 for affine32)."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        ab = np.array([(gen.randint(1, _MERSENNE, dtype=np.uint64), gen.randint(0, _MERSENNE, dtype=np.uint64))
                       for _ in range(num_perm)], dtype=np.uint64).T
        return np.ascontiguousarray(ab[0]), np.ascontiguousarray(ab[1])
    if scheme in ("affine32", "affine64"):
        width, dtype = (32, np.uint32) if scheme == "affine32" else (64, np.uint64)
        a = gen.randint(0, 1 << (width - 1), num_perm, dtype=dtype) * dtype(2) + dtype(1)  # odd: a bijection
        b = gen.randint(0, 1 << width, num_perm, dtype=dtype)
        return a, b
    raise ValueError(f"unknown MinHash scheme {scheme!r}; use one of {SCHEMES}")


def scheme_bits(scheme: str) -> int:
    """How many bits a signature value of this scheme holds (legacy values are cut to 32)."""
    return 64 if scheme == "affine64" else 32


@nb.njit(inline="always")
def _words(data, a, b, starts, ends):
    """The words of data[a:b], normalised text (one space between words, none at either end),
    into starts/ends; returns how many. Every byte takes the same branch-free step."""
    if b == a:
        return 0
    n = 0
    for p in range(a, b):
        ends[n] = p
        n += data[p] == 32
    for k in range(n):
        starts[k + 1] = ends[k] + 1
    starts[0] = a
    ends[n] = b
    return n + 1


@nb.njit(cache=True)
def _sign(data, offsets, a, b, ngram, mode, with_sets):
    """Signatures [n_docs, len(a)], shingle counts, and (with_sets) each document's shingle hashes,
    flat with offsets, of text as normalize_for_hashing leaves it (`mode`: a scheme's code): one
    pass of hashing serves both, so a document's shingles never have to be hashed again for
    verification. The sets keep 32 bits of each hash: half the bytes to store
    and read, and a false shared shingle between two 1,000-shingle documents has odds 1 in 4,000."""
    n_docs = len(offsets) - 1
    longest = np.max(offsets[1:] - offsets[:-1]) if n_docs else 0
    starts = np.empty(longest + 1, np.int64)  # one document's words at a time: they stay in cache
    ends = np.empty(longest + 1, np.int64)
    num_perm = len(a)
    empty = np.uint64(0xFFFFFFFFFFFFFFFF) if mode == _AFFINE64 else _MAX32
    sig = np.full((n_docs, num_perm), empty, dtype=np.uint64)
    n_shingles = np.zeros(n_docs, np.int64)
    values = np.empty(len(data) // 2 + n_docs if with_sets else 0, np.uint32)  # >= the words
    set_offsets = np.zeros(n_docs + 1, np.int64)
    hv = np.empty(longest + 1, np.uint64)
    best = np.empty(num_perm, np.uint64)
    best32 = np.empty(num_perm, np.uint32)
    reach = XXH32_PAIR_READS_PAST if mode == _AFFINE32 else XXH64_PAIR_READS_PAST  # the paired hash's over-read
    w = 0
    for i in range(n_docs):
        nw = _words(data, offsets[i], offsets[i + 1], starts, ends)
        count = 0 if nw == 0 else (nw - ngram + 1 if nw >= ngram else 1)  # a short document is one shingle
        n_shingles[i] = count
        s = 0  # two shingles at a time while the paired hash's reads stay inside data
        while s + 1 < count and ends[min(s + ngram, nw - 1)] + reach <= len(data):
            first0, last0 = starts[s], ends[min(s + ngram - 1, nw - 1)]
            first1, last1 = starts[s + 1], ends[min(s + ngram, nw - 1)]
            if mode == _AFFINE32:
                h0, h1 = xxh32_pair(data, first0, last0, first1, last1, np.uint64(0))
                hv[s], hv[s + 1] = fmix32(h0), fmix32(h1)
            else:
                h0, h1 = xxh64_pair(data, first0, last0, first1, last1, np.uint64(0))
                hv[s], hv[s + 1] = (h0, h1) if mode == _LEGACY else (fmix64(h0), fmix64(h1))
            s += 2
        for s in range(s, count):
            first, last = starts[s], ends[min(s + ngram - 1, nw - 1)]
            if mode == _AFFINE32:
                hv[s] = fmix32(xxh32(data, first, last, np.uint64(0)))
            else:
                h = xxh64(data, first, last, np.uint64(0))
                hv[s] = h if mode == _LEGACY else fmix64(h)
        if count:
            # Shingle-major, permutations innermost: the inner loop is branch-free over arrays and
            # vectorises (the multiply, the Mersenne reduction and min run in SIMD lanes; affine32
            # in 32-bit lanes, twice as many per instruction).
            if mode == _AFFINE32:
                best32[:] = np.uint32(0xFFFFFFFF)
                for s in range(count):
                    h32 = np.uint32(hv[s])
                    for j in range(num_perm):
                        best32[j] = min(best32[j], np.uint32(a[j] * h32 + b[j]))  # wraps mod 2^32
                sig[i, :] = best32
            elif mode == _LEGACY:
                best[:] = empty
                for s in range(count):
                    h = hv[s]
                    for j in range(num_perm):
                        t = a[j] * h + b[j]  # wraps mod 2^64, as numpy's uint64 does in datasketch
                        r = (t & _MERSENNE) + (t >> np.uint64(61))  # t mod 2^61-1, exactly
                        r = r - _MERSENNE if r >= _MERSENNE else r
                        best[j] = min(best[j], r & _MAX32)
                sig[i, :] = best
            else:
                best[:] = empty
                for s in range(count):
                    h = hv[s]
                    for j in range(num_perm):
                        best[j] = min(best[j], a[j] * h + b[j])
                sig[i, :] = best
        if with_sets:
            for s in range(count):
                values[w + s] = hv[s] & _MAX32
            w += count
        set_offsets[i + 1] = w
    return sig, n_shingles, values[:w], set_offsets


def signatures(text: pa.Array | pa.ChunkedArray, num_perm: int = 128, seed: int = 1, ngram: int = 5,
               scheme: str = "legacy") -> tuple[np.ndarray, np.ndarray]:
    """(signatures [n_docs, num_perm] uint64, shingle counts) for a batch of documents."""
    data, offsets = string_buffers(normalize_for_hashing(text))
    a, b = _perms(num_perm, seed, scheme)
    sig, counts, _, _ = _sign(data, offsets, a, b, ngram, _CODES[scheme], False)
    return sig, counts


def signatures_and_sets(text: pa.Array | pa.ChunkedArray, num_perm: int = 128, seed: int = 1, ngram: int = 5,
                        scheme: str = "legacy") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(signatures, shingle hashes, their offsets[n + 1]): `signatures` and `shingle_sets` of the
    batch from one pass over its shingles (the sets hold the scheme's pre-mixed hashes where it has
    one, a bijection of the same shingles: Jaccard is unchanged)."""
    data, offsets = string_buffers(normalize_for_hashing(text))
    a, b = _perms(num_perm, seed, scheme)
    sig, _, values, set_offsets = _sign(data, offsets, a, b, ngram, _CODES[scheme], True)
    return sig, values, set_offsets


@lru_cache(maxsize=8)
def _perms(num_perm: int, seed: int, scheme: str):
    return permutations(num_perm, seed, scheme)


def shingle_sets(text: pa.Array | pa.ChunkedArray, ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The shingle hashes (32 bits of each) of every document, in text order, a repeated shingle
    repeated, flat, with offsets[n + 1]: pair_jaccard reads them as sets, without sorting them."""
    data, offsets = string_buffers(normalize_for_hashing(text))
    none = np.zeros(0, np.uint64)
    _, _, values, set_offsets = _sign(data, offsets, none, none, ngram, _LEGACY, True)
    return values, set_offsets


@nb.njit(cache=True)
def take_sets(values, offsets, rows):
    """The sets of `rows` (indexes into offsets), flat with their own offsets: a shard's stored
    sets gathered for the documents one task verifies."""
    out_offsets = np.zeros(len(rows) + 1, np.int64)
    for k in range(len(rows)):
        out_offsets[k + 1] = out_offsets[k] + offsets[rows[k] + 1] - offsets[rows[k]]
    out = np.empty(out_offsets[-1], values.dtype)
    for k in range(len(rows)):
        out[out_offsets[k]:out_offsets[k + 1]] = values[offsets[rows[k]]:offsets[rows[k] + 1]]
    return out, out_offsets


@nb.njit(cache=True)
def signature_agreement(sig, a, b):
    """The share of positions where rows a[k] and b[k] of `sig` agree (MinHash's Jaccard estimate),
    per pair, read in place: no [pairs, num_perm] copies of the two sides are made."""
    out = np.empty(len(a))
    n = sig.shape[1]
    for k in range(len(a)):
        same = 0
        for j in range(n):
            same += sig[a[k], j] == sig[b[k], j]
        out[k] = same / n
    return out


@nb.njit(cache=True)
def pair_jaccard(values, offsets, a, b):
    """Exact Jaccard of the shingle sets of documents a[k] and b[k] (indexes into offsets; values
    as shingle_sets gives them: unsorted, repeats allowed); two empty documents count as equal.

    One open-addressing table per pair, never cleared: a slot belongs to pair k only while its
    stamp says so (3k+1: in A, 3k+2: in A and seen in B, 3k+3: only in B). The hashes are
    uniform already, so their low bits index the table. No set is ever sorted."""
    longest = 0
    for k in range(len(a)):
        longest = max(longest, offsets[a[k] + 1] - offsets[a[k]] + offsets[b[k] + 1] - offsets[b[k]])
    cap = 8
    while cap < 2 * longest:
        cap *= 2
    keys = np.empty(cap, values.dtype)
    stamp = np.zeros(cap, np.int64)
    out = np.empty(len(a))
    for k in range(len(a)):
        in_a, seen, only_b = 3 * k + 1, 3 * k + 2, 3 * k + 3
        size = offsets[a[k] + 1] - offsets[a[k]] + offsets[b[k] + 1] - offsets[b[k]]
        mask = 8 - 1
        while mask + 1 < 2 * size:
            mask = mask * 2 + 1
        n_a = 0
        for i in range(offsets[a[k]], offsets[a[k] + 1]):
            x = values[i]
            slot = np.int64(x) & mask
            while stamp[slot] >= in_a and keys[slot] != x:
                slot = (slot + 1) & mask
            if stamp[slot] < in_a:
                stamp[slot], keys[slot] = in_a, x
                n_a += 1
        inter, n_b_only = 0, 0
        for i in range(offsets[b[k]], offsets[b[k] + 1]):
            x = values[i]
            slot = np.int64(x) & mask
            while stamp[slot] >= in_a and keys[slot] != x:
                slot = (slot + 1) & mask
            if stamp[slot] == in_a:
                stamp[slot] = seen
                inter += 1
            elif stamp[slot] < in_a:
                stamp[slot], keys[slot] = only_b, x
                n_b_only += 1
        union = n_a + n_b_only
        out[k] = 1.0 if union == 0 else inter / union
    return out


def shingles(text: str, ngram: int = 5) -> list[bytes]:
    """The shingles `signatures` hashes for one document, as bytes (for datasketch and tests)."""
    words = normalize_for_hashing(pa.array([text]))[0].as_py().split()
    if not words:
        return []
    if len(words) < ngram:
        return [" ".join(words).encode()]
    return [" ".join(words[i:i + ngram]).encode() for i in range(len(words) - ngram + 1)]


# --- LSH -----------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false-positive + false-negative area around the
    threshold, as datasketch's MinHashLSH chooses them. The areas are integrals of polynomials of
    degree bands*rows <= num_perm, which Gauss-Legendre quadrature with num_perm/2 + 1 nodes
    integrates exactly: every (bands, rows) at once, in numpy, instead of a scipy.quad per pair."""
    nodes, w = np.polynomial.legendre.leggauss(num_perm // 2 + 1)
    bands = np.concatenate([np.full(num_perm // b, b) for b in range(1, num_perm + 1)]).astype(np.float64)
    rows = np.concatenate([np.arange(1, num_perm // b + 1) for b in range(1, num_perm + 1)]).astype(np.float64)

    def area(lo: float, hi: float, candidate: bool) -> np.ndarray:
        s = (hi - lo) / 2 * nodes + (hi + lo) / 2  # nodes mapped onto [lo, hi]
        miss = (1.0 - s[None, :] ** rows[:, None]) ** bands[:, None]  # P(not a candidate | J = s)
        return ((1.0 - miss) if candidate else miss) @ w * (hi - lo) / 2

    err = area(0.0, threshold, True) * fp_weight + area(threshold, 1.0, False) * fn_weight
    best = int(np.argmin(err))  # the first minimum, in datasketch's (bands, rows) order
    return int(bands[best]), int(rows[best])


@nb.njit(cache=True)
def _band_hashes(sig, bands, rows):
    n = sig.shape[0]
    out = np.empty((n, bands), np.uint64)
    for i in range(n):
        raw = sig[i].view(np.uint8)
        for k in range(bands):
            out[i, k] = xxh64(raw, k * rows * 8, (k + 1) * rows * 8, np.uint64(k))
    return out


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit hash per band (seeded by the band index): equal hashes = candidate pair."""
    return _band_hashes(np.ascontiguousarray(sig), bands, rows)


def candidate_pairs(bhash: np.ndarray, doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique (u, v) doc pairs sharing a band bucket: each member links to the bucket's smallest
    doc (a star is enough for connected components), u < v. Band hashes are seeded by their band
    (band_hashes), so a bucket is its hash alone: two bands sharing a 64-bit hash is a 2^-64
    event, and a pair it made would still have to pass verification."""
    order = np.lexsort((doc, bhash))
    bhash, doc = bhash[order], doc[order]
    new_group = np.ones(len(doc), dtype=bool)
    new_group[1:] = bhash[1:] != bhash[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(doc)), 0))
    member = ~new_group & (doc != doc[group_start])
    return unique_pairs(doc[group_start[member]], doc[member])


def unique_pairs(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (u, v) pairs, sorted: a two-key sort (a row-wise np.unique is several times slower)."""
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
    return u[first], v[first]
