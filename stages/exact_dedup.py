"""Exact dedup: one document per normalised-text hash, chosen by a total order.

The winner of a hash is its smallest (id, source, position) row, so exactly one row survives
even when copies share an id (the same file twice among the inputs). Global pass as a keyed
group-by (pipeline/toolkit/key_groups.py): each shard reports its first row per hash, the first per hash
over the whole corpus wins, and each shard stores only its own winners' positions. The transform
keeps a row only if its position is among them.

`index:` writes the run's distinct text hashes, partitioned, for later runs; `against:` removes
the rows whose text hash is in an earlier run's index (reason `duplicate_of_earlier`), one hash
partition at a time: no task holds an earlier index whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import Field

from thresher.pipeline.core import schema, storage
from thresher.pipeline.core.files import write_parquet
from thresher.pipeline.core.stage import FitContext, LocalPath, OutputPath, Params, Stage, StateRecord, mark_dropped
from thresher.pipeline.toolkit.dedup_index import clear, open_index, write_meta
from thresher.pipeline.toolkit.key_groups import (
    KEY,
    SHARD,
    group_by_key,
    load_shard,
    partition_of,
    read_parts,
    run_starts,
    write_partitioned,
)
from thresher.scorers.hashing import text_hashes

HASH = "exact_hash"
INDEX_PARTITIONS = 16
INDEX_PARAMS = {"key": "xxh64 of the lowercased, whitespace-collapsed text"}  # what makes two hashes comparable


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


class _IndexPartition:
    """Index partition q: the distinct text hashes of the run falling in it, sorted."""

    def __init__(self, folder: str, shards: list[str], out):
        self.folder, self.shards, self.out = folder, shards, out

    def __call__(self, q: int) -> None:
        keys = []
        for shard in self.shards:  # a 1/INDEX_PARTITIONS slice of each shard's hashes is held at a time
            k = load_shard(self.folder, shard, EMPTY)[KEY].to_numpy()
            keys.append(k[partition_of(k, INDEX_PARTITIONS) == q])
        storage.save_npy(self.out / "hashes" / f"{q:05d}.npy",
                         np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.uint64))


class _ShardHashes:
    """Per shard: its rows' text hashes, partitioned as an index is."""

    def __init__(self, read, folder: Path):
        self.read, self.folder = read, folder

    def __call__(self, shard: str) -> None:
        text = self.read(shard, columns=[schema.TEXT])[schema.TEXT]
        t = pa.table({KEY: text_hashes(text), schema.ROW: np.arange(len(text), dtype=np.int64)})
        write_partitioned(t, KEY, INDEX_PARTITIONS, self.folder, f"{shard}.parquet")


class _EarlierHashes:
    """Per index partition q: the rows of each shard whose hash is in an earlier index, stored per shard."""

    def __init__(self, against: list[str], folder: Path, out: Path):
        self.against, self.folder, self.out = against, folder, out

    def __call__(self, q: int) -> int:
        earlier = np.unique(np.concatenate(
            [storage.load_npy(storage.location(where) / "hashes" / f"{q:05d}.npy") for where in self.against]))
        found = 0
        part = self.folder / f"{q:05d}"
        for f in sorted(part.glob("*.parquet")) if part.exists() else []:
            t = storage.read_table(f)
            rows = t[schema.ROW].to_numpy()[np.isin(t[KEY].to_numpy(), earlier)]
            if len(rows):
                write_parquet(pa.table({schema.ROW: rows}), self.out / f.stem / f"{q:05d}.parquet")
                found += len(rows)
        return found


@dataclass(frozen=True)
class Winners(StateRecord):
    """Where each shard's winning rows lie (one per distinct text), and how many there are; where
    each shard's rows found in earlier runs' indexes lie (with `against`)."""

    VERSION = 2
    folder: str
    texts_kept: int
    earlier: str | None = None
    earlier_rows: int = 0


class ExactDedup(Stage):
    """Exact dedup: keeps one document per normalised text.

    Texts are compared normalised (lowercase, punctuation removed, whitespace collapsed); the other
    copies are dropped as `exact_duplicate`. The document kept is the first by (id, source,
    position), so exactly one survives even when copies share an id. The global pass is a corpus-wide
    group-by on the text hash over hash partitions: no task holds a table the size of the corpus.

    Incremental dedup across runs: `index: PATH` (a folder or an s3:// / gs:// prefix) writes the
    run's distinct text hashes there after its global pass, `index.json` last; a later run's
    `against: [PATH, ...]` drops its documents whose text is in one of those runs as
    `duplicate_of_earlier`, one hash partition at a time, without reading the earlier corpus.
    """

    name = "exact_dedup"
    drop_reasons = ("exact_duplicate", "duplicate_of_earlier")
    inputs = (schema.ID, schema.TEXT, schema.SOURCE)
    outputs = (HASH,)
    row_positions = True
    State = Winners

    class Params(Params):
        index: OutputPath | None = Field(None, description=(
            "write this run's distinct text hashes here (a folder or URI) for later runs' `against:`"))
        against: list[LocalPath] = Field(default_factory=list, description=(
            "indexes of earlier runs: a row whose text is in one of them is a duplicate_of_earlier"))

    def fit(self, ctx: FitContext) -> Winners:
        p, shards = self.params, list(ctx.shards)
        for where in p.against:
            open_index(where, self.name, INDEX_PARAMS)
        folder, kept = group_by_key(ctx, "winners", _ShardFirstRows(ctx.reader()), winners)
        if p.index:
            out = storage.location(p.index)
            clear(out)
            list(ctx.map(_IndexPartition(str(folder), shards, out), list(range(INDEX_PARTITIONS))))
            write_meta(out, self.name, INDEX_PARAMS, partitions=INDEX_PARTITIONS, texts=kept)
        if not p.against:
            return Winners(str(folder), kept)
        hashes, earlier = ctx.scratch / "hashes", ctx.state_dir / "earlier"
        storage.rmtree(earlier)
        list(ctx.map(_ShardHashes(ctx.reader(), hashes), shards))
        found = sum(ctx.map(_EarlierHashes(list(p.against), hashes, earlier), list(range(INDEX_PARTITIONS))))
        return Winners(str(folder), kept, str(earlier), found)

    def summarize_state(self, state: Winners) -> dict:
        return {"texts_kept": state.texts_kept, **({"rows_in_earlier_runs": state.earlier_rows}
                                                     if state.earlier else {})}

    def shard_state(self, state: Winners, shard: str) -> tuple[np.ndarray, np.ndarray]:
        """The positions of this shard's winning rows, sorted, and of its rows earlier runs hold."""
        earlier = read_parts(storage.location(state.earlier) / shard) if state.earlier else None
        return (np.sort(load_shard(state.folder, shard, EMPTY)[schema.ROW].to_numpy()),
                earlier[schema.ROW].to_numpy() if earlier is not None else np.zeros(0, np.int64))

    def transform(self, table: pa.Table, state: tuple[np.ndarray, np.ndarray]) -> pa.Table:
        winners_, earlier = state
        rows = table[schema.ROW].to_numpy()
        table = table.append_column(HASH, pa.array(text_hashes(table[schema.TEXT]), pa.uint64()))
        table = mark_dropped(table, np.isin(rows, earlier), "duplicate_of_earlier")
        return mark_dropped(table, ~np.isin(rows, winners_, assume_unique=True), "exact_duplicate")
