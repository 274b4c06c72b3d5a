"""Planted near-duplicates and pairwise precision/recall against exact Jaccard.

Used by the quality test and by bench/minhash.py, so both measure the same thing.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

from thresher.scorers.minhash import shingles


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    sa, sb = set(shingles(a, ngram)), set(shingles(b, ngram))
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


def edit_words(text: str, rng: random.Random, rate: float) -> str:
    """Delete, substitute or insert words at `rate`: the similarity to the original falls with rate."""
    words = text.split()
    out = []
    for w in words:
        r = rng.random()
        if r < rate / 3:
            continue
        out.append(rng.choice(words) if r < 2 * rate / 3 else w)
        if rng.random() < rate / 3:
            out.append(rng.choice(words))
    return " ".join(out)


def plant_near_duplicates(texts: list[str], seed: int = 0, max_rate: float = 0.1) -> list[tuple[str, str]]:
    """(id, text) rows: every base text plus one edited copy, ids `b{i}` and `v{i}`."""
    rng = random.Random(seed)
    rows = []
    for i, t in enumerate(texts):
        rows.append((f"b{i:05d}", t))
        rows.append((f"v{i:05d}", edit_words(t, rng, rng.uniform(0.0, max_rate))))
    return rows


def plant_clusters(texts: list[str], cluster_share: float, seed: int = 0,
                   max_rate: float = 0.03) -> list[tuple[str, int]]:
    """(text, planted cluster) rows, shuffled: each base text alone, or (so that about
    `cluster_share` of all rows lie in clusters) with 1-9 word-level edits of it (edit rate up
    to `max_rate`) in a cluster of 2-10."""
    rng = random.Random(seed)
    heads = cluster_share / (6.0 - 5.0 * cluster_share)  # mean cluster size 6: the share of bases that head one
    rows = []
    for i, base in enumerate(texts):
        rows.append((base, i))
        if rng.random() < heads:
            rows += [(edit_words(base, rng, rng.uniform(0.0, max_rate)), i) for _ in range(rng.randint(1, 9))]
    rng.shuffle(rows)
    return rows


def planted_pairs(texts: dict[str, str]) -> list[list[str]]:
    """The pairs plant_near_duplicates made: (b_i, v_i)."""
    return [[k, "v" + k[1:]] for k in texts if k.startswith("b")]


def pairwise_quality(texts: dict[str, str], clusters: dict[str, str], planted: list[list[str]],
                     threshold: float, recall_margin: float = 0.1, ngram: int = 5) -> dict:
    """Exact shingle Jaccard of every pair put in one cluster (precision: the share at or above
    `threshold`; the lowest; how many below 0.6), and recall over the pairs within a planted group
    whose exact Jaccard is >= threshold + recall_margin."""
    members = defaultdict(list)
    for doc, c in clusters.items():
        members[c].append(doc)
    merged = [jaccard(texts[a], texts[b], ngram) for ms in members.values() for a, b in itertools.combinations(ms, 2)]
    sims = {(a, b): jaccard(texts[a], texts[b], ngram) for g in planted for a, b in itertools.combinations(g, 2)}
    strong = [p for p, sim in sims.items() if sim >= threshold + recall_margin]
    return {"merged_pairs": len(merged), "min_merged_jaccard": min(merged, default=1.0),
            "merged_below_0.6": sum(j < 0.6 for j in merged),
            "precision": sum(j >= threshold for j in merged) / len(merged) if merged else 1.0,
            "largest_cluster": max((len(ms) for ms in members.values()), default=0),
            "planted_pairs": len(sims), "planted_at_or_above_threshold": sum(sim >= threshold for sim in sims.values()),
            "strong_pairs": len(strong),
            "recall_strong": sum(clusters[a] == clusters[b] for a, b in strong) / len(strong) if strong else 1.0}
