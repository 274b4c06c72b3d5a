"""Exact dedup: one document per normalised-text hash, the first in id order (deterministic).

Global pass as a keyed group-by (pipeline/key_groups.py): each shard reports (hash, smallest id)
pairs, the smallest id per hash wins over the whole corpus, and each shard stores only its own
winners. The transform keeps a row only if it is its hash's winner, found by binary search.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline import schema
from thresher.pipeline.key_groups import KEY, SHARD, group_by_key, load_shard
from thresher.pipeline.registry import register
from thresher.pipeline.stage import FitContext, Params, Stage, mark_dropped
from thresher.scorers.hashing import find_sorted, string_hashes

HASH = "exact_hash"


def dedup_key(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Lowercased, whitespace-collapsed text: copies differing only in case or spacing collide."""
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(text), r"\s+", " "))


def text_hashes(text: pa.Array | pa.ChunkedArray, seed: int = 0) -> np.ndarray:
    """XXH64 of each document's dedup key."""
    return string_hashes(dedup_key(text), seed)


def first_ids(keys: pa.Table) -> pa.Table:
    """The smallest id of each key."""
    return keys.group_by(KEY).aggregate([(schema.ID, "min")]).rename_columns([KEY, schema.ID])


class _ShardFirstIds:
    def __init__(self, read):
        self.read = read

    def __call__(self, shard: str) -> pa.Table:
        t = self.read(shard, columns=[schema.ID, schema.TEXT])
        return first_ids(pa.table({KEY: text_hashes(t[schema.TEXT]), schema.ID: t[schema.ID]}))


def winners(rows: pa.Table) -> pa.Table:
    """The (key, id, shard) rows holding their key's smallest id over all shards."""
    return rows.join(first_ids(rows.drop_columns([SHARD])), keys=[KEY, schema.ID], join_type="left semi")


EMPTY = pa.table({KEY: pa.array([], pa.uint64()), schema.ID: pa.array([], pa.string())})


@register
class ExactDedup(Stage):
    name = "exact_dedup"
    inputs = (schema.ID, schema.TEXT)
    outputs = (HASH,)

    class Params(Params):
        pass

    def fit(self, ctx: FitContext) -> dict:
        folder, kept = group_by_key(ctx, "winners", _ShardFirstIds(ctx.reader()), winners)
        return {"winners": str(folder), "texts_kept": kept}

    def summarize_state(self, state: dict) -> dict:
        return {"texts_kept": state["texts_kept"]}

    def shard_state(self, state: dict, shard: str) -> pa.Table:
        return load_shard(state["winners"], shard, EMPTY)

    def transform(self, table: pa.Table, state: pa.Table) -> pa.Table:
        """state: this shard's (hash, winning id) rows, sorted by hash."""
        hashes = text_hashes(table[schema.TEXT])
        pos, found = find_sorted(state[KEY].to_numpy(), hashes)
        rows = np.flatnonzero(found)
        same_id = pc.equal(state[schema.ID].take(pa.array(pos[rows])), table[schema.ID].take(pa.array(rows)))
        rows = rows[same_id.to_numpy(zero_copy_only=False)]
        # Keep the first occurrence of the winning id only, in case ids repeat.
        keep = np.zeros(len(hashes), dtype=bool)
        keep[rows[np.unique(hashes[rows], return_index=True)[1]]] = True
        table = table.append_column(HASH, pa.array(hashes, pa.uint64()))
        return mark_dropped(table, ~keep, "exact_duplicate")
