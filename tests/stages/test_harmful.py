"""KenLM training and the harmful-content filter."""

from __future__ import annotations

import json
import math
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import demo_texts, reference_module, write_pipeline
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner
from thresher.scorers.kenlm_model import ccnet_normalize, document_perplexity, normalize, word_counts
from thresher.scorers.thresholds import best_f1_threshold, macro_f1, valley_threshold

kenlm = pytest.importorskip("kenlm")
pytest.importorskip("better_profanity")


TRICKY = ["  Ça   va?\tOui…  ", "İstanbul ǅ ß ﬁ", "x\u00a0y\u2028z\u2029w", "١٢٣ ４５ ² １", "a\x85b\x0bc\rd\x1ce",
          "क्षि ाि", "“quote” — dash – ‘s’ ‚low‚", "\n\n  \xa0\n a \n\n", "e\u0301\u0302", "tab\t\tx\t", "",
          "a_b-c", "ΟΔΥΣΣΕΥΣ ΚΑΙ ΠΗΝΕΛΟΠΗΣ\nΣοφΙΑΣ Σ", "line one\r\n\r\nline\x07 three \x1f\n\t", "．５％", " \x07 lead\x07 "]


@pytest.fixture(scope="module")
def cc_net():
    return reference_module("cc_net/text_normalizer.py")


def _cc_net_doc(cc_net, text: str) -> str:
    return "\n".join(cc_net.normalize(line) for line in text.split("\n"))


def test_normalisation_equals_cc_net(cc_net):
    texts = demo_texts("python_docs") + demo_texts("scripture") + demo_texts("fortunes", 3000) + TRICKY
    got = normalize(pa.chunked_array([texts[:100], texts[100:]])).to_pylist()
    assert got == [_cc_net_doc(cc_net, t) for t in texts]
    # Every code point of this Python's Unicode database, at a line's start, inside and at its end.
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and unicodedata.category(chr(c)) != "Cn"]
    texts = [f"{c}A{c}\t{c} \nb{c}" for c in chars]
    assert normalize(texts).to_pylist() == [_cc_net_doc(cc_net, t) for t in texts]
    # KenLM's Python API splits a sentence on str.split(); our token counts must agree with it.
    lines = [ln for t in TRICKY for ln in normalize([t])[0].as_py().split("\n")]
    assert word_counts(pa.array(lines)).to_pylist() == [len(ln.split()) for ln in lines]


def test_split_punctuation_is_an_option():
    text = "  Héllo, Wörld! It’s 2024…\r\n\n\tSecond\x07  line "
    assert ccnet_normalize(text) == "hello, world! it's 0000...\n\nsecond  line"
    assert ccnet_normalize(text, split_punctuation=True) == "hello , world ! it ' s 0000 . . .\n\nsecond line"


@pytest.fixture
def harmful_model(harmful_kenlm):
    """conftest's session model (`thresher train-kenlm --order 3` on the synthetic harmful set)."""
    return harmful_kenlm.binary, harmful_kenlm.validation, harmful_kenlm.test, harmful_kenlm.train


def test_train_kenlm_writes_arpa_and_binary_that_kenlm_loads(harmful_model):
    binary, _, test, _ = harmful_model
    assert "\\data\\" in binary.with_suffix(".arpa").read_text()[:100]
    model = kenlm.Model(str(binary))
    assert model.order == 3
    one_line = [t.replace("\n", " ") for t, _ in test[:50]]
    for t, p in zip(one_line, document_perplexity(model, one_line)):
        assert p == pytest.approx(model.perplexity(ccnet_normalize(t)), rel=1e-9)


def test_document_perplexity_is_cc_net_doclm(harmful_model, cc_net):
    """cc_net/perplexity.py DocLM.do: every line (empty ones too) normalised by cc_net, scored
    with <s> and </s>, its length len(line.split()) + 1; cc_net rounds the result to 0.1."""
    model = kenlm.Model(str(harmful_model[0]))
    texts = [t for t, _ in harmful_model[2][:200]] + demo_texts("python_docs", 100) + TRICKY + \
        ["two\n\n\nempty lines", "\n"]

    def doclm(text):
        if not text:
            return np.nan  # DocLM.get_lines: no content, no lines, no perplexity
        lines = [cc_net.normalize(line) for line in text.split("\n")]
        return 10.0 ** (-sum(model.score(ln) for ln in lines) / sum(len(ln.split()) + 1 for ln in lines))

    ours = document_perplexity(model, texts + [None])
    np.testing.assert_allclose(ours, [doclm(t) for t in texts + [""]], rtol=1e-9)
    skipped = document_perplexity(model, ["two\n\n\nempty lines", "\n"], empty_lines="skip")
    lines = ["two", "empty lines"]
    assert skipped[0] == pytest.approx(10.0 ** (-sum(model.score(ln) for ln in lines) / 5))
    assert np.isnan(skipped[1])


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
