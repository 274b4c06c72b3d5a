"""Every stage in one pipeline on the demo corpus, with the models it needs trained first (slow)."""

from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq
import pytest

from conftest import write_pipeline
from harmful_data import labelled_sets
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner


@pytest.mark.slow
def test_every_stage_end_to_end(demo_subset, tmp_path):
    import gzip

    from thresher.pipeline.core.files import write_parquet
    from thresher.scorers.bpb_matrix import bpb_matrix
    from thresher.scorers.kenlm_model import train_kenlm
    from thresher.scorers.reference_lm import train_reference

    texts = []
    with gzip.open(demo_subset / "scripture.jsonl.gz", "rt") as fh:
        texts += [json.loads(line)["text"] for line in fh][:200]
    with gzip.open(demo_subset / "python_docs.jsonl.gz", "rt") as fh:
        texts += [json.loads(line)["text"] for line in fh][:200]
    models = []
    for steps in (5, 30):
        d = tmp_path / f"ref{steps}"
        train_reference(texts, d, vocab_size=512, steps=steps, seq_len=64, batch_size=8, log=None, seed=steps)
        models.append(d)
    train, _, _ = labelled_sets(n_train=2000, n_eval=2)
    train_kenlm(train, tmp_path / "harm", order=3)
    pages = {"scripture": texts[:20], "python-docs": texts[200:220]}
    write_parquet(bpb_matrix(models, pages, 128), tmp_path / "bpb.parquet")
    with open(tmp_path / "bench.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["model", "error"], ["ref5", 0.8], ["ref30", 0.6]])
    stages = [
        {"stage": "normalize"}, {"stage": "length_filter", "min_words": 20}, {"stage": "exact_dedup"},
        {"stage": "minhash_dedup"}, {"stage": "softdedup"},
        {"stage": "harmful_filter", "model": "harm.bin", "tau_method": "given", "tau": 5.0},
        {"stage": "ref_perplexity", "model": "ref30"}, {"stage": "ppl_select", "band": "medium", "rate": 0.8},
        {"stage": "ppl_correlation", "matrix": "bpb.parquet", "benchmark": "bench.csv", "rate": 0.9},
        {"stage": "topics", "k": 3, "loss_column": "ref_bpb"},
        {"stage": "mixture", "steps": 60, "round_steps": 30, "sweeps": 1, "chunk_steps": 2, "docs_per_group": 60, "seq_len": 32},
    ]
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": [str(demo_subset / "*.jsonl.gz")],
                                                     "id_column": "doc_id", "domain_column": "domain"}],
                       stages=stages, shard_rows=500)
    res = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()
    m = res.manifest
    assert [s["name"] for s in m["stages"]][1:] == [s["stage"] for s in stages]
    assert m["totals"]["rows_in"] == m["totals"]["rows_out"] + m["totals"]["rejected_total"]
    out = pq.read_table(res.output_dir / "data")
    for col in ("dup_cluster", "softdedup_weight", "harm_ppl", "ref_ppl", "pc_weight", "topic_weight",
                "mixture_proportion", "weight", "group"):
        assert col in out.column_names
    mix = json.loads((res.output_dir / "mixture.json").read_text())
    totals = {}
    for g, w in zip(out["group"].to_pylist(), out["weight"].to_pylist()):
        totals[g] = totals.get(g, 0.0) + w
    assert totals == pytest.approx({g: p for g, p in zip(mix["groups"], mix["proportions"]) if g in totals})
