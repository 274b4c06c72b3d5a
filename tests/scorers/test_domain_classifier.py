"""The fastText domain classifier's training survives a diverging learning rate, and still learns after it."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import demo_texts
from thresher.scorers.domain_classifier import DomainClassifier, _train

fasttext = pytest.importorskip("fasttext")


def test_a_diverging_rate_is_halved_until_training_converges(tmp_path):
    rows = [f"__label__in {' '.join(t.split())}" for t in demo_texts("scripture", 100)]
    rows += [f"__label__out {' '.join(t.split())}" for t in demo_texts("python_docs", 100)]
    random.Random(0).shuffle(rows)
    path = tmp_path / "train.txt"
    path.write_text("\n".join(rows) + "\n")
    kwargs = dict(wordNgrams=2, dim=32, thread=1, seed=0, verbose=0, minCount=1)
    with pytest.raises(RuntimeError, match="NaN"):  # fastText itself diverges at this rate
        fasttext.train_supervised(str(path), lr=200, epoch=20, **kwargs)
    model = _train(fasttext, str(path), lr=200, epoch=20, **kwargs)  # 200, 100, 50 diverge; 25 converges
    assert model.predict(" ".join(demo_texts("scripture", 101)[-1].split()))[0][0] == "__label__in"
    with pytest.raises(RuntimeError, match="NaN"):
        _train(fasttext, str(path), lr=1e6, epoch=20, **kwargs)


class _DivergesAbove:
    """fastText as on a machine where every rate above `limit` diverges (CI saw 0.1, 0.05 and
    0.025 diverge on the demo pages, where this machine converges at all three)."""

    def __init__(self, limit: float, train_supervised):
        self.limit, self.rates, self.train_supervised = limit, [], train_supervised

    def __call__(self, path, lr, **kwargs):
        self.rates.append(lr)
        if lr > self.limit:
            raise RuntimeError("Encountered NaN.")
        return self.train_supervised(path, lr=lr, **kwargs)


def test_a_classifier_trained_at_a_reduced_rate_still_generalises(monkeypatch):
    shim = _DivergesAbove(0.02, fasttext.train_supervised)
    monkeypatch.setattr(fasttext, "train_supervised", shim)
    a, b = demo_texts("scripture"), demo_texts("python_docs")
    clf = DomainClassifier.train(a[:250], b[:250], seed=0)
    assert shim.rates == [0.1, 0.05, 0.025, 0.0125]
    held_a, held_b = clf.prob_include(a[800:1000]), clf.prob_include(b[800:1000])
    accuracy = (np.sum(held_a > 0.5) + np.sum(held_b <= 0.5)) / 400
    assert accuracy >= 0.8, accuracy  # 20 epochs at the last rate alone gave 0.52
