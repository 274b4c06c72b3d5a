"""The work directory: one folder per stage computation, keyed by everything that determines it.

A stage's key hashes the previous stage's key, the stage's name, its validated parameters, its
seed and the code version; ingest's key hashes the input listing (path, size, modification
time), the reader options and the code version. So a changed parameter of stage k recomputes
stage k and what follows, and reuses every stage before it.

    <work_dir>/<stage>-<key>/rows/part-<shard>.parquet      kept rows after the stage
    <work_dir>/<stage>-<key>/rows/_stats/<shard>.json       written last: the shard is complete
    <work_dir>/<stage>-<key>/rows/_SUCCESS                  the whole stage is complete
    <work_dir>/<stage>-<key>/rejected/part-<shard>.parquet
    <work_dir>/<stage>-<key>/state/state.pkl                a global pass's state (written last)
    <work_dir>/<stage>-<key>/state/summary.json             its summary for the manifest, so finalizing
                                                            never unpickles a large state again
    <work_dir>/<stage>-<key>/state/record.json              the state's record type and version
    <work_dir>/<stage>-<key>/state/shares.json              the output's group shares, when the
                                                            state sets them (a mixture)
    <work_dir>/runs/<run key>.json                          a run's config and its stage folders (gc)

The work dir may be a local folder or an object-store prefix (s3://, gs://): `work_root` is then
a storage.ObjectPath, which has the path operations used here, and every write is a single PUT.
The markers above are written last either way, so a shard or stage is done only once its marker is.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import xxhash

from thresher.pipeline.core import storage
from thresher.pipeline.core.files import OWNED, InputError, write_json, writing
from thresher.pipeline.core.stage import GroupShares, is_path_field

SUCCESS = "_SUCCESS"
RUNS = "runs"
_STAGE_FOLDER = re.compile(r"^[a-z0-9_]+-[0-9a-f]{16}$")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def input_listing(files, content: bool = False) -> list[dict]:
    """What identifies the input files (InputFile) for ingest's key: path, size, modification time,
    and with `content` (input_key: content) an XXH64 of the bytes, for files rewritten with the same
    size and time (a copy that keeps times, a clock set back)."""
    listing = [{"source": f.source, "size": f.size, "mtime_ns": f.mtime_ns} for f in files]
    for entry, f in zip(listing if content else (), files):
        entry["xxh64"] = _content_hash(f.path)
    return listing


def _content_hash(path: str) -> str:
    digest = xxhash.xxh64()
    with storage.open_input(path) if storage.is_remote(path) else open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def ingest_key(reading: dict, listing: list[dict], version: str) -> str:
    """reading: what decides the ingested rows besides the files (reader options, shard size)."""
    return _digest({"stage": "ingest", "reading": reading, "inputs": listing, "version": version})


def stage_key(previous: str, name: str, params: dict, seed: int, version: str) -> str:
    return _digest({"previous": previous, "stage": name, "params": params, "seed": seed, "version": version})


def is_stage_folder(path: Path) -> bool:
    return path.is_dir() and bool(_STAGE_FOLDER.match(path.name))


@dataclass(frozen=True)
class StageDir:
    work_root: Path  # or storage.ObjectPath
    index: int
    name: str
    key: str

    @property
    def label(self) -> str:
        """The stage's place in its pipeline (the manifest's and rejected/'s name for it)."""
        return f"{self.index:02d}-{self.name}"

    @property
    def folder(self) -> Path:
        return self.work_root / f"{self.name}-{self.key}"

    @property
    def out(self) -> Path:
        return self.folder / "rows"

    @property
    def rejected(self) -> Path:
        return self.folder / "rejected"

    @property
    def state(self) -> Path:
        return self.folder / "state" / "state.pkl"

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

    @property
    def shares(self) -> Path:
        return self.state.with_name("shares.json")

    def save_state(self, state, summary: dict, tag: dict, shares: GroupShares | None = None) -> None:
        """Everything a global pass leaves, the pickled state last (has_state checks for it)."""
        self.state.parent.mkdir(parents=True, exist_ok=True)
        write_json(tag, self.record)
        write_json(summary, self.summary)
        if shares is not None:
            write_json(asdict(shares), self.shares)
        data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        if isinstance(self.state, storage.ObjectPath):
            self.state.write_bytes(data)  # one PUT: whole or absent
            return
        tmp = self.state.with_suffix(".tmp")
        with writing(self.state, tmp):
            tmp.write_bytes(data)
            tmp.replace(self.state)

    def load_state(self):
        return pickle.loads(self.state.read_bytes()) if self.state.exists() else None

    def load_summary(self) -> dict:
        return json.loads(self.summary.read_text())

    def load_shares(self) -> GroupShares | None:
        return GroupShares(**json.loads(self.shares.read_text())) if self.shares.exists() else None


def path_fingerprints(params) -> dict:
    """For each LocalPath parameter, the (name, size, mtime) of the file or of every file under the
    folder: a model retrained at the same path changes the key, so stale scores are not reused."""
    out = {}
    for name, field in type(params).model_fields.items():
        value = getattr(params, name)
        if not (value and is_path_field(field)):
            continue
        for i, one in enumerate(value if isinstance(value, list) else [value]):
            out[f"{name}@files" + (f"[{i}]" if isinstance(value, list) else "")] = _fingerprint(one)
    return out


def _fingerprint(value: str) -> list:
    if storage.is_remote(value):
        return [list(entry) for entry in storage.listing(value)]
    path = Path(value)
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    return [[str(f.relative_to(path)) if path.is_dir() else f.name, *_stat(f)] for f in files]


def _stat(f: Path) -> list[int]:
    try:
        st = f.stat()
    except OSError:
        return [-1, -1]  # missing: the stage says so when it runs
    return [st.st_size, st.st_mtime_ns]


def unreferenced(work_root: Path, keep: set[str]) -> list[tuple[Path, int]]:
    """(path, bytes) of every stage folder of `work_root` not named in `keep`, every run record
    pointing to one of those, and the per-run folders of older Thresher versions."""
    if not (work_root / OWNED).exists():
        raise InputError(f"{work_root} is not a work dir Thresher wrote (it has no {OWNED} marker); give the "
                         "work_dir of a pipeline")
    out = []
    for path in sorted(work_root.iterdir()):
        legacy = path.is_dir() and re.fullmatch(r"[0-9a-f]{16}", path.name)
        if (is_stage_folder(path) and path.name not in keep) or legacy:
            out.append((path, storage.tree_bytes(path)))
    for record in sorted((work_root / RUNS).glob("*.json")):
        if not set(json.loads(record.read_text()).get("stages", [])) <= keep:
            out.append((record, storage.tree_bytes(record)))
    return out
