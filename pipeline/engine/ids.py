"""Ids shared by several input rows: found after ingest, then reported, refused or renamed.

Stages address rows by id (the reference split, the order of exact and near-duplicate winners,
perplexity ties), so a repeated id must not pass unnoticed. The check is a corpus-wide group-by
on the id (pipeline/toolkit/key_groups.py) over the ingest shards; each shard stores the rows whose id
repeats, ranked by (source, shard, position) within their id: rank 0 is the first occurrence.

`on_duplicate_id`: `warn` (default) keeps the ids and reports them, `error` stops the run with
examples, `suffix` renames every later occurrence to `<id>#<rank>` (or, where an input row has
that id already, the next `<id>#<n>` that none has: the ids stay unique over the whole run).
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


class _Present:
    """Which of `names` are ids of this shard."""

    def __init__(self, read, names: list[str]):
        self.read, self.names = read, names

    def __call__(self, shard: str) -> set[str]:
        ids = self.read(shard, columns=[schema.ID])[schema.ID]
        return set(pc.filter(ids, pc.is_in(ids, value_set=pa.array(self.names, pa.string()))).to_pylist())


def new_names(ctx, later: pa.Table) -> dict[tuple[str, int], str]:
    """A name for each later occurrence (id, rank): `<id>#<rank>`, or where an input row already
    has that id, `<id>#<n>` with the next n that no input row and no other renamed row has. Found
    in rounds over the shards (one in the usual case: no input id looks like a renamed one)."""
    wanted = sorted(set(zip(later[schema.ID].to_pylist(), later[RANK].to_pylist())))
    names = {(i, r): f"{i}#{r}" for i, r in wanted}
    taken: set[str] = set()  # input ids found equal to a name
    todo = list(names.values())
    while todo:
        taken |= set().union(*ctx.map(_Present(ctx.reader(), todo), list(ctx.shards)))
        used = set(names.values())
        todo = []
        for (i, r), name in names.items():
            if name in taken:
                n = r + 1
                while f"{i}#{n}" in taken or f"{i}#{n}" in used:
                    n += 1
                names[(i, r)] = f"{i}#{n}"
                used.add(names[(i, r)])
                todo.append(names[(i, r)])
    return names


class _Rename:
    """Gives this shard's later occurrences their new names; idempotent (built from the stored ids)."""

    def __init__(self, folder: Path, part, names: dict[tuple[str, int], str]):
        self.folder, self.part, self.names = folder, part, names

    def __call__(self, shard: str) -> int:
        dup = load_shard(self.folder, shard, _EMPTY)
        later = dup.filter(pc.greater(dup[RANK], 0))
        if not later.num_rows:
            return 0
        path = self.part(shard)
        table = storage.read_table(path)
        ids = np.array(table[schema.ID].to_pylist(), dtype=object)
        ids[later[schema.ROW].to_numpy()] = [self.names[(i, r)] for i, r in zip(later[schema.ID].to_pylist(),
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
        names = new_names(ctx, rows.filter(pc.greater(rows[RANK], 0)))
        summary["renamed"] = sum(ctx.map(_Rename(folder, part, names), list(ctx.shards)))
    return summary


def describe(summary: dict) -> str | None:
    """One line for the CLI summary, or None when every id is unique."""
    if not summary.get("ids"):
        return None
    done = {"warn": "kept as they are", "suffix": "later copies renamed to id#N"}[summary["mode"]]
    first = summary["examples"][0]
    return (f"warning: {summary['ids']:,} id(s) repeat across the inputs ({summary['extra_rows']:,} extra rows; "
            f"e.g. {first['id']!r} in {', '.join(first['sources'])}): {done} (on_duplicate_id)")
