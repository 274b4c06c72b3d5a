"""Soft dedup: down-weight documents by how common they are instead of deleting them.

`softdedup` mode (He et al. 2024): commonness = geometric-mean n-gram probability under a model
of the same corpus (scorers/ngram.py); documents sorted by commonness fall into K equal-count
segments, a segment's weight is proportional to 1 / its mean commonness, normalised to mean 1
and clipped to [w_min, w_max].
`fedrw` mode: weight = 1 / (ln(C + 1) + eps), C the duplicate count of the document (a column
such as minhash_dedup's `dup_cluster_size`, or the exact normalised-text count).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from thresher.pipeline import schema
from thresher.pipeline.key_groups import KEY, SHARD, group_by_key, load_shard
from thresher.pipeline.registry import register
from thresher.pipeline.stage import ColumnName, FitContext, LocalPath, Params, Stage
from thresher.scorers.hashing import find_sorted, text_hashes
from thresher.scorers.ngram import commonness, merge_counts, ngram_ids, sparse_counts
from thresher.scorers.tokenizer import load_tokenizer

COMMONNESS, WEIGHT = "commonness", "softdedup_weight"


class SoftDedupParams(Params):
    mode: Literal["softdedup", "fedrw"] = "softdedup"
    n: int = Field(4, ge=1, le=8, description="n-gram order")
    bits: int = Field(22, ge=10, le=28, description="log2 of the hash buckets per order")
    tokenizer: LocalPath | None = Field(None, description="local Hugging Face tokenizer folder; default: words")
    beta: float = Field(1.0, gt=0.0, description="strength of the lower-order prior")
    segments: int = Field(10, ge=1, description="K equal-count segments")
    w_min: float = Field(0.1, gt=0.0)
    w_max: float = Field(10.0, gt=0.0)
    count_column: ColumnName | None = Field(None, description="fedrw: column holding the duplicate count C")
    eps: float = Field(1e-6, ge=0.0)

    @model_validator(mode="after")
    def _range(self):
        if self.w_max < self.w_min:
            raise ValueError("w_max must be >= w_min")
        return self


def _tokenizer(p: SoftDedupParams):
    return load_tokenizer(p.tokenizer) if p.tokenizer else None


class _Counts:
    def __init__(self, p: SoftDedupParams, read):
        self.p, self.read = p, read

    def __call__(self, shard: str):
        text = self.read(shard, columns=[schema.TEXT])[schema.TEXT]
        ids, _ = ngram_ids(text, self.p.n, self.p.bits, _tokenizer(self.p))
        return sparse_counts(ids)


class _Commonness:
    def __init__(self, p: SoftDedupParams, read, tables_path: Path):
        self.p, self.read, self.tables_path = p, read, tables_path

    def __call__(self, shard: str) -> tuple[str, np.ndarray]:
        tables = np.load(self.tables_path, mmap_mode="r")
        text = self.read(shard, columns=[schema.TEXT])[schema.TEXT]
        return shard, commonness(text, tables, self.p.beta, _tokenizer(self.p))


COPIES = "copies"
NO_COPIES = pa.table({KEY: pa.array([], pa.uint64()), COPIES: pa.array([], pa.int64())})


class _DupCounts:
    def __init__(self, read):
        self.read = read

    def __call__(self, shard: str) -> pa.Table:
        """(distinct text hash, copies) in one shard."""
        keys, copies = np.unique(text_hashes(self.read(shard, columns=[schema.TEXT])[schema.TEXT]), return_counts=True)
        return pa.table({KEY: keys, COPIES: copies})


def total_copies(rows: pa.Table) -> pa.Table:
    """Each shard's (key, shard) rows with the key's copies summed over all shards."""
    totals = rows.group_by(KEY).aggregate([(COPIES, "sum")]).rename_columns([KEY, COPIES])
    return rows.select([KEY, SHARD]).join(totals, KEY)


def segment_weights(values: np.ndarray, k: int, w_min: float, w_max: float) -> tuple[np.ndarray, np.ndarray]:
    """(upper boundaries, weights) of k equal-count segments of `values`, weight ~ 1/mean, mean 1."""
    v = np.sort(values[np.isfinite(values)])
    if len(v) == 0:
        return np.array([np.inf]), np.array([1.0])
    chunks = [c for c in np.array_split(v, min(k, len(v))) if len(c)]
    bounds = np.array([c[-1] for c in chunks[:-1]] + [np.inf])
    raw = np.array([1.0 / max(c.mean(), 1e-300) for c in chunks])
    sizes = np.array([len(c) for c in chunks], dtype=np.float64)
    raw /= (raw * sizes).sum() / sizes.sum()  # mean weight over documents = 1
    return bounds, np.clip(raw, w_min, w_max)


@register
class SoftDedup(Stage):
    name = "softdedup"
    inputs = (schema.TEXT,)
    outputs = (COMMONNESS, WEIGHT)
    weights = (WEIGHT,)
    Params = SoftDedupParams

    def fit(self, ctx: FitContext) -> dict:
        p, read = self.params, ctx.reader()
        if p.mode == "fedrw":
            if p.count_column:
                return {}
            return {"copies": str(group_by_key(ctx, "copies", _DupCounts(read), total_copies)[0])}
        tables = merge_counts(list(ctx.map(_Counts(p, read), ctx.shards)), p.n, p.bits)
        tables = tables.astype(np.int32 if tables.max(initial=0) < 2**31 else np.int64)
        path = ctx.scratch / "ngram_counts.npy"
        np.save(path, tables)
        values = sorted(ctx.map(_Commonness(p, read, path), ctx.shards), key=lambda r: r[0])
        bounds, weights = segment_weights(np.concatenate([v for _, v in values] or [np.zeros(0)]), p.segments,
                                          p.w_min, p.w_max)
        return {"tables": tables, "bounds": bounds, "weights": weights}

    def summarize_state(self, state: dict) -> dict:
        if "weights" not in state:
            return {"mode": self.params.mode}
        return {"mode": "softdedup", "segment_upper_bounds": [float(b) for b in state["bounds"]],
                "segment_weights": [float(w) for w in state["weights"]]}

    def shard_state(self, state: dict, shard: str):
        """FedRW by text hash: this shard's (hash, copies in the corpus) rows, sorted by hash."""
        return load_shard(state["copies"], shard, NO_COPIES) if "copies" in state else state

    def transform(self, table: pa.Table, state) -> pa.Table:
        p = self.params
        if p.mode == "fedrw":
            if p.count_column:
                if p.count_column not in table.column_names:
                    raise ValueError(f"softdedup: count_column {p.count_column!r} is not a column; "
                                     "run minhash_dedup with policy: reweight before it, or unset count_column")
                counts = pc.fill_null(table[p.count_column], 1).to_numpy(zero_copy_only=False).astype(np.float64)
            else:
                pos, found = find_sorted(state[KEY].to_numpy(), text_hashes(table[schema.TEXT]))
                counts = np.ones(len(found))
                counts[found] = state[COPIES].to_numpy()[pos[found]]
            weight, common = 1.0 / (np.log(counts + 1.0) + p.eps), counts
        else:
            common = commonness(table[schema.TEXT], state["tables"], p.beta, _tokenizer(p))
            seg = np.searchsorted(state["bounds"], np.nan_to_num(common, nan=0.0), side="left")
            weight = state["weights"][np.minimum(seg, len(state["weights"]) - 1)]
            weight = np.where(np.isnan(common), 1.0, weight)  # no words: nothing to judge, neutral
        return (table.append_column(COMMONNESS, pa.array(common, pa.float64()))
                .append_column(WEIGHT, pa.array(weight, pa.float64())))
