"""Zero rows anywhere: empty inputs, a shard that a filter empties, a zero-row batch; every stage
and every global pass (zero shards) must come through with the accounting intact."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import demo_texts, write_pipeline
from thresher.pipeline.engine import registry
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner

# The order of the stages known today (any order in which each finds its input columns would do).
PREFERRED = ["normalize", "length_filter", "exact_dedup", "minhash_dedup", "softdedup", "fedrw", "harmful_filter",
             "ref_perplexity", "ppl_select", "ppl_correlation", "topics", "mixture"]
# Settings that make a stage quick on a hundred rows (never what is tested).
QUICK = {"mixture": {"steps": 10, "round_steps": 5, "sweeps": 1, "chunk_steps": 1, "docs_per_group": 10,
                     "seq_len": 16, "vocab_size": 256},
         "topics": {"k": 2}, "ppl_select": {"rate": 0.8}, "ppl_correlation": {"rate": 0.9}}


def every_stage() -> list[dict]:
    """Every registered stage, from its own documented example, in an order in which each finds
    its input columns: a new stage is in here without a line of this file changing."""
    ingested = {"id", "text", "source", "domain"}
    cases = {name: {"stage": name, **cls.example, **QUICK.get(name, {})} for name, cls in registry.available().items()}
    todo = sorted(cases, key=lambda n: PREFERRED.index(n) if n in PREFERRED else len(PREFERRED))
    ordered, have = [], set(ingested)
    while todo:
        for name in todo:
            cls = registry.get(name)
            columns = cls.columns_for(cls.Params.model_validate({k: v for k, v in cases[name].items() if k != "stage"}))
            if set(columns.inputs) <= have:
                ordered.append(cases[name])
                have |= set(columns.outputs)
                todo.remove(name)
                break
        else:
            raise AssertionError(f"no order gives {todo} their input columns")
    return ordered


@pytest.fixture
def models(tmp_path, stage_models):
    """models/ beside the test's pipeline YAML, as the stages' examples name it."""
    (tmp_path / "models").symlink_to(stage_models)
    return stage_models


def _stage(manifest: dict, name: str) -> dict:
    return next(s for s in manifest["stages"] if s["name"] == name)


def _run(tmp_path, inputs, stages, **extra):
    p = write_pipeline(tmp_path / "p.yaml", inputs=inputs, stages=stages, **extra)
    return Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()


def test_every_stage_on_empty_inputs(tmp_path, models):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "none.parquet")
    res = _run(tmp_path, [{"paths": ["empty.jsonl", "blank.jsonl", "none.parquet"]}], every_stage())
    m = res.manifest
    assert m["totals"] == {"rows_in": 0, "rows_out": 0, "rejected": {}, "rejected_total": 0}
    assert all(s["rows_in"] == s["rows_out"] == 0 for s in m["stages"])
    assert m["output"]["rows"] == 0 and not list((res.output_dir / "data").glob("*.parquet"))


def test_every_stage_when_a_filter_empties_a_shard(tmp_path, models, harmful_kenlm):
    """One input's documents are all too short: its shards are empty from length_filter on, while the
    other input's rows flow through every stage (harmful ones among them, so the valley has two sides)."""
    train = harmful_kenlm.train  # what the harmful model was trained on
    harmful = [" ".join(train[i:i + 4]) for i in range(0, 80, 4)]
    rows = [{"text": t, "domain": "scripture"} for t in demo_texts("scripture", 40, min_words=25) + harmful]
    rows += [{"text": t, "domain": "python-docs"} for t in demo_texts("python_docs", 40, min_words=25)]
    (tmp_path / "long.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "short.jsonl").write_text("\n".join(json.dumps({"text": f"tiny {i}"}) for i in range(30)))
    res = _run(tmp_path, [{"paths": ["long.jsonl"], "domain_column": "domain"},
                          {"paths": ["short.jsonl"], "domain": "scripture"}], every_stage(), shard_rows=30)
    m = res.manifest
    assert _stage(m, "length_filter")["rejected"]["too_short"] == 30
    assert m["totals"]["rows_in"] == 130 == m["totals"]["rows_out"] + m["totals"]["rejected_total"]
    assert m["output"]["rows"] > 0 and _stage(m, "harmful_filter")["rejected"] == {"harmful": 20}


@pytest.mark.parametrize("name", sorted(registry.available()))
def test_each_stage_transforms_a_zero_row_batch(name, models, tmp_path):
    from thresher.pipeline.engine.runner import apply_stage

    cfg = next(s for s in load_config(write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["x"]}],
                                                     stages=every_stage())).stages if s.name == name)
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
