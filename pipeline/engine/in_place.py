"""Parquet inputs read in place: ingest stores no copy of their text.

For a Parquet input whose text column is a string column and whose row groups are no larger than
a shard, an ingest shard is a run of consecutive row groups. Its checkpoint holds the kept rows'
positions within those row groups (`_pos`, as a stage's delta does), the small canonical columns
(id, source, domain) and, in its schema's metadata, where the text lies: the file, the column,
the row groups, and the file's size and modification time at ingest. The text is read from the
input when a stage asks for it, so the work dir holds no second copy of the corpus and ingest
writes no text. A file that changed after ingest is an error that names it (a rerun keys ingest
by the new listing and reads it again); `in_place: false` on the input copies it instead, as
ingest does for a file too small to fill a shard (ingest.py).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thresher.pipeline.core import schema, storage
from thresher.pipeline.core.files import InputError

_META = b"thresher.text_in_place"


class InputChangedError(InputError):
    """An input read in place is not the file ingest read."""


def applies(wanted: bool, f, work_root) -> bool:
    """In place for a Parquet input where reading it costs no more than reading a copy would: a
    local file, or any file when the work dir is in an object store too (a local work dir's copy
    of a remote input is read faster than the input, by every stage that reads the text)."""
    remote_work = isinstance(work_root, storage.ObjectPath)
    return wanted and f.format == "parquet" and (remote_work or not storage.is_remote(f.path))


def shard_groups(path: str, text_column: str, shard_rows: int) -> list[tuple[list[int], int]] | None:
    """(row groups, number of the first row) of each shard: runs of consecutive row groups of at
    most `shard_rows` rows. None when the file cannot be read in place: its text column is not a
    string column, or a row group is larger than a shard (reading part of one would decode all of
    it for every shard that needs a part)."""
    with storage.open_random(path) as fh:
        parquet = pq.ParquetFile(fh)
        meta, arrow = parquet.metadata, parquet.schema_arrow
    if text_column not in arrow.names:
        return None
    kind = arrow.field(text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return None
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    if not sizes or max(sizes) > shard_rows:
        return None
    runs, first, rows = [([], 0)], 0, 0
    for g, n in enumerate(sizes):
        if rows + n > shard_rows:
            runs.append(([], first))
            rows = 0
        runs[-1][0].append(g)
        rows += n
        first += n
    return runs


def checkpoint(kept: pa.Table, positions: np.ndarray, f, text_column: str, groups: list[int]) -> pa.Table:
    """What ingest stores for a shard of the input file `f` read in place: the kept rows'
    positions, every canonical column but the text, and where the text is."""
    table = pa.table({schema.POS: pa.array(positions, pa.int64())})
    for field in schema.CANONICAL:
        if field.name != schema.TEXT:
            table = table.append_column(field, kept[field.name])
    where = {"path": f.path, "column": text_column, "row_groups": groups, "size": f.size, "mtime_ns": f.mtime_ns}
    return table.replace_schema_metadata({_META: json.dumps(where).encode()})


def source_of(part_schema: pa.Schema) -> dict | None:
    """Where the text of an ingest checkpoint lies, or None when the checkpoint holds it."""
    raw = (part_schema.metadata or {}).get(_META)
    return json.loads(raw) if raw else None


def read_text(where: dict) -> pa.ChunkedArray:
    """The text of the recorded row groups, from the input."""
    path = where["path"]
    if storage.is_remote(path):
        _, size, mtime = storage.listing(path)[0]
    else:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise InputChangedError(f"{path}: the input was removed after ingest read it in place; "
                                    "restore it, or rerun (ingest then lists the inputs again)") from None
        size, mtime = st.st_size, st.st_mtime_ns
    if (size, mtime) != (where["size"], where["mtime_ns"]):
        raise InputChangedError(f"{path}: the input changed after ingest read it in place (its size or "
                                "modification time differ); rerun, which ingests the new version, or set "
                                "`in_place: false` on the input to work from a copy")
    with storage.open_random(path) as fh:
        text = pq.ParquetFile(fh).read_row_groups(where["row_groups"], columns=[where["column"]]).column(0)
    return text.cast(pa.string())
