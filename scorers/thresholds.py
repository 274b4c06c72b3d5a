"""Choosing a score threshold from data: the valley of a bimodal histogram, or the best macro-F1."""

from __future__ import annotations

import numpy as np


def _peaks(h: np.ndarray, min_height: float = 0.05) -> list[int]:
    """Local maxima at least `min_height` of the highest: smaller bumps are noise in the tails."""
    floor = min_height * h.max()
    inner = [i for i in range(1, len(h) - 1) if h[i] > h[i - 1] and h[i] >= h[i + 1]]
    ends = ([0] if h[0] > h[1] else []) + ([len(h) - 1] if h[-1] > h[-2] else [])
    return [i for i in inner + ends if h[i] >= floor]


def valley_threshold(values: np.ndarray, bins: int | None = None, max_rounds: int = 10_000,
                     max_depth_ratio: float = 0.75) -> float:
    """The minimum method (Prewitt & Mendelsohn): smooth the histogram with a 3-point mean until
    it has at most two modes; the threshold is the lowest point between them. The valley must be
    clearly lower than both modes (<= max_depth_ratio of the smaller), else the data has one mode."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 4 or v.min() == v.max():
        raise ValueError("need at least 4 distinct finite values to find a valley")
    bins = bins or int(np.clip(np.sqrt(len(v)) * 2, 20, 200))
    counts, edges = np.histogram(v, bins=bins)
    h = counts.astype(np.float64)
    for _ in range(max_rounds):
        peaks = sorted(_peaks(h))
        if len(peaks) <= 2:
            break
        h = np.convolve(np.pad(h, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    if len(peaks) < 2:
        raise ValueError("the distribution has a single mode; give the threshold or a labelled validation set")
    a, b = peaks[0], peaks[-1]
    low = a + int(np.argmin(h[a:b + 1]))
    if h[low] > max_depth_ratio * min(h[a], h[b]):
        raise ValueError("the distribution has a single mode; give the threshold or a labelled validation set")
    return float((edges[low] + edges[low + 1]) / 2)


def macro_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    scores = []
    for cls in (True, False):
        tp = np.sum((pred == cls) & (truth == cls))
        fp = np.sum((pred == cls) & (truth != cls))
        fn = np.sum((pred != cls) & (truth == cls))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return float(np.mean(scores))


def best_f1_threshold(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """(tau, macro-F1) for the rule `positive iff score < tau`, over every cut between sorted scores."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    n, pos = len(s), int(y.sum())
    # Predicting the first k (lowest) as positive, for k = 0..n:
    tp = np.concatenate([[0], np.cumsum(y)])
    fp = np.arange(n + 1) - tp
    fn = pos - tp
    tn = (n - pos) - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        f1_pos = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 1.0)
        f1_neg = np.where(2 * tn + fn + fp > 0, 2 * tn / (2 * tn + fn + fp), 1.0)
    macro = (f1_pos + f1_neg) / 2
    # only cuts between distinct values are realisable thresholds
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[1:] > s[:-1]
    k = int(np.argmax(np.where(valid, macro, -1)))
    tau = s[0] - 1.0 if k == 0 else (s[-1] + 1.0 if k == n else (s[k - 1] + s[k]) / 2)
    return float(tau), float(macro[k])
