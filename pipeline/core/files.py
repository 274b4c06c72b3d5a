"""Files as every layer reads and writes them: atomic Parquet and JSON writes whose errors name
the file and the fix, clean JSON-lines records, and training texts given by path.

Bad input is an InputError (the user fixes the file), a failed write a StorageError (the user
fixes the disk or the path): both say which file and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.pipeline.core import storage
from thresher.pipeline.core.errors import ActionableError


class InputError(ActionableError, ValueError):
    """Bad input that the user must fix; the message names the file and the fix."""


OWNED = ".thresher"  # a folder Thresher keeps in every output and work dir it writes


def valid_unicode(obj) -> bool:
    """Whether every string in a parsed JSON object is valid Unicode (JSON escapes can spell
    lone surrogates, which no UTF-8 column can hold)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def file_texts(paths: list[Path], text_column: str = "text"):
    """The texts of training files given by path, not by a pipeline: .parquet (a column),
    .jsonl(.gz) / .json(.gz) (a field of each line, read by json_records) or anything else as
    plain text, one document per non-empty line."""
    for path in map(Path, paths):
        name = path.name.lower()
        if name.endswith(".parquet"):
            table = pq.read_table(path)
            if text_column not in table.column_names:
                raise InputError(f"{path}: no column {text_column!r} (columns: {', '.join(table.column_names)}); "
                                 "use --text-column")
            try:
                table[text_column].validate(full=True)
            except pa.ArrowInvalid as exc:
                raise InputError(f"{path}: column {text_column!r} is not valid UTF-8 text ({exc})") from None
            yield from (t for t in table[text_column].to_pylist() if t)
        elif name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
            for lineno, row in json_records(path):
                if not isinstance(row.get(text_column), str):
                    raise InputError(f"{path}:{lineno}: no {text_column!r} string field")
                yield row[text_column]
        else:
            with open(path, encoding="utf-8-sig", errors="replace") as fh:
                yield from (line for line in fh if line.strip())

def json_records(path: str | Path):
    """(line number, object) of each non-empty line of a JSONL(.gz) file that must be clean (a
    labelled set, a training corpus): a BOM is skipped; a line that is not a JSON object of valid
    Unicode is an InputError naming the file and line."""
    path = str(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise InputError(f"{path}:{lineno}: not a JSON line ({exc})") from None
                if not isinstance(obj, dict) or not valid_unicode(obj):
                    raise InputError(f"{path}:{lineno}: not a JSON object of valid Unicode text")
                yield lineno, obj
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read as UTF-8 JSON lines ({exc}); fix or re-export the file") from None


class StorageError(ActionableError, RuntimeError):
    """A file could not be written; the message names it and what to do."""


def _is_disk_full(exc: OSError) -> bool:
    return exc.errno == errno.ENOSPC or "No space left" in str(exc) or "Disk quota" in str(exc)


@contextlib.contextmanager
def writing(path: Path, tmp: Path | None = None):
    """Turns an OSError while writing `path` into a StorageError that names it (and removes the
    half-written temporary file). Object stores report their own errors (storage.explain)."""
    if isinstance(path, storage.ObjectPath):
        yield
        return
    try:
        yield
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        fix = ("the disk is full: free space there, or point work_dir / output.dir at a larger disk, "
               "then rerun (finished shards are kept)" if _is_disk_full(exc)
               else "check that the folder exists and is writable")
        raise StorageError(f"cannot write {path}: {exc}; {fix}") from None


def _tmp_of(path: Path) -> Path:
    """A temporary name of this process's own, so two writers never rename each other's file."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


ROW_GROUP_BYTES = 64 << 20


def _layout(table: pa.Table, row_group_size: int | None) -> dict:
    """How a table is laid out in Parquet. Without a `row_group_size` (Thresher's own files), row
    groups hold about ROW_GROUP_BYTES (a fixed row count made thousands of tiny groups of 16-byte
    hash rows), and only string columns are dictionary-encoded: hashes and row numbers are nearly
    all distinct, and Parquet built a dictionary of each group's values before falling back to
    plain (2.5x the time of the plain write on band hashes)."""
    if row_group_size is not None:
        return dict(row_group_size=row_group_size)
    rows = ROW_GROUP_BYTES // max(1, table.nbytes // max(1, table.num_rows))
    strings = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
               or pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    return dict(row_group_size=max(1, rows), use_dictionary=strings)


def write_parquet(table: pa.Table, path: Path, row_group_size: int | None = None) -> None:
    """Write atomically (temp file + rename; in an object store, one PUT), so a killed run never
    leaves a half shard. `row_group_size`: rows per row group of an output (see _layout)."""
    layout = _layout(table, row_group_size)
    if isinstance(path, storage.ObjectPath):
        try:
            pq.write_table(table, path.inner, filesystem=path.fs, compression="zstd", **layout)
        except OSError as exc:
            raise storage.explain(exc, path.uri) from None
        return
    tmp = _tmp_of(path)
    with writing(path, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp, compression="zstd", **layout)
        os.replace(tmp, path)


def write_json(obj, path: Path) -> None:
    if isinstance(path, storage.ObjectPath):
        path.write_text(json.dumps(obj, indent=2, sort_keys=True))
        return
    tmp = _tmp_of(path)
    with writing(path, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
        os.replace(tmp, path)
