"""SoftDedup (He et al. 2024): down-weight documents by how common they are instead of deleting them.

commonness = geometric-mean n-gram probability under a model of the same corpus
(scorers/ngram.py); documents sorted by commonness fall into K equal-count segments, a segment's
weight is proportional to 1 / its mean commonness, normalised to mean 1 and clipped to
[w_min, w_max]. Down-weighting by duplicate count (FedRW) is the stage `fedrw`.

The n-gram counts are exact, counted as a keyed group-by over partitions of the key space, so
no task holds the whole corpus's counts: per shard its distinct keys and occurrences, grouped by
key partition (round 1); per key partition the sum over shards, sent back per shard (round 2);
per shard its documents' commonness from the counts of its own keys (round 3), stored by row
position for the transform. A task holds one shard's keys or one partition's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from thresher.pipeline.core import schema, storage
from thresher.pipeline.core.stage import FitContext, LocalPath, Params, Stage, StateRecord
from thresher.pipeline.toolkit.key_groups import partitions_for
from thresher.scorers.ngram import commonness, distinct_keys, is_unigram, key_counts, ngram_keys
from thresher.scorers.tokenizer import load_tokenizer

COMMONNESS, WEIGHT = "commonness", "softdedup_weight"


class SoftDedupParams(Params):
    mode: Literal["softdedup"] = Field("softdedup", description="kept for older pipelines; FedRW is the stage fedrw")
    n: int = Field(4, ge=1, le=8, description="n-gram order")
    tokenizer: LocalPath | None = Field(None, description="local Hugging Face tokenizer folder; default: words")
    beta: float = Field(1.0, gt=0.0, description="strength of the lower-order prior")
    segments: int = Field(10, ge=1, description="K equal-count segments")
    w_min: float = Field(0.1, gt=0.0, description="lowest segment weight")
    w_max: float = Field(10.0, gt=0.0, description="highest segment weight")

    partitions: int | None = Field(None, ge=1, le=4096, description=(
        "key partitions of the count (rounded up to a power of two; default: one per 10,000 documents, at least 16)"))

    @model_validator(mode="before")
    @classmethod
    def _fedrw_moved(cls, data):
        if isinstance(data, dict) and data.get("mode") == "fedrw":
            raise ValueError("`mode: fedrw` is now a stage of its own: write `- stage: fedrw` (with its "
                             "count_column and eps, if you set them) instead of `- stage: softdedup`")
        if isinstance(data, dict) and "bits" in data:
            raise ValueError("`bits` is gone: softdedup now counts n-grams exactly (no table of hash "
                             "buckets to size); remove `bits:` from the stage")
        return data

    @model_validator(mode="after")
    def _range(self):
        if self.w_max < self.w_min:
            raise ValueError("w_max must be >= w_min")
        return self


def _tokenizer(p: SoftDedupParams):
    return load_tokenizer(p.tokenizer) if p.tokenizer else None


class _ShardKeys:
    """Round 1, per shard: its distinct n-gram keys, partition by partition, and their occurrences,
    with where each key partition starts."""

    def __init__(self, p: SoftDedupParams, read, folder: Path, partitions_log2: int):
        self.p, self.read, self.folder, self.partitions_log2 = p, read, folder, partitions_log2

    def __call__(self, shard: str) -> None:
        text = self.read(shard, columns=[schema.TEXT])[schema.TEXT]
        keys, doc_tokens = ngram_keys(text, self.p.n, _tokenizer(self.p))
        keys, counts, inverse, starts = key_counts(keys, self.partitions_log2)
        for name, array in (("keys", keys), ("counts", counts), ("starts", starts), ("inverse", inverse),
                            ("doc_tokens", doc_tokens)):
            storage.save_npy(self.folder / f"{shard}.{name}.npy", array)


class _SumPartition:
    """Round 2, per key partition: every shard's counts of its keys summed; written back as each
    shard's totals (in the order of that shard's keys). Returns the partition's (distinct
    tokens, tokens)."""

    def __init__(self, shards: list[str], folder: Path, out: Path):
        self.shards, self.folder, self.out = shards, folder, out

    def __call__(self, part: int) -> tuple[int, int]:
        keys, counts, sizes = [], [], []
        for shard in self.shards:
            a, b = storage.load_npy(self.folder / f"{shard}.starts.npy")[part:part + 2]
            keys.append(storage.load_npy_slice(self.folder / f"{shard}.keys.npy", a, b))
            counts.append(storage.load_npy_slice(self.folder / f"{shard}.counts.npy", a, b))
            sizes.append(b - a)
        distinct, where = distinct_keys(np.concatenate(keys))
        totals = np.bincount(where, weights=np.concatenate(counts), minlength=len(distinct)).astype(np.int64)
        for shard, piece in zip(self.shards, np.split(totals[where], np.cumsum(sizes)[:-1])):
            storage.save_npy(self.out / f"{shard}.{part:05d}.npy", piece)
        unigram = is_unigram(distinct)
        return int(unigram.sum()), int(totals[unigram].sum())


class _ShardCommonness:
    """Round 3, per shard: its documents' commonness under the corpus counts of its own keys
    (mapped onto its tokens by round 1's inverse: no text is read or hashed again), stored by row
    position (the transform reads it back)."""

    def __init__(self, p: SoftDedupParams, folder: Path, sums: Path, out: Path, partitions: int,
                 total: int, vocab: int):
        self.p, self.folder, self.sums, self.out = p, folder, sums, out
        self.partitions, self.total, self.vocab = partitions, total, vocab

    def __call__(self, shard: str) -> tuple[str, np.ndarray]:
        totals = np.concatenate([storage.load_npy(self.sums / f"{shard}.{part:05d}.npy")
                                 for part in range(self.partitions)])
        values = commonness(storage.load_npy(self.folder / f"{shard}.doc_tokens.npy"), self.p.n,
                            storage.load_npy(self.folder / f"{shard}.inverse.npy"), totals, self.total,
                            self.vocab, self.p.beta)
        storage.save_npy(self.out / f"{shard}.npy", values)
        return shard, values


def segment_of(bounds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The segment of each value: the first whose (inclusive) upper bound it does not exceed. The
    global pass and the transform both assign through here, so a tie always shares one segment."""
    return np.minimum(np.searchsorted(bounds, values, side="left"), len(bounds) - 1)


def segment_weights(values: np.ndarray, k: int, w_min: float, w_max: float) -> tuple[np.ndarray, np.ndarray]:
    """(upper bounds, weights) of k equal-count segments of `values`, weight ~ 1/mean.

    Segments are cut between distinct values only, so equal values (exact copies have equal
    commonness) never straddle two segments; each cut goes to the tie boundary nearest the equal
    share of what is left, so segment sizes are equal up to the ties at their edges (a tie larger
    than a share takes a segment of its own size). Weights are scaled so that their mean over the
    documents is 1 after clipping to [w_min, w_max] (whenever w_min <= 1 <= w_max allows it)."""
    v = np.sort(values[np.isfinite(values)])
    if len(v) == 0:
        return np.array([np.inf]), np.array([1.0])
    uniq, counts = np.unique(v, return_counts=True)
    ends = np.cumsum(counts)  # ends[i]: how many values are <= uniq[i]
    cuts, done = [], 0
    for left in range(min(k, len(uniq)), 1, -1):  # segments still to cut, this one included
        target = done + (len(v) - done) / left
        i = int(np.searchsorted(ends, target))
        if i > 0 and ends[i - 1] > done and target - ends[i - 1] <= ends[i] - target:
            i -= 1
        if i >= len(uniq) - 1:
            break
        cuts.append(uniq[i])
        done = ends[i]
    bounds = np.append(np.array(cuts, dtype=np.float64), np.inf)  # the last segment is open above
    seg = segment_of(bounds, v)
    sizes = np.bincount(seg, minlength=len(bounds)).astype(np.float64)
    means = np.bincount(seg, weights=v, minlength=len(bounds)) / np.maximum(sizes, 1)
    raw = 1.0 / np.maximum(means, 1e-300)
    return bounds, _scaled_to_mean_one(raw, sizes, w_min, w_max)


def _scaled_to_mean_one(raw: np.ndarray, sizes: np.ndarray, w_min: float, w_max: float) -> np.ndarray:
    """clip(s * raw) with s chosen (by bisection: the mean rises with s) so the size-weighted mean is 1."""
    def mean(s: float) -> float:
        return float((np.clip(s * raw, w_min, w_max) * sizes).sum() / sizes.sum())

    lo, hi = 0.0, 1.0
    while mean(hi) < 1.0 and hi < 1e300:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean(mid) < 1.0 else (lo, mid)
    return np.clip(hi * raw, w_min, w_max)


@dataclass(frozen=True)
class NgramWeights(StateRecord):
    """Where each shard's commonness (by row position) lies, the corpus's token and distinct-token
    counts, and the K segments: upper commonness bounds and weights."""

    VERSION = 2
    folder: str
    tokens: int
    vocab: int
    bounds: np.ndarray
    weights: np.ndarray


class SoftDedup(Stage):
    """Down-weights documents by their n-gram commonness instead of deleting them (SoftDedup).

    He et al. 2024. The n-grams (`n`, 4) of words, or of a local tokenizer's tokens, are counted exactly over
    the corpus (a keyed group-by over `partitions` of a 60-bit key space: no task holds the corpus's
    counts, no bucket collision inflates them); commonness = the geometric-mean n-gram probability of
    a document under an interpolated Dirichlet-prior model of those counts (`beta`). Documents sorted
    by commonness fall into `segments` equal-count segments (exact copies always share one); a
    segment weighs 1 / its mean commonness, clipped to [w_min, w_max] and scaled so the mean weight is
    1. Adds `commonness` and the weight `softdedup_weight`. Scratch on disk: about 112 bytes per
    token during the global pass.
    """

    name = "softdedup"
    inputs = (schema.TEXT,)
    outputs = (COMMONNESS, WEIGHT)
    weights = (WEIGHT,)
    Params = SoftDedupParams
    State = NgramWeights
    row_positions = True  # commonness is stored per shard by row position

    def fit(self, ctx: FitContext) -> NgramWeights:
        p, read, shards = self.params, ctx.reader(), list(ctx.shards)
        partitions = p.partitions or partitions_for(ctx.rows, 10_000, 16, 4096)
        log2 = max(0, (partitions - 1).bit_length())  # rounded up to a power of two
        folder, sums, out = ctx.scratch / "keys", ctx.scratch / "sums", ctx.state_dir / "commonness"
        storage.rmtree(out)
        for d in (folder, sums, out):
            d.mkdir(parents=True, exist_ok=True)
        list(ctx.map(_ShardKeys(p, read, folder, log2), shards))
        parts = list(ctx.map(_SumPartition(shards, folder, sums), list(range(1 << log2)) if shards else []))
        vocab, tokens = sum(v for v, _ in parts), sum(t for _, t in parts)
        values = dict(ctx.map(_ShardCommonness(p, folder, sums, out, 1 << log2, tokens, vocab), shards))
        bounds, weights = segment_weights(np.concatenate([values[s] for s in shards] or [np.zeros(0)]),
                                          p.segments, p.w_min, p.w_max)
        return NgramWeights(str(out), tokens, vocab, bounds, weights)

    def summarize_state(self, state: NgramWeights) -> dict:
        return {"mode": "softdedup", "tokens": state.tokens, "distinct_tokens": state.vocab,
                "segment_upper_bounds": [float(b) for b in state.bounds],
                "segment_weights": [float(w) for w in state.weights]}

    def shard_state(self, state: NgramWeights, shard: str) -> tuple[np.ndarray, NgramWeights]:
        path = storage.location(state.folder) / f"{shard}.npy"
        return (storage.load_npy(path) if path.exists() else np.zeros(0)), state  # a shard without rows has none

    def transform(self, table: pa.Table, state: tuple[np.ndarray, NgramWeights]) -> pa.Table:
        values, fitted = state
        rows = table[schema.ROW].to_numpy()
        if len(rows) and rows.max() >= len(values):
            raise RuntimeError(f"softdedup: the global pass stored commonness for {len(values)} rows of this "
                               "shard, fewer than it has: the state is stale; rerun with --from softdedup")
        common = values[rows]
        weight = fitted.weights[segment_of(fitted.bounds, np.nan_to_num(common, nan=0.0))]
        weight = np.where(np.isnan(common), 1.0, weight)  # no words: nothing to judge, neutral
        return (table.append_column(COMMONNESS, pa.array(common, pa.float64()))
                .append_column(WEIGHT, pa.array(weight, pa.float64())))
