"""Ingest: finding the input files, reading them into the canonical rows, and the ingest task
that cuts them into shards.

Input files are read into the canonical schema (id, text, source, domain). Rows that cannot be
used (null or non-string text, invalid UTF-8, a malformed JSON line) are returned as rejected
rows with a reason, never silently skipped; a file that cannot be read at all, or lacks the
text column, is an error that names the file and the fix. This module knows inputs only by their
`InputSpec`s: the pipeline config builds on it, never the reverse.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from thresher.pipeline.core import schema, storage
from thresher.pipeline.core.files import OWNED, InputError, valid_unicode, write_parquet
from thresher.pipeline.engine import in_place
from thresher.pipeline.engine.accounting import shard_stats
from thresher.pipeline.engine.errors import blame
from thresher.pipeline.engine.output import as_rejected
from thresher.pipeline.engine.workdir import StageDir
from thresher.scorers.hashing import string_hashes

INGEST = "ingest"  # the name of the step before the first stage, in the work dir and the manifest


class InputSpec(BaseModel):
    """One `inputs:` entry of a pipeline."""

    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(min_length=1, description="globs, relative to the YAML file")
    format: Literal["auto", "parquet", "jsonl", "hf_disk"] = "auto"
    text_column: str = "text"
    id_column: str | None = None
    domain_column: str | None = None
    url_column: str | None = None
    domain: str | None = Field(None, description="a constant group for every row of this input")
    in_place: bool = Field(True, description="Parquet: read the text from the input's row groups instead of "
                           "copying it into the work dir (when its row groups are no larger than a shard)")


@dataclass(frozen=True)
class InputFile:
    index: int  # position in the sorted input listing: fixes shard names and order
    path: str  # absolute path
    source: str  # the name stored in the `source` column (relative to the YAML when possible)
    format: str
    spec_index: int
    size: int
    mtime_ns: int


_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")


def _detect_format(path: Path, local: bool = True) -> str:
    name = path.name.lower()
    if local and path.is_dir() and (path / "state.json").exists():
        return "hf_disk"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".arrow"):
        return "hf_disk"
    raise InputError(f"{path}: cannot tell the format from the name; "
                     "set `format:` (parquet, jsonl or hf_disk) on this input")


def _hf_disk_files(path: Path) -> list[Path]:
    """The Arrow files of a `datasets` save_to_disk directory, in their recorded order."""
    state = path / "state.json"
    try:
        files = [f["filename"] for f in json.loads(state.read_text())["_data_files"]]
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{state}: not a readable `datasets` save_to_disk state ({exc}); "
                         "re-save the dataset with Dataset.save_to_disk") from None
    return [path / f for f in files]


def owner_dir(path: str | Path, exclude: tuple[Path, ...] = (), marked: dict | None = None) -> Path | None:
    """The Thresher output or work dir that `path` lies in (one of `exclude`, or any folder that
    holds the OWNED marker), or None: such files are never inputs, so a rerun cannot ingest its
    own output, rejected rows or shards. `marked` caches the marker check per folder."""
    p = Path(os.path.abspath(path))
    for d in exclude:
        if p == d or d in p.parents:
            return d
    marked = {} if marked is None else marked
    for d in p.parents:
        if d not in marked:
            marked[d] = (d / OWNED).is_dir()
        if marked[d]:
            return d
    return None


def _local(pattern: str, base_dir: Path) -> Path:
    """A local path (or file:// URI) relative to `base_dir` (the YAML file's folder), made absolute."""
    p = Path(storage.plain(pattern)).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def discover_inputs(specs: list[InputSpec], base_dir: Path,
                    exclude: tuple = ()) -> tuple[list[InputFile], dict[str, int]]:
    """The input files of `specs` (paths relative to `base_dir`), and how many matched files were
    left out per Thresher dir they lie in (`exclude`: the run's own work and output dirs, local
    paths or object-store prefixes)."""
    prefixes = tuple(str(d).rstrip("/") + "/" for d in exclude if storage.is_remote(str(d)))
    exclude = tuple(Path(os.path.abspath(d)) for d in exclude if not storage.is_remote(str(d)))
    found: list[tuple[str, str, int]] = []
    skipped: dict[str, int] = {}
    marked: dict[Path, bool] = {}
    for si, spec in enumerate(specs):
        for pattern in spec.paths:
            pattern = storage.plain(pattern)
            if storage.is_remote(pattern):
                matches = _remote_matches(pattern, spec, si)
                for prefix in prefixes:
                    if left := sum(m[0].startswith(prefix) for m in matches):
                        skipped[prefix.rstrip("/")] = skipped.get(prefix.rstrip("/"), 0) + left
                kept = [m for m in matches if not m[0].startswith(prefixes)]
                if not kept:
                    raise InputError(f"inputs[{si}].paths: {pattern!r} matched only objects in Thresher's own "
                                     "output or work dir; check the prefix")
                found.extend(kept)
                continue
            full = str(_local(pattern, base_dir))
            matches = sorted(glob.glob(full, recursive=True))
            owned = [(m, owner_dir(m, exclude, marked)) for m in matches]
            for _, d in owned:
                if d is not None:
                    skipped[str(d)] = skipped.get(str(d), 0) + 1
            matches = [m for m, d in owned if d is None]
            if not matches:
                why = f" ({len(owned)} lie in Thresher's own output or work dirs)" if owned else ""
                raise InputError(f"inputs[{si}].paths: {pattern!r} matched no files{why} (looked for {full}); "
                                 "check the path, which is relative to the YAML file")
            for m in matches:
                p = Path(m)
                fmt = spec.format if spec.format != "auto" else _detect_format(p)
                if fmt == "hf_disk" and p.is_dir():
                    found.extend((str(f), "hf_disk", si) for f in _hf_disk_files(p))
                elif p.is_dir():
                    raise InputError(f"{p}: is a directory; use a glob such as '{pattern}/*.parquet'")
                else:
                    found.append((m, fmt, si))
    files, seen = [], set()
    for path, fmt, si, *listed in found:
        path = path if listed else os.path.abspath(path)
        if path in seen:
            continue
        seen.add(path)
        if listed:  # a remote object: listed with its size and modification time
            files.append(InputFile(len(files), path, path, fmt, si, listed[0].size, listed[0].mtime_ns))
            continue
        try:
            st = os.stat(path)
        except OSError as exc:
            what = "a link to a missing file" if os.path.islink(path) else f"unreadable ({exc.strerror})"
            raise InputError(f"{path}: matched by inputs[{si}].paths but {what}; remove it or fix it, or narrow "
                             "the glob") from None
        try:
            source = os.path.relpath(path, base_dir)
        except ValueError:
            source = path
        if source.startswith(".."):
            source = path
        files.append(InputFile(len(files), path, source, fmt, si, st.st_size, st.st_mtime_ns))
    return files, skipped


def _remote_matches(pattern: str, spec: InputSpec, si: int) -> list[tuple]:
    """(uri, format, spec index, listing) of the objects a remote glob matches."""
    try:
        matches = [m for m in storage.glob(pattern) if not m.is_dir]
    except storage.StorageAccessError as exc:
        raise InputError(f"inputs[{si}].paths: {exc}") from None
    if not matches:
        raise InputError(f"inputs[{si}].paths: {pattern!r} matched no objects; check the bucket and prefix")
    out = []
    for m in matches:
        fmt = spec.format if spec.format != "auto" else _detect_format(Path(m.path.split("://", 1)[1]), local=False)
        if fmt == "hf_disk" and not m.path.endswith(".arrow"):
            raise InputError(f"{m.path}: a saved Hugging Face dataset in object storage is read by its "
                             "files: use a glob such as '.../*.arrow'")
        out.append((m.path, fmt, si, m))
    return out


# --- reading ---------------------------------------------------------------------------

def _read_jsonl_lenient(path: str, text_column: str) -> tuple[pa.Table, list[tuple[int, str, str | None]]]:
    """Line by line, for files the fast reader refuses: keeps good lines, reports bad ones."""
    rows, bad = [], []
    try:
        with _open_lines(path) as fh:
            for lineno, raw in enumerate(fh):
                if lineno == 0 and raw.startswith(_BOM):  # the fast reader skips it too
                    raw = raw[len(_BOM):]
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    bad.append((lineno, "invalid_utf8", raw.decode("utf-8", "replace")))
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    bad.append((lineno, "invalid_json", line))
                    continue
                if not isinstance(obj, dict):
                    bad.append((lineno, "invalid_json", line))
                    continue
                if not valid_unicode(obj):  # a lone surrogate escape such as "\ud800"
                    bad.append((lineno, "invalid_utf8", line))
                    continue
                value = obj.get(text_column)
                if value is not None and not isinstance(value, str):  # a row still: its id and domain count
                    obj[text_column], obj[_NON_STRING] = json.dumps(value), "1"
                obj["__line"] = lineno
                rows.append(obj)
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read ({exc}); the file is truncated or corrupt: "
                         "re-export it or remove it from the inputs") from None
    # Other columns may mix types across lines: keep them as JSON text.
    cols = {k for r in rows for k in r}
    table = pa.table({k: pa.array([_json_cell(r.get(k)) for r in rows], type=pa.string()) for k in cols})
    return table, bad


_BOM = b"\xef\xbb\xbf"
_NON_STRING = "__non_string_text"  # the lenient reader's mark on a row whose text is not a string


def _json_cell(value):
    return value if value is None or isinstance(value, str) else json.dumps(value)


def _open_lines(path: str):
    """A binary, line-iterable reader of a (possibly gzipped, possibly remote) file."""
    if storage.is_remote(path):
        return io.BufferedReader(storage.open_input(path))
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _read_raw(f: InputFile, text_column: str, row_groups: list[int] | None = None,
              first_row: int = 0) -> tuple[pa.Table, list[tuple[int, str, str | None]], np.ndarray | None]:
    """Returns (table, bad lines, line numbers of the table's rows or None when they are 0..n-1);
    of a Parquet file, only `row_groups` when given, whose first row is row `first_row`."""
    try:
        remote = storage.is_remote(f.path)
        if f.format == "parquet" and row_groups is not None:
            with storage.open_random(f.path) as fh:
                table = pq.ParquetFile(fh).read_row_groups(row_groups)
            return table, [], np.arange(first_row, first_row + table.num_rows, dtype=np.int64)
        if f.format == "parquet":
            return storage.read_table(storage.location(f.path)), [], None
        if f.format == "hf_disk":
            with storage.open_random(f.path) if remote else pa.memory_map(f.path) as src:
                try:
                    return pa.ipc.open_stream(src).read_all(), [], None
                except pa.ArrowInvalid:
                    src.seek(0)
                    return pa.ipc.open_file(src).read_all(), [], None
        if f.format == "jsonl":
            try:
                table = pajson.read_json(storage.open_input(f.path) if remote else f.path)
                return table, [], None
            except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
                table, bad = _read_jsonl_lenient(f.path, text_column)
                lines = np.asarray(table["__line"].to_pylist() if "__line" in table.column_names else [],
                                   dtype=np.int64)
                return table.drop_columns(["__line"]) if "__line" in table.column_names else table, bad, lines
    except InputError:
        raise
    except storage.StorageAccessError as exc:
        raise InputError(str(exc)) from None
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise InputError(f"{f.path}: cannot read as {f.format} ({exc}); the shard is corrupt or not "
                         f"{f.format}: re-export it, set `format:` on the input, or remove it") from None
    raise InputError(f"{f.path}: unknown format {f.format!r}")


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _stable_ids(source: str, offsets: np.ndarray) -> pa.Array:
    """xxh64_hexdigest(f"{source}\\0{offset}") of each row, built on whole arrays."""
    keys = pc.binary_join_element_wise(source, pc.cast(pa.array(offsets, pa.int64()), pa.string()), "\x00")
    digest = string_hashes(keys).astype(">u8").view(np.uint8).reshape(-1, 8)
    chars = np.empty((len(digest), 16), dtype=np.uint8)
    chars[:, 0::2], chars[:, 1::2] = _HEX[digest >> 4], _HEX[digest & 15]
    ends = np.arange(0, 16 * len(digest) + 1, 16, dtype=np.int32)
    return pa.StringArray.from_buffers(len(digest), pa.py_buffer(ends), pa.py_buffer(chars.tobytes()))


def _url_host(url) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url if "//" in url else "//" + url).hostname
    except ValueError:
        return None


def _as_strings(col: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Any column as a string array, plus which rows were not valid UTF-8 (those come back with
    U+FFFD in place of the bad bytes, so the rejected row can still be written and read)."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    invalid = np.zeros(len(col), dtype=bool)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            col.validate(full=True)
            return col.cast(pa.string()), invalid
        except pa.ArrowInvalid:  # invalid UTF-8 inside a string column: find the rows
            col = col.view(pa.large_binary() if pa.types.is_large_string(col.type) else pa.binary())
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        vals = []
        for i, b in enumerate(col.to_pylist()):
            try:
                vals.append(None if b is None else b.decode("utf-8"))
            except UnicodeDecodeError:
                vals.append(b.decode("utf-8", "replace"))
                invalid[i] = True
        return pa.array(vals, type=pa.string()), invalid
    if pa.types.is_null(col.type):
        return pa.nulls(len(col), pa.string()), invalid
    return pc.cast(col, pa.string(), safe=False), invalid


def _column_as_text(col: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Text as a string array plus the reason each row is unusable (None = fine)."""
    text, invalid = _as_strings(col)
    reasons = np.full(len(text), None, dtype=object)
    kind = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if not any(is_(kind) for is_ in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                     pa.types.is_large_binary, pa.types.is_null)):
        reasons[:] = "non_string_text"
    reasons[invalid] = "invalid_utf8"
    reasons[np.asarray(pc.is_null(text).to_numpy(zero_copy_only=False))] = "null_text"
    return text, reasons


def read_input(f: InputFile, spec: InputSpec, row_groups: list[int] | None = None,
               first_row: int = 0) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """Read one input file (of a Parquet file, `row_groups` only, when given) into (canonical
    rows, rejected rows, each canonical row's position in what was read)."""
    table, bad, lines = _read_raw(f, spec.text_column, row_groups, first_row)
    non_string = None
    if _NON_STRING in table.column_names:  # rejected below, with their own id and domain
        non_string = pc.is_valid(table[_NON_STRING]).to_numpy(zero_copy_only=False)
        table = table.drop_columns([_NON_STRING])
    if spec.text_column not in table.column_names and table.num_rows:
        raise InputError(f"{f.path}: no column {spec.text_column!r} (columns: {', '.join(table.column_names)}); "
                         f"set `text_column:` on inputs[{f.spec_index}] to the column that holds the text")
    for opt in ("id_column", "domain_column", "url_column"):
        col = getattr(spec, opt)
        if col and col not in table.column_names and table.num_rows:
            raise InputError(f"{f.path}: no column {col!r} for `{opt}` (columns: "
                             f"{', '.join(table.column_names)}); fix `{opt}:` on inputs[{f.spec_index}]")
    n = table.num_rows
    offsets = lines if lines is not None else np.arange(n, dtype=np.int64)
    if n:
        text, reasons = _column_as_text(table[spec.text_column])
    else:
        text, reasons = pa.array([], pa.string()), np.array([], dtype=object)
    if non_string is not None:
        reasons[non_string] = "non_string_text"
    def strings(column: str) -> pa.Array:  # a row whose id/domain/url is not UTF-8 is rejected too
        values, invalid = _as_strings(table[column])
        reasons[invalid & (reasons == None)] = "invalid_utf8"  # noqa: E711 (object array)
        return values

    if spec.id_column and n:
        ids = strings(spec.id_column)
        if ids.null_count:
            ids = pc.coalesce(ids, _stable_ids(f.source, offsets))
    else:
        ids = _stable_ids(f.source, offsets)
    if spec.domain_column and n:
        domain = strings(spec.domain_column)
    elif spec.url_column and n:
        domain = pa.array([_url_host(u) for u in strings(spec.url_column).to_pylist()], type=pa.string())
    else:
        domain = pa.nulls(n, pa.string())
    domain = pc.fill_null(domain, spec.domain or "default") if n else pa.array([], pa.string())
    source = pa.array([f.source] * n, type=pa.string())
    canon = pa.table([ids, text, source, domain], schema=schema.CANONICAL)

    bad_mask = np.array([r is not None for r in reasons], dtype=bool)
    rejected = canon.filter(pa.array(bad_mask)).append_column(
        schema.DROP_REASON, pa.array(reasons[bad_mask].tolist(), type=pa.string()))
    if bad:
        bl = np.array([b[0] for b in bad], dtype=np.int64)
        extra = pa.table({
            schema.ID: _stable_ids(f.source, bl),
            schema.TEXT: pa.array([b[2] for b in bad], type=pa.string()),
            schema.SOURCE: pa.array([f.source] * len(bad), type=pa.string()),
            schema.DOMAIN: pa.array([spec.domain or "default"] * len(bad), type=pa.string()),
            schema.DROP_REASON: pa.array([b[1] for b in bad], type=pa.string()),
        })
        rejected = pa.concat_tables([rejected, extra.cast(rejected.schema)])
    if not bad_mask.any():
        return canon, rejected, np.arange(n, dtype=np.int64)
    return canon.filter(pa.array(~bad_mask)), rejected, np.flatnonzero(~bad_mask)


# --- the ingest task (picklable; run by any executor) --------------------------------------

# An ingest task reads consecutive input files up to this many bytes (on disk) or files, and cuts
# their rows, concatenated, into shards of `shard_rows`: many small files make full shards, never a
# shard each, and a task's memory holds one file and less than a shard besides.
GROUP_BYTES = 64 << 20
GROUP_FILES = 1_000
# A Parquet file of fewer bytes than `shard_rows` rows of this size cannot fill a shard: it is copied,
# not read in place, so that it shares a task and shards with its neighbours (its copy costs little).
MIN_ROW_BYTES = 32


class IngestTask:
    """Reads a group of input files into shards of `shard_rows` rows (a large Parquet file read in
    place: one shard per run of its row groups), writing its rejected rows and its stats last."""

    def __init__(self, specs: list[InputSpec], shard_rows: int, out: StageDir):
        self.specs = list(specs)
        self.shard_rows = shard_rows
        self.out = out

    def setup(self) -> None:
        pass

    def in_place(self, f: InputFile) -> bool:
        """Whether `f` is read in place (in_place.applies), which keeps it in a task of its own: not
        a file too small to fill a shard (MIN_ROW_BYTES)."""
        return f.size >= self.shard_rows * MIN_ROW_BYTES and in_place.applies(
            self.specs[f.spec_index].in_place, f, self.out.work_root)

    def _alone(self, f: InputFile) -> bool:
        return self.in_place(f) or f.size >= GROUP_BYTES

    def plan(self, files: list[InputFile]) -> list[tuple[int, list[InputFile]]]:
        """The tasks' items: (group number, consecutive files of at most GROUP_BYTES and GROUP_FILES;
        a file read in place, or one of GROUP_BYTES or more, alone)."""
        groups: list[list[InputFile]] = []
        size = 0
        for f in files:
            if (self._alone(f) or not groups or self._alone(groups[-1][0]) or len(groups[-1]) >= GROUP_FILES
                    or size + f.size > GROUP_BYTES):
                groups.append([])
                size = 0
            groups[-1].append(f)
            size += f.size
        return list(enumerate(groups))

    def __call__(self, item: tuple[int, list[InputFile]]) -> dict:
        index, files = item
        key = f"{index:05d}"
        if self.out.shard_done(key):
            return self.out.read_stats(key)
        t0 = time.perf_counter()
        shards, rejected, copied, rows_out = [], [], [], 0

        def write(part: pa.Table) -> None:
            shards.append(f"{key}-{len(shards):05d}")
            write_parquet(part, self.out.part(shards[-1]))

        for f in files:
            spec = self.specs[f.spec_index]
            with blame(f"{f.path}: cannot ingest ({f.format})", InputError):
                runs = in_place.shard_groups(f.path, spec.text_column, self.shard_rows) if self.in_place(f) else None
                for groups, first_row in runs or [(None, 0)]:
                    kept, dropped, positions = read_input(f, spec, groups, first_row)
                    rejected.append(dropped)
                    rows_out += kept.num_rows
                    if groups is not None:  # one shard per run of row groups, its text left in the input
                        if kept.num_rows:
                            write(in_place.checkpoint(kept, positions, f, spec.text_column, groups))
                        continue
                    copied.append(kept)  # a copy of the rows, cut into shards across the group's files
                    while sum(t.num_rows for t in copied) >= self.shard_rows:
                        rows = pa.concat_tables(copied)
                        write(rows.slice(0, self.shard_rows))
                        copied = [rows.slice(self.shard_rows)]
        if sum(t.num_rows for t in copied):
            write(pa.concat_tables(copied))
        rejected = pa.concat_tables(rejected) if rejected else _EMPTY_REJECTED
        if rejected.num_rows:
            write_parquet(as_rejected(rejected, INGEST), self.out.rejected_part(key))
        stats = shard_stats(key, rows_out + rejected.num_rows, rows_out, rejected, t0, shards=shards,
                            sources=[f.source for f in files])
        self.out.write_stats(key, stats)
        return stats


_EMPTY_REJECTED = schema.CANONICAL.empty_table().append_column(schema.DROP_REASON, pa.array([], pa.string()))
