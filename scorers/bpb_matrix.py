"""Bits per byte per domain for several models: the X of perplexity correlations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from thresher.scorers.reference_lm import load_reference, score_texts


def bpb_matrix(models: list[str | Path], pages: dict[str, list[str]], max_length: int = 512,
               device: str = "auto") -> pa.Table:
    """One row per model, one column per domain: token-weighted bpb = sum NLL / ln 2 / sum bytes
    over the domain's pages, each scored in windows of at most max_length tokens."""
    domains = sorted(pages)
    cols: dict[str, list] = {"model": []}
    for d in domains:
        cols[d] = []
    for path in models:
        model, tok, dev = load_reference(path, device)
        cols["model"].append(Path(path).name)
        for d in domains:
            s = score_texts(model, tok, pages[d], dev, max_length=max_length)
            cols[d].append(float(s.nll.sum() / math.log(2) / max(int(s.bytes.sum()), 1)))
        del model
    return pa.table({k: pa.array(v, pa.string() if k == "model" else pa.float64()) for k, v in cols.items()})


def as_matrix(table: pa.Table) -> np.ndarray:
    return np.column_stack([table[c].to_numpy() for c in table.column_names if c != "model"])
