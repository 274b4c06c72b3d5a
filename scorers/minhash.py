"""MinHash signatures for whole batches, LSH banding, candidate pairs and their exact Jaccard.

Signatures equal `datasketch.MinHash(num_perm, seed, hashfunc=xxhash.xxh64_intdigest,
scheme=...)` updated with the same shingles (word n-grams of the normalised text, joined by one
space), for datasketch's `legacy` universal hashing ((a*h+b) mod 2^61-1, 32-bit values) and its
`affine64` scheme (MurmurHash3 fmix64 pre-mix, a*h+b mod 2^64). The permutation parameters are
drawn exactly as datasketch draws them, so signatures are interchangeable.
"""

from __future__ import annotations

from functools import lru_cache

import numba as nb
import numpy as np
import pyarrow as pa

from thresher.scorers.hashing import fmix64, normalize_for_hashing, string_buffers, word_spans, xxh64

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64((1 << 32) - 1)
SCHEMES = ("legacy", "affine64")


def permutations(num_perm: int, seed: int, scheme: str = "legacy") -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutation parameters (a, b) for this seed and scheme."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        ab = np.array([(gen.randint(1, _MERSENNE, dtype=np.uint64), gen.randint(0, _MERSENNE, dtype=np.uint64))
                       for _ in range(num_perm)], dtype=np.uint64).T
        return np.ascontiguousarray(ab[0]), np.ascontiguousarray(ab[1])
    if scheme == "affine64":
        a = gen.randint(0, 1 << 63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        b = gen.randint(0, 1 << 64, num_perm, dtype=np.uint64)
        return a, b
    raise ValueError(f"unknown MinHash scheme {scheme!r}; use one of {SCHEMES}")


@nb.njit(cache=True)
def _signatures(data, offsets, a, b, ngram, legacy):
    starts, ends, doc_words = word_spans(data, offsets)
    n_docs = len(offsets) - 1
    num_perm = len(a)
    empty = _MAX32 if legacy else np.uint64(0xFFFFFFFFFFFFFFFF)
    sig = np.full((n_docs, num_perm), empty, dtype=np.uint64)
    n_shingles = np.zeros(n_docs, np.int64)
    hv = np.empty(max(len(starts), 1), np.uint64)
    for i in range(n_docs):
        w0, w1 = doc_words[i], doc_words[i + 1]
        nw = w1 - w0
        if nw == 0:
            continue
        count = nw - ngram + 1 if nw >= ngram else 1  # a short document is one shingle
        n_shingles[i] = count
        for s in range(count):
            last = min(w0 + s + ngram - 1, w1 - 1)
            h = xxh64(data, starts[w0 + s], ends[last], np.uint64(0))
            hv[s] = h if legacy else fmix64(h)
        # Permutation-major: independent iterations over the shingles pipeline well.
        for j in range(num_perm):
            aj, bj = a[j], b[j]
            best = empty
            if legacy:
                for s in range(count):
                    t = aj * hv[s] + bj  # wraps mod 2^64, as numpy's uint64 does in datasketch
                    r = (t & _MERSENNE) + (t >> np.uint64(61))  # t mod 2^61-1, exactly
                    r = r - _MERSENNE if r >= _MERSENNE else r
                    best = min(best, r & _MAX32)
            else:
                for s in range(count):
                    best = min(best, aj * hv[s] + bj)
            sig[i, j] = best
    return sig, n_shingles


def signatures(text: pa.Array | pa.ChunkedArray, num_perm: int = 128, seed: int = 1, ngram: int = 5,
               scheme: str = "legacy") -> tuple[np.ndarray, np.ndarray]:
    """(signatures [n_docs, num_perm] uint64, shingle counts) for a batch of documents."""
    data, offsets = string_buffers(normalize_for_hashing(text))
    a, b = _perms(num_perm, seed, scheme)
    return _signatures(data, offsets, a, b, ngram, scheme == "legacy")


@lru_cache(maxsize=8)
def _perms(num_perm: int, seed: int, scheme: str):
    return permutations(num_perm, seed, scheme)


@nb.njit(cache=True)
def _shingle_hashes(data, offsets, ngram):
    starts, ends, doc_words = word_spans(data, offsets)
    n_docs = len(offsets) - 1
    doc_off = np.zeros(n_docs + 1, np.int64)
    for i in range(n_docs):
        nw = doc_words[i + 1] - doc_words[i]
        doc_off[i + 1] = doc_off[i] + (0 if nw == 0 else (nw - ngram + 1 if nw >= ngram else 1))
    out = np.empty(doc_off[-1], np.uint64)
    for i in range(n_docs):
        w0, w1 = doc_words[i], doc_words[i + 1]
        for s in range(doc_off[i + 1] - doc_off[i]):
            out[doc_off[i] + s] = xxh64(data, starts[w0 + s], ends[min(w0 + s + ngram - 1, w1 - 1)], np.uint64(0))
    return out, doc_off


@nb.njit(cache=True)
def _unique_per_doc(hashes, doc_off):
    out = np.empty_like(hashes)
    out_off = np.zeros(len(doc_off), np.int64)
    w = 0
    for i in range(len(doc_off) - 1):
        seg = np.sort(hashes[doc_off[i]:doc_off[i + 1]])
        for j in range(len(seg)):
            if j == 0 or seg[j] != seg[j - 1]:
                out[w] = seg[j]
                w += 1
        out_off[i + 1] = w
    return out[:w], out_off


def shingle_sets(text: pa.Array | pa.ChunkedArray, ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The sorted, unique 64-bit shingle hashes of every document, flat, with offsets[n + 1]."""
    data, offsets = string_buffers(normalize_for_hashing(text))
    return _unique_per_doc(*_shingle_hashes(data, offsets, ngram))


@nb.njit(cache=True)
def pair_jaccard(values, offsets, a, b):
    """Exact Jaccard of documents a[k] and b[k] (indexes into shingle_sets' offsets), by merging
    their sorted sets; two empty documents count as equal."""
    out = np.empty(len(a))
    for k in range(len(a)):
        i, i_end = offsets[a[k]], offsets[a[k] + 1]
        j, j_end = offsets[b[k]], offsets[b[k] + 1]
        size = (i_end - i) + (j_end - j)
        inter = 0
        while i < i_end and j < j_end:
            if values[i] == values[j]:
                inter += 1
                i += 1
                j += 1
            elif values[i] < values[j]:
                i += 1
            else:
                j += 1
        out[k] = 1.0 if size == 0 else inter / (size - inter)
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
    """(bands, rows) minimising the weighted false-positive + false-negative area around the threshold."""
    from scipy.integrate import quad  # here, not at import: scipy.integrate costs every worker 0.2 s

    best, opt = float("inf"), (0, 0)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = lambda s: 1 - (1 - s ** float(rows)) ** float(bands)  # noqa: E731 - P(candidate | J = s)
            fp = quad(p, 0.0, threshold)[0]
            fn = quad(lambda s: 1 - p(s), threshold, 1.0)[0]
            err = fp * fp_weight + fn * fn_weight
            if err < best:
                best, opt = err, (bands, rows)
    return opt


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


def candidate_pairs(band: np.ndarray, bhash: np.ndarray, doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique (u, v) doc pairs sharing a (band, hash) bucket: each member links to the bucket's
    smallest doc (a star is enough for connected components), u < v."""
    order = np.lexsort((doc, bhash, band))
    band, bhash, doc = band[order], bhash[order], doc[order]
    new_group = np.ones(len(doc), dtype=bool)
    new_group[1:] = (band[1:] != band[:-1]) | (bhash[1:] != bhash[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(doc)), 0))
    member = ~new_group & (doc != doc[group_start])
    u, v = doc[group_start[member]], doc[member]
    if len(u) == 0:
        return u, v
    pairs = np.unique(np.stack([u, v], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]
