"""Near-duplicate clustering: MinHash signatures, LSH banding, verified candidates, components.

The global pass is map-reduce rounds over files in the stage's scratch folder (Scratch), so no
task and not the driver ever holds the corpus, the band table or the duplicate graph whole. Each
round is a class of its own, callable on one work item, so it can be tested alone:
  1. SignShards, per shard: signatures and shingle sets from one pass over the shingles (both kept
     as .npy for verification: no document's shingles are hashed twice), band hashes partitioned
     by hash; a row is addressed by its doc index (shard ordinal, row) throughout;
  2. VerifiedCandidates, per band partition: rows with equal band hash become candidate
     edges; an edge is kept if its signature agreement is decisively above `threshold`, or else
     if its exact shingle Jaccard (from the stored sets) reaches it (`verify`);
  3. connected components by partitioned min-label propagation (pipeline/toolkit/components.py);
  4. GroupByLabel: labels regrouped so that each component lies in one partition;
  5. ClusterRows, per label partition: the representative is the first member by (id, source,
     position), as in exact_dedup; cluster rows are written per shard, keyed by position (ids
     may repeat), so each transform loads only its own shard's rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from thresher.pipeline.core import schema, storage
from thresher.pipeline.core.files import write_parquet
from thresher.pipeline.core.stage import (
    Columns,
    FitContext,
    LocalPath,
    OutputPath,
    Params,
    Stage,
    StateRecord,
    mark_dropped,
)
from thresher.pipeline.toolkit.components import connected_components
from thresher.pipeline.toolkit.dedup_index import clear, open_index, write_meta
from thresher.pipeline.toolkit.key_groups import (
    doc_index,
    doc_parts,
    partition_of,
    partitions_for,
    read_parts,
    run_starts,
    split_rows,
    write_partitioned,
)
from thresher.scorers.minhash import (
    band_hashes,
    candidate_pairs,
    optimal_bands,
    pair_jaccard,
    scheme_bits,
    signature_agreement,
    signatures_and_sets,
    take_sets,
    unique_pairs,
)

CLUSTER, SIZE, IS_REP, WEIGHT = "dup_cluster", "dup_cluster_size", "dup_is_rep", "dedup_weight"
EARLIER = "dup_earlier"  # copies among the documents of the indexes given as `against`
_EDGES_PER_PARTITION = 2_000_000  # connected-components partitions hold about this many edges
SURE_Z = 4.0  # standard errors of the signature estimate that decide a pair without its exact Jaccard


class MinHashParams(Params):
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations (datasketch's num_perm)")
    ngram: int = Field(5, ge=1, le=32, description="word n-gram shingles")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity of a duplicate")
    bands: int | None = Field(None, ge=1, description="LSH bands; default: chosen with `rows` for `threshold` "
                              "and the two weights, as datasketch chooses them")
    rows: int | None = Field(None, ge=1, description="rows per band (set with `bands`)")
    # Candidates are verified, so a false positive costs one check while a false negative is a
    # duplicate kept: the banding leans to recall (at threshold 0.8: 14 bands of 9 rows, 99.9%
    # of pairs at J = 0.9 become candidates; datasketch's 0.5/0.5 gives 9 x 13 and 93%).
    false_positive_weight: float = Field(0.1, ge=0.0, description="weight of false positives in the choice of "
                                         "bands x rows (candidates are verified: cheap)")
    false_negative_weight: float = Field(0.9, ge=0.0, description="weight of false negatives (a duplicate kept)")
    seed: int = Field(1, ge=0, description="datasketch's MinHash seed")
    scheme: Literal["legacy", "affine32", "affine64"] = Field("legacy", description=(
        "datasketch's permutation scheme: legacy or affine64 (hashfunc xxh64), or affine32 (hashfunc xxh32, "
        "32-bit arithmetic: the fastest); an index is only comparable with runs of the same scheme"))
    verify: Literal["auto", "exact", "signature", "none"] = Field(
        "auto", description="check candidate pairs: exact shingle Jaccard where the signature estimate is "
                            "not decisive (auto), exact for all, signature agreement alone, or not at all")
    policy: Literal["remove", "reweight"] = Field(
        "remove", description="remove all but one representative per cluster (reason `near_duplicate`), or keep "
        "every row with dedup_weight = ln 2 / ln(size + 1)")
    chain_margin: float = Field(0.2, ge=0.0, lt=1.0, description=(
        "a member whose signature similarity to its cluster's representative is below threshold - "
        "chain_margin leaves the cluster (A~B~C~D chains never merge A with a far-off D)"))
    max_cluster_size: int = Field(10_000, ge=2, description="members past this many stay unclustered (reported)")
    index: OutputPath | None = Field(None, description=(
        "write this run's index here (a folder or URI): a later run's `against:` removes its duplicates"))
    against: list[LocalPath] = Field(default_factory=list, description=(
        "indexes of earlier runs: a document matching one of their documents is a duplicate_of_earlier"))
    partitions: int | None = Field(None, ge=1, le=4096, description=(
        "band-hash partitions of the group-by; default: one per 200,000 documents, at least 2 and at most 256"))

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

    @property
    def keeps_sets(self) -> bool:
        """Whether round 1 stores each document's shingle sets: exact Jaccard needs them."""
        return self.verify in ("auto", "exact")

    def index_params(self) -> dict:
        """What an index and the run using it must share for their band hashes to be comparable."""
        bands, rows = self.banding()
        return {"num_perm": self.num_perm, "seed": self.seed, "scheme": self.scheme, "ngram": self.ngram,
                "bands": bands, "rows": rows}


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
    """Round 1, per shard: MinHash signatures and shingle sets, the (id, source) of each row, and
    the band hashes of every doc, partitioned by band hash; returns the shard's rows per source.
    `banding`: (bands, rows), resolved once by the driver."""

    def __init__(self, p: MinHashParams, read, scratch: Scratch, ordinals: dict[str, int], banding: tuple[int, int]):
        self.p, self.read, self.scratch, self.ordinals, self.banding = p, read, scratch, ordinals, banding

    def __call__(self, shard: str) -> int:
        p = self.p
        table = self.read(shard)
        sig, values, offsets = signatures_and_sets(table[schema.TEXT], p.num_perm, p.seed, p.ngram, p.scheme)
        storage.save_npy(self.scratch.signatures(shard), sig.astype(np.uint32) if scheme_bits(p.scheme) == 32 else sig)
        if p.keeps_sets:
            for path, array in zip(self.scratch.sets(shard), (values, offsets)):
                storage.save_npy(path, array)
        write_parquet(table.select([schema.ID, schema.SOURCE]), self.scratch.ids(shard))
        bands, rows = self.banding
        bh = band_hashes(sig, bands, rows)  # [n, bands]
        n = len(sig)
        doc = doc_index(self.ordinals[shard], np.arange(n))
        t = pa.table({"bhash": bh.reshape(-1), "doc": np.repeat(doc, bands)})
        write_partitioned(t, "bhash", p.partitions, self.scratch.bands, f"{shard}.parquet")
        return {r["values"]: r["counts"] for r in pc.value_counts(table[schema.SOURCE]).to_pylist()}


class SignatureRows:
    """The stored signatures of any docs (each shard's file opened once, memory-mapped)."""

    def __init__(self, scratch: Scratch, shards: list[str], num_perm: int):
        self.scratch, self.shards, self.num_perm = scratch, shards, num_perm
        self._sigs: dict[int, np.ndarray] = {}

    def __call__(self, docs: np.ndarray) -> np.ndarray:
        out = np.empty((len(docs), self.num_perm), dtype=np.uint64)
        shard_of, row_of = doc_parts(docs)
        for o, rows in split_rows(shard_of):
            if o not in self._sigs:
                self._sigs[o] = storage.load_npy(self.scratch.signatures(self.shards[o]), mmap=True)
            out[rows] = self._sigs[o][row_of[rows]]
        return out


class VerifiedCandidates:
    """Round 2, per band partition: docs that share a band hash, verified (`_verified`), written as
    edges; with `against`, also matched with the earlier indexes' docs (`_match_earlier`)."""

    def __init__(self, p: MinHashParams, scratch: Scratch, shards: list[str],
                 against: tuple[tuple[str, dict], ...] = (), earlier_out: Path | None = None):
        self.p, self.scratch, self.shards = p, scratch, shards
        self.against, self.earlier_out = against, earlier_out  # earlier indexes: (location, index.json)
        self._rows = SignatureRows(scratch, shards, p.num_perm)

    def __call__(self, partition: int) -> int:
        t = read_parts(self.scratch.bands / f"{partition:05d}")
        if t is None:
            return 0
        u, v = self._verified(*candidate_pairs(t["bhash"].to_numpy(), t["doc"].to_numpy()))
        if len(u):
            write_parquet(pa.table({"u": u, "v": v}), self.scratch.edges / f"{partition:05d}.parquet")
        for i, (where, meta) in enumerate(self.against):
            self._match_earlier(t, partition, i, storage.location(where), meta)
        return len(u)

    def _match_earlier(self, t: pa.Table, partition: int, i: int, root, meta: dict) -> None:
        """This partition's docs sharing a band bucket with a doc of earlier index `i` and agreeing
        with it on >= threshold of the signature: written per shard as (row, index, earlier doc)."""
        if meta["partitions"] == self.p.partitions:
            old = read_parts(root / "bands" / f"{partition:05d}")
        else:  # built with other partitions: this partition's rows from all of its
            parts = [x for x in (read_parts(d) for d in sorted((root / "bands").iterdir())) if x is not None]
            old = pa.concat_tables(parts) if parts else None
            if old is not None:
                old = old.filter(pa.array(partition_of(old["bhash"].to_numpy(), self.p.partitions) == partition))
        if old is None or not old.num_rows:
            return
        ob, od = old["bhash"].to_numpy(), old["doc"].to_numpy()
        order = np.lexsort((od, ob))
        ob, od = ob[order], od[order]
        nb, nd = t["bhash"].to_numpy(), t["doc"].to_numpy()
        at = np.minimum(np.searchsorted(ob, nb), len(ob) - 1)
        hit = ob[at] == nb
        new, earlier = nd[hit], od[at[hit]]  # the bucket's first earlier doc stands for it
        if not len(new):
            return
        new, earlier = unique_pairs(new, earlier)
        theirs = SignatureRows(Scratch(root), meta["shards"], self.p.num_perm)
        same = (self._rows(new) == theirs(earlier)).mean(axis=1) >= self.p.threshold
        shard_of, row_of = doc_parts(new[same])
        for o, rows in split_rows(shard_of):
            write_parquet(pa.table({schema.ROW: row_of[rows], "index": np.full(len(rows), i, np.int32),
                                    "doc": earlier[same][rows]}),
                          self.earlier_out / self.shards[o] / f"{partition:05d}-{i}.parquet")

    def _verified(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pairs that pass `verify`. The signature agreement estimates Jaccard with standard
        error sqrt(J(1-J)/num_perm): a pair more than SURE_Z of them below the threshold is a
        non-duplicate for every mode; with `auto` a pair as far above it is a duplicate, and only
        the pairs in between get the exact Jaccard of their stored shingle sets (`exact`: all)."""
        p = self.p
        if p.verify == "none" or len(u) == 0:
            return u, v
        docs = np.unique(np.concatenate([u, v]))  # each document's signature read once
        at_u, at_v = np.searchsorted(docs, u), np.searchsorted(docs, v)
        estimate = signature_agreement(self._rows(docs), at_u, at_v)
        if p.verify == "signature":
            keep = estimate >= p.threshold
            return u[keep], v[keep]
        margin = undecided_margin(p.threshold, p.num_perm)
        sure = estimate >= p.threshold + margin if p.verify == "auto" else np.zeros(len(u), bool)
        check = np.flatnonzero((estimate >= p.threshold - margin) & ~sure)
        if len(check):
            jaccard = exact_jaccard(self.scratch, self.shards, u[check], v[check])
            sure[check[jaccard >= p.threshold]] = True
        return u[sure], v[sure]


def undecided_margin(similarity: float, num_perm: int) -> float:
    """SURE_Z standard errors of the signature estimate of a Jaccard near `similarity`: within
    this of a cut, the estimate does not decide a pair."""
    return SURE_Z * math.sqrt(similarity * (1 - similarity) / num_perm)


def exact_jaccard(scratch: Scratch, shards: list[str], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The exact Jaccard of doc pairs (u[k], v[k]) from their stored shingle sets, each document's
    set read once."""
    docs = np.unique(np.concatenate([u, v]))
    shard_of, row_of = doc_parts(docs)
    parts, sizes = [], [np.zeros(1, np.int64)]
    for o, rows in split_rows(shard_of):  # each shard's rows are one run of the sorted docs
        values, offsets = (storage.load_npy(path, mmap=True) for path in scratch.sets(shards[o]))
        part, off = take_sets(values, offsets, row_of[rows])
        parts.append(part)
        sizes.append(np.diff(off))
    return pair_jaccard(np.concatenate(parts), np.cumsum(np.concatenate(sizes)),
                        np.searchsorted(docs, u), np.searchsorted(docs, v))


def _ids_of(scratch: Scratch, shards: list[str], docs: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """The (ids, sources) of `docs`."""
    shard_of, row_of = doc_parts(docs)
    ids, sources = np.empty(len(docs), dtype=object), np.empty(len(docs), dtype=object)
    for o, rows in split_rows(shard_of):
        t = storage.read_table(scratch.ids(shards[o])).take(pa.array(row_of[rows]))
        ids[rows], sources[rows] = t[schema.ID].to_pylist(), t[schema.SOURCE].to_pylist()
    return pa.array(ids.tolist(), type=pa.string()), pa.array(sources.tolist(), type=pa.string())


def split_chains(label: np.ndarray, sig: np.ndarray, cut: float, max_size: int, max_rounds: int = 64,
                 exact=None, margin: float = 0.0) -> tuple[np.ndarray, int, int]:
    """Each member's group, as the position of the group's representative, for members sorted so
    that every component is a run led by its representative (`label`: the component of each).

    A member stays with its representative when their signatures agree on >= `cut` of the
    permutations, or, where `exact(i, j)` (the exact Jaccard of members i[k] and j[k]) is given
    and the agreement is within `margin` of the cut, when their exact Jaccard is >= `cut`: an
    estimate's noise then never keeps a far-off member nor splits off a near one. The others
    leave and form sub-clusters of their own, each led by its first leaver (at most `max_rounds`
    per component; what remains then stays alone). A group is cut at `max_size` members; the rest
    stay alone. Returns (group, members split off, capped)."""

    def near(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        estimate = signature_agreement(sig, i, j)
        keep = estimate >= cut
        if exact is not None:
            check = np.flatnonzero(np.abs(estimate - cut) < margin)
            if len(check):
                keep[check] = exact(i[check], j[check]) >= cut
        return keep

    n = len(label)
    first = run_starts(label)
    starts = np.flatnonzero(first)
    rep = starts[np.cumsum(first) - 1] if n else np.zeros(0, np.int64)
    stays = near(np.arange(n), rep) if n else np.zeros(0, bool)
    group = np.where(stays, rep, np.arange(n))
    sizes = np.diff(np.append(starts, n))
    irregular = np.flatnonzero((np.add.reduceat(~stays, starts) > 0) | (sizes > max_size)) if n else []
    split_off = int((~stays).sum())
    capped = 0
    for c in irregular:  # components with far-off members or too many: resolved one by one
        remaining = np.arange(starts[c], starts[c] + sizes[c])
        group[remaining] = remaining
        for _ in range(max_rounds):
            if len(remaining) < 2:
                break
            joins = near(remaining, np.full(len(remaining), remaining[0]))
            members = remaining[joins]
            capped += max(0, len(members) - max_size)
            group[members[:max_size]] = remaining[0]
            remaining = remaining[~joins]
    return group, split_off, capped


def clusters_from_labels(nodes: np.ndarray, labels: np.ndarray, ids: pa.Array, sources: pa.Array,
                         signatures=None, cut: float = 0.0, max_size: int = 2**62,
                         jaccard=None, margin: float = 0.0) -> tuple[pa.Table, dict]:
    """(id, cluster = the representative's id, size, is_rep, doc, source) for the members of
    components given as node -> component label (every member of a component must be present),
    and what split_chains did. The representative is the first member by (id, source, doc), so
    exactly one per cluster even when members share an id. `signatures(docs)`: their stored
    signatures, for split_chains (without it components stay whole); `jaccard(u, v)`: the exact
    Jaccard of doc pairs, for members whose signature agreement is within `margin` of `cut`."""
    t = pa.table({"label": labels, schema.ID: ids, schema.SOURCE: sources, "doc": nodes}).sort_by(
        [("label", "ascending"), (schema.ID, "ascending"), (schema.SOURCE, "ascending"), ("doc", "ascending")])
    label = t["label"].to_numpy()
    docs = t["doc"].to_numpy()
    if signatures is None:
        sig = np.zeros((len(label), 1), np.uint64)  # every member agrees with its representative
    else:
        sig = signatures(docs)
    exact = None if jaccard is None else (lambda i, j: jaccard(docs[i], docs[j]))
    group, split_off, capped = split_chains(label, sig, cut, max_size, exact=exact, margin=margin)
    sizes = np.bincount(group, minlength=len(group))
    return pa.table({
        schema.ID: t[schema.ID],
        CLUSTER: t[schema.ID].take(pa.array(group)),
        SIZE: pa.array(sizes[group].astype(np.int32)),
        IS_REP: pa.array(group == np.arange(len(group))),
        "doc": docs,
        schema.SOURCE: t[schema.SOURCE],
    }), {"split_from_chains": split_off, "capped": capped}


class GroupByLabel:
    """Round 4, per components partition: final labels re-partitioned by component label, so
    that a component lies in one partition."""

    def __init__(self, final_labels, scratch: Scratch, partitions: int):
        self.final_labels, self.scratch, self.partitions = final_labels, scratch, partitions

    def __call__(self, p: int) -> int:
        labels = self.final_labels(p)
        write_partitioned(labels, "label", self.partitions, self.scratch.by_label, f"{p:05d}.parquet")
        return labels.num_rows


LARGEST = 10  # clusters listed in the manifest


def cluster_summary(clusters: pa.Table) -> dict:
    """Duplicates (non-representatives) per source and the LARGEST clusters with their sources."""
    dup = clusters.filter(pc.invert(clusters[IS_REP]))
    by_source = {r["values"]: r["counts"] for r in pc.value_counts(dup[schema.SOURCE]).to_pylist()}
    reps = clusters.filter(pc.and_(clusters[IS_REP], pc.greater(clusters[SIZE], 1)))
    top = reps.sort_by([(SIZE, "descending"), (schema.ID, "ascending")]).slice(0, LARGEST)
    members = clusters.filter(pc.is_in(clusters[CLUSTER], value_set=top[schema.ID]))
    largest = []
    for rep_id, size in zip(top[schema.ID].to_pylist(), top[SIZE].to_pylist()):
        m = members.filter(pc.equal(members[CLUSTER], rep_id))
        largest.append({"representative": rep_id, "size": size, "sources": {
            r["values"]: r["counts"] for r in pc.value_counts(m[schema.SOURCE]).to_pylist()}})
    return {"duplicates_by_source": by_source, "largest": largest}


class ClusterRows:
    """Round 5, per label partition: the cluster rows of its components (long chains split, see
    split_chains), written per shard; returns their summary (cluster_summary)."""

    def __init__(self, p: MinHashParams, scratch: Scratch, shards: list[str], out: Path):
        self.p, self.scratch, self.shards, self.out = p, scratch, shards, out

    def __call__(self, r: int) -> dict:
        t = read_parts(self.scratch.by_label / f"{r:05d}")
        if t is None:
            return {"rows": 0, "split_from_chains": 0, "capped": 0, "duplicates_by_source": {}, "largest": []}
        nodes = t["node"].to_numpy()
        p, cut = self.p, self.p.threshold - self.p.chain_margin
        clusters, split = clusters_from_labels(
            nodes, t["label"].to_numpy(), *_ids_of(self.scratch, self.shards, nodes),
            signatures=SignatureRows(self.scratch, self.shards, p.num_perm), cut=cut, max_size=p.max_cluster_size,
            jaccard=partial(exact_jaccard, self.scratch, self.shards) if p.keeps_sets else None,
            margin=1.0 if p.verify == "exact" else undecided_margin(cut, p.num_perm))
        summary = {"rows": clusters.num_rows, **split, **cluster_summary(clusters)}
        shard_of, row_of = doc_parts(clusters["doc"].to_numpy())
        clusters = pa.table({schema.ROW: row_of, CLUSTER: clusters[CLUSTER],
                             SIZE: clusters[SIZE], IS_REP: clusters[IS_REP]})
        for o, rows in split_rows(shard_of):
            write_parquet(clusters.take(pa.array(rows)), self.out / self.shards[o] / f"{r:05d}.parquet")
        return summary


def merge_summaries(parts: list[dict], rows_by_source: dict[str, int]) -> dict:
    """The whole corpus's cluster summary from the label partitions' (each cluster lies in one)."""
    dups: dict[str, int] = {}
    for part in parts:
        for source, n in part["duplicates_by_source"].items():
            dups[source] = dups.get(source, 0) + n
    largest = sorted((c for part in parts for c in part["largest"]),
                     key=lambda c: (-c["size"], c["representative"]))[:LARGEST]
    return {"clustered_rows": sum(p["rows"] for p in parts),
            "split_from_chains": sum(p["split_from_chains"] for p in parts),
            "capped": sum(p["capped"] for p in parts),
            "largest_clusters": largest,
            "duplicates_by_source": {s: {"rows": n, "duplicates": dups.get(s, 0), "share": dups.get(s, 0) / n}
                                     for s, n in sorted(rows_by_source.items()) if n}}


@dataclass(frozen=True)
class Clusters(StateRecord):
    """Where each shard's cluster rows (position, cluster, size, is_rep) lie: rows of no cluster
    are unique documents; and their summary (merge_summaries)."""

    VERSION = 3
    folder: str
    summary: dict = field(default_factory=dict)
    earlier: str | None = None  # per shard: (row, index, doc) of its matches in earlier indexes


_NO_CLUSTERS = pa.table({schema.ROW: pa.array([], pa.int64()), CLUSTER: pa.array([], pa.string()),
                         SIZE: pa.array([], pa.int32()), IS_REP: pa.array([], pa.bool_())})
_NO_MATCHES = pa.table({schema.ROW: pa.array([], pa.int64()), "index": pa.array([], pa.int32()),
                        "doc": pa.array([], pa.int64())})


def earlier_copies(matches: pa.Table, rows: pa.Array) -> np.ndarray:
    """For each row, how many distinct documents of the earlier indexes it matched."""
    if not matches.num_rows:
        return np.zeros(len(rows), np.int32)
    per_row = matches.group_by([schema.ROW, "index", "doc"]).aggregate([]).group_by(schema.ROW).aggregate(
        [("index", "count")])
    idx = pc.index_in(rows, value_set=per_row[schema.ROW])
    return np.where(pc.is_valid(idx).to_numpy(zero_copy_only=False),
                    per_row["index_count"].to_numpy()[pc.fill_null(idx, 0).to_numpy()], 0).astype(np.int32)


class MinHashDedup(Stage):
    """Near-duplicate clustering with MinHash LSH (datasketch-compatible); removes or down-weights copies.

    MinHash over word n-gram shingles (5) of the normalised text,
    `num_perm` permutations drawn exactly as `datasketch.MinHash` draws them (signatures equal
    datasketch's for the same seed and shingles, in each of its schemes: `legacy` and `affine64` with
    XXH64, `affine32` with XXH32, the fastest). Bands x rows minimise the weighted false-positive /
    false-negative area for `threshold`, as datasketch's LSH does; the default weights lean to recall
    (0.1 / 0.9: 14 bands of 9 rows at 0.8) because every candidate pair is verified: `verify: auto`
    accepts or rejects a pair by signature agreement when that lies more than 4 standard errors from
    the threshold and computes the exact shingle Jaccard for the rest. Clusters are connected
    components (partitioned min-label propagation: no task or driver holds the graph whole); the
    representative is the first member by (id, source, position). Chains (A~B~C~D, A and D far apart)
    are cut: a member less similar than `threshold - chain_margin` to its representative leaves, and a
    cluster keeps at most `max_cluster_size` members. Every row gets `dup_cluster`,
    `dup_cluster_size`, `dup_is_rep`; `policy: remove` drops the others as `near_duplicate`,
    `policy: reweight` keeps them with `dedup_weight = ln 2 / ln(size + 1)` (FedRW's 1/ln(C+1), scaled
    so a unique document weighs 1). The manifest and `thresher report` list the largest clusters.

    `index:` and `against:` work as for exact_dedup: the index holds the signatures, ids and band
    table; a later run's document matching an indexed one on at least `threshold` of the
    permutations is dropped as `duplicate_of_earlier` (with `policy: reweight`, counted in
    `dup_earlier`). An index built with other MinHash parameters is refused with what differs.
    """

    name = "minhash_dedup"
    example = {"threshold": 0.8}
    drop_reasons = ("near_duplicate", "duplicate_of_earlier")
    inputs = (schema.ID, schema.TEXT, schema.SOURCE)
    outputs = (CLUSTER, SIZE, IS_REP)
    Params = MinHashParams
    row_positions = True  # cluster rows are addressed by position: ids may repeat
    State = Clusters

    @classmethod
    def columns_for(cls, params: MinHashParams) -> Columns:
        """`policy: reweight` keeps every row and adds the FedRW weight column; `against` adds the
        count of each row's copies in the earlier runs."""
        cols = super().columns_for(params)
        if params.against:
            cols = replace(cols, outputs=cols.outputs + (EARLIER,))
        if params.policy == "reweight":
            cols = replace(cols, outputs=cols.outputs + (WEIGHT,), weights=cols.weights + (WEIGHT,))
        return cols

    def fit(self, ctx: FitContext) -> Clusters:
        """Signatures and band hashes per shard; verified candidate edges per band partition;
        connected components; components regrouped by label; cluster rows stored per shard
        (a transform loads only the rows of its own shard)."""
        p, scratch, shards = self.params, Scratch(ctx.scratch), list(ctx.shards)
        if p.partitions is None:  # each partition a few million band rows; small corpora pay no fan-out
            p = p.model_copy(update={"partitions": partitions_for(ctx.rows, 200_000, 2, 256)})
        scratch.make()
        ordinals = {s: i for i, s in enumerate(shards)}
        against = tuple((where, open_index(where, self.name, p.index_params())[1]) for where in p.against)
        rows_by_source: dict[str, int] = {}
        for counts in ctx.map(SignShards(p, ctx.reader(), scratch, ordinals, p.banding()), shards):
            for source, n in counts.items():
                rows_by_source[source] = rows_by_source.get(source, 0) + n
        if p.index:
            self._write_index(p, scratch, shards, sum(rows_by_source.values()))
        earlier = ctx.state_dir / "earlier"
        storage.rmtree(earlier)
        list(ctx.map(VerifiedCandidates(p, scratch, shards, against, earlier), list(range(p.partitions))))
        out = ctx.state_dir / "clusters"
        storage.rmtree(out)
        out.mkdir(parents=True)
        edge_files = sorted(scratch.edges.glob("*.parquet"))
        summaries = []
        if edge_files:
            # The duplicate graph is usually small: partition it only as far as its size asks.
            edges = sum(storage.parquet_rows(f) for f in edge_files)
            n_parts = max(1, min(p.partitions, edges // _EDGES_PER_PARTITION + 1))
            final = connected_components(ctx.map, edge_files, scratch.components, n_parts)
            parts = list(range(n_parts))
            list(ctx.map(GroupByLabel(final, scratch, n_parts), parts))
            summaries = list(ctx.map(ClusterRows(p, scratch, shards, out), parts))
        return Clusters(str(out), merge_summaries(summaries, rows_by_source), str(earlier) if against else None)

    def _write_index(self, p: MinHashParams, scratch: Scratch, shards: list[str], docs: int) -> None:
        """The run's signatures, ids and band table, as its global pass partitioned them, then
        index.json: an index interrupted half-way has none and is refused."""
        out = storage.location(p.index)
        clear(out)
        for part in ("sig", "ids", "bands"):
            storage.copy_tree(scratch.root / part, out / part)
        write_meta(out, self.name, p.index_params(), shards=shards, partitions=p.partitions, documents=docs)

    def summarize_state(self, state: Clusters) -> dict:
        return {"policy": self.params.policy, **state.summary}

    def shard_state(self, state: Clusters, shard: str) -> tuple[pa.Table, pa.Table]:
        matches = read_parts(storage.location(state.earlier) / shard, _NO_MATCHES) if state.earlier else _NO_MATCHES
        return read_parts(storage.location(state.folder) / shard, _NO_CLUSTERS), matches

    def transform(self, table: pa.Table, state: tuple[pa.Table, pa.Table]) -> pa.Table:
        state, matches = state
        copies = earlier_copies(matches, table[schema.ROW])
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
        if self.params.against:
            table = table.append_column(EARLIER, pa.array(copies))
        if self.params.policy == "remove":
            table = mark_dropped(table, copies > 0, "duplicate_of_earlier")
            return mark_dropped(table, ~np.asarray(is_rep, dtype=bool), "near_duplicate")
        sizes = np.asarray(size, dtype=np.float64) + copies  # FedRW counts the earlier runs' copies too
        # FedRW's 1/ln(C+1), scaled so that a unique document weighs 1.
        return table.append_column(WEIGHT, pa.array(math.log(2.0) / np.log(sizes + 1.0)))
