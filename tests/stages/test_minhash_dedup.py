from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import demo_texts, write_pipeline
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner, apply_stage
from thresher.scorers.minhash_eval import pairwise_quality, plant_near_duplicates, planted_pairs
from thresher.stages.minhash_dedup import MinHashDedup, clusters_from_labels


def _real_texts(n: int) -> list[str]:
    texts = demo_texts("scripture", min_words=80) + demo_texts("python_docs", min_words=80)
    return [" ".join(t.split()[:300]) for t in texts][:n]


def _run(tmp_path, rows, **params):
    tmp_path.mkdir(parents=True, exist_ok=True)
    with open(tmp_path / "docs.jsonl", "w") as fh:
        for doc_id, text in rows:
            fh.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["docs.jsonl"], "id_column": "id"}],
                       stages=[{"stage": "minhash_dedup", **params}], shard_rows=300)
    return Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()


@pytest.mark.parametrize("scheme", ["legacy", "affine32"])
def test_quality_against_exact_jaccard(tmp_path, scheme):
    rows = plant_near_duplicates(_real_texts(800), seed=7, max_rate=0.06)
    res = _run(tmp_path, rows, policy="reweight", threshold=0.8, scheme=scheme)
    out = pq.read_table(res.output_dir / "data")
    clusters = dict(zip(out["id"].to_pylist(), out["dup_cluster"].to_pylist()))
    q = pairwise_quality(dict(rows), clusters, planted_pairs(dict(rows)), threshold=0.8)
    print(q)
    assert q["strong_pairs"] >= 100 and q["merged_pairs"] >= 100
    assert q["recall_strong"] >= 0.95
    assert q["precision"] >= 0.95


def test_remove_keeps_the_smallest_id_and_accounts(tmp_path):
    texts = _real_texts(50)
    rows = [(f"a{i:03d}", t) for i, t in enumerate(texts)] + [(f"z{i:03d}", t + " amen") for i, t in enumerate(texts[:20])]
    res = _run(tmp_path, rows)
    st = res.manifest["stages"][-1]
    assert st["rejected"] == {"near_duplicate": 20} and st["rows_out"] == 50
    rej = pq.read_table(res.output_dir / "rejected")
    assert sorted(rej["id"].to_pylist()) == [f"z{i:03d}" for i in range(20)]
    out = pq.read_table(res.output_dir / "data")
    sizes = dict(zip(out["id"].to_pylist(), out["dup_cluster_size"].to_pylist()))
    assert all(sizes[f"a{i:03d}"] == (2 if i < 20 else 1) for i in range(50))


def test_reweight_weights_follow_cluster_size(tmp_path):
    text = _real_texts(2)
    rows = [(f"c{i}", text[0]) for i in range(3)] + [("u", text[1])]
    res = _run(tmp_path, rows, policy="reweight")
    out = pq.read_table(res.output_dir / "data").sort_by("id")
    w = dict(zip(out["id"].to_pylist(), out["dedup_weight"].to_pylist()))
    assert w["u"] == pytest.approx(1.0)
    assert w["c0"] == pytest.approx(0.6931471805599453 / 1.3862943611198906)  # ln2 / ln4
    assert out["weight"].to_pylist() == out["dedup_weight"].to_pylist()
    assert set(out["dup_cluster"].to_pylist()) == {"c0", "u"}


def test_clusters_take_the_smallest_id_as_rep():
    import numpy as np

    ids = {10: "m", 11: "b", 12: "x", 20: "q", 21: "p"}
    nodes = np.array([10, 11, 12, 20, 21])
    t, _ = clusters_from_labels(nodes, np.array([10, 10, 10, 20, 20]), pa.array([ids[int(d)] for d in nodes]),
                                pa.array(["f"] * 5))
    got = {r["id"]: (r["dup_cluster"], r["dup_cluster_size"], r["dup_is_rep"]) for r in t.to_pylist()}
    assert got == {"b": ("b", 3, True), "m": ("b", 3, False), "x": ("b", 3, False),
                   "p": ("p", 2, True), "q": ("p", 2, False)}
    # Members sharing the smallest id: one representative, by source and then position.
    t, _ = clusters_from_labels(np.array([5, 3, 9]), np.array([1, 1, 1]), pa.array(["a", "a", "a"]),
                                pa.array(["g", "g", "f"]))
    assert dict(zip(t["doc"].to_pylist(), t["dup_is_rep"].to_pylist())) == {9: True, 3: False, 5: False}


def test_transform_without_duplicates_marks_singletons():
    stage = MinHashDedup()
    empty = pa.table({"_row": pa.array([], pa.int64()), "dup_cluster": pa.array([], pa.string()),
                      "dup_cluster_size": pa.array([], pa.int32()), "dup_is_rep": pa.array([], pa.bool_())})
    from thresher.stages.minhash_dedup import _NO_MATCHES

    kept, rejected = apply_stage(stage, pa.table({"id": ["a", "b"], "text": ["x", "y"], "source": ["f", "f"]}),
                                 (empty, _NO_MATCHES), 10)
    assert kept["dup_cluster"].to_pylist() == ["a", "b"] and rejected.num_rows == 0

def test_the_first_two_rounds_alone_find_a_planted_pair_across_shards(tmp_path):
    """SignShards and VerifiedCandidates on their own: the near-duplicate pair (shard 1 row 2 and
    shard 0 row 0) comes out as one edge between their doc indices; unrelated texts give none."""
    import numpy as np

    from thresher.pipeline.toolkit.key_groups import doc_index, doc_parts
    from thresher.stages.minhash_dedup import MinHashParams, Scratch, SignShards, VerifiedCandidates

    texts = demo_texts("scripture", 5)
    twin = texts[0] + " amen"
    shards = {"a": pa.table({"id": ["a0", "a1"], "text": texts[:2], "source": ["f"] * 2}),
              "b": pa.table({"id": ["b0", "b1", "b2"], "text": texts[2:4] + [twin], "source": ["f"] * 3})}
    read = lambda shard, columns=None: shards[shard].select(columns or shards[shard].column_names)  # noqa: E731
    p = MinHashParams(threshold=0.8, partitions=4)
    scratch = Scratch(tmp_path)
    scratch.make()
    assert [SignShards(p, read, scratch, {"a": 0, "b": 1}, p.banding())(s) for s in shards] == [{"f": 2}, {"f": 3}]
    verify = VerifiedCandidates(p, scratch, ["a", "b"])
    found = sum(verify(part) for part in range(p.partitions))
    edges = pq.read_table(scratch.edges)
    assert edges.num_rows == found >= 1  # once per band partition the pair shares a band in
    pairs = {tuple(sorted(e)) for e in zip(edges["u"].to_pylist(), edges["v"].to_pylist())}
    assert len(pairs) == 1
    pair = list(pairs.pop())
    assert pair == [doc_index(0, [0])[0], doc_index(1, [2])[0]]
    assert [x.tolist() for x in doc_parts(np.array(pair))] == [[0, 1], [0, 2]]


def test_duplicate_heavy_corpus_recall_and_no_far_merges(tmp_path):
    """Most documents in planted clusters of 2-10: recall >= 0.99 on pairs with exact Jaccard >=
    0.9, and no pair put in one cluster is below 0.6 (the issue's targets, at test size)."""
    from thresher.scorers.minhash_eval import plant_clusters

    planted = plant_clusters(_real_texts(400), cluster_share=0.6, seed=3)
    rows = [(f"d{i:05d}", text) for i, (text, _) in enumerate(planted)]
    res = _run(tmp_path, rows, policy="reweight", threshold=0.8)
    out = pq.read_table(res.output_dir / "data")
    groups: dict[int, list[str]] = {}
    for (doc, _), (_, c) in zip(rows, planted):
        groups.setdefault(c, []).append(doc)
    q = pairwise_quality(dict(rows), dict(zip(out["id"].to_pylist(), out["dup_cluster"].to_pylist())),
                         [g for g in groups.values() if len(g) > 1], threshold=0.8)
    assert sum(len(g) for g in groups.values() if len(g) > 1) >= 0.5 * len(rows)
    assert q["strong_pairs"] >= 300 and q["recall_strong"] >= 0.99, q
    assert q["merged_below_0.6"] == 0, q


def test_split_chains_keeps_members_near_their_representative():
    """Members far from the representative leave and form sub-clusters of their own; a group past
    max_size keeps max_size members, the rest stay alone."""
    import numpy as np

    from thresher.stages.minhash_dedup import split_chains

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**32, 100, dtype=np.uint64)

    def near(sig, agree):  # a signature agreeing with `sig` on the first `agree` permutations
        return np.concatenate([sig[:agree], rng.integers(0, 2**32, 100 - agree, dtype=np.uint64)])

    far = near(base, 40)
    sig = np.stack([base, near(base, 95), far, near(base, 50), near(far, 92),  # component 1: r a b c d
                    base, base, base, base, base])  # component 2: five copies
    label = np.array([1] * 5 + [2] * 5)
    group, split_off, capped = split_chains(label, sig, cut=0.7, max_size=3)
    assert group[:5].tolist() == [0, 0, 2, 3, 2]  # {r, a}, {b, d} led by b, {c} alone
    assert group[5:].tolist() == [5, 5, 5, 8, 9] and capped == 2
    assert split_off == 3


def test_split_chains_asks_the_exact_jaccard_where_the_estimate_is_near_the_cut():
    """A member whose signature agreement is within `margin` of the cut is decided by its exact
    Jaccard (an estimate above the cut with a true Jaccard below leaves, and the reverse stays);
    members far from the cut are decided by the estimate alone, without an exact check."""
    import numpy as np

    from thresher.stages.minhash_dedup import split_chains

    rng = np.random.default_rng(1)
    base = rng.integers(0, 2**32, 100, dtype=np.uint64)

    def near(agree):
        return np.concatenate([base[:agree], rng.integers(0, 2**32, 100 - agree, dtype=np.uint64)])

    sig = np.stack([base, near(74), near(66), near(95), near(40)])  # r, above, below, sure, far
    true_jaccard = {1: 0.55, 2: 0.8}  # what the shingle sets say of the two near the cut
    asked = []

    def exact(i, j):
        asked.extend(i.tolist())
        assert (j == 0).all()
        return np.array([true_jaccard[k] for k in i])

    group, split_off, _ = split_chains(np.zeros(5, np.int64), sig, cut=0.7, max_size=10, exact=exact, margin=0.1)
    assert group.tolist() == [0, 1, 0, 0, 4] and split_off == 2
    assert sorted(set(asked)) == [1, 2]
    estimate_only, _, _ = split_chains(np.zeros(5, np.int64), sig, cut=0.7, max_size=10)
    assert estimate_only.tolist() == [0, 0, 2, 0, 4]


def test_a_chain_of_edits_is_split_and_the_manifest_lists_clusters(tmp_path):
    """A chain A~B~C~... of successive small edits (each step above the threshold, the ends far
    apart) is not merged into one cluster; the manifest lists the largest clusters with their
    sources and each source's share of near-duplicates."""
    import random

    from thresher.scorers.minhash_eval import jaccard

    rng = random.Random(5)
    words = " ".join(_real_texts(3)).split()[:400]
    chain = []
    for step in range(25):
        chain.append(" ".join(words))
        for i in rng.sample(range(len(words)), 6):  # 1.5% of the words replaced per step
            words[i] = rng.choice(["alpha", "beta", "gamma", "delta", "omega"]) + str(step)
    assert jaccard(chain[0], chain[1]) > 0.8 > 0.3 > jaccard(chain[0], chain[-1])
    rows = [(f"c{i:02d}", t) for i, t in enumerate(chain)] + [(f"u{i}", t) for i, t in enumerate(_real_texts(40)[3:])]
    res = _run(tmp_path, rows, policy="reweight", threshold=0.8)
    out = pq.read_table(res.output_dir / "data")
    cluster = dict(zip(out["id"].to_pylist(), out["dup_cluster"].to_pylist()))
    members: dict[str, list[str]] = {}
    for doc, c in cluster.items():
        members.setdefault(c, []).append(doc)
    texts = dict(rows)
    assert len({cluster[f"c{i:02d}"] for i in range(25)}) > 1
    assert min(jaccard(texts[a], texts[b]) for ms in members.values() for a in ms for b in ms) >= 0.6
    state = res.manifest["stages"][-1]["state"]
    assert state["split_from_chains"] > 0
    largest = state["largest_clusters"]
    assert largest[0]["size"] == max(len(ms) for ms in members.values()) <= 8  # unguarded: one of 19
    assert largest[0]["sources"] == {"docs.jsonl": largest[0]["size"]}
    share = state["duplicates_by_source"]["docs.jsonl"]
    assert share["rows"] == len(rows) and share["duplicates"] == sum(len(ms) - 1 for ms in members.values())


def test_a_later_run_removes_what_an_earlier_run_indexed(tmp_path):
    """Run 1 writes its index; run 2, on new documents plus near-copies of run 1's, names it in
    `against`: the copies go with reason duplicate_of_earlier, without run 2 reading run 1's
    corpus; with policy reweight the earlier copies count in the FedRW weight instead. An index
    built with other MinHash parameters is refused, naming what differs."""
    import random

    from thresher.scorers.minhash_eval import edit_words

    texts = _real_texts(160)
    first, second = texts[:80], texts[80:]
    rng = random.Random(2)
    run1 = _run(tmp_path / "r1", [(f"a{i:03d}", t) for i, t in enumerate(first)], index=str(tmp_path / "idx"))
    assert (tmp_path / "idx" / "index.json").exists() and run1.manifest["stages"][-1]["rejected"] == {}
    (tmp_path / "r1" / "docs.jsonl").unlink()  # run 2 must not need run 1's corpus
    copies = [(f"c{i:03d}", edit_words(first[i], rng, 0.005)) for i in range(0, 80, 4)]
    rows = [(f"b{i:03d}", t) for i, t in enumerate(second)] + copies
    run2 = _run(tmp_path / "r2", rows, against=[str(tmp_path / "idx")])
    assert run2.manifest["stages"][-1]["rejected"] == {"duplicate_of_earlier": 20}
    rejected = pq.read_table(run2.output_dir / "rejected")
    assert sorted(rejected["id"].to_pylist()) == [c for c, _ in copies]
    out = pq.read_table(run2.output_dir / "data")
    assert set(out["dup_earlier"].to_pylist()) == {0} and out.num_rows == 80
    weighted = _run(tmp_path / "r3", rows, against=[str(tmp_path / "idx")], policy="reweight")
    out = pq.read_table(weighted.output_dir / "data")
    w = dict(zip(out["id"].to_pylist(), out["dedup_weight"].to_pylist()))
    assert w["c000"] == pytest.approx(0.6931471805599453 / 1.0986122886681098) and w["b000"] == 1.0
    with pytest.raises(Exception, match="built with other parameters \\(num_perm 128 there, 64 here"):
        _run(tmp_path / "r4", rows, against=[str(tmp_path / "idx")], num_perm=64)
