from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import demo_texts, write_pipeline
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner
from thresher.stages.softdedup import SoftDedup, segment_of, segment_weights


def _reference_commonness(docs: list[list[str]], n: int, beta: float) -> list[float]:
    """The Dirichlet-smoothed model written out with exact n-gram tuples (no hashing)."""
    counts = [Counter() for _ in range(n)]
    for words in docs:
        for i in range(len(words)):
            for k in range(n):
                if i - k >= 0:
                    counts[k][tuple(words[i - k:i + 1])] += 1
    total, vocab = sum(counts[0].values()), len(counts[0])
    out = []
    for words in docs:
        logp = 0.0
        for i in range(len(words)):
            p = (counts[0][(words[i],)] + beta / vocab) / (total + beta)
            for k in range(1, n):
                if i - k < 0:
                    break
                ctx = counts[k - 1][tuple(words[i - k:i])]
                p = (counts[k][tuple(words[i - k:i + 1])] + beta * p) / (ctx + beta)
            logp += math.log(p)
        out.append(math.exp(logp / len(words)))
    return out


def _fitted_commonness(stage, shards: dict, tmp_path) -> tuple[np.ndarray, object]:
    """The stage's global pass over in-memory shards; its commonness of every row, in shard order."""
    from conftest import MemoryFit

    state = stage.fit(MemoryFit(shards, tmp_path))
    return np.concatenate([stage.shard_state(state, s)[0] for s in shards]), state


def test_commonness_equals_the_model_over_exact_counts(tmp_path):
    """The global pass (per-shard keys, summed per key partition, sent back per shard) gives the
    model over the corpus's exact n-gram counts: equal to a direct computation with n-gram tuples."""
    texts = ["the cat sat on the mat", "the cat sat on the hat", "a dog sat on the mat today",
             "the cat sat on the mat"]
    stage = SoftDedup(SoftDedup.Params(n=3, beta=2.0, partitions=4))
    got, state = _fitted_commonness(stage, {"a": pa.table({"text": texts[:2]}), "b": pa.table({"text": texts[2:]})},
                                    tmp_path)
    np.testing.assert_allclose(got, _reference_commonness([t.split() for t in texts], 3, 2.0), rtol=1e-12)
    assert got[0] == got[3] > got[1]  # the repeated document is the most common
    assert (state.tokens, state.vocab) == (25, 9)


def test_counts_stay_exact_with_many_distinct_ngrams(tmp_path):
    """A corpus with over 4x more distinct n-grams than a 2^16-bucket table holds (the old hashed
    table's failure: commonness above 1, rank correlation falling with the load): commonness
    stays <= 1 and equals the exact model (Spearman 1 with it), shards and partitions notwithstanding."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    sentences = [s for t in demo_texts("scripture", 400) + demo_texts("python_docs", 400)
                 for s in t.split(". ") if len(s.split()) > 3]
    docs = [" ".join(sentences[i] for i in row) for row in rng.integers(0, len(sentences), (2500, 6))]
    docs += docs[:100]  # copies, so commonness spreads
    words = [normalized.split() for normalized in _normalized(docs)]
    distinct = len({tuple(w[i - k:i + 1]) for w in words for i in range(len(w)) for k in range(4) if i - k >= 0})
    assert distinct > 4 * 2**16
    shards = {f"s{i}": pa.table({"text": docs[i::5]}) for i in range(5)}
    got, _ = _fitted_commonness(SoftDedup(SoftDedup.Params(n=4, partitions=8)), shards, tmp_path)
    order = [i for s in range(5) for i in range(s, len(docs), 5)]
    want = np.array(_reference_commonness(words, 4, 1.0))[order]
    assert got.max() <= 1.0
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert spearmanr(got, want).statistic >= 0.99


def _normalized(texts: list[str]) -> list[str]:
    from thresher.scorers.hashing import normalize_for_hashing

    return normalize_for_hashing(pa.array(texts)).to_pylist()


def test_segment_weights():
    values = np.linspace(0.1, 1.0, 100)
    bounds, weights = segment_weights(values, 4, 0.01, 100.0)
    assert len(weights) == 4 and np.all(np.diff(weights) < 0)  # commoner segments weigh less
    seg = segment_of(bounds, values)
    assert np.bincount(seg).tolist() == [25, 25, 25, 25]
    assert weights[seg].mean() == pytest.approx(1.0)
    _, clipped = segment_weights(values, 4, 0.9, 1.1)
    assert clipped.min() == 0.9 and clipped.max() == 1.1
    assert clipped[seg].mean() == pytest.approx(1.0)  # still mean 1 after clipping


def test_ties_share_a_segment_and_segments_stay_equal_up_to_ties():
    rng = np.random.default_rng(0)
    distinct = rng.random(300)
    copies = np.repeat(rng.random(6), [40, 25, 17, 9, 5, 3])  # exact copies: equal commonness
    values = rng.permutation(np.concatenate([distinct, copies]))
    bounds, weights = segment_weights(values, 10, 0.1, 10.0)
    seg = segment_of(bounds, values)
    for v in np.unique(copies):
        assert len(set(seg[values == v])) == 1  # a tie is never split
    sizes = np.bincount(seg)
    largest_tie = 40
    assert sizes.max() - sizes.min() <= largest_tie and sizes.min() > 0
    assert weights[seg].mean() == pytest.approx(1.0, abs=1e-9)
    # Where the ties are small, segments are as equal as the count allows.
    even = rng.random(370)
    b, _ = segment_weights(even, 10, 0.1, 10.0)
    assert np.bincount(segment_of(b, even)).tolist() == [37] * 10


def test_a_corpus_with_copies_gets_the_fit_segments_in_transform(tmp_path):
    from conftest import MemoryFit
    from thresher.pipeline.engine.runner import apply_stage

    texts = _texts(150)
    corpus = texts + [texts[0]] * 30 + [texts[1]] * 12  # exact copies: equal commonness
    shards = {"a": pa.table({"text": corpus[:100]}), "b": pa.table({"text": corpus[100:]})}
    stage = SoftDedup(SoftDedup.Params(n=3, segments=5))
    state = stage.fit(MemoryFit(shards, tmp_path))
    out = pa.concat_tables([apply_stage(stage, t, stage.shard_state(state, s), 64)[0] for s, t in shards.items()])
    common, weight = out["commonness"].to_numpy(), out["softdedup_weight"].to_numpy()
    seg = segment_of(state.bounds, common)
    np.testing.assert_array_equal(weight, state.weights[seg])
    for text in (texts[0], texts[1]):
        rows = [i for i, t in enumerate(corpus) if t == text]
        assert len(set(seg[rows])) == 1 and len(set(weight[rows])) == 1
    assert weight.mean() == pytest.approx(1.0, abs=1e-9)


def _texts(n):
    return demo_texts("scripture", n)


def _run(tmp_path, rows, stages, name="p.yaml", shard_rows=120):
    with open(tmp_path / "docs.jsonl", "w") as fh:
        for doc_id, text in rows:
            fh.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    p = write_pipeline(tmp_path / name, inputs=[{"paths": ["docs.jsonl"], "id_column": "id"}], stages=stages,
                       shard_rows=shard_rows, output={"dir": f"out-{name}"}, work_dir=f"work-{name}")
    res = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()
    return pq.read_table(res.output_dir / "data").sort_by("id")


def test_repeated_documents_are_down_weighted_not_removed(tmp_path):
    texts = _texts(300)
    rows = [(f"u{i:04d}", t) for i, t in enumerate(texts)]
    rows += [(f"r{i:02d}-{c}", texts[i]) for i in range(10) for c in range(5)]  # 10 chapters x 5 more copies
    out = _run(tmp_path, rows, [{"stage": "softdedup", "segments": 5}])
    assert out.num_rows == len(rows)
    w = dict(zip(out["id"].to_pylist(), out["softdedup_weight"].to_pylist()))
    c = dict(zip(out["id"].to_pylist(), out["commonness"].to_pylist()))
    repeated = [f"u{i:04d}" for i in range(10)]
    unique = [f"u{i:04d}" for i in range(10, 300)]
    assert min(c[r] for r in repeated) > np.median([c[u] for u in unique])
    assert max(w[r] for r in repeated) < np.median([w[u] for u in unique])
    assert np.mean(list(w.values())) == pytest.approx(1.0, rel=1e-9)
    assert out["weight"].to_pylist() == out["softdedup_weight"].to_pylist()
    again = _run(tmp_path, rows, [{"stage": "softdedup", "segments": 5}], name="again.yaml")
    assert again["softdedup_weight"].to_pylist() == out["softdedup_weight"].to_pylist()


def test_fedrw_from_exact_counts_and_from_minhash_clusters(tmp_path):
    texts = _texts(20)
    rows = [(f"a{i:02d}", t) for i, t in enumerate(texts)] + [(f"b{i}", texts[0].upper()) for i in range(3)]
    out = _run(tmp_path, rows, [{"stage": "fedrw"}], shard_rows=7)  # copies span shards
    w = dict(zip(out["id"].to_pylist(), out["fedrw_weight"].to_pylist()))
    assert w["a00"] == pytest.approx(1 / (math.log(5) + 1e-6)) and w["b0"] == w["a00"]
    assert w["a01"] == pytest.approx(1 / (math.log(2) + 1e-6))
    assert dict(zip(out["id"].to_pylist(), out["dup_count"].to_pylist()))["a00"] == 4
    out2 = _run(tmp_path, rows, [{"stage": "minhash_dedup", "policy": "reweight"},
                                 {"stage": "fedrw", "count_column": "dup_cluster_size"}],
                name="mh.yaml")
    assert dict(zip(out2["id"].to_pylist(), out2["fedrw_weight"].to_pylist())) == pytest.approx(w)
    # Both weights are declared: the final weight is their product (and nothing else).
    product = out2["dedup_weight"].to_numpy() * out2["fedrw_weight"].to_numpy()
    assert out2["weight"].to_numpy() == pytest.approx(product)


def test_softdedup_mode_fedrw_points_at_the_fedrw_stage(tmp_path):
    from thresher.pipeline.engine.config import ConfigError, load_config

    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["x"]}],
                       stages=[{"stage": "softdedup", "mode": "fedrw"}])
    with pytest.raises(ConfigError, match="now a stage of its own: write `- stage: fedrw`"):
        load_config(p)
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["x"]}], stages=[{"stage": "softdedup", "bits": 22}])
    with pytest.raises(ConfigError, match="counts n-grams exactly"):
        load_config(p)


def test_softdedup_over_a_local_tokenizer(tmp_path):
    from thresher.scorers.tokenizer import train_bpe_tokenizer

    texts = _texts(300)
    train_bpe_tokenizer(texts, 500, tmp_path / "tok")
    rows = [(f"u{i:04d}", t) for i, t in enumerate(texts[:150])]
    rows += [(f"r{i:02d}-{c}", texts[i]) for i in range(5) for c in range(5)]
    out = _run(tmp_path, rows, [{"stage": "softdedup", "segments": 4, "tokenizer": str(tmp_path / "tok")}])
    c = dict(zip(out["id"].to_pylist(), out["commonness"].to_pylist()))
    w = dict(zip(out["id"].to_pylist(), out["softdedup_weight"].to_pylist()))
    repeated = [f"u{i:04d}" for i in range(5)]
    unique = [f"u{i:04d}" for i in range(5, 150)]
    assert min(c[r] for r in repeated) > np.median([c[u] for u in unique])
    assert max(w[r] for r in repeated) < np.median([w[u] for u in unique])


def test_missing_tokenizer_folder_is_a_clear_error(tmp_path):
    from thresher.pipeline.engine.errors import TaskFailed

    with pytest.raises(TaskFailed, match="is not a folder"):
        _run(tmp_path, [("a", "some words here")], [{"stage": "softdedup", "tokenizer": str(tmp_path / "nope")}])


def test_key_counts_group_each_shards_keys_by_partition():
    """Round 1's output: every distinct key once, partition by partition as `starts` says, its
    occurrences, and an inverse that gives back every k-gram's key; the merge's distinct_keys
    groups like np.unique."""
    from thresher.scorers.ngram import distinct_keys, key_counts, key_partition, ngram_keys

    keys, _ = ngram_keys(pa.array(demo_texts("scripture", 60)), 4)
    present = np.concatenate([row[row >= 0] for row in keys])
    distinct, counts, inverse, starts = key_counts(keys, 3)
    assert len(distinct) == len(np.unique(present)) and (distinct[inverse] == present).all()
    want = Counter(present.tolist())
    assert [want[k] for k in distinct.tolist()] == counts.tolist()
    assert starts[0] == 0 and starts[-1] == len(distinct) and len(starts) == 9
    for p in range(8):
        assert (key_partition(distinct[starts[p]:starts[p + 1]], 3) == p).all()
    merged, where = distinct_keys(np.concatenate([present, present[::3]]))
    assert len(merged) == len(distinct) and (merged[where] == np.concatenate([present, present[::3]])).all()
