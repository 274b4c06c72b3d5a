"""Exact dedup: one document per normalised-text hash, the first in id order (deterministic).

Global pass as map-reduce: each shard reports (hash, smallest id) pairs, the merge keeps the
smallest id per hash, and the transform keeps a row only if it is that smallest id.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from thresher.pipeline import schema
from thresher.pipeline.registry import register
from thresher.pipeline.stage import Params, Stage, mark_dropped

HASH = "exact_hash"


def dedup_key(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Lowercased, whitespace-collapsed text: copies differing only in case or spacing collide."""
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(text), r"\s+", " "))


def text_hashes(text: pa.Array | pa.ChunkedArray, seed: int = 0) -> np.ndarray:
    keys = dedup_key(text).to_pylist()
    return np.fromiter((xxhash.xxh3_64_intdigest(k.encode("utf-8"), seed) for k in keys),
                       dtype=np.uint64, count=len(keys))


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

    def merge(self, parts: list[pa.Table]) -> dict[int, str]:
        merged = _first_ids(*pa.concat_tables(parts).columns) if parts else None
        if merged is None:
            return {}
        return dict(zip(merged[HASH].to_pylist(), merged[schema.ID].to_pylist()))

    def transform(self, table: pa.Table, state: dict[int, str]) -> pa.Table:
        hashes = text_hashes(table[schema.TEXT])
        ids = table[schema.ID].to_pylist()
        # Keep the first occurrence of the winning id only, in case ids repeat.
        seen: set[int] = set()
        drop = np.zeros(len(ids), dtype=bool)
        for i, (h, doc_id) in enumerate(zip(hashes.tolist(), ids)):
            if state.get(h) != doc_id or h in seen:
                drop[i] = True
            else:
                seen.add(h)
        table = table.append_column(HASH, pa.array(hashes, pa.uint64()))
        return mark_dropped(table, drop, "exact_duplicate")
