"""A fastText classifier of documents: P(include) learned from pages of included vs excluded domains."""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np

_WS = re.compile(r"\s+")


def _line(text: str) -> str:
    return _WS.sub(" ", (text or "").lower()).strip()


class DomainClassifier:
    def __init__(self, model_bytes: bytes):
        self.model_bytes = model_bytes
        self._model = None

    @classmethod
    def train(cls, included: list[str], excluded: list[str], seed: int = 0, epoch: int = 20,
              wordNgrams: int = 2, dim: int = 32) -> "DomainClassifier":
        import fasttext

        if not included or not excluded:
            raise ValueError("the classifier needs pages of both included and excluded domains")
        rng = np.random.default_rng(seed)
        rows = [f"__label__in {_line(t)}" for t in included] + [f"__label__out {_line(t)}" for t in excluded]
        rows = [rows[i] for i in rng.permutation(len(rows))]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "train.txt")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write("\n".join(rows) + "\n")
            model = _train(fasttext, path, epoch=epoch, wordNgrams=wordNgrams, dim=dim, thread=1, seed=seed,
                           verbose=0, minCount=1)
            out = os.path.join(tmp, "model.bin")
            model.save_model(out)
            with open(out, "rb") as fh:
                return cls(fh.read())

    def _load(self):
        if self._model is None:
            import fasttext

            with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as fh:
                fh.write(self.model_bytes)
            try:
                self._model = fasttext.load_model(fh.name)
            finally:
                os.unlink(fh.name)
        return self._model

    def __getstate__(self):
        return {"model_bytes": self.model_bytes}

    def __setstate__(self, state):
        self.model_bytes, self._model = state["model_bytes"], None

    def prob_include(self, texts: list[str]) -> np.ndarray:
        labels, probs = self._load().predict([_line(t) for t in texts], k=2)
        return np.array([dict(zip(ls, ps)).get("__label__in", 0.0) for ls, ps in zip(labels, probs)])


def _train(fasttext, path: str, lr: float = 0.1, epoch: int = 5, **kwargs):
    """fastText's supervised training; where its loss diverges ("Encountered NaN", which a few
    hundred long pages can do at fastText's default rate on some machines), again at half the
    rate for twice the epochs: the same learning budget, so a retried model is not left
    underfitted (20 epochs at an eighth of the rate stay at chance)."""
    for attempt in range(4):
        try:
            return fasttext.train_supervised(path, lr=lr / 2 ** attempt, epoch=epoch * 2 ** attempt, **kwargs)
        except RuntimeError as exc:
            if "NaN" not in str(exc) or attempt == 3:
                raise
