"""Finding, reading and writing shards.

Input files are read into the canonical schema (id, text, source, domain). Rows that cannot be
used (null or non-string text, invalid UTF-8, a malformed JSON line) are returned as rejected
rows with a reason, never silently skipped; a file that cannot be read at all, or lacks the
text column, is an error that names the file and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import gzip
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from thresher.pipeline import schema, storage
from thresher.pipeline.config import InputSpec, PipelineConfig
from thresher.scorers.hashing import string_hashes


class InputError(ValueError):
    """Bad input that the user must fix; the message names the file and the fix."""


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


OWNED = ".thresher"  # a folder Thresher keeps in every output and work dir it writes


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


def discover_inputs(config: PipelineConfig, exclude: tuple = ()) -> tuple[list[InputFile], dict[str, int]]:
    """The input files, and how many matched files were left out per Thresher dir they lie in
    (`exclude`: the run's own work and output dirs, local paths or object-store prefixes)."""
    prefixes = tuple(str(d).rstrip("/") + "/" for d in exclude if storage.is_remote(str(d)))
    exclude = tuple(Path(os.path.abspath(d)) for d in exclude if not storage.is_remote(str(d)))
    found: list[tuple[str, str, int]] = []
    skipped: dict[str, int] = {}
    marked: dict[Path, bool] = {}
    for si, spec in enumerate(config.inputs):
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
            full = str(config.resolve(pattern))
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
        st = os.stat(path)
        try:
            source = os.path.relpath(path, config.base_dir)
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
                if not _encodes(obj):  # a lone surrogate escape such as "\ud800"
                    bad.append((lineno, "invalid_utf8", line))
                    continue
                value = obj.get(text_column)
                if value is not None and not isinstance(value, str):
                    bad.append((lineno, "non_string_text", json.dumps(value)))
                    continue
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


def _encodes(obj) -> bool:
    """Whether every string in a parsed JSON object is valid Unicode (JSON escapes can spell
    lone surrogates, which no UTF-8 column can hold)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


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
                if not isinstance(obj, dict) or not _encodes(obj):
                    raise InputError(f"{path}:{lineno}: not a JSON object of valid Unicode text")
                yield lineno, obj
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read as UTF-8 JSON lines ({exc}); fix or re-export the file") from None


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


# --- writing ---------------------------------------------------------------------------

class StorageError(RuntimeError):
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
