"""Reference-model perplexity: training, scoring equal to a direct forward pass, band selection."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import demo_texts, thresher, write_pipeline
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner, apply_stage
from thresher.stages.ppl_select import PplSelect, band_ranks

torch = pytest.importorskip("torch")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from thresher.scorers.reference_lm import train_reference

    out = tmp_path_factory.mktemp("ref")
    train_reference(demo_texts("scripture", 150), out, size="tiny", vocab_size=1024, steps=20, seq_len=128,
                    batch_size=8, log=None)
    return out


@pytest.fixture(scope="module")
def stock_model(tiny_model):
    """The saved model exactly as transformers loads it: eager attention, its own GELU, no changes."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_model), attn_implementation="eager").eval()


def _direct_nll(model, tok, text):
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        return model(input_ids=x, labels=x).loss.item(), len(ids) - 1


def test_scores_equal_a_direct_forward_pass(tiny_model, stock_model):
    from thresher.scorers.reference_lm import load_reference, score_texts

    model, tok, device = load_reference(tiny_model, device="cpu")
    texts = ["In the beginning was the Word.", "def f(x):\n    return x + 1", "ünïcödé text, too", ""] + \
        [t[:300] for t in demo_texts("python_docs", 5)]
    s = score_texts(model, tok, texts, device, batch_tokens=512)
    for i, t in enumerate(texts):
        if not t:
            assert s.tokens[i] == 0 and math.isnan(s.ppl[i])
            continue
        loss, n = _direct_nll(stock_model, tok, t)
        assert s.tokens[i] == n
        assert s.nll[i] / n == pytest.approx(loss, rel=1e-4)
        assert s.ppl[i] == pytest.approx(math.exp(loss), rel=1e-4)
        assert s.bpb[i] == pytest.approx(loss * n / math.log(2) / len(t.encode()), rel=1e-4)


def test_long_documents_are_scored_in_windows(tiny_model, stock_model):
    from thresher.scorers.reference_lm import load_reference, score_texts

    model, tok, device = load_reference(tiny_model, device="cpu")
    text = demo_texts("scripture", 1)[0]
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    ctx = 32
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, ctx - 1):  # windows overlapping by one token
        w = torch.tensor([ids[start:start + ctx]])
        with torch.no_grad():
            total += stock_model(input_ids=w, labels=w).loss.item() * (w.shape[1] - 1)
        count += w.shape[1] - 1
    s = score_texts(model, tok, [text, "short"], device, batch_tokens=256, max_length=ctx)
    assert s.tokens[0] == count == len(ids) - 1
    assert s.nll[0] == pytest.approx(total, rel=1e-4)


def test_band_selection_is_exact():
    rng = np.random.default_rng(3)
    n = 1000
    scores = rng.lognormal(3, 1, n)
    scores[:50] = scores[50]  # ties broken by id
    ids = [f"d{i:04d}" for i in range(n)]
    order = sorted(range(n), key=lambda i: (scores[i], ids[i]))
    for band, rate in (("low", 0.3), ("medium", 0.5), ("high", 0.25), ("medium", 1.0)):
        stage = PplSelect(PplSelect.Params(band=band, rate=rate))
        shards = [pa.table({"id": ids[k::3], "domain": ["d"] * len(ids[k::3]), "ref_ppl": scores[k::3]})
                  for k in range(3)]
        state = stage.merge([stage.partial(s) for s in shards])
        kept = set()
        for s in shards:
            k, rej = apply_stage(stage, s, state, 100)
            kept |= set(k["id"].to_pylist())
            assert set(rej["drop_reason"].to_pylist()) <= {"ppl_band"}
        start, stop = band_ranks(n, band, rate)
        assert kept == {ids[i] for i in order[start:stop]}
        assert len(kept) == round(rate * n)


def test_band_selection_per_domain():
    stage = PplSelect(PplSelect.Params(band="low", rate=0.5, per_domain=True))
    t = pa.table({"id": list("abcdefghi"), "domain": ["x"] * 4 + ["y"] * 4 + ["x"],
                  "ref_ppl": [4.0, 3.0, 2.0, 1.0, 40.0, 10.0, 30.0, 20.0, float("nan")]})
    kept, rejected = apply_stage(stage, t, stage.merge([stage.partial(t)]), 10)
    assert sorted(kept["id"].to_pylist()) == ["c", "d", "f", "h"]
    reasons = dict(zip(rejected["id"].to_pylist(), rejected["drop_reason"].to_pylist()))
    assert reasons == {"a": "ppl_band", "b": "ppl_band", "e": "ppl_band", "g": "ppl_band", "i": "ppl_missing"}


def test_train_reference_cli_and_pipeline(tmp_path):
    data = tmp_path / "docs.jsonl"
    with open(data, "w") as fh:
        for i, t in enumerate(demo_texts("scripture", 120) + demo_texts("python_docs", 60)):
            fh.write(json.dumps({"id": f"doc{i:04d}", "text": t}) + "\n")
    model_dir = tmp_path / "ref"
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["docs.jsonl"], "id_column": "id"}], shard_rows=60,
                       stages=[{"stage": "ref_perplexity", "model": "ref", "batch_tokens": 4096},
                               {"stage": "ppl_select", "band": "medium", "rate": 0.5}])
    proc = thresher("train-reference", p, "-o", model_dir, "--fraction", "0.3", "--steps", "10", "--seq-len", "64",
                    "--vocab-size", "512", "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref_ids = set(pq.read_table(model_dir / "reference_ids.parquet")["id"].to_pylist())
    assert 20 < len(ref_ids) < 110
    res = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()
    scored = res.manifest["stages"][1]
    assert scored["rejected"] == {"reference_split": len(ref_ids)}
    selected = res.manifest["stages"][2]
    assert selected["rows_out"] == math.floor(0.5 * selected["rows_in"] + 0.5)
    out = pq.read_table(res.output_dir / "data")
    assert not ref_ids & set(out["id"].to_pylist())
    assert np.all(np.isfinite(out["ref_ppl"].to_numpy())) and np.all(out["ref_bpb"].to_numpy() > 0)


def test_bfloat16_scoring_path_tracks_float32(tiny_model):
    """The GPU path's dtype (bf16 weights, logits upcast for the loss) run on the CPU: scores stay
    within bf16 rounding of fp32 and rank documents the same way."""
    from scipy.stats import spearmanr

    from thresher.scorers.reference_lm import load_reference, score_texts

    texts = [t[:400] for t in demo_texts("python_docs", 15) + demo_texts("scripture", 15)]
    fp32 = score_texts(*load_reference(tiny_model, device="cpu")[:2], texts, "cpu")
    model, tok, _ = load_reference(tiny_model, device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    bf16 = score_texts(model, tok, texts, "cpu", batch_tokens=2048)
    assert (bf16.tokens == fp32.tokens).all()
    assert np.allclose(bf16.ppl, fp32.ppl, rtol=0.03)
    assert spearmanr(bf16.ppl, fp32.ppl)[0] > 0.95
