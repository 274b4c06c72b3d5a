"""Build the bundled harmful-text sample (see tests/data/demo/SOURCES.md).

    .venv/bin/python tests/data/make_harmful.py

No labelled toxicity corpus ships in any package, so the harmful side is synthetic, built as the
harmful-filter tests build it (tests/harmful_data.py): real sentences of the demo corpus with
words of better-profanity's English list (MIT) inserted densely. Writes tests/data/demo/harmful/:
  train.jsonl.gz       harmful sentences only: what `thresher train-kenlm` learns from
  validation.jsonl.gz  labelled documents for tau_method: f1: harmful ones (three harmful
                       sentences each) and clean ones (real documents of the demo corpus, as the
                       filter will meet them: 100 per source), 300 of each
  mixed_in.jsonl.gz    harmful documents (three sentences each) that the demo adds to its inputs,
                       so the filter has something to find
Deterministic (seed 0).
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))  # tests/: harmful_data and conftest

from conftest import demo_texts  # noqa: E402
from harmful_data import labelled_sets  # noqa: E402

OUT = HERE / "demo" / "harmful"


def _documents(sentences: list[str]) -> list[str]:
    return [" ".join(sentences[i:i + 3]) for i in range(0, len(sentences) - 2, 3)]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # Prose only (scripture, fortunes): harmful sentences built on the software docs would teach
    # the model those docs' boilerplate, and the filter would then flag the docs themselves.
    train, validation, test = labelled_sets(seed=0, n_train=6000, n_eval=1800, sources=("scripture", "fortunes"))
    with gzip.open(OUT / "train.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.writelines(json.dumps({"text": t}) + "\n" for t in train)
    rng = random.Random(0)
    rows = [(t, 1) for t in _documents([t for t, y in validation if y == 1])[:300]]
    for name in ("scripture", "python_docs", "fortunes"):  # 100 clean documents of each kind
        rows += [(t, 0) for t in rng.sample(demo_texts(name, min_words=20), 100)]
    rng.shuffle(rows)
    with gzip.open(OUT / "validation.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.writelines(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows)
    docs = _documents([t for t, y in test if y == 1])[:100]
    with gzip.open(OUT / "mixed_in.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.writelines(json.dumps({"doc_id": f"harm-{i:04d}", "text": t, "domain": "forum-spam"}) + "\n"
                      for i, t in enumerate(docs))
    print(f"{len(train)} training sentences, {len(rows)} labelled documents, {len(docs)} mixed-in documents -> {OUT}")


if __name__ == "__main__":
    main()
