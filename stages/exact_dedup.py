"""Exact dedup: one document per normalised-text hash, chosen by a total order.

The winner of a hash is its smallest (id, source, position) row, so exactly one row survives
even when copies share an id (the same file twice among the inputs). Global pass as a keyed
group-by (pipeline/key_groups.py): each shard reports its first row per hash, the first per hash
over the whole corpus wins, and each shard stores only its own winners' positions. The transform
keeps a row only if its position is among them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from thresher.pipeline import schema
from thresher.pipeline.key_groups import KEY, SHARD, group_by_key, load_shard, run_starts
from thresher.pipeline.registry import register
from thresher.pipeline.stage import FitContext, Params, Stage, StateRecord, mark_dropped
from thresher.scorers.hashing import text_hashes

HASH = "exact_hash"


def first_per_key(rows: pa.Table, order: list[str]) -> pa.Table:
    """The first row of each KEY when rows are ordered by `order` within the key."""
    rows = rows.sort_by([(KEY, "ascending")] + [(c, "ascending") for c in order])
    return rows.filter(pa.array(run_starts(rows[KEY].to_numpy())))


class _ShardFirstRows:
    def __init__(self, read):
        self.read = read

    def __call__(self, shard: str) -> pa.Table:
        t = self.read(shard, columns=[schema.ID, schema.TEXT, schema.SOURCE])
        rows = pa.table({KEY: text_hashes(t[schema.TEXT]), schema.ID: t[schema.ID], schema.SOURCE: t[schema.SOURCE],
                         schema.ROW: np.arange(t.num_rows, dtype=np.int64)})
        return first_per_key(rows, [schema.ID, schema.SOURCE, schema.ROW])


def winners(rows: pa.Table) -> pa.Table:
    """Each key's first (id, source, shard, position) row over all shards."""
    return first_per_key(rows, [schema.ID, schema.SOURCE, SHARD, schema.ROW]).select([KEY, schema.ROW, SHARD])


EMPTY = pa.table({KEY: pa.array([], pa.uint64()), schema.ROW: pa.array([], pa.int64())})


@dataclass(frozen=True)
class Winners(StateRecord):
    """Where each shard's winning rows lie (one per distinct text), and how many there are."""

    folder: str
    texts_kept: int


@register
class ExactDedup(Stage):
    name = "exact_dedup"
    inputs = (schema.ID, schema.TEXT, schema.SOURCE)
    outputs = (HASH,)
    row_positions = True
    State = Winners

    class Params(Params):
        pass

    def fit(self, ctx: FitContext) -> Winners:
        folder, kept = group_by_key(ctx, "winners", _ShardFirstRows(ctx.reader()), winners)
        return Winners(str(folder), kept)

    def summarize_state(self, state: Winners) -> dict:
        return {"texts_kept": state.texts_kept}

    def shard_state(self, state: Winners, shard: str) -> np.ndarray:
        """The positions of this shard's winning rows, sorted."""
        return np.sort(load_shard(state.folder, shard, EMPTY)[schema.ROW].to_numpy())

    def transform(self, table: pa.Table, state: np.ndarray) -> pa.Table:
        keep = np.isin(table[schema.ROW].to_numpy(), state, assume_unique=True)
        table = table.append_column(HASH, pa.array(text_hashes(table[schema.TEXT]), pa.uint64()))
        return mark_dropped(table, ~keep, "exact_duplicate")
