"""Perplexity-correlation domain weights, the fastText classifier, topics and ToReMi weights."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from perplexity_correlations.estimation import sign_cdf, spearmanr
from perplexity_correlations.projection import linear

from conftest import demo_texts, thresher, write_pipeline
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner
from thresher.scorers.domain_classifier import DomainClassifier
from thresher.stages.ppl_correlation import domain_weights
from thresher.stages.topics import toremi_weights


@pytest.mark.parametrize("estimator,reference", [("spearman", spearmanr), ("sign_cdf", sign_cdf)])
def test_estimates_and_projection_equal_the_package(estimator, reference):
    rng = np.random.default_rng(0)
    for _ in range(5):
        X = rng.random((30, 40))
        y = rng.uniform(0, 1, 30)
        nbytes = rng.integers(1_000, 100_000, 40).astype(float)
        estimate, projected, multiplier = domain_weights(X, y, nbytes, 0.3, estimator)
        share = nbytes / nbytes.sum()
        np.testing.assert_allclose(estimate, reference(X, y))
        np.testing.assert_allclose(projected, linear(reference(X, y), share / 0.3), rtol=1e-6)
        assert projected.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.all(projected <= share / 0.3 + 1e-6)
        np.testing.assert_allclose(multiplier, projected / share, rtol=1e-6)


def test_fasttext_classifier_generalises_to_held_out_pages():
    a, b = demo_texts("scripture"), demo_texts("python_docs")
    clf = DomainClassifier.train(a[:250], b[:250], seed=0)
    held_a, held_b = clf.prob_include(a[800:1000]), clf.prob_include(b[800:1000])
    accuracy = (np.sum(held_a > 0.5) + np.sum(held_b <= 0.5)) / 400
    print(f"fastText held-out accuracy: {accuracy:.3f}")
    assert accuracy >= 0.8  # chance is 0.5


def test_toremi_updates():
    losses = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(toremi_weights(losses, 1, 0.2, 5.0), [1.0, 1.0, 1.5])
    np.testing.assert_allclose(toremi_weights(losses, 2, 0.2, 5.0), [1.5, 1.0, 0.5])
    np.testing.assert_allclose(toremi_weights(np.array([1.0, 10.0]), 1, 0.2, 1.2), [1.0, 1.2])


def _write(tmp_path, rows):
    with open(tmp_path / "docs.jsonl", "w") as fh:
        for i, (text, domain) in enumerate(rows):
            fh.write(json.dumps({"id": f"d{i:05d}", "text": text, "domain": domain}) + "\n")


def test_topics_recover_the_sources(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    rows = ([(t, "scripture") for t in demo_texts("scripture", 300)] +
            [(t, "python-docs") for t in demo_texts("python_docs", 300)] +
            [(t, "fortunes") for t in demo_texts("fortunes", 300, min_words=40)])
    _write(tmp_path, rows)
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["docs.jsonl"], "id_column": "id",
                                                     "domain_column": "domain"}],
                       stages=[{"stage": "topics", "k": 3, "svd_dim": 32}], shard_rows=250)
    res = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()
    out = pq.read_table(res.output_dir / "data")
    ari = adjusted_rand_score(out["domain"].to_pylist(), out["topic"].to_pylist())
    labels = res.manifest["stages"][1]["state"]["labels"]
    print(f"topics ARI vs sources: {ari:.3f}; labels {labels}")
    assert ari >= 0.8
    assert len(set(labels)) == 3 and all(labels)
    assert set(out["topic_weight"].to_pylist()) == {1.0}  # no loss column: neutral weights


def test_bpb_matrix_and_ppl_correlation_end_to_end(tmp_path):
    from thresher.scorers.reference_lm import train_reference

    train = demo_texts("scripture", 150) + demo_texts("python_docs", 150)
    models = [tmp_path / f"m{steps}" for steps in (3, 12, 40)]  # one run saved at three lengths: unequal quality
    train_reference(train, models[-1], vocab_size=512, steps=40, seq_len=64, batch_size=8, log=None, seed=0,
                    snapshots={3: models[0], 12: models[1]})
    rows = ([(t, "scripture") for t in demo_texts("scripture")[300:420]] +
            [(t, "python-docs") for t in demo_texts("python_docs")[300:420]] +
            [(t, "fortunes") for t in demo_texts("fortunes", 120, min_words=30)])
    _write(tmp_path, rows)
    matrix_pipeline = write_pipeline(tmp_path / "m.yaml", inputs=[{"paths": ["docs.jsonl"], "id_column": "id",
                                                                   "domain_column": "domain"}])
    args = ["bpb-matrix", matrix_pipeline, "-o", tmp_path / "bpb.parquet", "--pages", "20"]
    for m in models:
        args += ["--models", m]
    proc = thresher(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    matrix = pq.read_table(tmp_path / "bpb.parquet")
    assert matrix["model"].to_pylist() == ["m3", "m12", "m40"]
    assert set(matrix.column_names) == {"model", "scripture", "python-docs", "fortunes"}
    bpb = np.array(matrix["scripture"].to_pylist())
    assert bpb[0] > bpb[2] > 0  # more training, fewer bits per byte
    # The matrix knows two domains; fortunes stay unseen and go through the classifier.
    keep = pq.read_table(tmp_path / "bpb.parquet", columns=["model", "scripture", "python-docs"])
    pq.write_table(keep, tmp_path / "bpb2.parquet")
    with open(tmp_path / "bench.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "error"])
        w.writerows([["m3", 0.9], ["m12", 0.7], ["m40", 0.5]])
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["docs.jsonl"], "id_column": "id",
                                                     "domain_column": "domain"}],
                       stages=[{"stage": "ppl_correlation", "matrix": "bpb2.parquet", "benchmark": "bench.csv",
                                "rate": 0.6, "pages_per_domain": 60}], shard_rows=100)
    res = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()
    state = res.manifest["stages"][1]["state"]
    assert sum(state["projected"]) == pytest.approx(1.0, abs=1e-5)
    out = pq.read_table(res.output_dir / "data")
    by_domain = {}
    for d, w, prob in zip(out["domain"].to_pylist(), out["pc_weight"].to_pylist(), out["pc_prob"].to_pylist()):
        by_domain.setdefault(d, []).append((w, prob))
    for d in ("scripture", "python-docs"):
        assert [w for w, _ in by_domain[d]] == pytest.approx([state["weights"][d]] * len(by_domain[d]))
    assert all(0.0 <= prob <= 1.0 for _, prob in by_domain["fortunes"])
    assert out["weight"].to_pylist() == pytest.approx(out["pc_weight"].to_pylist())


def test_topics_with_a_local_embedding_model_and_toremi_weights(tmp_path):
    from transformers import BertConfig, BertModel

    from thresher.scorers.tokenizer import train_bpe_tokenizer

    texts = demo_texts("scripture", 60) + demo_texts("python_docs", 60)
    tok = train_bpe_tokenizer(texts, 400, tmp_path / "enc")
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=256)).save_pretrained(tmp_path / "enc")
    _write(tmp_path, [(t, "x") for t in texts])
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["docs.jsonl"], "id_column": "id"}], shard_rows=50,
                       stages=[{"stage": "length_filter", "min_words": 1},
                               {"stage": "topics", "k": 3, "embedding_model": "enc", "loss_column": "n_words",
                                "toremi_stage": 2, "w_min": 0.5, "w_max": 2.0}])
    res = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()
    state = res.manifest["stages"][2]["state"]
    out = pq.read_table(res.output_dir / "data")
    assert set(out["topic"].to_pylist()) <= {0, 1, 2} and out.num_rows == len(texts)
    expected = toremi_weights(np.array(state["topic_loss"]), 2, 0.5, 2.0)
    np.testing.assert_allclose(state["weights"], expected)
    w = dict(enumerate(state["weights"]))
    assert out["topic_weight"].to_pylist() == [w[t] for t in out["topic"].to_pylist()]
