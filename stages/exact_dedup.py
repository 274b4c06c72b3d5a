"""Exact dedup: one document per normalised-text hash, the first in id order (deterministic).

Global pass as map-reduce: each shard reports (hash, smallest id) pairs, the merge keeps the
smallest id per hash in a hash-sorted table, and the transform keeps a row only if it is that
smallest id, found by binary search.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline import schema
from thresher.pipeline.registry import register
from thresher.pipeline.stage import Params, Stage, mark_dropped
from thresher.scorers.hashing import find_sorted, string_hashes

HASH = "exact_hash"


def dedup_key(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Lowercased, whitespace-collapsed text: copies differing only in case or spacing collide."""
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(text), r"\s+", " "))


def text_hashes(text: pa.Array | pa.ChunkedArray, seed: int = 0) -> np.ndarray:
    """XXH64 of each document's dedup key."""
    return string_hashes(dedup_key(text), seed)


def _first_ids(hashes: pa.Array, ids: pa.Array) -> pa.Table:
    t = pa.table({HASH: hashes, schema.ID: ids})
    return t.group_by(HASH).aggregate([(schema.ID, "min")]).rename_columns([HASH, schema.ID])


@register
class ExactDedup(Stage):
    name = "exact_dedup"
    inputs = (schema.ID, schema.TEXT)
    outputs = (HASH,)

    class Params(Params):
        pass

    def partial(self, table: pa.Table) -> pa.Table:
        return _first_ids(pa.array(text_hashes(table[schema.TEXT])), table[schema.ID])

    def merge(self, parts: list[pa.Table]) -> pa.Table:
        """(hash, winning id) for every distinct text, sorted by hash."""
        if not parts:
            return pa.table({HASH: pa.array([], pa.uint64()), schema.ID: pa.array([], pa.string())})
        return _first_ids(*pa.concat_tables(parts).columns).sort_by(HASH).combine_chunks()

    def summarize_state(self, state: pa.Table) -> dict:
        return {"distinct_texts": state.num_rows}

    def transform(self, table: pa.Table, state: pa.Table) -> pa.Table:
        hashes = text_hashes(table[schema.TEXT])
        pos, found = find_sorted(state[HASH].to_numpy(), hashes)
        rows = np.flatnonzero(found)
        same_id = pc.equal(state[schema.ID].take(pa.array(pos[rows])), table[schema.ID].take(pa.array(rows)))
        rows = rows[same_id.to_numpy(zero_copy_only=False)]
        # Keep the first occurrence of the winning id only, in case ids repeat.
        keep = np.zeros(len(hashes), dtype=bool)
        keep[rows[np.unique(hashes[rows], return_index=True)[1]]] = True
        table = table.append_column(HASH, pa.array(hashes, pa.uint64()))
        return mark_dropped(table, ~keep, "exact_duplicate")
