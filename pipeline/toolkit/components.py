"""Connected components over Parquet, as map-reduce rounds: no machine holds the whole graph.

Min-label propagation, partitioned by node hash. Every round is a list of independent
per-partition tasks run through the caller's `map` (the pipeline's executor), reading and
writing files under `work`:

    adj/<p>/       both directions of every edge, partitioned by source node
    labels/<t>/<p> (node, label) after iteration t, partitioned by node
    msgs/<t>/<q>/  (node, candidate label) sent along edges, partitioned by target node

An iteration sends each node's label to its neighbours and keeps the minimum; it ends when no
label changes, so the number of iterations is the largest component's diameter (small for
duplicate clusters, whose edges are stars around the smallest member). The final label of a
node is the smallest node id of its component.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.core import storage
from thresher.pipeline.core.files import write_parquet
from thresher.pipeline.toolkit.key_groups import read_parts, write_partitioned


def _min_by(table: pa.Table, key: str, value: str) -> pa.Table:
    return table.group_by(key).aggregate([(value, "min")]).rename_columns([key, value])


_NO_ADJ = pa.schema([("src", pa.int64()), ("dst", pa.int64())]).empty_table()
_NO_LABELS = pa.schema([("node", pa.int64()), ("label", pa.int64())]).empty_table()


class _Adjacency:
    def __init__(self, work: Path, partitions: int):
        self.work, self.partitions = work, partitions

    def __call__(self, edge_file) -> int:
        edge_file = storage.location(edge_file)
        e = storage.read_table(edge_file)
        u, v = e["u"].to_numpy(), e["v"].to_numpy()
        name = edge_file.name
        adj = pa.table({"src": np.concatenate([u, v]), "dst": np.concatenate([v, u])})
        write_partitioned(adj, "src", self.partitions, self.work / "adj", name)
        nodes = np.unique(np.concatenate([u, v]))
        write_partitioned(pa.table({"node": nodes, "label": nodes}), "node", self.partitions,
                           self.work / "labels" / "00000", name)
        return len(u)


class _Send:
    """Each node of partition p sends its label to its neighbours."""

    def __init__(self, work: Path, partitions: int, t: int):
        self.work, self.partitions, self.t = work, partitions, t

    def __call__(self, p: int) -> int:
        labels = _min_by(read_parts(self.work / "labels" / f"{self.t:05d}" / f"{p:05d}", _NO_LABELS), "node", "label")
        adj = read_parts(self.work / "adj" / f"{p:05d}", _NO_ADJ)
        msgs = adj.join(labels, keys="src", right_keys="node").select(["dst", "label"]).rename_columns(["node", "label"])
        if msgs.num_rows:
            write_partitioned(_min_by(msgs, "node", "label"), "node", self.partitions,
                               self.work / "msgs" / f"{self.t:05d}", f"{p:05d}.parquet")
        return msgs.num_rows


class _Receive:
    """Each node of partition q keeps the smallest of its label and what its neighbours sent."""

    def __init__(self, work: Path, t: int):
        self.work, self.t = work, t

    def __call__(self, q: int) -> int:
        labels = _min_by(read_parts(self.work / "labels" / f"{self.t:05d}" / f"{q:05d}", _NO_LABELS), "node", "label")
        msgs = read_parts(self.work / "msgs" / f"{self.t:05d}" / f"{q:05d}", _NO_LABELS)
        new = _min_by(pa.concat_tables([labels, msgs]), "node", "label")
        joined = new.join(labels, keys="node", right_suffix="_old")
        changed = int(pc.sum(pc.not_equal(joined["label"], joined["label_old"])).as_py() or 0)
        if new.num_rows:
            write_parquet(new, self.work / "labels" / f"{self.t + 1:05d}" / f"{q:05d}" / "labels.parquet")
        return changed


def connected_components(
    map_fn: Callable[[Callable, list], Iterable], edge_files: list[Path], work: Path, partitions: int,
    max_iterations: int = 1000,
) -> Callable[[int], pa.Table]:
    """Label the nodes of the edges in `edge_files` (Parquet with int64 u, v); returns a reader
    of the final (node, label) table of one partition."""
    list(map_fn(_Adjacency(work, partitions), [str(f) for f in edge_files]))
    parts = list(range(partitions))
    t = 0
    while True:
        list(map_fn(_Send(work, partitions, t), parts))
        changed = sum(map_fn(_Receive(work, t), parts))
        t += 1
        if changed == 0:
            break
        if t >= max_iterations:
            raise RuntimeError(f"connected components did not converge in {max_iterations} iterations")
    final = work / "labels" / f"{t:05d}"
    return _FinalLabels(final)


class _FinalLabels:
    def __init__(self, folder: Path):
        self.folder = folder

    def __call__(self, p: int) -> pa.Table:
        return read_parts(self.folder / f"{p:05d}", _NO_LABELS)

    def all(self, partitions: int) -> Iterator[pa.Table]:
        for p in range(partitions):
            yield self(p)
