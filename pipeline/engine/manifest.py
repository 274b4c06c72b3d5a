"""The run's manifest (manifest.json): what went in, what each stage did, what came out, how long.

Built from the runner's records, so the runner only gathers them; the one-screen summary the CLI
prints is read back from the manifest.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pyarrow as pa

from thresher.pipeline.core.version import version
from thresher.pipeline.engine.accounting import StageCounts, totals


@dataclass
class RunRecord:
    """What a finished run gathered on its way to the output."""

    name: str
    key: str
    seed: int
    work_dir: str
    input_files: int
    input_bytes: int
    duplicate_ids: dict
    counts: list[StageCounts]
    labels: list[str]  # one per entry of counts: the stage's label (NN-name)
    status: dict[str, str]  # label -> "reused" (its checkpoint was complete) or "computed"
    summaries: dict[str, dict]  # label -> the global pass's summary
    output_rows: int
    output_files: list[str]
    output_columns: list[str]
    groups: dict[str, dict]
    wall_seconds: float
    stage_seconds: dict[str, float]
    executor: str


def build_manifest(r: RunRecord) -> dict:
    return {
        "name": r.name,
        "thresher_version": version(),
        "config_hash": r.key,
        "seed": r.seed,
        "work_dir": r.work_dir,
        "inputs": {"files": r.input_files, "bytes": r.input_bytes, "duplicate_ids": r.duplicate_ids},
        "stages": [{**c.to_dict(), "run": r.status.get(label, "computed"),
                    **({"state": r.summaries[label]} if label in r.summaries else {})}
                   for c, label in zip(r.counts, r.labels)],
        "totals": totals(r.counts),
        "output": {"rows": r.output_rows, "files": r.output_files, "columns": r.output_columns,
                   "groups": r.groups},
        "timing": {"wall_seconds": round(r.wall_seconds, 3),
                   "docs_per_second": round(r.counts[0].rows_in / r.wall_seconds, 1),
                   "stage_seconds": {k: round(v, 3) for k, v in r.stage_seconds.items()}},
        "versions": {"python": sys.version.split()[0], "pyarrow": pa.__version__, "executor": r.executor},
    }


def summary_table(manifest: dict) -> str:
    """Rows in, out and rejected per stage: what the CLI prints at the end of a run."""
    lines = [f"{'stage':<22}{'in':>12}{'out':>12}  {'run':<9} rejected"]
    for st in manifest["stages"]:
        rej = ", ".join(f"{r}={n:,}" for r, n in st["rejected"].items()) or "-"
        lines.append(f"{st['name']:<22}{st['rows_in']:>12,}{st['rows_out']:>12,}  {st.get('run', ''):<9} {rej}")
    t = manifest["totals"]
    lines.append(f"{t['rows_in']:,} rows in = {t['rows_out']:,} out + {t['rejected_total']:,} rejected; "
                 f"{manifest['timing']['wall_seconds']:.1f} s")
    return "\n".join(lines)
