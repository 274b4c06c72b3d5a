"""Near-duplicate clustering: MinHash signatures, LSH banding, verified candidates, components.

The global pass is map-reduce rounds over files in the stage's scratch folder (Scratch), so no
task and not the driver ever holds the corpus, the band table or the duplicate graph whole. Each
round is a class of its own, callable on one work item, so it can be tested alone:
  1. SignShards, per shard: signatures and shingle sets from one pass over the shingles (both kept
     as .npy for verification: no document's shingles are hashed twice), band hashes partitioned
     by hash; a row is addressed by its doc index (shard ordinal, row) throughout;
  2. VerifiedCandidates, per band partition: rows with equal band hash become candidate
     edges; an edge is kept only if its exact shingle Jaccard (from the stored sets) reaches
     `threshold`;
  3. connected components by partitioned min-label propagation (pipeline/components.py);
  4. GroupByLabel: labels regrouped so that each component lies in one partition;
  5. ClusterRows, per label partition: the representative is the first member by (id, source,
     position), as in exact_dedup; cluster rows are written per shard, keyed by position (ids
     may repeat), so each transform loads only its own shard's rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from thresher.pipeline import schema, storage
from thresher.pipeline.io import write_parquet
from thresher.pipeline.registry import register
from thresher.pipeline.stage import Columns, FitContext, Params, Stage, StateRecord, mark_dropped
from thresher.pipeline.key_groups import doc_index, doc_parts, read_parts, run_starts, split_rows, write_partitioned
from thresher.pipeline.components import connected_components
from thresher.scorers.minhash import (
    band_hashes,
    candidate_pairs,
    optimal_bands,
    pair_jaccard,
    signatures_and_sets,
    take_sets,
)

CLUSTER, SIZE, IS_REP, WEIGHT = "dup_cluster", "dup_cluster_size", "dup_is_rep", "dedup_weight"
_EDGES_PER_PARTITION = 2_000_000  # connected-components partitions hold about this many edges
SURE_Z = 4.0  # standard errors of the signature estimate that decide a pair without its exact Jaccard


class MinHashParams(Params):
    num_perm: int = Field(128, ge=8, le=1024)
    ngram: int = Field(5, ge=1, le=32, description="word n-gram shingles")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity of a duplicate")
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    # Candidates are verified, so a false positive costs one check while a false negative is a
    # duplicate kept: the banding leans to recall (at threshold 0.8: 14 bands of 9 rows, 99.9%
    # of pairs at J = 0.9 become candidates; datasketch's 0.5/0.5 gives 9 x 13 and 93%).
    false_positive_weight: float = Field(0.1, ge=0.0)
    false_negative_weight: float = Field(0.9, ge=0.0)
    seed: int = Field(1, ge=0, description="datasketch's MinHash seed")
    scheme: Literal["legacy", "affine64"] = "legacy"
    verify: Literal["auto", "exact", "signature", "none"] = Field(
        "auto", description="check candidate pairs: exact shingle Jaccard where the signature estimate is "
                            "not decisive (auto), exact for all, signature agreement alone, or not at all")
    policy: Literal["remove", "reweight"] = "remove"
    partitions: int = Field(16, ge=1, le=4096, description="band-hash partitions of the group-by")

    @model_validator(mode="after")
    def _bands_rows(self):
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither (then they are chosen from threshold)")
        if self.bands and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self

    def banding(self) -> tuple[int, int]:
        if self.bands:
            return self.bands, self.rows
        return optimal_bands(self.threshold, self.num_perm, self.false_positive_weight, self.false_negative_weight)


@dataclass(frozen=True)
class Scratch:
    """Where the rounds leave their files, under the global pass's scratch folder."""

    root: Path

    def signatures(self, shard: str) -> Path:
        return self.root / "sig" / f"{shard}.npy"

    def sets(self, shard: str) -> tuple[Path, Path]:
        """(values, offsets) of the shard's shingle sets."""
        return self.root / "sets" / f"{shard}.values.npy", self.root / "sets" / f"{shard}.offsets.npy"

    def ids(self, shard: str) -> Path:
        return self.root / "ids" / f"{shard}.parquet"

    @property
    def bands(self) -> Path:  # bands/<partition>/<shard>.parquet
        return self.root / "bands"

    @property
    def edges(self) -> Path:  # edges/<band partition>.parquet
        return self.root / "edges"

    @property
    def components(self) -> Path:
        return self.root / "cc"

    @property
    def by_label(self) -> Path:  # bylabel/<label partition>/<source partition>.parquet
        return self.root / "bylabel"

    def make(self) -> None:
        """The folders the first two rounds write into (the later ones make their own)."""
        for sub in ("sig", "sets", "ids", "bands", "edges"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)


class SignShards:
    """Round 1, per shard: MinHash signatures, the (id, source) of each row, and the band hashes
    of every doc, partitioned by band hash. `banding`: (bands, rows), resolved once by the driver."""

    def __init__(self, p: MinHashParams, read, scratch: Scratch, ordinals: dict[str, int], banding: tuple[int, int]):
        self.p, self.read, self.scratch, self.ordinals, self.banding = p, read, scratch, ordinals, banding

    def __call__(self, shard: str) -> int:
        p = self.p
        table = self.read(shard)
        sig, values, offsets = signatures_and_sets(table[schema.TEXT], p.num_perm, p.seed, p.ngram, p.scheme)
        if p.scheme == "legacy":
            sig = sig.astype(np.uint32)  # legacy values are 32-bit
        storage.save_npy(self.scratch.signatures(shard), sig)
        if p.verify in ("auto", "exact"):
            for path, array in zip(self.scratch.sets(shard), (values, offsets)):
                storage.save_npy(path, array)
        write_parquet(table.select([schema.ID, schema.SOURCE]), self.scratch.ids(shard))
        bands, rows = self.banding
        bh = band_hashes(sig.astype(np.uint64), bands, rows)  # [n, bands]
        n = len(sig)
        doc = doc_index(self.ordinals[shard], np.arange(n))
        t = pa.table({"bhash": bh.reshape(-1), "doc": np.repeat(doc, bands)})
        write_partitioned(t, "bhash", p.partitions, self.scratch.bands, f"{shard}.parquet")
        return n


class VerifiedCandidates:
    """Round 2, per band partition: docs that share a band hash, verified against the signatures
    (and the exact shingle Jaccard), written as edges."""

    def __init__(self, p: MinHashParams, scratch: Scratch, shards: list[str]):
        self.p, self.scratch, self.shards = p, scratch, shards
        self._sigs: dict[int, np.ndarray] = {}

    def _sig(self, ordinal: int) -> np.ndarray:
        if ordinal not in self._sigs:
            self._sigs[ordinal] = storage.load_npy(self.scratch.signatures(self.shards[ordinal]), mmap=True)
        return self._sigs[ordinal]

    def _rows(self, docs: np.ndarray) -> np.ndarray:
        out = np.empty((len(docs), self.p.num_perm), dtype=np.uint64)
        shard_of, row_of = doc_parts(docs)
        for o, rows in split_rows(shard_of):
            out[rows] = self._sig(o)[row_of[rows]]
        return out

    def __call__(self, partition: int) -> int:
        t = read_parts(self.scratch.bands / f"{partition:05d}")
        if t is None:
            return 0
        u, v = self._verified(*candidate_pairs(t["bhash"].to_numpy(), t["doc"].to_numpy()))
        if len(u):
            write_parquet(pa.table({"u": u, "v": v}), self.scratch.edges / f"{partition:05d}.parquet")
        return len(u)

    def _verified(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pairs that pass `verify`. The signature agreement estimates Jaccard with standard
        error sqrt(J(1-J)/num_perm): a pair more than SURE_Z of them below the threshold is a
        non-duplicate for every mode; with `auto` a pair as far above it is a duplicate, and only
        the pairs in between get the exact Jaccard of their stored shingle sets (`exact`: all)."""
        p = self.p
        if p.verify == "none" or len(u) == 0:
            return u, v
        estimate = (self._rows(u) == self._rows(v)).mean(axis=1)
        if p.verify == "signature":
            keep = estimate >= p.threshold
            return u[keep], v[keep]
        margin = SURE_Z * math.sqrt(p.threshold * (1 - p.threshold) / p.num_perm)
        sure = estimate >= p.threshold + margin if p.verify == "auto" else np.zeros(len(u), bool)
        check = np.flatnonzero((estimate >= p.threshold - margin) & ~sure)
        if len(check):
            docs = np.unique(np.concatenate([u[check], v[check]]))
            values, offsets = self._shingle_sets(docs)
            jaccard = pair_jaccard(values, offsets, np.searchsorted(docs, u[check]), np.searchsorted(docs, v[check]))
            sure[check[jaccard >= p.threshold]] = True
        return u[sure], v[sure]

    def _shingle_sets(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stored shingle sets of the sorted `docs`, in their order (each shard's rows are one run)."""
        shard_of, row_of = doc_parts(docs)
        parts, sizes = [], [np.zeros(1, np.int64)]
        for o, rows in split_rows(shard_of):
            values, offsets = (storage.load_npy(path, mmap=True) for path in self.scratch.sets(self.shards[o]))
            v, off = take_sets(values, offsets, row_of[rows])
            parts.append(v)
            sizes.append(np.diff(off))
        return np.concatenate(parts), np.cumsum(np.concatenate(sizes))


def _ids_of(scratch: Scratch, shards: list[str], docs: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """The (ids, sources) of `docs`."""
    shard_of, row_of = doc_parts(docs)
    ids, sources = np.empty(len(docs), dtype=object), np.empty(len(docs), dtype=object)
    for o, rows in split_rows(shard_of):
        t = storage.read_table(scratch.ids(shards[o])).take(pa.array(row_of[rows]))
        ids[rows], sources[rows] = t[schema.ID].to_pylist(), t[schema.SOURCE].to_pylist()
    return pa.array(ids.tolist(), type=pa.string()), pa.array(sources.tolist(), type=pa.string())


def clusters_from_labels(nodes: np.ndarray, labels: np.ndarray, ids: pa.Array, sources: pa.Array) -> pa.Table:
    """(id, cluster = the representative's id, size, is_rep, doc) for the members of components
    given as node -> component label (every member of a component must be present). The
    representative is the first member by (id, source, doc), so exactly one per cluster even when
    members share an id."""
    t = pa.table({"label": labels, schema.ID: ids, schema.SOURCE: sources, "doc": nodes}).sort_by(
        [("label", "ascending"), (schema.ID, "ascending"), (schema.SOURCE, "ascending"), ("doc", "ascending")])
    label = t["label"].to_numpy()
    first = run_starts(label)
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, len(label)))
    group = np.cumsum(first) - 1
    rep_ids = t[schema.ID].take(pa.array(starts))
    return pa.table({
        schema.ID: t[schema.ID],
        CLUSTER: rep_ids.take(pa.array(group)),
        SIZE: pa.array(sizes[group].astype(np.int32)),
        IS_REP: pa.array(first),
        "doc": t["doc"],
    })


class GroupByLabel:
    """Round 4, per components partition: final labels re-partitioned by component label, so
    that a component lies in one partition."""

    def __init__(self, final_labels, scratch: Scratch, partitions: int):
        self.final_labels, self.scratch, self.partitions = final_labels, scratch, partitions

    def __call__(self, p: int) -> int:
        labels = self.final_labels(p)
        write_partitioned(labels, "label", self.partitions, self.scratch.by_label, f"{p:05d}.parquet")
        return labels.num_rows


class ClusterRows:
    """Round 5, per label partition: the cluster rows of its components, written per shard."""

    def __init__(self, scratch: Scratch, shards: list[str], out: Path):
        self.scratch, self.shards, self.out = scratch, shards, out

    def __call__(self, r: int) -> int:
        t = read_parts(self.scratch.by_label / f"{r:05d}")
        if t is None:
            return 0
        nodes = t["node"].to_numpy()
        clusters = clusters_from_labels(nodes, t["label"].to_numpy(), *_ids_of(self.scratch, self.shards, nodes))
        shard_of, row_of = doc_parts(clusters["doc"].to_numpy())
        clusters = pa.table({schema.ROW: row_of, CLUSTER: clusters[CLUSTER],
                             SIZE: clusters[SIZE], IS_REP: clusters[IS_REP]})
        for o, rows in split_rows(shard_of):
            write_parquet(clusters.take(pa.array(rows)), self.out / self.shards[o] / f"{r:05d}.parquet")
        return clusters.num_rows


@dataclass(frozen=True)
class Clusters(StateRecord):
    """Where each shard's cluster rows (position, cluster, size, is_rep) lie: rows of no cluster
    are unique documents."""

    folder: str


_NO_CLUSTERS = pa.table({schema.ROW: pa.array([], pa.int64()), CLUSTER: pa.array([], pa.string()),
                         SIZE: pa.array([], pa.int32()), IS_REP: pa.array([], pa.bool_())})


@register
class MinHashDedup(Stage):
    name = "minhash_dedup"
    inputs = (schema.ID, schema.TEXT, schema.SOURCE)
    outputs = (CLUSTER, SIZE, IS_REP)
    Params = MinHashParams
    row_positions = True  # cluster rows are addressed by position: ids may repeat
    State = Clusters

    @classmethod
    def columns_for(cls, params: MinHashParams) -> Columns:
        """`policy: reweight` keeps every row and adds the FedRW weight column."""
        cols = super().columns_for(params)
        if params.policy == "reweight":
            cols = replace(cols, outputs=cols.outputs + (WEIGHT,), weights=cols.weights + (WEIGHT,))
        return cols

    def fit(self, ctx: FitContext) -> Clusters:
        """Signatures and band hashes per shard; verified candidate edges per band partition;
        connected components; components regrouped by label; cluster rows stored per shard
        (a transform loads only the rows of its own shard)."""
        p, scratch, shards = self.params, Scratch(ctx.scratch), list(ctx.shards)
        scratch.make()
        ordinals = {s: i for i, s in enumerate(shards)}
        list(ctx.map(SignShards(p, ctx.reader(), scratch, ordinals, p.banding()), shards))
        list(ctx.map(VerifiedCandidates(p, scratch, shards), list(range(p.partitions))))
        out = ctx.state_dir / "clusters"
        storage.rmtree(out)
        out.mkdir(parents=True)
        edge_files = sorted(scratch.edges.glob("*.parquet"))
        if edge_files:
            # The duplicate graph is usually small: partition it only as far as its size asks.
            edges = sum(storage.parquet_rows(f) for f in edge_files)
            n_parts = max(1, min(p.partitions, edges // _EDGES_PER_PARTITION + 1))
            final = connected_components(ctx.map, edge_files, scratch.components, n_parts)
            parts = list(range(n_parts))
            list(ctx.map(GroupByLabel(final, scratch, n_parts), parts))
            list(ctx.map(ClusterRows(scratch, shards, out), parts))
        return Clusters(str(out))

    def shard_state(self, state: Clusters, shard: str) -> pa.Table:
        return read_parts(storage.location(state.folder) / shard, _NO_CLUSTERS)

    def transform(self, table: pa.Table, state: pa.Table) -> pa.Table:
        idx = pc.index_in(table[schema.ROW], value_set=state[schema.ROW])
        found = pc.is_valid(idx)
        take = pc.fill_null(idx, 0)
        if state.num_rows:
            cluster = pc.if_else(found, state[CLUSTER].take(take), table[schema.ID])
            size = pc.if_else(found, state[SIZE].take(take), pa.scalar(1, pa.int32()))
            is_rep = pc.if_else(found, state[IS_REP].take(take), True)
        else:
            cluster, size = table[schema.ID], pa.array(np.ones(table.num_rows, np.int32))
            is_rep = pa.array(np.ones(table.num_rows, bool))
        table = table.append_column(CLUSTER, cluster).append_column(SIZE, size).append_column(IS_REP, is_rep)
        if self.params.policy == "remove":
            return mark_dropped(table, ~np.asarray(is_rep, dtype=bool), "near_duplicate")
        sizes = np.asarray(size, dtype=np.float64)
        # FedRW's 1/ln(C+1), scaled so that a unique document weighs 1.
        return table.append_column(WEIGHT, pa.array(math.log(2.0) / np.log(sizes + 1.0)))
