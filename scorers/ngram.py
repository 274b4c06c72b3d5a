"""Hashed n-gram counts over words (or a tokenizer's tokens) and the smoothed n-gram model SoftDedup scores with.

Counts live in one dense table per order (2^bits buckets), so per-shard counts merge by adding
arrays. The model is interpolated Dirichlet-prior smoothing:

    P_k(w | h) = (c(h w) + beta * P_{k-1}(w | h')) / (c(h) + beta),   P_0 = 1 / 2^bits

It is scored on the corpus it was counted on, where every n-gram occurs at least once: stupid
backoff would then give P = 1 to any n-gram with a unique context and cannot tell a repeated
document from a unique one; the prior keeps a once-seen continuation well below a repeated one.
"""

from __future__ import annotations

from itertools import chain

import numba as nb
import numpy as np
import pyarrow as pa

from thresher.scorers.hashing import fmix64, normalize_for_hashing, string_buffers, word_spans, xxh64

_MIX = np.uint64(0x9E3779B97F4A7C15)


@nb.njit(cache=True)
def _word_hashes(data, offsets):
    starts, ends, doc_words = word_spans(data, offsets)
    out = np.empty(len(starts), np.uint64)
    for i in range(len(starts)):
        out[i] = xxh64(data, starts[i], ends[i], np.uint64(0))
    return out, doc_words


@nb.njit(cache=True)
def _ngram_ids(tokens, doc_tokens, n, mask):
    """Bucket ids [n, tokens] of the k-gram ending at each token (k = 1..n); -1 where k > position+1."""
    t = len(tokens)
    ids = np.full((n, t), -1, np.int64)
    for d in range(len(doc_tokens) - 1):
        w0, w1 = doc_tokens[d], doc_tokens[d + 1]
        for i in range(w0, w1):
            g = fmix64(tokens[i])
            ids[0, i] = np.int64(g & mask)
            for k in range(1, n):
                j = i - k
                if j < w0:
                    break
                g = fmix64(g * _MIX + fmix64(tokens[j] + np.uint64(k)))
                ids[k, i] = np.int64(g & mask)
    return ids


def token_sequences(text: pa.Array | pa.ChunkedArray, tokenizer=None) -> tuple[np.ndarray, np.ndarray]:
    """(token values as uint64, per-document offsets): hashed words of the normalised text, or the
    ids of a Hugging Face tokenizer when one is given."""
    if tokenizer is None:
        return _word_hashes(*string_buffers(normalize_for_hashing(text)))
    texts = [t or "" for t in (text.to_pylist())]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.fromiter(chain.from_iterable(encoded), dtype=np.uint64, count=int(offsets[-1]))
    return flat, offsets


def ngram_ids(text: pa.Array | pa.ChunkedArray, n: int, bits: int, tokenizer=None) -> tuple[np.ndarray, np.ndarray]:
    tokens, doc_tokens = token_sequences(text, tokenizer)
    return _ngram_ids(tokens, doc_tokens, n, np.uint64((1 << bits) - 1)), doc_tokens


def sparse_counts(ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per order: (bucket ids, counts) of one batch, the partial that shards send to the merge."""
    out = []
    for row in ids:
        u, c = np.unique(row[row >= 0], return_counts=True)
        out.append((u.astype(np.int64), c.astype(np.int64)))
    return out


@nb.njit(cache=True)
def _log_commonness(ids, doc_words, tables, total, beta):
    n, _ = ids.shape
    buckets = tables.shape[1]
    n_docs = len(doc_words) - 1
    out = np.full(n_docs, np.nan)
    for d in range(n_docs):
        w0, w1 = doc_words[d], doc_words[d + 1]
        if w1 == w0:
            continue
        acc = 0.0
        for i in range(w0, w1):
            # P_1 with the uniform prior, then each higher order on top of the previous.
            p = (tables[0, ids[0, i]] + beta / buckets) / (total + beta)
            for k in range(1, n):
                if ids[k, i] < 0:
                    break
                ctx = tables[k - 1, ids[k - 1, i - 1]]
                p = (tables[k, ids[k, i]] + beta * p) / (ctx + beta)
            acc += np.log(p)
        out[d] = acc / (w1 - w0)
    return out


def commonness(text: pa.Array | pa.ChunkedArray, tables: np.ndarray, beta: float = 1.0,
               tokenizer=None) -> np.ndarray:
    """Geometric-mean n-gram probability of each document (1 / its n-gram perplexity); NaN if empty."""
    n, buckets = tables.shape
    ids, doc_words = ngram_ids(text, n, int(buckets).bit_length() - 1, tokenizer)
    total = float(tables[0].sum())
    return np.exp(_log_commonness(ids, doc_words, tables, total, beta))
