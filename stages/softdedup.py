"""SoftDedup (He et al. 2024): down-weight documents by how common they are instead of deleting them.

commonness = geometric-mean n-gram probability under a model of the same corpus
(scorers/ngram.py); documents sorted by commonness fall into K equal-count segments, a segment's
weight is proportional to 1 / its mean commonness, normalised to mean 1 and clipped to
[w_min, w_max]. Down-weighting by duplicate count (FedRW) is the stage `fedrw`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from thresher.pipeline import schema, storage
from thresher.pipeline.registry import register
from thresher.pipeline.stage import FitContext, LocalPath, Params, Stage, StateRecord
from thresher.scorers.ngram import commonness, ngram_ids, sparse_counts
from thresher.scorers.tokenizer import load_tokenizer

COMMONNESS, WEIGHT = "commonness", "softdedup_weight"


class SoftDedupParams(Params):
    mode: Literal["softdedup"] = Field("softdedup", description="kept for older pipelines; FedRW is the stage fedrw")
    n: int = Field(4, ge=1, le=8, description="n-gram order")
    bits: int = Field(22, ge=10, le=28, description="log2 of the hash buckets per order")
    tokenizer: LocalPath | None = Field(None, description="local Hugging Face tokenizer folder; default: words")
    beta: float = Field(1.0, gt=0.0, description="strength of the lower-order prior")
    segments: int = Field(10, ge=1, description="K equal-count segments")
    w_min: float = Field(0.1, gt=0.0)
    w_max: float = Field(10.0, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _fedrw_moved(cls, data):
        if isinstance(data, dict) and data.get("mode") == "fedrw":
            raise ValueError("`mode: fedrw` is now a stage of its own: write `- stage: fedrw` (with its "
                             "count_column and eps, if you set them) instead of `- stage: softdedup`")
        return data

    @model_validator(mode="after")
    def _range(self):
        if self.w_max < self.w_min:
            raise ValueError("w_max must be >= w_min")
        return self


def _tokenizer(p: SoftDedupParams):
    return load_tokenizer(p.tokenizer) if p.tokenizer else None


class _ShardCounts:
    """Round 1, per shard: its n-gram counts, sparse (sorted ids, counts) per order, to scratch."""

    def __init__(self, p: SoftDedupParams, read, folder: Path):
        self.p, self.read, self.folder = p, read, folder

    def __call__(self, shard: str) -> None:
        text = self.read(shard, columns=[schema.TEXT])[schema.TEXT]
        ids, _ = ngram_ids(text, self.p.n, self.p.bits, _tokenizer(self.p))
        for k, (u, c) in enumerate(sparse_counts(ids)):
            storage.save_npy(self.folder / f"{shard}.u{k}.npy", u)
            storage.save_npy(self.folder / f"{shard}.c{k}.npy", c)


class _AddSlice:
    """Round 2, per slice of the id space: every shard's counts in the slice, summed into that
    slice of the count table, which is written as a file of its own: the merge runs in the
    workers, in parallel, the counts never pass through the driver, and no two tasks write one
    file (so the scratch may live in an object store)."""

    def __init__(self, p: SoftDedupParams, shards: list[str], folder: Path, out: Path, slices: int):
        self.p, self.shards, self.folder, self.out, self.slices = p, shards, folder, out, slices

    def __call__(self, i: int) -> int:
        width = -(-(1 << self.p.bits) // self.slices)
        lo, hi = i * width, min((i + 1) * width, 1 << self.p.bits)
        table = np.zeros((self.p.n, max(0, hi - lo)), dtype=np.int64)
        for shard in self.shards:
            for k in range(self.p.n):
                u = storage.load_npy(self.folder / f"{shard}.u{k}.npy", mmap=True)
                a, b = np.searchsorted(u, [lo, hi])
                c = storage.load_npy(self.folder / f"{shard}.c{k}.npy", mmap=True)
                table[k, u[a:b] - lo] += c[a:b]  # ids are unique within a shard's part: an exact add
        storage.save_npy(self.out / f"{i:05d}.npy", table)
        return int(table.max(initial=0))


def _count_table(folder: Path, slices: int) -> np.ndarray:
    """The whole count table [n, 2^bits], from its slices."""
    return np.concatenate([storage.load_npy(folder / f"{i:05d}.npy") for i in range(slices)], axis=1)


class _Commonness:
    def __init__(self, p: SoftDedupParams, read, folder: Path, slices: int):
        self.p, self.read, self.folder, self.slices = p, read, folder, slices
        self._tables = None  # loaded on first use: once per worker, not once per shard

    def __call__(self, shard: str) -> tuple[str, np.ndarray]:
        if self._tables is None:
            self._tables = _count_table(self.folder, self.slices)
        text = self.read(shard, columns=[schema.TEXT])[schema.TEXT]
        return shard, commonness(text, self._tables, self.p.beta, _tokenizer(self.p))


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
    """The corpus's n-gram count tables, and the K segments: upper commonness bounds and weights."""

    tables: np.ndarray
    bounds: np.ndarray
    weights: np.ndarray


@register
class SoftDedup(Stage):
    name = "softdedup"
    inputs = (schema.TEXT,)
    outputs = (COMMONNESS, WEIGHT)
    weights = (WEIGHT,)
    Params = SoftDedupParams
    State = NgramWeights

    def fit(self, ctx: FitContext) -> NgramWeights:
        p, read, shards = self.params, ctx.reader(), list(ctx.shards)
        folder, sums = ctx.scratch / "counts", ctx.scratch / "sums"
        folder.mkdir(parents=True, exist_ok=True)
        sums.mkdir(parents=True, exist_ok=True)
        list(ctx.map(_ShardCounts(p, read, folder), shards))
        slices = max(1, min(len(shards), 16))
        top = max(ctx.map(_AddSlice(p, shards, folder, sums, slices), list(range(slices))), default=0)
        values = sorted(ctx.map(_Commonness(p, read, sums, slices), ctx.shards), key=lambda r: r[0])
        tables = _count_table(sums, slices).astype(np.int32 if top < 2**31 else np.int64)  # the state's copy
        bounds, weights = segment_weights(np.concatenate([v for _, v in values] or [np.zeros(0)]), p.segments,
                                          p.w_min, p.w_max)
        return NgramWeights(tables, bounds, weights)

    def summarize_state(self, state: NgramWeights) -> dict:
        return {"mode": "softdedup", "segment_upper_bounds": [float(b) for b in state.bounds],
                "segment_weights": [float(w) for w in state.weights]}

    def transform(self, table: pa.Table, state: NgramWeights) -> pa.Table:
        p = self.params
        common = commonness(table[schema.TEXT], state.tables, p.beta, _tokenizer(p))
        weight = state.weights[segment_of(state.bounds, np.nan_to_num(common, nan=0.0))]
        weight = np.where(np.isnan(common), 1.0, weight)  # no words: nothing to judge, neutral
        return (table.append_column(COMMONNESS, pa.array(common, pa.float64()))
                .append_column(WEIGHT, pa.array(weight, pa.float64())))
