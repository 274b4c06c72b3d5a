"""The work directory: one folder per stage, keyed by config + inputs so stale output is never reused.

    <work_dir>/<key>/NN-<stage>/part-<shard>.parquet     kept rows after stage NN
    <work_dir>/<key>/NN-<stage>/_stats/<shard>.json      written last: the shard is complete
    <work_dir>/<key>/NN-<stage>/_SUCCESS                 the whole stage is complete
    <work_dir>/<key>/rejected/NN-<stage>/part-<shard>.parquet
    <work_dir>/<key>/state/NN-<stage>/state.pkl          a global pass's merged state (written last)
    <work_dir>/<key>/state/NN-<stage>/summary.json       its summary for the manifest, so finalizing
                                                         never unpickles a large state again
    <work_dir>/<key>/state/NN-<stage>/record.json        the state's record type and version
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

from thresher.pipeline.io import write_json, writing

SUCCESS = "_SUCCESS"


def run_key(canonical_config: dict, inputs: list[dict], version: str) -> str:
    blob = json.dumps({"config": canonical_config, "inputs": inputs, "version": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StageDir:
    root: Path
    index: int
    name: str

    @property
    def label(self) -> str:
        return f"{self.index:02d}-{self.name}"

    @property
    def out(self) -> Path:
        return self.root / self.label

    @property
    def rejected(self) -> Path:
        return self.root / "rejected" / self.label

    @property
    def state(self) -> Path:
        return self.root / "state" / self.label / "state.pkl"

    def part(self, shard: str) -> Path:
        return self.out / f"part-{shard}.parquet"

    def rejected_part(self, shard: str) -> Path:
        return self.rejected / f"part-{shard}.parquet"

    def stats_path(self, shard: str) -> Path:
        return self.out / "_stats" / f"{shard}.json"

    def shard_done(self, shard: str) -> bool:
        return self.stats_path(shard).exists()

    def read_stats(self, shard: str) -> dict:
        return json.loads(self.stats_path(shard).read_text())

    def write_stats(self, shard: str, stats: dict) -> None:
        write_json(stats, self.stats_path(shard))

    def all_stats(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.out / "_stats").glob("*.json"))]

    @property
    def complete(self) -> bool:
        return (self.out / SUCCESS).exists()

    def mark_complete(self, summary: dict) -> None:
        write_json(summary, self.out / SUCCESS)

    @property
    def summary(self) -> Path:
        return self.state.with_name("summary.json")

    @property
    def record(self) -> Path:
        return self.state.with_name("record.json")

    def has_state(self, tag: dict) -> bool:
        """A global pass is done when its state and its summary are both written, as the record
        type and version `tag` (StateRecord.tag()) that the stage's code reads today."""
        if not (self.state.exists() and self.summary.exists() and self.record.exists()):
            return False
        return json.loads(self.record.read_text()) == tag

    def save_state(self, state, summary: dict, tag: dict) -> None:
        self.state.parent.mkdir(parents=True, exist_ok=True)
        write_json(tag, self.record)
        write_json(summary, self.summary)
        tmp = self.state.with_suffix(".tmp")
        with writing(self.state, tmp):
            tmp.write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
            tmp.replace(self.state)

    def load_state(self):
        return pickle.loads(self.state.read_bytes()) if self.state.exists() else None

    def load_summary(self) -> dict:
        return json.loads(self.summary.read_text())
