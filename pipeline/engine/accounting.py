"""Row accounting: every input row ends in the output or in `rejected/` with a reason.

Stats are recorded per shard and per stage; the run checks that they add up (in = out +
rejected for each stage, each stage's input = the previous stage's output) and that the
Parquet files on disk hold exactly the rows the stats claim. A mismatch fails the run.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from thresher.pipeline.core import schema
from thresher.pipeline.core.errors import ActionableError


class AccountingError(ActionableError, RuntimeError):
    pass


def shard_stats(shard: str, rows_in: int, rows_out: int, rejected: pa.Table, t0: float, **extra) -> dict:
    """What a task records of one shard of one stage: rows in, out and rejected per reason, seconds."""
    reasons = Counter(rejected[schema.DROP_REASON].to_pylist()) if rejected.num_rows else Counter()
    return {"shard": shard, "rows_in": rows_in, "rows_out": rows_out, "rejected": dict(reasons),
            "seconds": round(time.perf_counter() - t0, 4), **extra}


@dataclass
class StageCounts:
    name: str
    rows_in: int = 0
    rows_out: int = 0
    rejected: Counter = field(default_factory=Counter)
    shards: int = 0
    task_seconds: float = 0.0

    def add(self, stats: dict) -> None:
        self.rows_in += stats["rows_in"]
        self.rows_out += stats["rows_out"]
        self.rejected.update(stats["rejected"])
        self.shards += 1
        self.task_seconds += stats.get("seconds", 0.0)

    def to_dict(self) -> dict:
        return {"name": self.name, "rows_in": self.rows_in, "rows_out": self.rows_out,
                "rejected": dict(sorted(self.rejected.items())), "shards": self.shards,
                "task_seconds": round(self.task_seconds, 3)}


def check_invariant(stages: list[StageCounts]) -> None:
    """Raise when a stage's rows do not add up, or a stage's input differs from its predecessor's output."""
    problems = []
    for st in stages:
        rejected = sum(st.rejected.values())
        if st.rows_in != st.rows_out + rejected:
            problems.append(f"stage {st.name}: {st.rows_in} in != {st.rows_out} out + {rejected} rejected "
                            f"{dict(st.rejected)}")
    for prev, cur in zip(stages, stages[1:]):
        if prev.rows_out != cur.rows_in:
            problems.append(f"stage {cur.name} read {cur.rows_in} rows but {prev.name} wrote {prev.rows_out}")
    if problems:
        raise AccountingError("row accounting does not add up:\n  " + "\n  ".join(problems))


def totals(stages: list[StageCounts]) -> dict:
    rejected: Counter = Counter()
    for st in stages:
        rejected.update({f"{st.name}:{r}": n for r, n in st.rejected.items()})
    return {"rows_in": stages[0].rows_in if stages else 0,
            "rows_out": stages[-1].rows_out if stages else 0,
            "rejected": dict(sorted(rejected.items())),
            "rejected_total": sum(rejected.values())}
