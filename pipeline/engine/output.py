"""The final, weighted output: every row carries `weight` and `group`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.core import schema, storage
from thresher.pipeline.core.files import writing
from thresher.pipeline.core.stage import lookup

REJECTED_COLUMNS = (schema.ID, schema.TEXT, schema.SOURCE, schema.DOMAIN, schema.DROP_STAGE, schema.DROP_REASON,
                    schema.DROP_DETAIL)


def add_weight_and_group(table: pa.Table, group_column: str, weight_columns: list[str],
                         scale: dict[str, float] | None = None) -> pa.Table:
    """`weight` = product of the stages' declared weight columns (times scale[group] when given),
    `group` = the group column."""
    if group_column not in table.column_names:
        raise ValueError(f"output.group_column {group_column!r} is not a column of the output "
                         f"(columns: {', '.join(table.column_names)})")
    weight = np.ones(table.num_rows, dtype=np.float64)
    for col in weight_columns:
        if not pa.types.is_floating(table.schema.field(col).type):
            raise TypeError(f"weight column {col!r} is {table.schema.field(col).type}, not a float")
        weight *= table[col].to_numpy(zero_copy_only=False).astype(np.float64)
    group = pc.cast(table[group_column], pa.string())
    if scale is not None:
        weight *= lookup(group, scale)
    table = table.drop_columns([c for c in (schema.WEIGHT, schema.GROUP) if c in table.column_names])
    return table.append_column(schema.WEIGHT, pa.array(weight)).append_column(schema.GROUP, group)


def share_scale(weights: dict[str, float], shares: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """Per-group factors that make each group's total weight its share, renormalised over the
    groups that have weight: a group whose rows all weigh 0 cannot carry its share, and a group
    without a share gets none. Returns (factor per group, groups left without weight)."""
    live = {g: shares.get(g, 0.0) for g, w in weights.items() if w > 0}
    norm = sum(live.values()) or 1.0
    return {g: live[g] / norm / weights[g] for g in live}, sorted(set(weights) - set(live))


def copy_rejected(sources: list[tuple[str, Path]], out: Path) -> None:
    """Each stage's rejected files (label, folder) into out/rejected/<label>/."""
    for label, folder in sources:
        for p in sorted(folder.glob("part-*.parquet")):
            with writing(out / "rejected" / label / p.name):
                (out / "rejected" / label).mkdir(parents=True, exist_ok=True)
                storage.copy_file(p, out / "rejected" / label / p.name)


def group_totals(table: pa.Table) -> dict[str, dict]:
    if table.num_rows == 0:
        return {}
    agg = table.group_by(schema.GROUP).aggregate([(schema.WEIGHT, "sum"), (schema.WEIGHT, "count")])
    return {g: {"rows": int(n), "weight": float(w)} for g, w, n in zip(
        agg[schema.GROUP].to_pylist(), agg[f"{schema.WEIGHT}_sum"].to_pylist(),
        agg[f"{schema.WEIGHT}_count"].to_pylist())}


def as_rejected(table: pa.Table, stage: str, detail: tuple[str, ...] = ()) -> pa.Table:
    """Rejected rows in one schema for every stage, so `rejected/` loads as one dataset. `detail`:
    the columns that decided (the stage's inputs and outputs), kept per row as a JSON object so
    a reader sees why a row went (e.g. {"harm_ppl": 41.2, "harmful": true})."""
    n = table.num_rows
    base = (schema.ID, schema.TEXT, schema.SOURCE, schema.DOMAIN)
    cols = {c: table[c] for c in base}
    cols[schema.DROP_STAGE] = pa.array([stage] * n, type=pa.string())
    cols[schema.DROP_REASON] = table[schema.DROP_REASON]
    named = [c for c in dict.fromkeys(detail) if c not in base and c in table.column_names]
    values = [table[c].to_pylist() for c in named]
    cols[schema.DROP_DETAIL] = pa.array([json.dumps(dict(zip(named, row)), default=str, allow_nan=True)
                                         for row in zip(*values)] if named else ["{}"] * n, pa.string())
    return pa.table(cols).cast(pa.schema([pa.field(c, pa.string()) for c in REJECTED_COLUMNS]))
