"""KenLM training and the harmful-content filter."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import demo_texts, write_pipeline
from harmful_data import labelled_sets
from thresher.pipeline.config import load_config
from thresher.pipeline.executor import InlineExecutor
from thresher.pipeline.progress import Progress
from thresher.pipeline.runner import Runner
from thresher.scorers.kenlm_model import ccnet_normalize, document_perplexity, normalize, reference_normalize
from thresher.scorers.thresholds import best_f1_threshold, macro_f1, valley_threshold

kenlm = pytest.importorskip("kenlm")
pytest.importorskip("better_profanity")


def test_ccnet_normalisation():
    assert ccnet_normalize("  Héllo, Wörld! It’s 2024…\r\n\n\tSecond\x07  line ") == \
        "hello , world ! it ' s 0000 . . .\nsecond line"


def test_batch_normalisation_equals_the_per_character_spec():
    tricky = ["  Ça   va?\tOui…  ", "İstanbul ǅ ß ﬁ", "x\u00a0y\u2028z\u2029w", "١٢٣ ４５ ²", "a\x85b\x0bc\rd\x1ce",
              "क्षि ाि", "“quote” — dash – ‘s’", "\n\n  \xa0\n a \n\n", "e\u0301\u0302", "tab\t\tx", "", "a_b-c"]
    texts = demo_texts("python_docs") + demo_texts("scripture") + demo_texts("fortunes", 3000) + tricky
    got = normalize(pa.chunked_array([texts[:100], texts[100:]])).to_pylist()
    want = [reference_normalize(t) for t in texts]
    assert got == want
    # KenLM's Python API splits a sentence on str.split(); our token counts must agree with it.
    lines = [ln for t in want for ln in t.split("\n") if ln]
    assert pc.list_value_length(pc.utf8_split_whitespace(pa.array(lines))).to_pylist() == \
        [len(ln.split()) for ln in lines]


@pytest.fixture(scope="module")
def harmful_model(tmp_path_factory):
    train, validation, test = labelled_sets()
    out = tmp_path_factory.mktemp("harm")
    corpus = out / "harmful.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in train))
    proc = subprocess.run([sys.executable, "-m", "thresher.pipeline.cli", "train-kenlm", str(corpus), "-o",
                           str(out / "harm"), "--order", "3"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out / "harm.bin", validation, test, train


def test_train_kenlm_writes_arpa_and_binary_that_kenlm_loads(harmful_model):
    binary, _, test, _ = harmful_model
    assert binary.with_suffix(".arpa").read_text().startswith("\n\\data\\") or "\\data\\" in \
        binary.with_suffix(".arpa").read_text()[:100]
    model = kenlm.Model(str(binary))
    assert model.order == 3
    texts = [t for t, _ in test[:50]]
    ours = document_perplexity(model, texts)
    for t, p in zip(texts, ours):
        assert p == pytest.approx(model.perplexity(ccnet_normalize(t)), rel=1e-9)
    two_lines = "first line here\nsecond line there"
    lines = ccnet_normalize(two_lines).split("\n")
    logp = sum(model.score(ln) for ln in lines)
    assert document_perplexity(model, [two_lines])[0] == pytest.approx(
        10 ** (-logp / sum(len(ln.split()) + 1 for ln in lines)))


def test_harmful_text_has_low_perplexity_and_f1_threshold_generalises(harmful_model):
    binary, validation, test, _ = harmful_model
    model = kenlm.Model(str(binary))
    v_ppl = document_perplexity(model, [t for t, _ in validation])
    tau, v_f1 = best_f1_threshold(v_ppl, np.array([y for _, y in validation], bool))
    t_ppl = document_perplexity(model, [t for t, _ in test])
    truth = np.array([y for _, y in test], bool)
    pred = t_ppl < tau
    precision = (pred & truth).sum() / pred.sum()
    recall = (pred & truth).sum() / truth.sum()
    f1 = macro_f1(pred, truth)
    print(f"harmful filter on the held-out test set: tau={tau:.1f} precision={precision:.3f} "
          f"recall={recall:.3f} macro-F1={f1:.3f} (validation macro-F1 {v_f1:.3f})")
    assert np.median(t_ppl[truth]) < np.median(t_ppl[~truth])
    assert f1 >= 0.75 and precision >= 0.7 and recall >= 0.7  # chance is 0.5


def test_threshold_choice():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(1.0, 0.2, 3000), rng.normal(3.0, 0.3, 2000)])
    assert 1.5 < valley_threshold(values) < 2.5
    with pytest.raises(ValueError, match="single mode"):
        valley_threshold(rng.normal(0, 1, 5000))
    scores = rng.normal(0, 1, 300)
    labels = rng.random(300) < 0.4
    tau, best = best_f1_threshold(scores, labels)
    brute = max(macro_f1(scores < t, labels) for t in np.concatenate([scores, [scores.min() - 1, scores.max() + 1]]))
    assert best == pytest.approx(brute) == pytest.approx(macro_f1(scores < tau, labels))


def _run_filter(binary, tmp_path, rows, **stage):
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"id": f"d{i:04d}", "text": t}) + "\n"
                                                 for i, (t, _) in enumerate(rows)))
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["docs.jsonl"], "id_column": "id"}],
                       stages=[{"stage": "harmful_filter", "model": str(binary), **stage}], shard_rows=200)
    res = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()
    rejected = res.output_dir / "rejected"
    return res, pq.read_table(rejected) if rejected.exists() else None, pq.read_table(res.output_dir / "data")


def test_harmful_filter_with_f1_threshold(harmful_model, tmp_path):
    binary, validation, test, _ = harmful_model
    (tmp_path / "val.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in validation))
    res, rejected, out = _run_filter(binary, tmp_path, test, tau_method="f1", validation="val.jsonl")
    assert set(rejected["drop_reason"].to_pylist()) == {"harmful"}
    truth = {f"d{i:04d}": y for i, (_, y) in enumerate(test)}
    caught = sum(truth[i] for i in rejected["id"].to_pylist())
    recall, precision = caught / sum(truth.values()), caught / rejected.num_rows
    print(f"harmful_filter (tau from validation macro-F1): recall={recall:.3f} precision={precision:.3f}")
    assert recall >= 0.7 and precision >= 0.7  # chance is 0.5
    assert not any(out["harmful"].to_pylist()) and all(math.isfinite(x) for x in out["harm_ppl"].to_pylist())


def test_harmful_filter_with_valley_threshold(harmful_model, tmp_path):
    binary, _, test, train = harmful_model
    model = kenlm.Model(str(binary))
    # A corpus whose perplexities are bimodal: clean prose plus text the harmful model was trained on.
    rows = [(t, 0) for t, y in test if not y] + [(t, 1) for t in train[:300]]
    ppl = document_perplexity(model, [t for t, _ in rows])
    tau = 10 ** valley_threshold(np.log10(ppl))
    res, rejected, out = _run_filter(binary, tmp_path, rows, tau_method="valley")
    expected = {f"d{i:04d}" for i, p in enumerate(ppl) if p < tau}
    assert 250 <= len(expected) <= 350  # the valley splits the two groups
    assert set(rejected["id"].to_pylist()) == expected  # exactly the rows below the valley
    assert res.manifest["stages"][1]["rejected"] == {"harmful": len(expected)}


def test_flag_keeps_rows(harmful_model, tmp_path):
    binary, _, test, _ = harmful_model
    res, _, out = _run_filter(binary, tmp_path, test[:100], tau_method="given", tau=300.0, action="flag")
    assert out.num_rows == 100
    assert out["harmful"].to_pylist() == [p < 300.0 for p in out["harm_ppl"].to_pylist()]
