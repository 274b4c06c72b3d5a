"""A labelled harmful/clean set built from real text, for the harmful-filter tests.

No labelled toxicity corpus ships in any package here, so the harmful side is synthetic: real
sentences (KJV, Python docs, fortunes from tests/data/demo) with words from better-profanity's
English list (MIT; a fixed draw of 20, as abusive text repeats a small vocabulary densely)
inserted after 50-100% of the words; the clean side is other real sentences left
as they are. Deterministic for a seed.
"""

from __future__ import annotations

import os
import random
import re

from conftest import demo_texts


def profanity_words() -> list[str]:
    import better_profanity

    path = os.path.join(os.path.dirname(better_profanity.__file__), "profanity_wordlist.txt")
    with open(path, encoding="utf-8") as fh:
        return [w.strip() for w in fh if w.strip()]


def real_sentences(sources=("scripture", "python_docs", "fortunes")) -> list[str]:
    out = []
    for name in sources:
        for text in demo_texts(name):
            text = " ".join(text.split())
            out += [s for s in re.split(r"(?<=[.!?])\s+", text) if 8 <= len(s.split()) <= 40]
    return out


def labelled_sets(seed: int = 0, n_train: int = 6000, n_eval: int = 600,
                  sources=("scripture", "python_docs", "fortunes")):
    """(harmful training texts, validation [(text, label)], test [(text, label)])."""
    rng = random.Random(seed)
    sentences = real_sentences(sources)
    rng.shuffle(sentences)
    # Abusive text repeats a small vocabulary densely: a fixed draw of 20 list words.
    bad = rng.sample(profanity_words(), 20)

    def harm(s: str) -> str:
        out = []
        rate = rng.uniform(0.5, 1.0)
        for w in s.split():  # insert, do not replace: the sentence itself stays intact
            out.append(w)
            if rng.random() < rate:
                out.append(rng.choice(bad))
        return " ".join(out)

    pool = iter(sentences)
    train = [harm(next(pool)) for _ in range(n_train)]

    def labelled(n: int):
        rows = [(harm(next(pool)), 1) for _ in range(n // 2)] + [(next(pool), 0) for _ in range(n - n // 2)]
        rng.shuffle(rows)
        return rows

    return train, labelled(n_eval), labelled(n_eval)
