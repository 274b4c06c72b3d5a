"""The fastText domain classifier's training survives a diverging learning rate."""

from __future__ import annotations

import random

import pytest

from conftest import demo_texts
from thresher.scorers.domain_classifier import _train

fasttext = pytest.importorskip("fasttext")


def test_a_diverging_rate_is_halved_until_training_converges(tmp_path):
    rows = [f"__label__in {' '.join(t.split())}" for t in demo_texts("scripture", 100)]
    rows += [f"__label__out {' '.join(t.split())}" for t in demo_texts("python_docs", 100)]
    random.Random(0).shuffle(rows)
    path = tmp_path / "train.txt"
    path.write_text("\n".join(rows) + "\n")
    kwargs = dict(epoch=20, wordNgrams=2, dim=32, thread=1, seed=0, verbose=0, minCount=1)
    with pytest.raises(RuntimeError, match="NaN"):  # fastText itself diverges at this rate
        fasttext.train_supervised(str(path), lr=200, **kwargs)
    model = _train(fasttext, str(path), lr=200, **kwargs)  # 200, 100, 50 diverge; 25 converges
    assert model.predict(" ".join(demo_texts("scripture", 101)[-1].split()))[0][0] == "__label__in"
    with pytest.raises(RuntimeError, match="NaN"):
        _train(fasttext, str(path), lr=1e6, **kwargs)
