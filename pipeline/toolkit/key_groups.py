"""Partitioned Parquet files for global passes, and a corpus-wide group-by on a 64-bit key.

The primitives (`partition_of`, `split_rows`, `write_partitioned`, `read_parts`) are what every
multi-round global pass writes and reads: MinHash band hashes, connected components, cluster
rows per shard, and `group_by_key`.

`group_by_key` is two map-reduce rounds through a FitContext: each shard writes its (key, ...)
rows split into partitions by key; each partition is reduced over all shards at once and its
result is stored per shard. A transform then loads only its own shard's slice, so no worker ever
holds a table the size of the corpus (the exact-dedup winners, the duplicate counts).

    <state_dir>/<name>/<shard>/<partition>.parquet      sorted by key
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.core import storage
from thresher.pipeline.core.files import write_parquet

KEY, SHARD = "key", "shard"
ROWS_PER_PARTITION = 20_000  # group_by_key: about this many rows per key partition (one per default shard)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
ROW_BITS = 32  # a doc index is shard ordinal << 32 | row


def doc_index(ordinal: int, rows: np.ndarray) -> np.ndarray:
    """Corpus-wide addresses of rows of one shard: one sortable int64 each, so a global pass can
    carry (shard, row) pairs through partitioned files and sorts as a single column."""
    return (np.int64(ordinal) << ROW_BITS) + np.asarray(rows, dtype=np.int64)


def doc_parts(docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard ordinal, row) of each doc index."""
    docs = np.asarray(docs, dtype=np.int64)
    return docs >> ROW_BITS, docs & ((1 << ROW_BITS) - 1)


def partitions_for(rows: int, per_partition: int, least: int, most: int) -> int:
    """How many partitions a global pass over `rows` rows uses: about `per_partition` rows each,
    bounded to [least, most]. Sized by data volume, never by the shard count: a pass's work grows
    with partitions x shards, so many small shards must not multiply its partitions too."""
    return max(least, min(most, -(-rows // per_partition)))


def partition_of(keys: np.ndarray, partitions: int) -> np.ndarray:
    """Partition of each integer key (Fibonacci hashing: sequential ids spread too)."""
    return (((keys.astype(np.uint64) * _GOLDEN) >> np.uint64(32)) % np.uint64(partitions)).astype(np.int64)


def run_starts(values: np.ndarray) -> np.ndarray:
    """True where a run of equal values begins, in an array sorted (or grouped) by value."""
    first = np.ones(len(values), dtype=bool)
    first[1:] = values[1:] != values[:-1]
    return first


def split_rows(codes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(code, its row indices in row order) for each distinct code, from one stable sort."""
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.flatnonzero(run_starts(ordered))
    for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(codes)]):
        yield int(ordered[a]), order[a:b]


def write_partitioned(table: pa.Table, key: str, partitions: int, folder: Path, name: str) -> None:
    """folder/<partition>/name for each partition of `table`'s rows by their `key`."""
    for p, rows in split_rows(partition_of(table[key].to_numpy(), partitions)):
        write_parquet(table.take(pa.array(rows)), folder / f"{p:05d}" / name)


def read_parts(folder: Path, empty: pa.Table | None = None) -> pa.Table | None:
    """Every Parquet file in `folder`, concatenated in name order (`empty` when there is none)."""
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    return pa.concat_tables([storage.read_table(f) for f in files]) if files else empty


class _Split:
    def __init__(self, shard_rows: Callable[[str], pa.Table], scratch: Path, partitions: int):
        self.shard_rows, self.scratch, self.partitions = shard_rows, scratch, partitions

    def __call__(self, shard: str) -> None:
        write_partitioned(self.shard_rows(shard), KEY, self.partitions, self.scratch, f"{shard}.parquet")


class _Reduce:
    def __init__(self, reduce: Callable[[pa.Table], pa.Table], scratch: Path, out: Path):
        self.reduce, self.scratch, self.out = reduce, scratch, out

    def __call__(self, partition: int) -> int:
        files = sorted((self.scratch / f"{partition:05d}").glob("*.parquet"))
        tables = []
        for f in files:  # the shard is the file's name
            t = storage.read_table(f)
            tables.append(t.append_column(SHARD, pa.repeat(f.stem, t.num_rows)))
        if not tables:
            return 0
        result = self.reduce(pa.concat_tables(tables)).sort_by(KEY)
        shard = pc.dictionary_encode(result[SHARD].combine_chunks())
        result = result.drop_columns([SHARD])
        for code, rows in split_rows(shard.indices.to_numpy()):
            folder = self.out / shard.dictionary[code].as_py()
            write_parquet(result.take(pa.array(rows)), folder / f"{partition:05d}.parquet")
        return result.num_rows


def group_by_key(ctx, name: str, shard_rows: Callable[[str], pa.Table],
                 reduce: Callable[[pa.Table], pa.Table]) -> tuple[Path, int]:
    """shard_rows(shard): that shard's rows with a uint64 `key` column. reduce(rows of one key
    partition from every shard, with a `shard` column): the rows to store, `shard` kept. Both
    picklable. Returns the folder of the per-shard results and how many rows were stored."""
    partitions = partitions_for(ctx.rows, ROWS_PER_PARTITION, 1, 64)
    scratch, out = ctx.scratch / name, ctx.state_dir / name
    storage.rmtree(out)
    list(ctx.map(_Split(shard_rows, scratch, partitions), list(ctx.shards)))
    stored = sum(ctx.map(_Reduce(reduce, scratch, out), list(range(partitions))))
    return out, stored


def load_shard(folder: str | Path, shard: str, empty: pa.Table) -> pa.Table:
    """One shard's stored rows, sorted by key (`empty` when the shard has none)."""
    return read_parts(storage.location(folder) / shard, empty).sort_by(KEY).combine_chunks()
