"""Mixtures: the Aioli proxy run, weights normalised to proportions, the sampler, the export."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import chisquare

from conftest import DEMO_DATA, write_pipeline
from thresher.pipeline.commands.export import export
from thresher.pipeline.commands.sampler import WeightedMixtureSampler
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner
from thresher.scorers.tokenizer import train_bpe_tokenizer


def _fake_output(tmp_path, weights_per_shard):
    texts = []
    with gzip.open(DEMO_DATA / "scripture.jsonl.gz", "rt") as fh:
        texts = [json.loads(line)["text"] for line in fh]
    out = tmp_path / "out" / "data"
    out.mkdir(parents=True)
    k = 0
    for s, weights in enumerate(weights_per_shard):
        n = len(weights)
        pq.write_table(pa.table({"id": [f"r{k + i:03d}" for i in range(n)], "text": texts[k:k + n],
                                 "group": ["a" if (k + i) % 3 else "b" for i in range(n)],
                                 "weight": np.asarray(weights, float)}), out / f"part-{s:05d}.parquet")
        k += n
    (tmp_path / "out" / "manifest.json").write_text(json.dumps({"config_hash": "fake", "output": {"rows": k}}))
    return tmp_path / "out"


def test_sampler_frequencies_match_weights_and_resume(tmp_path):
    rng = np.random.default_rng(0)
    weights = [rng.uniform(0.1, 3.0, 25), rng.uniform(0.1, 3.0, 15)]
    out = _fake_output(tmp_path, weights)
    sampler = WeightedMixtureSampler(out / "data", seed=7, block=1000)
    draws = sampler.indices(0, 40_000)
    w = np.concatenate(weights)
    observed = np.bincount(draws, minlength=len(w))
    expected = w / w.sum() * len(draws)
    assert chisquare(observed, expected).pvalue > 1e-3
    np.testing.assert_array_equal(sampler.indices(12_345, 500), draws[12_345:12_845])  # resumable
    assert not np.array_equal(WeightedMixtureSampler(out / "data", seed=8).indices(0, 100), draws[:100])
    rows = list(WeightedMixtureSampler(out / "data", seed=7, start_step=100, num_steps=5, block=1000))
    ids = [r["id"] for r in rows]
    assert ids == [f"r{i:03d}" for i in draws[100:105]] and [r["step"] for r in rows] == list(range(100, 105))


@pytest.mark.parametrize("fmt, seq_len", [("parquet", 128), ("parquet", 4), ("bin", 128)])
def test_export_packs_every_token_per_group(tmp_path, fmt, seq_len):
    out = _fake_output(tmp_path, [np.ones(30), np.ones(20)])
    data = pq.read_table(out / "data")
    tok = train_bpe_tokenizer(data["text"].to_pylist(), 600, tmp_path / "tok")
    # batch_rows=8: many batches, and with seq_len 4 sequences are written while tokenizing.
    summary = export(out, str(tmp_path / "tok"), tmp_path / "export", seq_len=seq_len, fmt=fmt, batch_rows=8)
    assert not list((tmp_path / "export").glob("*.tmp"))
    for g in ("a", "b"):
        texts = [t for t, gg in zip(data["text"].to_pylist(), data["group"].to_pylist()) if gg == g]
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        expected = [t for x in ids for t in (*x, tok.eos_token_id)]
        assert summary["groups"][g]["tokens"] == len(expected) and summary["groups"][g]["documents"] == len(texts)
        if fmt == "bin":
            stream = np.fromfile(tmp_path / "export" / f"{g}.bin", dtype=np.uint16)
            starts = np.fromfile(tmp_path / "export" / f"{g}.idx", dtype=np.int64)
            assert stream.tolist() == expected
            assert tok.decode(stream[starts[1]:starts[2] - 1].tolist()) == tok.decode(ids[1])
        else:
            t = pq.read_table(tmp_path / "export" / f"{g}.parquet")
            seqs = t["input_ids"].to_pylist()
            assert all(len(s) == seq_len for s in seqs[:-1]) and sum(t["full"].to_pylist()) >= len(seqs) - 1
            assert t["full"].to_pylist() == [len(s) == seq_len for s in seqs]
            assert len(seqs) == summary["groups"][g]["sequences"]
            if seq_len == 4:
                assert pq.ParquetFile(tmp_path / "export" / f"{g}.parquet").num_row_groups > 1
            assert [x for s in seqs for x in s] == expected
    assert summary["tokens"] == sum(v["tokens"] for v in summary["groups"].values())


def test_mixture_stage_on_real_groups(demo_subset, tmp_path):
    stages = [{"stage": "length_filter", "min_words": 30}, {"stage": "softdedup"},
              {"stage": "mixture", "steps": 160, "round_steps": 80, "docs_per_group": 150, "seq_len": 48, "chunk_steps": 2}]
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": [str(demo_subset / "*.jsonl.gz")],
                                                     "id_column": "doc_id", "domain_column": "domain"}],
                       stages=stages, shard_rows=400)
    res = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()
    mix = json.loads((res.output_dir / "mixture.json").read_text())
    v = mix["validation"]
    print(f"proxy validation loss: stratified {v['stratified']['mean_val_loss']:.4f}, "
          f"aioli {v['aioli']['mean_val_loss']:.4f}; proportions {mix['proportions']}")
    assert mix["groups"] == ["fortunes", "python-docs", "scripture"]
    assert len(mix["proportions_per_round"]) == 1 + 2 and len(mix["A_per_round"]) == 2
    for p_round in mix["proportions_per_round"]:
        assert sum(p_round) == pytest.approx(1.0)
    rounds = mix["proportions_per_round"][1:]  # the mixture: the mean of the last half of the rounds
    assert mix["proportions"] == pytest.approx(np.mean(rounds[len(rounds) // 2:], axis=0).tolist())
    assert mix["last_round_proportions"] == pytest.approx(rounds[-1])
    out = pq.read_table(res.output_dir / "data")
    totals = {g: 0.0 for g in mix["groups"]}
    for g, w in zip(out["group"].to_pylist(), out["weight"].to_pylist()):
        totals[g] += w
    assert totals == pytest.approx(dict(zip(mix["groups"], mix["proportions"])))
    # Within a group, weights keep the soft-dedup ratios.
    rows = [r for r in out.select(["group", "weight", "softdedup_weight"]).to_pylist() if r["group"] == "scripture"]
    ratios = {round(r["weight"] / r["softdedup_weight"], 12) for r in rows}
    assert len(ratios) == 1
    from thresher.pipeline.commands.report import render

    page = render(res.output_dir).read_text()
    assert "after every Aioli round" in page  # the plot's caption
    assert "<td><b>mixture</b></td>" + "".join(f"<td><b>{p:.3f}</b></td>" for p in mix["proportions"]) in page
    # Same model, data, steps and seed; only the mixture schedule differs.
    assert v["aioli"]["mean_val_loss"] <= v["stratified"]["mean_val_loss"]


def test_a_group_too_small_for_the_proxy_keeps_its_stratified_share(tmp_path):
    from conftest import MemoryFit, demo_texts
    from thresher.stages.mixture import Mixture

    docs = {"scripture": demo_texts("scripture", 30), "python-docs": demo_texts("python_docs", 30),
            "spam": ["a short harmful line left over by the filter"]}
    rows = [(f"{g}-{i}", t, g) for g, texts in docs.items() for i, t in enumerate(texts)]
    table = pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows], "domain": [r[2] for r in rows]})
    stage = Mixture(Mixture.Params(steps=10, round_steps=5, sweeps=1, chunk_steps=1, docs_per_group=30, seq_len=16,
                                   vocab_size=256))
    state = stage.fit(MemoryFit({"s": table}, tmp_path)).report
    assert state["too_small_for_proxy"] == ["spam"] and state["mixed_groups"] == ["python-docs", "scripture"]
    p = dict(zip(state["groups"], state["proportions"]))
    assert p["spam"] == pytest.approx(1 / 61) and sum(p.values()) == pytest.approx(1.0)
    assert all(len(r) == 3 and sum(r) == pytest.approx(1.0) for r in state["proportions_per_round"])


class _Recording(InlineExecutor):
    """Runs inline, and notes each map's task, item count and resources."""

    def __init__(self):
        self.maps = []

    def map(self, task, items, resources=None):
        self.maps.append((getattr(task, "fn", task), len(items), resources))
        return super().map(task, items) if resources is None else super().map(task, items, resources)


def test_the_proxy_runs_are_a_task_of_the_executor_with_the_stages_resources(demo_subset, tmp_path, monkeypatch):
    """The mixture's global pass trains models: that runs through the executor, with the stage's
    declared resources (a GPU for device cuda), never in the driver; the group shares it sets are
    saved with its state, so finalizing (a rerun too) builds no stage."""
    from thresher.pipeline.engine.config import StageConfig
    from thresher.stages.mixture import Mixture

    assert Mixture.resources_for(Mixture.Params(device="cuda")).gpus == 1.0
    assert Mixture.resources_for(Mixture.Params(device="cpu")).gpus == 0.0
    stages = [{"stage": "length_filter", "min_words": 30},
              {"stage": "mixture", "steps": 10, "round_steps": 5, "sweeps": 1, "chunk_steps": 1, "docs_per_group": 20,
               "seq_len": 16, "vocab_size": 256, "device": "cpu"}]
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": [str(demo_subset / "*.jsonl.gz")],
                                                     "id_column": "doc_id", "domain_column": "domain"}],
                       stages=stages, shard_rows=400)
    cfg = load_config(p)
    executor = _Recording()
    res = Runner(cfg, executor=executor, progress=Progress(False)).run()
    trained = [(fn, n, r) for fn, n, r in executor.maps if getattr(fn, "__name__", "") == "merge"]
    assert len(trained) == 1 and trained[0][1] == 1 and trained[0][2] == cfg.stages[1].resources
    assert isinstance(trained[0][0].__self__, Mixture)
    mixture = json.loads((res.output_dir / "mixture.json").read_text())
    saved = res.stage_dirs["02-mixture"].load_shares()
    assert saved.shares == dict(zip(mixture["groups"], mixture["proportions"])) and saved.file == "mixture.json"

    def no_build(self, seed):
        raise AssertionError("a finished run's output needs no stage built")

    monkeypatch.setattr(StageConfig, "build", no_build)
    again = Runner(cfg, executor=InlineExecutor(), progress=Progress(False)).run()
    assert json.loads((again.output_dir / "mixture.json").read_text()) == mixture


def test_the_mixture_is_the_same_inline_and_on_ray_workers(demo_subset, tmp_path, ray_session):
    """The proxy runs train with a fixed number of torch threads: a Ray worker (given one CPU, so
    one thread by default) finds the proportions the driver finds."""
    from thresher.pipeline.engine.executor import RayExecutor

    stages = [{"stage": "length_filter", "min_words": 30},
              {"stage": "mixture", "steps": 16, "round_steps": 8, "sweeps": 1, "chunk_steps": 2, "docs_per_group": 20,
               "seq_len": 32, "vocab_size": 256, "device": "cpu"}]
    mixtures = []
    for name, executor in (("inline", InlineExecutor()), ("ray", RayExecutor())):
        p = write_pipeline(tmp_path / f"{name}.yaml", inputs=[{"paths": [str(demo_subset / "*.jsonl.gz")],
                                                               "id_column": "doc_id", "domain_column": "domain"}],
                           stages=stages, shard_rows=400, work_dir=f"w-{name}", output={"dir": f"o-{name}"})
        res = Runner(load_config(p), executor=executor, progress=Progress(False)).run()
        mixtures.append((res.output_dir / "mixture.json").read_bytes())
    assert mixtures[0] == mixtures[1]
