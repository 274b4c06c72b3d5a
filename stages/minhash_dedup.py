"""Near-duplicate clustering: MinHash signatures, LSH banding, verified candidates, components.

The global pass is three map-reduce rounds over files in the stage's scratch folder, so only
signatures and band hashes are in flight, never the corpus:
  1. per shard: signatures (kept as .npy for verification), band hashes partitioned by hash;
  2. per band partition: rows with equal (band, hash) become candidate edges; an edge is kept
     only if its exact shingle Jaccard reaches `threshold` (signatures screen first);
  3. on the driver: connected components of the (few) verified edges; the representative of a
     cluster is its smallest id, as in exact_dedup. The cluster table is written per shard, so
     each transform loads only the rows of its own shard.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from thresher.pipeline import schema
from thresher.pipeline.io import write_parquet
from thresher.pipeline.registry import register
from thresher.pipeline.stage import FitContext, Params, Stage, mark_dropped
from thresher.scorers.minhash import (
    band_hashes,
    candidate_pairs,
    connected_components,
    exact_jaccard,
    optimal_bands,
    shingle_hash_sets,
    signatures,
)

CLUSTER, SIZE, IS_REP, WEIGHT = "dup_cluster", "dup_cluster_size", "dup_is_rep", "dedup_weight"
_ROW_BITS = 32  # doc index = shard ordinal << 32 | row


class MinHashParams(Params):
    num_perm: int = Field(128, ge=8, le=1024)
    ngram: int = Field(5, ge=1, le=32, description="word n-gram shingles")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity of a duplicate")
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    false_positive_weight: float = Field(0.5, ge=0.0)
    false_negative_weight: float = Field(0.5, ge=0.0)
    seed: int = Field(1, ge=0, description="datasketch's MinHash seed")
    scheme: Literal["legacy", "affine64"] = "legacy"
    verify: Literal["exact", "signature", "none"] = Field(
        "exact", description="check candidate pairs: exact shingle Jaccard, signature agreement, or not at all")
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


class _SignShard:
    """Round 1: signatures + partitioned band hashes of one shard."""

    def __init__(self, p: MinHashParams, read, scratch: Path, ordinals: dict[str, int]):
        self.p, self.read, self.scratch, self.ordinals = p, read, scratch, ordinals

    def __call__(self, shard: str) -> int:
        p = self.p
        table = self.read(shard)
        sig, _ = signatures(table[schema.TEXT], p.num_perm, p.seed, p.ngram, p.scheme)
        if p.scheme == "legacy":
            sig = sig.astype(np.uint32)  # legacy values are 32-bit
        np.save(self.scratch / "sig" / f"{shard}.npy", sig)
        write_parquet(table.select([schema.ID]), self.scratch / "ids" / f"{shard}.parquet")
        bands, rows = p.banding()
        bh = band_hashes(sig.astype(np.uint64), bands, rows)  # [n, bands]
        n = len(sig)
        doc = (np.int64(self.ordinals[shard]) << _ROW_BITS) + np.arange(n, dtype=np.int64)
        band = np.tile(np.arange(bands, dtype=np.uint16), n)
        bhash = bh.reshape(-1)
        docs = np.repeat(doc, bands)
        part = (bhash % np.uint64(p.partitions)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        cuts = np.searchsorted(part[order], np.arange(p.partitions + 1))
        for k in range(p.partitions):
            sel = order[cuts[k]:cuts[k + 1]]
            if len(sel):
                t = pa.table({"band": band[sel], "bhash": bhash[sel], "doc": docs[sel]})
                write_parquet(t, self.scratch / "bands" / f"{k:05d}" / f"{shard}.parquet")
        return n


class _Candidates:
    """Round 2: candidate edges of one band partition, verified against the signatures."""

    def __init__(self, p: MinHashParams, scratch: Path, shards: list[str], read):
        self.p, self.scratch, self.shards, self.read = p, scratch, shards, read
        self._sigs: dict[int, np.ndarray] = {}

    def _sig(self, ordinal: int) -> np.ndarray:
        if ordinal not in self._sigs:
            self._sigs[ordinal] = np.load(self.scratch / "sig" / f"{self.shards[ordinal]}.npy", mmap_mode="r")
        return self._sigs[ordinal]

    def _rows(self, docs: np.ndarray) -> np.ndarray:
        out = np.empty((len(docs), self.p.num_perm), dtype=np.uint64)
        shard_of, row_of = docs >> _ROW_BITS, docs & ((1 << _ROW_BITS) - 1)
        for o in np.unique(shard_of):
            sel = shard_of == o
            out[sel] = self._sig(int(o))[row_of[sel]]
        return out

    def __call__(self, partition: int) -> tuple[np.ndarray, np.ndarray]:
        folder = self.scratch / "bands" / f"{partition:05d}"
        files = sorted(folder.glob("*.parquet")) if folder.exists() else []
        if not files:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        t = pa.concat_tables([pq.read_table(f) for f in files])
        u, v = candidate_pairs(t["band"].to_numpy(), t["bhash"].to_numpy(), t["doc"].to_numpy())
        if self.p.verify == "none":
            return u, v
        # Signature agreement first (cheap, generous margin), then exact Jaccard on what is left.
        margin = 0.0 if self.p.verify == "signature" else 0.15
        similar = (self._rows(u) == self._rows(v)).mean(axis=1) >= self.p.threshold - margin
        u, v = u[similar], v[similar]
        if self.p.verify == "exact" and len(u):
            sets = self._shingle_sets(np.unique(np.concatenate([u, v])))
            keep = np.array([exact_jaccard(sets[a], sets[b]) >= self.p.threshold
                             for a, b in zip(u.tolist(), v.tolist())], dtype=bool)
            u, v = u[keep], v[keep]
        return u, v

    def _shingle_sets(self, docs: np.ndarray) -> dict[int, np.ndarray]:
        out = {}
        shard_of, row_of = docs >> _ROW_BITS, docs & ((1 << _ROW_BITS) - 1)
        for o in np.unique(shard_of):
            sel = shard_of == o
            text = self.read(self.shards[int(o)], columns=[schema.TEXT])[schema.TEXT].take(pa.array(row_of[sel]))
            out.update(zip(docs[sel].tolist(), shingle_hash_sets(text, self.p.ngram)))
        return out


def _ids_of(scratch: Path, shards: list[str], docs: np.ndarray) -> pa.Array:
    shard_of, row_of = docs >> _ROW_BITS, docs & ((1 << _ROW_BITS) - 1)
    out = np.empty(len(docs), dtype=object)
    for o in np.unique(shard_of):
        sel = shard_of == o
        ids = pq.read_table(scratch / "ids" / f"{shards[int(o)]}.parquet")[schema.ID]
        out[sel] = ids.take(pa.array(row_of[sel])).to_pylist()
    return pa.array(out.tolist(), type=pa.string())


def clusters_from_edges(u: np.ndarray, v: np.ndarray, ids_of) -> pa.Table:
    """(id, cluster = smallest id, size, is_rep, doc) for every document in a non-trivial component."""
    nodes, inv = np.unique(np.concatenate([u, v]), return_inverse=True)
    labels = connected_components(inv[: len(u)], inv[len(u):], len(nodes))
    ids = ids_of(nodes)
    t = pa.table({"label": labels, schema.ID: ids, "doc": nodes}).sort_by(
        [("label", "ascending"), (schema.ID, "ascending")])
    label = t["label"].to_numpy()
    first = np.ones(len(label), dtype=bool)
    first[1:] = label[1:] != label[:-1]
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


@register
class MinHashDedup(Stage):
    name = "minhash_dedup"
    inputs = (schema.ID, schema.TEXT)
    outputs = (CLUSTER, SIZE, IS_REP)
    Params = MinHashParams

    def fit(self, ctx: FitContext) -> dict:
        p, scratch, shards = self.params, ctx.scratch, list(ctx.shards)
        for sub in ("sig", "ids", "bands"):
            (scratch / sub).mkdir(parents=True, exist_ok=True)
        ordinals = {s: i for i, s in enumerate(shards)}
        list(ctx.map(_SignShard(p, ctx.reader(), scratch, ordinals), shards))
        us, vs = [], []
        for u, v in ctx.map(_Candidates(p, scratch, shards, ctx.reader()), list(range(p.partitions))):
            us.append(u)
            vs.append(v)
        u, v = np.concatenate(us), np.concatenate(vs)
        # The cluster table is stored per shard, so a transform loads only its own shard's rows.
        out = ctx.state_dir / "clusters"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        if len(u):
            clusters = clusters_from_edges(u, v, lambda docs: _ids_of(scratch, shards, docs))
            shard_of = pc.shift_right(clusters["doc"], _ROW_BITS).to_numpy()
            for o in np.unique(shard_of):
                part = clusters.filter(pa.array(shard_of == o)).drop_columns(["doc"])
                write_parquet(part, out / f"{shards[int(o)]}.parquet")
        return {"clusters": str(out)}

    def shard_state(self, state: dict, shard: str) -> pa.Table:
        path = Path(state["clusters"]) / f"{shard}.parquet"
        if path.exists():
            return pq.read_table(path)
        return pa.table({schema.ID: pa.array([], pa.string()), CLUSTER: pa.array([], pa.string()),
                         SIZE: pa.array([], pa.int32()), IS_REP: pa.array([], pa.bool_())})

    def transform(self, table: pa.Table, state: pa.Table) -> pa.Table:
        idx = pc.index_in(table[schema.ID], value_set=state[schema.ID])
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
