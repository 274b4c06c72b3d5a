"""Ids shared by several input rows: found after ingest, then reported, refused or renamed.

Stages address rows by id (the reference split, the order of exact and near-duplicate winners,
perplexity ties), so a repeated id must not pass unnoticed. The check is a corpus-wide group-by
on the id (pipeline/toolkit/key_groups.py) over the ingest shards; each shard stores the rows whose id
repeats, ranked by (source, shard, position) within their id: rank 0 is the first occurrence.

`on_duplicate_id`: `warn` (default) keeps the ids and reports them, `error` stops the run with
examples, `suffix` renames every later occurrence to `<id>#<rank>`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.core import schema, storage
from thresher.pipeline.core.files import InputError, write_parquet
from thresher.pipeline.toolkit.key_groups import KEY, SHARD, group_by_key, load_shard, run_starts
from thresher.scorers.hashing import string_hashes

RANK = "rank"
_EMPTY = pa.table({KEY: pa.array([], pa.uint64()), schema.ID: pa.array([], pa.string()),
                   schema.SOURCE: pa.array([], pa.string()), schema.ROW: pa.array([], pa.int64()),
                   RANK: pa.array([], pa.int64())})


class _ShardIds:
    def __init__(self, read):
        self.read = read

    def __call__(self, shard: str) -> pa.Table:
        t = self.read(shard, columns=[schema.ID, schema.SOURCE])
        return pa.table({KEY: string_hashes(t[schema.ID]), schema.ID: t[schema.ID], schema.SOURCE: t[schema.SOURCE],
                         schema.ROW: np.arange(t.num_rows, dtype=np.int64)})


def repeated(rows: pa.Table) -> pa.Table:
    """The rows whose id occurs more than once, each with its rank among its id's rows."""
    counts = rows.group_by(schema.ID).aggregate([(schema.ID, "count")])
    ids = counts.filter(pc.greater(counts[f"{schema.ID}_count"], 1))[schema.ID]
    rows = rows.filter(pc.is_in(rows[schema.ID], value_set=ids)).sort_by(
        [(schema.ID, "ascending"), (schema.SOURCE, "ascending"), (SHARD, "ascending"), (schema.ROW, "ascending")])
    codes = pc.dictionary_encode(rows[schema.ID].combine_chunks()).indices.to_numpy() if rows.num_rows else np.zeros(0)
    first = run_starts(codes)
    starts = np.flatnonzero(first)
    rank = np.arange(len(codes)) - starts[np.cumsum(first) - 1]
    return rows.append_column(RANK, pa.array(rank, pa.int64()))


class _Rename:
    """Gives this shard's later occurrences `<id>#<rank>`; idempotent (built from the stored ids)."""

    def __init__(self, folder: Path, part):
        self.folder, self.part = folder, part

    def __call__(self, shard: str) -> int:
        dup = load_shard(self.folder, shard, _EMPTY)
        later = dup.filter(pc.greater(dup[RANK], 0))
        if not later.num_rows:
            return 0
        path = self.part(shard)
        table = storage.read_table(path)
        ids = np.array(table[schema.ID].to_pylist(), dtype=object)
        ids[later[schema.ROW].to_numpy()] = [f"{i}#{r}" for i, r in zip(later[schema.ID].to_pylist(),
                                                                          later[RANK].to_pylist())]
        col = table.schema.get_field_index(schema.ID)
        write_parquet(table.set_column(col, table.schema.field(col), pa.array(ids.tolist(), pa.string())), path)
        return later.num_rows


def check_ids(ctx, mode: str, part) -> dict:
    """Finds repeated ids over ctx.shards; `part(shard)` is the path of an ingest shard. Returns the
    summary for the manifest; raises InputError with examples when mode is `error`."""
    folder, stored = group_by_key(ctx, "duplicate_ids", _ShardIds(ctx.reader()), repeated)
    rows = pa.concat_tables([load_shard(folder, s, _EMPTY) for s in ctx.shards] or [_EMPTY]) if stored else _EMPTY
    firsts = rows.filter(pc.equal(rows[RANK], 0)).sort_by(schema.ID)
    examples = []
    for doc_id in firsts[schema.ID].to_pylist()[:5]:
        mine = rows.filter(pc.equal(rows[schema.ID], doc_id)).sort_by([(RANK, "ascending")])
        examples.append({"id": doc_id, "rows": mine.num_rows, "sources": sorted(set(mine[schema.SOURCE].to_pylist()))})
    summary = {"mode": mode, "ids": firsts.num_rows, "extra_rows": rows.num_rows - firsts.num_rows,
               "examples": examples}
    if firsts.num_rows and mode == "error":
        shown = "; ".join(f"{e['id']!r} x{e['rows']} in {', '.join(e['sources'])}" for e in examples)
        raise InputError(f"{firsts.num_rows:,} id(s) occur more than once across the inputs ({shown}); give each "
                         "document its own id, or set `on_duplicate_id: suffix` (rename later copies to id#N) "
                         "or `warn` (keep them)")
    if mode == "suffix" and summary["extra_rows"]:
        summary["renamed"] = sum(ctx.map(_Rename(folder, part), list(ctx.shards)))
    return summary


def describe(summary: dict) -> str | None:
    """One line for the CLI summary, or None when every id is unique."""
    if not summary.get("ids"):
        return None
    done = {"warn": "kept as they are", "suffix": "later copies renamed to id#N"}[summary["mode"]]
    first = summary["examples"][0]
    return (f"warning: {summary['ids']:,} id(s) repeat across the inputs ({summary['extra_rows']:,} extra rows; "
            f"e.g. {first['id']!r} in {', '.join(first['sources'])}): {done} (on_duplicate_id)")
