"""What each domain lost in a run: rows and bytes in, out and rejected per reason, read back from a
run's output dir (data/ and rejected/), and the alarms a data engineer wants first: a domain that
lost most of its rows, or one reason that took a large share of a domain."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.core import schema

MAX_LOSS = 0.5  # alarm when a domain loses more than this share of its rows
MAX_REASON_LOSS = 0.3  # alarm when one reason removes more than this share of a domain's rows
UNKNOWN = "(none)"


def _read(files: list[Path], columns: list[str], with_bytes: bool) -> pa.Table:
    import pyarrow.dataset as ds  # here, not at import: the CLI imports this module's limits

    if not files:
        return pa.table({c: pa.array([], pa.string()) for c in columns} | {"bytes": pa.array([], pa.int64())})
    data = ds.dataset([str(f) for f in files], format="parquet")
    present = [c for c in columns if c in data.schema.names]
    proj = {c: ds.field(c) for c in present}
    if with_bytes:
        proj["bytes"] = pc.binary_length(ds.field(schema.TEXT))
    table = data.to_table(columns=proj)
    for c in columns:
        if c not in table.column_names:
            table = table.append_column(c, pa.nulls(table.num_rows, pa.string()))
    if not with_bytes:
        table = table.append_column("bytes", pa.array([0] * table.num_rows, pa.int64()))
    return table


def _grouped(table: pa.Table, keys: list[str]) -> dict[tuple, tuple[int, int]]:
    t = table.select(keys + ["bytes"])
    for k in keys:
        t = t.set_column(t.column_names.index(k), k, pc.fill_null(pc.cast(t[k], pa.string()), UNKNOWN))
    agg = t.group_by(keys).aggregate([("bytes", "count"), ("bytes", "sum")])
    return {tuple(r[k] for k in keys): (int(r["bytes_count"]), int(r["bytes_sum"] or 0)) for r in agg.to_pylist()}


def domain_losses(out_dir: str | Path, column: str = schema.DOMAIN, with_bytes: bool = True) -> list[dict]:
    """Per value of `column` (domain, or source): rows and bytes in, out, rejected per
    "stage:reason", and the share of rows removed; largest domains first. Rows in = out +
    rejected, as the run's accounting guarantees. Needs the run's rejected/ (output.write_rejected)."""
    out_dir = Path(out_dir)
    kept = _read(sorted((out_dir / "data").glob("*.parquet")), [column], with_bytes)
    rejected = _read(sorted((out_dir / "rejected").glob("*/*.parquet")),
                     [column, schema.DROP_STAGE, schema.DROP_REASON], with_bytes)
    rows = defaultdict(lambda: {"rows_in": 0, "bytes_in": 0, "rows_out": 0, "bytes_out": 0, "rejected": {}})
    for (value,), (n, b) in _grouped(kept, [column]).items():
        rows[value].update(rows_out=n, bytes_out=b)
    for (value, stage, reason), (n, b) in _grouped(rejected, [column, schema.DROP_STAGE, schema.DROP_REASON]).items():
        rows[value]["rejected"][f"{stage}:{reason}"] = n
        rows[value]["bytes_in"] += b
    result = []
    for value, r in rows.items():
        r["rows_in"] = r["rows_out"] + sum(r["rejected"].values())
        r["bytes_in"] += r["bytes_out"]
        r["share_removed"] = 1.0 - r["rows_out"] / r["rows_in"] if r["rows_in"] else 0.0
        r["rejected"] = dict(sorted(r["rejected"].items(), key=lambda kv: -kv[1]))
        result.append({column: value, **r})
    return sorted(result, key=lambda r: (-r["rows_in"], r[column]))


def alarms(losses: list[dict], column: str = schema.DOMAIN, max_loss: float = MAX_LOSS,
           max_reason_loss: float = MAX_REASON_LOSS) -> list[str]:
    """One line per alarm: a domain that lost more than max_loss of its rows, or a reason that
    removed more than max_reason_loss of a domain's rows."""
    out = []
    for r in losses:
        name, n = r[column], r["rows_in"]
        if r["share_removed"] > max_loss:
            out.append(f"{column} {name!r} lost {r['share_removed']:.0%} of its rows "
                       f"({n - r['rows_out']:,} of {n:,}; alarm above {max_loss:.0%})")
        for reason, k in r["rejected"].items():
            if n and k / n > max_reason_loss:
                out.append(f"{reason} removed {k / n:.0%} of {column} {name!r} ({k:,} of {n:,} rows; "
                           f"alarm above {max_reason_loss:.0%})")
    return out
