"""Lean stage checkpoints: the rows are written once, at ingest (a Parquet input read in place not
even then: in_place.py); a stage stores only what it adds.

A stage's checkpoint of a shard holds, for each row it kept, the row's position in the stage's
input (`_pos`) and the columns the stage declares as outputs (a rewritten column, such as
normalize's `text`, is one of them). Every other column is the input's, unchanged, so stage k's
rows are ingest's rows taken through the composed positions, with each column from the last
stage that wrote it. A pipeline of filters and scorers then keeps one copy of the corpus, not one
per stage, and a global pass reads only the columns it asks for.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from thresher.pipeline.core import schema, storage
from thresher.pipeline.engine import in_place
from thresher.pipeline.engine.workdir import StageDir

POS = schema.POS


def delta(kept: pa.Table, positions: np.ndarray, outputs: tuple[str, ...]) -> pa.Table:
    """What a stage's checkpoint stores: the kept rows' input positions and its output columns."""
    table = pa.table({POS: pa.array(positions, pa.int64())})
    for c in outputs:
        table = table.append_column(kept.schema.field(c), kept[c])
    return table


def _rows(values, take: np.ndarray | None):
    """values.take(take), or a zero-copy slice where `take` is 0, 1, ..., k - 1: every row kept in
    order (a reweighting stage, a filter that dropped nothing or only the last rows)."""
    if take is None:
        return values
    if np.array_equal(take, np.arange(len(take))):
        return values.slice(0, len(take))
    return values.take(pa.array(take, pa.int64()))


def materialize(chain: list[StageDir], shard: str, columns: list[str] | None = None) -> pa.Table:
    """The rows of `shard` after the last stage of `chain` (chain[0] is ingest, with whole rows or
    positions into an input read in place; the others store deltas), with `columns` only when
    given. Columns keep the order a run that rewrote every row would give them: ingest's, then
    each stage's new ones in stage order."""
    want = None if columns is None else set(columns)
    found: dict[str, tuple[pa.Field, pa.ChunkedArray]] = {}
    take = None  # positions into the current level's rows of the final rows (None: all, in order)
    order: list[list[str]] = []
    for d in reversed(chain[1:]):
        names = [c for c in storage.read_schema(d.part(shard)).names if c != POS]
        order.append(names)
        fresh = [c for c in names if c not in found and (want is None or c in want)]
        part = storage.read_table(d.part(shard), columns=[POS, *fresh])  # a column asked for, from its last writer
        for c in fresh:
            found[c] = (part.schema.field(c), _rows(part[c], take))
        pos = part[POS].to_numpy()
        take = pos if take is None else pos[take]
    names, base = _ingest_rows(chain[0].part(shard), found, want, take)
    for added in reversed(order):
        names += [c for c in added if c not in names]
    fields, arrays = [], []
    for c in names:
        if c in found:
            field, array = found[c]
        elif c in base.column_names:
            field, array = base.schema.field(c), base[c]
        else:
            continue
        fields.append(field)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _ingest_rows(path, found: dict, want: set | None, take: np.ndarray | None) -> tuple[list[str], pa.Table]:
    """(ingest's column names, its rows at `take` with the columns still needed): from the
    checkpoint, and for a shard read in place (in_place.py) the text from the input file."""
    part_schema = storage.read_schema(path)
    where = in_place.source_of(part_schema)
    names = list(schema.CANONICAL.names) if where else list(part_schema.names)
    needed = [c for c in names if c not in found and (want is None or c in want)]
    if where is None:
        return names, _rows(storage.read_table(path, columns=needed), take)
    stored = [c for c in needed if c != schema.TEXT]
    part = storage.read_table(path, columns=[POS, *stored])
    pos = part[POS].to_numpy()
    rows = _rows(part.select(stored), take)
    if schema.TEXT in needed:
        text = _rows(in_place.read_text(where), pos if take is None else pos[take])
        rows = rows.add_column(needed.index(schema.TEXT), schema.CANONICAL.field(schema.TEXT), text)
    return names, rows
