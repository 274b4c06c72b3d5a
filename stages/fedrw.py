"""FedRW-style soft dedup: a document with C copies weighs 1 / (ln(C + 1) + eps) instead of being
deleted (frequency-based down-weighting, as in FedRW).

C comes from a column (minhash_dedup's `dup_cluster_size` with `policy: reweight`, so near
duplicates count too), or else from the exact copies of the text, counted over the whole corpus
by its hash.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.pipeline.core import schema
from thresher.pipeline.core.stage import ColumnName, FitContext, Params, Stage, StateRecord
from thresher.pipeline.toolkit.key_groups import KEY, SHARD, group_by_key, load_shard
from thresher.scorers.hashing import find_sorted, text_hashes

DUP_COUNT, WEIGHT = "dup_count", "fedrw_weight"
COPIES = "copies"
NO_COPIES = pa.table({KEY: pa.array([], pa.uint64()), COPIES: pa.array([], pa.int64())})


class FedRWParams(Params):
    count_column: ColumnName | None = Field(
        None, description="column holding the duplicate count C (e.g. dup_cluster_size); default: exact copies")
    eps: float = Field(1e-6, ge=0.0, description="added to ln(C + 1), so a weight is never infinite")


@dataclass(frozen=True)
class CopyCounts(StateRecord):
    """Where each shard's (text hash, copies in the corpus) rows lie; None when a column gives C."""

    folder: str | None


class _ShardCopies:
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


def fedrw_weight(copies: np.ndarray, eps: float) -> np.ndarray:
    return 1.0 / (np.log(copies + 1.0) + eps)


class FedRW(Stage):
    """Down-weights a document with C copies to 1 / ln(C + 1) (FedRW) instead of deleting it.

    The weight is 1 / (ln(C + 1) + eps). C comes from `count_column` (e.g. `dup_cluster_size` after `minhash_dedup` with
    `policy: reweight`, so near duplicates count) or else from the exact copies of the normalised
    text over the whole corpus. Adds `dup_count` and the weight `fedrw_weight`.
    """

    name = "fedrw"
    inputs = (schema.TEXT,)
    outputs = (DUP_COUNT, WEIGHT)
    weights = (WEIGHT,)
    Params = FedRWParams
    State = CopyCounts

    def fit(self, ctx: FitContext) -> CopyCounts:
        if self.params.count_column:
            return CopyCounts(None)
        return CopyCounts(str(group_by_key(ctx, COPIES, _ShardCopies(ctx.reader()), total_copies)[0]))

    def summarize_state(self, state: CopyCounts) -> dict:
        return {"copies_from": self.params.count_column or "exact text copies"}

    def shard_state(self, state: CopyCounts, shard: str) -> pa.Table | None:
        """This shard's (hash, copies in the corpus) rows, sorted by hash."""
        return load_shard(state.folder, shard, NO_COPIES) if state.folder else None

    def transform(self, table: pa.Table, state: pa.Table | None) -> pa.Table:
        p = self.params
        if p.count_column:
            counts = pc.fill_null(table[p.count_column], 1).to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            pos, found = find_sorted(state[KEY].to_numpy(), text_hashes(table[schema.TEXT]))
            counts = np.ones(len(found))
            counts[found] = state[COPIES].to_numpy()[pos[found]]
        return (table.append_column(DUP_COUNT, pa.array(counts.astype(np.int64)))
                .append_column(WEIGHT, pa.array(fedrw_weight(counts, p.eps), pa.float64())))
