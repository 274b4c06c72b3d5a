"""Perplexity-band selection (Ankner et al. 2024): keep a fraction r of documents by band.

low keeps the r*N lowest-perplexity documents, high the r*N highest, medium those between the
percentiles 50 - 50r and 50 + 50r; globally or within each domain. Ranks are exact: documents
are ordered by (perplexity, id), so ties break deterministically and exactly round(r*N) are
kept per group. Documents without a score (empty text) are dropped as `ppl_missing`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.pipeline.core import schema
from thresher.pipeline.core.stage import ColumnName, Params, Stage, StateRecord, mark_dropped

_ALL = ""
Key = tuple[float, str]  # (score, id): ranks are taken in this order, so ties break by id


@dataclass(frozen=True)
class KeptRanges(StateRecord):
    """Per group ("" for all): the keys bounding the kept ranks, [lo, hi) (None: open)."""

    bounds: dict[str, tuple[Key | None, Key | None]]


def band_ranks(n: int, band: str, rate: float) -> tuple[int, int]:
    """[start, stop) ranks kept out of n sorted documents."""
    k = int(math.floor(rate * n + 0.5))
    if band == "low":
        return 0, k
    if band == "high":
        return n - k, n
    start = (n - k) // 2
    return start, start + k


class PplSelect(Stage):
    """Keeps a perplexity band (low, medium or high) at a selection rate (Ankner et al. 2024).

    Keeps exactly round(rate x N) documents by rank
    of (score, id), over the corpus or per domain: the lowest (`low`), the middle (`medium`,
    percentiles 50 +- 50 rate) or the highest (`high`). The paper's best: high for the Pile, medium
    for Dolma, rate 0.5. Documents without a score are dropped as `ppl_missing`, the rest outside the
    band as `ppl_band`.
    """

    name = "ppl_select"
    example = {"band": "medium", "rate": 0.5}
    drop_reasons = ("ppl_band", "ppl_missing")
    inputs = (schema.ID, schema.DOMAIN)
    outputs = ()
    State = KeptRanges

    class Params(Params):
        band: Literal["low", "medium", "high"] = Field(
            "high", description="keep the lowest, the middle (percentiles 50 +- 50 rate) or the highest perplexities")
        rate: float = Field(0.5, gt=0.0, le=1.0, description="fraction of documents kept")
        per_domain: bool = Field(False, description="select within each domain instead of over the corpus")
        column: ColumnName = Field("ref_ppl", description="the score to rank by")

    def _keys(self, table: pa.Table) -> pa.Table:
        group = table[schema.DOMAIN] if self.params.per_domain else pa.array([_ALL] * table.num_rows, pa.string())
        return pa.table({"group": group, "score": pc.cast(table[self.params.column], pa.float64()),
                         schema.ID: table[schema.ID]})

    def partial(self, table: pa.Table) -> pa.Table:
        keys = self._keys(table)
        return keys.filter(pc.invert(pc.is_nan(keys["score"])).fill_null(False))

    def merge(self, parts: list[pa.Table]) -> KeptRanges:
        """Per group: the (score, id) keys bounding the kept ranks, (lo inclusive, hi exclusive)."""
        if not parts:
            return KeptRanges({})
        allkeys = pa.concat_tables(parts)
        state = {}
        for g in sorted(set(allkeys["group"].to_pylist())):
            t = allkeys.filter(pc.equal(allkeys["group"], g)).sort_by([("score", "ascending"), (schema.ID, "ascending")])
            start, stop = band_ranks(t.num_rows, self.params.band, self.params.rate)
            key = lambda i: (t["score"][i].as_py(), t[schema.ID][i].as_py())  # noqa: E731
            state[g] = (key(start) if start < t.num_rows else None, key(stop) if stop < t.num_rows else None)
        return KeptRanges(state)

    def summarize_state(self, state: KeptRanges) -> dict:
        """Per group, the perplexity range kept: [lower, upper) (None = open)."""
        return {"column": self.params.column, "band": self.params.band, "rate": self.params.rate,
                "kept_range": {g or "all": [lo[0] if lo else None, hi[0] if hi else None]
                               for g, (lo, hi) in state.bounds.items()}}

    def transform(self, table: pa.Table, state: KeptRanges) -> pa.Table:
        keys = self._keys(table)
        score = keys["score"].to_numpy(zero_copy_only=False)
        missing = np.isnan(score)
        outside = ~missing  # a row of a group with no kept range is outside it
        for g, (lo, hi) in state.bounds.items():
            rows = pc.equal(keys["group"], g).to_numpy(zero_copy_only=False) & ~missing
            if not rows.any():
                continue
            out = _before(score, keys[schema.ID], lo) if lo is not None else np.ones(len(score), dtype=bool)
            if hi is not None:
                out |= ~_before(score, keys[schema.ID], hi)
            outside[rows] = out[rows]
        return mark_dropped(mark_dropped(table, missing, "ppl_missing"), outside, "ppl_band")


def _before(score: np.ndarray, ids: pa.ChunkedArray, key: tuple[float, str]) -> np.ndarray:
    """(score, id) < key, row by row: the order the ranks were taken in."""
    tie = pc.less(ids, key[1]).to_numpy(zero_copy_only=False)
    return (score < key[0]) | ((score == key[0]) & tie)
