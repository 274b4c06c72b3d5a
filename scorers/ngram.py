"""Exact n-gram counts over words (or a tokenizer's tokens) and the smoothed n-gram model SoftDedup scores with.

Every k-gram (k = 1..n) gets a 63-bit key: 60 bits of a hash of its tokens, then its order in
the low 3 bits, so keys fall into partitions by their top bits and no two orders share a
key. Counts are kept per distinct key (never in a fixed table of buckets, whose collisions grow
with the corpus: at twice as many distinct n-grams as buckets a count table gave commonness > 1
and a rank correlation of 0.7 with exact counts). The model is interpolated Dirichlet-prior
smoothing:

    P_k(w | h) = (c(h w) + beta * P_{k-1}(w | h')) / (c(h) + beta),   P_0 = 1 / V

with V the number of distinct tokens of the corpus; c(h w) <= c(h) holds for exact counts, so
every P_k, and commonness, is at most 1.

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


ORDER_BITS = 3  # the low bits of a key hold its order - 1 (n <= 8)
KEY_BITS = 63  # keys are non-negative int64: -1 marks "no k-gram here"
_HASH_SHIFT = np.uint64(64 - (KEY_BITS - ORDER_BITS))  # 60 bits of the hash stay


@nb.njit(cache=True)
def _ngram_keys(tokens, doc_tokens, n):
    """Keys [n, tokens] of the k-gram ending at each token (k = 1..n); -1 where k > position+1."""
    t = len(tokens)
    keys = np.full((n, t), -1, np.int64)
    for d in range(len(doc_tokens) - 1):
        w0, w1 = doc_tokens[d], doc_tokens[d + 1]
        for i in range(w0, w1):
            g = fmix64(tokens[i])
            keys[0, i] = np.int64((g >> _HASH_SHIFT) << np.uint64(ORDER_BITS))
            for k in range(1, n):
                j = i - k
                if j < w0:
                    break
                g = fmix64(g * _MIX + fmix64(tokens[j] + np.uint64(k)))
                keys[k, i] = np.int64((g >> _HASH_SHIFT) << np.uint64(ORDER_BITS)) | k
    return keys


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


def ngram_keys(text: pa.Array | pa.ChunkedArray, n: int, tokenizer=None) -> tuple[np.ndarray, np.ndarray]:
    """(keys [n, tokens], per-document token offsets)."""
    tokens, doc_tokens = token_sequences(text, tokenizer)
    return _ngram_keys(tokens, doc_tokens, n), doc_tokens


def key_partition(keys: np.ndarray, partitions_log2: int) -> np.ndarray:
    """The partition of each key: its top bits."""
    return (keys >> (KEY_BITS - partitions_log2)).astype(np.int64)


@nb.njit(cache=True)
def _count_keys(keys):
    """(distinct keys in first-seen order, their counts, each key's index) by one pass through an
    open-addressing table: linear in the keys, where a sort would be n log n."""
    cap = 16
    while cap < len(keys) + len(keys) // 4:  # at most 80% full, less as keys repeat
        cap *= 2
    mask = cap - 1
    slots = np.full(cap, -1, np.int64)
    index = np.empty(cap, np.int32)
    distinct = np.empty(len(keys), np.int64)
    counts = np.zeros(len(keys), np.int64)
    inverse = np.empty(len(keys), np.int64)
    m = 0
    for i in range(len(keys)):
        x = keys[i]
        slot = np.int64((np.uint64(x) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)) & mask
        while slots[slot] != -1 and slots[slot] != x:
            slot = (slot + 1) & mask
        if slots[slot] == -1:
            slots[slot], index[slot] = x, m
            distinct[m] = x
            m += 1
        j = index[slot]
        counts[j] += 1
        inverse[i] = j
    return distinct[:m], counts[:m], inverse


def key_counts(keys: np.ndarray, partitions_log2: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(distinct keys grouped by key partition, occurrences, for each k-gram present in `keys`, in
    row-major order, the index of its key, and where each partition starts) of one batch over all
    orders: what a shard sends to the merge, and what maps the merged counts back onto its tokens.
    Counted order by order (no key is shared between orders): each order's table is a quarter of
    one table for all, and stays in cache. Grouped, not sorted: the merge counts a partition's keys
    in a table too, so a stable radix pass over the partition numbers is all the order it needs."""
    distinct, counts, inverse, seen = [], [], [], 0
    for row in keys:
        d, c, inv = _count_keys(row[row >= 0])
        distinct.append(d)
        counts.append(c)
        inverse.append(inv + seen)
        seen += len(d)
    distinct, counts, inverse = (np.concatenate(x) if x else np.zeros(0, np.int64) for x in (distinct, counts, inverse))
    part = key_partition(distinct, partitions_log2).astype(np.uint16 if partitions_log2 <= 16 else np.int64)
    order = np.argsort(part, kind="stable")  # a radix sort for 16-bit values: linear
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    starts = np.searchsorted(part[order], np.arange((1 << partitions_log2) + 1))
    return distinct[order], counts[order], rank[inverse].astype(np.int32 if len(order) < 2**31 else np.int64), starts


def distinct_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys in first-seen order, each key's index among them): np.unique's grouping by
    a hash table, linear where np.unique sorts."""
    distinct, _, inverse = _count_keys(keys)
    return distinct, inverse


def is_unigram(keys: np.ndarray) -> np.ndarray:
    return (keys & ((1 << ORDER_BITS) - 1)) == 0


@nb.njit(cache=True)
def _log_commonness(counts, doc_tokens, total, vocab, beta):
    """Mean log P of each document's tokens, from the corpus count of the k-gram at each
    position (counts[k, i]; -1 where the document has no k-gram ending there)."""
    n = counts.shape[0]
    n_docs = len(doc_tokens) - 1
    out = np.full(n_docs, np.nan)
    for d in range(n_docs):
        w0, w1 = doc_tokens[d], doc_tokens[d + 1]
        if w1 == w0:
            continue
        acc = 0.0
        for i in range(w0, w1):
            # P_1 with the uniform prior over the vocabulary, then each higher order on top.
            p = (counts[0, i] + beta / vocab) / (total + beta)
            for k in range(1, n):
                if counts[k, i] < 0:
                    break
                p = (counts[k, i] + beta * p) / (counts[k - 1, i - 1] + beta)
            acc += np.log(p)
        out[d] = acc / (w1 - w0)
    return out


def present(doc_tokens: np.ndarray, n: int) -> np.ndarray:
    """[n, tokens]: whether a k-gram ends at each token (its document has k tokens up to there)."""
    lengths = np.diff(doc_tokens)
    position = np.arange(doc_tokens[-1] - doc_tokens[0]) - np.repeat(doc_tokens[:-1] - doc_tokens[0], lengths)
    return position[None, :] >= np.arange(n)[:, None]


def commonness(doc_tokens: np.ndarray, n: int, inverse: np.ndarray, totals: np.ndarray, total: int,
               vocab: int, beta: float = 1.0) -> np.ndarray:
    """Geometric-mean n-gram probability of each document (1 / its n-gram perplexity); NaN if
    empty. `inverse` and the distinct keys `totals` count over the whole corpus come from
    key_counts of these documents; `total`: the corpus's tokens, `vocab`: its distinct tokens."""
    where = present(doc_tokens, n)
    counts = np.full(where.shape, -1.0)
    counts[where] = totals[inverse]
    return np.exp(_log_commonness(counts, doc_tokens, float(total), float(max(vocab, 1)), beta))
