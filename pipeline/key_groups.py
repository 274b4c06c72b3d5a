"""A corpus-wide group-by on a 64-bit key, whose results go back to the shards that hold each key.

Two map-reduce rounds through a FitContext: each shard writes its (key, ...) rows split into
partitions by key; each partition is reduced over all shards at once and its result is stored
per shard. A transform then loads only its own shard's slice, so no worker ever holds a table
the size of the corpus (the exact-dedup winners, the duplicate counts).

    <state_dir>/<name>/<shard>/<partition>.parquet      sorted by key
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.pipeline.io import write_parquet

KEY, SHARD = "key", "shard"


class _Split:
    def __init__(self, shard_rows: Callable[[str], pa.Table], scratch: Path, partitions: int):
        self.shard_rows, self.scratch, self.partitions = shard_rows, scratch, partitions

    def __call__(self, shard: str) -> None:
        t = self.shard_rows(shard)
        part = t[KEY].to_numpy() % np.uint64(self.partitions)
        for p in np.unique(part):
            write_parquet(t.filter(pa.array(part == p)), self.scratch / f"{int(p):05d}" / f"{shard}.parquet")


class _Reduce:
    def __init__(self, reduce: Callable[[pa.Table], pa.Table], scratch: Path, out: Path):
        self.reduce, self.scratch, self.out = reduce, scratch, out

    def __call__(self, partition: int) -> int:
        files = sorted((self.scratch / f"{partition:05d}").glob("*.parquet"))
        if not files:
            return 0
        tables = []
        for f in files:  # the shard is the file's name
            t = pq.read_table(f)
            tables.append(t.append_column(SHARD, pa.repeat(f.stem, t.num_rows)))
        result = self.reduce(pa.concat_tables(tables))
        if result.num_rows == 0:
            return 0
        # One sort by (shard, key), then each shard's rows are one slice.
        shard = pc.dictionary_encode(result[SHARD].combine_chunks())
        codes = shard.indices.to_numpy()
        order = np.lexsort((result[KEY].to_numpy(), codes))
        codes = codes[order]
        result = result.drop_columns([SHARD]).take(pa.array(order))
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(codes)]):
            name = shard.dictionary[codes[a]].as_py()
            write_parquet(result.slice(a, b - a), self.out / name / f"{partition:05d}.parquet")
        return result.num_rows


def group_by_key(ctx, name: str, shard_rows: Callable[[str], pa.Table],
                 reduce: Callable[[pa.Table], pa.Table]) -> tuple[Path, int]:
    """shard_rows(shard): that shard's rows with a uint64 `key` column. reduce(rows of one key
    partition from every shard, with a `shard` column): the rows to store, `shard` kept. Both
    picklable. Returns the folder of the per-shard results and how many rows were stored."""
    partitions = max(1, min(len(ctx.shards), 64))
    scratch, out = ctx.scratch / name, ctx.state_dir / name
    shutil.rmtree(out, ignore_errors=True)
    list(ctx.map(_Split(shard_rows, scratch, partitions), list(ctx.shards)))
    stored = sum(ctx.map(_Reduce(reduce, scratch, out), list(range(partitions))))
    return out, stored


def load_shard(folder: str | Path, shard: str, empty: pa.Table) -> pa.Table:
    """One shard's stored rows, sorted by key (`empty` when the shard has none)."""
    files = sorted((Path(folder) / shard).glob("*.parquet"))
    if not files:
        return empty
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by(KEY).combine_chunks()
