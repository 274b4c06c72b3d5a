"""Zero rows anywhere: empty inputs, a shard that a filter empties, a zero-row batch; every stage
and every global pass (zero shards) must come through with the accounting intact."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import demo_texts, write_pipeline
from thresher.pipeline import registry
from thresher.pipeline.config import load_config
from thresher.pipeline.executor import InlineExecutor
from thresher.pipeline.progress import Progress
from thresher.pipeline.runner import Runner


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The smallest real models every stage needs: two reference LMs, a harmful KenLM, a bpb matrix."""
    from harmful_data import labelled_sets
    from thresher.pipeline.io import write_parquet
    from thresher.scorers.bpb_matrix import bpb_matrix
    from thresher.scorers.kenlm_model import train_kenlm
    from thresher.scorers.reference_lm import train_reference

    d = tmp_path_factory.mktemp("models")
    texts = demo_texts("scripture", 60) + demo_texts("python_docs", 60)
    for steps in (2, 6):
        train_reference(texts, d / f"ref{steps}", vocab_size=300, steps=steps, seq_len=32, batch_size=4, log=None,
                        seed=steps)
    train, _, _ = labelled_sets(n_train=600, n_eval=2)
    train_kenlm(train, d / "harm", order=3)
    write_parquet(bpb_matrix([d / "ref2", d / "ref6"], {"scripture": texts[:5], "python-docs": texts[60:65]}, 32),
                  d / "bpb.parquet")
    with open(d / "bench.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["model", "error"], ["ref2", 0.8], ["ref6", 0.6]])
    return d


def every_stage(models) -> list[dict]:
    stages = [
        {"stage": "normalize"}, {"stage": "length_filter", "min_words": 20}, {"stage": "exact_dedup"},
        {"stage": "minhash_dedup"}, {"stage": "softdedup"}, {"stage": "fedrw"},
        {"stage": "harmful_filter", "model": str(models / "harm.bin"), "tau_method": "valley"},
        {"stage": "ref_perplexity", "model": str(models / "ref6")}, {"stage": "ppl_select", "band": "medium", "rate": 0.8},
        {"stage": "ppl_correlation", "matrix": str(models / "bpb.parquet"), "benchmark": str(models / "bench.csv"),
         "rate": 0.9},
        {"stage": "topics", "k": 2, "loss_column": "ref_bpb"},
        {"stage": "mixture", "steps": 10, "round_steps": 5, "sweeps": 1, "chunk_steps": 1, "docs_per_group": 10, "seq_len": 16,
         "vocab_size": 256},
    ]
    assert {s["stage"] for s in stages} == set(registry.available()), "a new stage needs a zero-row case here"
    return stages


def _run(tmp_path, inputs, stages, **extra):
    p = write_pipeline(tmp_path / "p.yaml", inputs=inputs, stages=stages, **extra)
    return Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()


def test_every_stage_on_empty_inputs(tmp_path, models):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "none.parquet")
    res = _run(tmp_path, [{"paths": ["empty.jsonl", "blank.jsonl", "none.parquet"]}], every_stage(models))
    m = res.manifest
    assert m["totals"] == {"rows_in": 0, "rows_out": 0, "rejected": {}, "rejected_total": 0}
    assert all(s["rows_in"] == s["rows_out"] == 0 for s in m["stages"])
    assert m["output"]["rows"] == 0 and not list((res.output_dir / "data").glob("*.parquet"))


def test_every_stage_when_a_filter_empties_a_shard(tmp_path, models):
    """One input's documents are all too short: its shards are empty from length_filter on, while the
    other input's rows flow through every stage (harmful ones among them, so the valley has two sides)."""
    from harmful_data import labelled_sets

    train, _, _ = labelled_sets(n_train=600, n_eval=2)  # what the harmful model was trained on
    harmful = [" ".join(train[i:i + 4]) for i in range(0, 80, 4)]
    rows = [{"text": t, "domain": "scripture"} for t in demo_texts("scripture", 40, min_words=25) + harmful]
    rows += [{"text": t, "domain": "python-docs"} for t in demo_texts("python_docs", 40, min_words=25)]
    (tmp_path / "long.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "short.jsonl").write_text("\n".join(json.dumps({"text": f"tiny {i}"}) for i in range(30)))
    res = _run(tmp_path, [{"paths": ["long.jsonl"], "domain_column": "domain"},
                          {"paths": ["short.jsonl"], "domain": "scripture"}], every_stage(models), shard_rows=30)
    m = res.manifest
    assert m["stages"][2]["rejected"]["too_short"] == 30
    assert m["totals"]["rows_in"] == 130 == m["totals"]["rows_out"] + m["totals"]["rejected_total"]
    assert m["output"]["rows"] > 0 and m["stages"][7]["rejected"] == {"harmful": 20}


@pytest.mark.parametrize("name", sorted(registry.available()))
def test_each_stage_transforms_a_zero_row_batch(name, models, tmp_path):
    from thresher.pipeline.runner import apply_stage

    cfg = next(s for s in load_config(write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["x"]}],
                                                     stages=every_stage(models))).stages if s.name == name)
    stage = cfg.build(0)
    stage.setup()
    columns = {"id": pa.string(), "text": pa.string(), "source": pa.string(), "domain": pa.string(),
               "ref_bpb": pa.float64(), "ref_ppl": pa.float64(), "dup_cluster_size": pa.int32()}
    table = pa.table({c: pa.array([], t) for c, t in columns.items()})
    state = _fit_empty(stage, tmp_path) if cfg.cls.has_global_pass() else None
    kept, rejected = apply_stage(stage, table, stage.shard_state(state, "none") if state is not None else None, 16)
    assert kept.num_rows == 0 and rejected.num_rows == 0
    assert set(stage.outputs) <= set(kept.column_names)


def _fit_empty(stage, tmp_path):
    from conftest import MemoryFit

    state = stage.fit(MemoryFit({}, tmp_path / "fit"))
    stage.summarize_state(state)
    return state
