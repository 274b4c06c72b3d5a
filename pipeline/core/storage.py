"""One filesystem layer for every path Thresher reads or writes: local paths, file://, s3:// and gs://.

Built on pyarrow.fs, which reads Parquet, Arrow and (de)compressed streams from all of them.
Credentials and endpoints come only from the standard environment and files, as every AWS and
Google tool reads them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL, AWS_PROFILE; GOOGLE_APPLICATION_CREDENTIALS): never from the YAML, so a
pipeline file can be shared and a manifest never holds a secret. Timeouts and retries are short
enough that a wrong endpoint or missing bucket is reported within seconds, not minutes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow.fs as pafs

from thresher.pipeline.core.cache import cache_root
from thresher.pipeline.core.errors import ActionableError

CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 15.0
ATTEMPTS = 2


class StorageAccessError(ActionableError, OSError):
    """A store refused or could not be reached; the message names the URI and what to check."""


def scheme(path: str) -> str:
    """'s3', 'gs' (gcs:// too) or 'file' (plain paths and file:// URIs)."""
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", str(path))
    if not m:
        return "file"
    s = m.group(1).lower()
    return "gs" if s == "gcs" else s


def is_remote(path: str) -> bool:
    return scheme(path) in ("s3", "gs")


@lru_cache(maxsize=None)
def _remote_fs(kind: str) -> pafs.FileSystem:
    if kind == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        # allow_delayed_open: an object smaller than a part goes up as one PutObject, not as a
        # multipart upload of three requests (most of Thresher's objects are small: markers, stats,
        # one shard's rows); a refusal then surfaces when the object is closed, inside the same
        # write call, which names it (explain).
        kwargs = dict(connect_timeout=CONNECT_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S,
                      retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=ATTEMPTS),
                      allow_delayed_open=True)
        if endpoint:
            kwargs["endpoint_override"] = endpoint
            kwargs["scheme"] = "https" if endpoint.startswith("https") else "http"
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs)
    if kind == "gs":
        return pafs.GcsFileSystem(retry_time_limit=REQUEST_TIMEOUT_S)
    raise ValueError(f"no filesystem for {kind}://")


def plain(path) -> str:
    """A file:// URI as the local path it names; any other path or URI as it is."""
    return str(path).removeprefix("file://")


def split(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path within it) for a local path or URI."""
    kind = scheme(path)
    if kind == "file":
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(plain(path)))
    if kind not in ("s3", "gs"):
        raise ValueError(f"{path}: unsupported scheme {kind}://; use a local path, file://, s3:// or gs://")
    return _remote_fs(kind), str(path).split("://", 1)[1]


def uri(kind: str, inner: str) -> str:
    return inner if kind == "file" else f"{kind}://{inner}"


def explain(exc: BaseException, target: str) -> StorageAccessError:
    """A store's error as one line that names the URI and the likely fix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = text.lower().replace("_", "")
    if any(k in low for k in ("accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch", "forbidden",
                              "credentials", "code 403", "expiredtoken")):
        hint = ("the store refused the credentials: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
                "AWS_PROFILE (GOOGLE_APPLICATION_CREDENTIALS for gs://)")
    elif "nosuchbucket" in low or ("bucket" in low and ("not found" in low or "does not exist" in low)):
        hint = "the bucket does not exist: create it or fix the URI"
    elif any(k in low for k in ("connect", "timeout", "timed out", "resolve", "unreachable", "network")):
        hint = "the store did not answer: check AWS_ENDPOINT_URL and the network"
    else:
        hint = "check the URI, the credentials and AWS_ENDPOINT_URL"
    return StorageAccessError(f"{target}: {text} ({hint})")


@dataclass(frozen=True)
class Listed:
    path: str  # local absolute path or URI
    size: int
    mtime_ns: int
    is_dir: bool


def _info(kind: str, fs: pafs.FileSystem, inner: str) -> pafs.FileInfo:
    try:
        return fs.get_file_info(inner)
    except OSError as exc:
        raise explain(exc, uri(kind, inner)) from None


def _files_under(kind: str, fs: pafs.FileSystem, inner: str) -> list[pafs.FileInfo]:
    """Every file (object) below the folder (prefix) `inner`; none when it is absent."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise explain(exc, uri(kind, inner)) from None
    return [i for i in infos if i.type == pafs.FileType.File]


def glob(pattern: str) -> list[Listed]:
    """The files and folders a glob matches (`*`, `?`, `[...]` within a name, `**` across folders),
    sorted by path."""
    kind = scheme(pattern)
    fs, inner = split(pattern)
    parts = inner.split("/")
    first = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
    if first is None:
        info = _info(kind, fs, inner)
        if info.type == pafs.FileType.NotFound:
            return []
        return [_listed(kind, info)]
    base = "/".join(parts[:first])
    regex = re.compile(_glob_regex(parts[first:]))
    recursive = any(part == "**" for part in parts[first:]) or len(parts) - first > 1
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=False))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise explain(exc, uri(kind, inner)) from None
    rel = len(base) + 1 if base else 0
    return sorted((_listed(kind, i) for i in infos if regex.fullmatch(i.path[rel:])), key=lambda x: x.path)


def _glob_regex(parts: list[str]) -> str:
    """A regex for the path below the glob's fixed base: `*` and `?` stay within one name."""
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:.*/)?")
            continue
        for token in re.findall(r"\*|\?|\[[^\]]*\]|[^*?\[]+", part):
            out.append("[^/]*" if token == "*" else "[^/]" if token == "?" else
                       ("[^" + token[2:] if token.startswith("[!") else token) if token.startswith("[") else
                       re.escape(token))
        out.append("" if last else "/")
    return "".join(out)


def _listed(kind: str, info: pafs.FileInfo) -> Listed:
    return Listed(uri(kind, info.path), info.size or 0, info.mtime_ns or 0, info.type == pafs.FileType.Directory)


def open_input(path: str):
    """A binary stream of the file, gunzipped when its name ends in .gz."""
    fs, inner = split(path)
    try:
        return fs.open_input_stream(inner, compression="detect")
    except OSError as exc:
        raise explain(exc, path) from None


def open_random(path: str):
    """A seekable file (Parquet, Arrow IPC)."""
    fs, inner = split(path)
    try:
        return fs.open_input_file(inner)
    except OSError as exc:
        raise explain(exc, path) from None


# --- models and other files that stages load by path --------------------------------------------

def listing(path: str) -> list[tuple[str, int, int]]:
    """(name below `path`, size, mtime) of the object at `path`, or of every object under it when
    it is a prefix (a model folder): what identifies this version of it."""
    kind = scheme(path)
    fs, inner = split(path)
    info = _info(kind, fs, inner.rstrip("/"))
    if info.type == pafs.FileType.File:
        return [(info.base_name, info.size or 0, info.mtime_ns or 0)]
    if info.type == pafs.FileType.NotFound:
        raise StorageAccessError(f"{path}: no such object or prefix")
    base = len(inner.rstrip("/")) + 1
    return sorted((i.path[base:], i.size or 0, i.mtime_ns or 0) for i in _files_under(kind, fs, inner.rstrip("/")))


def cached_copy(path: str) -> str:
    """A local path for `path`: itself when local; for an object or prefix, a copy in this node's
    cache, fetched once per version (its names, sizes and modification times) however many
    processes ask at once. The copy keeps the object's name, so loaders that look at the suffix
    (a KenLM .bin, a tokenizer folder) see what they expect."""
    if not is_remote(path):
        return path
    import fcntl
    import hashlib
    import json
    import shutil

    version = listing(path)
    key = hashlib.sha256(json.dumps([path, version]).encode()).hexdigest()[:24]
    root = os.path.join(cache_root(), "objects")
    os.makedirs(root, exist_ok=True)
    name = os.path.basename(path.rstrip("/")) or "object"
    final = os.path.join(root, key)
    with open(os.path.join(root, f"{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one fetch per node; the others wait for it, then reuse it
        if not os.path.isdir(final):
            tmp = os.path.join(root, f".{key}.{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            fs, inner = split(path)
            if _info(scheme(path), fs, inner.rstrip("/")).type != pafs.FileType.File:
                os.makedirs(os.path.join(tmp, name))  # a prefix: its objects go into a folder of its name
            try:
                pafs.copy_files(inner.rstrip("/"), os.path.join(tmp, name), source_filesystem=fs,
                                destination_filesystem=pafs.LocalFileSystem())
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise explain(exc, path) from None
            os.rename(tmp, final)  # complete or absent: a killed fetch leaves only a .tmp folder
    return os.path.join(final, name)


# --- an output in object storage -------------------------------------------------------------

OUTPUT_MARKER = "manifest.json"  # written last: an output prefix without it is incomplete
_OWNED_MARKER = ".thresher-output"  # names the prefix as Thresher's, so stale parts may be removed
OUTPUT_LOCK = ".thresher-output.lock"  # the lease of the run writing the prefix (pipeline/lock.py)


def tree_files(root) -> list[str]:
    """Names (relative, with '/') of every file under a local folder or an object prefix."""
    if isinstance(root, ObjectPath):
        return sorted(i.path[len(root.inner) + 1:] for i in _files_under(root.kind, root.fs, root.inner))
    return sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                  for d, _, names in os.walk(root, followlinks=True) for f in names)


def copy_tree(source, target) -> None:
    for rel in tree_files(source):
        copy_file(_join(source, rel), _join(target, rel))


def _join(root, rel: str):
    return root / rel if isinstance(root, ObjectPath) else Path(root, rel)


def publish_tree(source, target: str) -> list[str]:
    """Uploads the finished output in `source` (a local folder or a staging prefix) to the prefix
    `target`, committing without rename: the previous manifest goes first (readers then see no
    complete output rather than a mix), every file but the manifest is copied, objects of an
    earlier output that the new one lacks are removed, and the manifest is written last. A prefix
    that holds objects but no marker of a Thresher output is refused. Returns the URIs written."""
    dest = ObjectPath(target)
    names = set(tree_files(dest)) - {OUTPUT_LOCK}
    if names and _OWNED_MARKER not in names:
        raise StorageAccessError(f"{target}: holds objects but no Thresher output; choose an empty or new prefix")
    files = tree_files(source)
    if OUTPUT_MARKER in names:
        (dest / OUTPUT_MARKER).unlink()
    (dest / _OWNED_MARKER).write_bytes(b"written by thresher\n")
    written = []
    for rel in (f for f in files if f != OUTPUT_MARKER):
        copy_file(_join(source, rel), dest / rel)
        written.append(str(dest / rel))
    for stale in sorted(names - set(files) - {_OWNED_MARKER}):
        (dest / stale).unlink()
    if OUTPUT_MARKER in files:
        copy_file(_join(source, OUTPUT_MARKER), dest / OUTPUT_MARKER)
        written.append(str(dest / OUTPUT_MARKER))
    return written


# --- a work dir in object storage ---------------------------------------------------------------

class ObjectPath:
    """A path in an object store with the few pathlib operations the work dir uses (`/`, name,
    parent, exists, glob, iterdir, read/write of bytes and text, unlink), so the code that lays
    out stage folders is the same for both; local paths stay `pathlib.Path`. It is deliberately
    not os.PathLike: a local-only API handed one fails loudly instead of writing `./s3:/...`.
    A write is one PUT, which an object store makes visible whole or not at all."""

    def __init__(self, path: str):
        self.uri = str(path).rstrip("/")
        self.kind = scheme(self.uri)
        self.fs, self.inner = split(self.uri)

    def __truediv__(self, other) -> "ObjectPath":
        return ObjectPath(f"{self.uri}/{other}")

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"ObjectPath({self.uri!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectPath) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __lt__(self, other: "ObjectPath") -> bool:
        return self.uri < other.uri

    def __reduce__(self):  # pickled by URI: the filesystem is rebuilt from the worker's environment
        return ObjectPath, (self.uri,)

    @property
    def name(self) -> str:
        return self.uri.rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name else self.name

    @property
    def suffix(self) -> str:
        return "." + self.name.rsplit(".", 1)[1] if "." in self.name else ""

    @property
    def parent(self) -> "ObjectPath":
        return ObjectPath(self.uri.rsplit("/", 1)[0])

    def with_name(self, name: str) -> "ObjectPath":
        return self.parent / name

    def with_suffix(self, suffix: str) -> "ObjectPath":
        return self.parent / (self.stem + suffix)

    def _info(self) -> pafs.FileInfo:
        return _info(self.kind, self.fs, self.inner)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def size(self) -> int:
        return self._info().size or 0

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        pass  # prefixes exist through the objects under them

    def iterdir(self) -> list["ObjectPath"]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.inner, recursive=False, allow_not_found=True))
        except OSError as exc:
            raise explain(exc, self.uri) from None
        return sorted(ObjectPath(uri(self.kind, i.path)) for i in infos)

    def glob(self, pattern: str) -> list["ObjectPath"]:
        """Names directly under this prefix that match `pattern` (no `/`, no `**`)."""
        regex = re.compile(_glob_regex([pattern]))
        return [p for p in self.iterdir() if regex.fullmatch(p.name)]

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.inner) as fh:
                return fh.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri}: no such object") from None
        except OSError as exc:
            raise explain(exc, self.uri) from None

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        try:
            with self.fs.open_output_stream(self.inner) as fh:
                fh.write(data)
        except OSError as exc:
            raise explain(exc, self.uri) from None

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.exists():
            return
        try:
            self.fs.delete_file(self.inner)
        except OSError as exc:
            raise explain(exc, self.uri) from None


def location(path) -> "Path | ObjectPath":
    """A local path as pathlib.Path, an s3:// or gs:// one as ObjectPath."""
    if isinstance(path, ObjectPath):
        return path
    return ObjectPath(str(path)) if is_remote(str(path)) else Path(plain(path))


def rmtree(path) -> None:
    """Removes a folder or prefix and everything under it; nothing happens when it is absent."""
    import shutil

    if isinstance(path, ObjectPath):
        try:
            path.fs.delete_dir(path.inner)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise explain(exc, path.uri) from None
    else:
        shutil.rmtree(path, ignore_errors=True)


def read_table(path, columns=None):
    import pyarrow.parquet as pq

    if isinstance(path, ObjectPath):
        try:
            return pq.read_table(path.inner, columns=columns, filesystem=path.fs)
        except OSError as exc:
            raise explain(exc, path.uri) from None
    return pq.read_table(path, columns=columns)


def read_schema(path):
    import pyarrow.parquet as pq

    if isinstance(path, ObjectPath):
        with path.fs.open_input_file(path.inner) as fh:
            return pq.read_schema(fh)
    return pq.read_schema(path)


def parquet_rows(path) -> int:
    import pyarrow.parquet as pq

    if isinstance(path, ObjectPath):
        with path.fs.open_input_file(path.inner) as fh:
            return pq.ParquetFile(fh).metadata.num_rows
    return pq.ParquetFile(path).metadata.num_rows


def save_npy(path, array) -> None:
    import io as _io

    import numpy as np

    if isinstance(path, ObjectPath):
        buf = _io.BytesIO()
        np.save(buf, array)
        path.write_bytes(buf.getvalue())
    else:
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        np.save(path, array)


def load_npy(path, mmap: bool = False):
    """An .npy array; mapped (read-only) when local and `mmap`, read whole from an object store."""
    import io as _io

    import numpy as np

    if isinstance(path, ObjectPath):
        return np.load(_io.BytesIO(path.read_bytes()))
    return np.load(path, mmap_mode="r" if mmap else None)


def load_npy_slice(path, start: int, stop: int):
    """Rows [start, stop) of a 1-d .npy array: a mapped slice locally, a ranged read from an
    object store (a task that needs one partition of many files reads only that partition)."""
    import numpy as np

    if not isinstance(path, ObjectPath):
        return np.array(np.load(path, mmap_mode="r")[start:stop])
    try:
        with path.fs.open_input_file(path.inner) as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            if len(shape) != 1:
                raise ValueError(f"{path.uri}: a slice needs a 1-d array, not shape {shape}")
            start, stop = max(0, start), min(stop, shape[0])
            fh.seek(fh.tell() + start * dtype.itemsize)
            return np.frombuffer(fh.read(max(0, stop - start) * dtype.itemsize), dtype=dtype)
    except OSError as exc:
        raise explain(exc, path.uri) from None


def copy_file(src, dst) -> None:
    """One file from a local path or object to another (either side may be remote)."""
    import shutil

    if isinstance(src, ObjectPath) or isinstance(dst, ObjectPath):
        s_fs, s_in = (src.fs, src.inner) if isinstance(src, ObjectPath) else (pafs.LocalFileSystem(), str(src))
        d_fs, d_in = (dst.fs, dst.inner) if isinstance(dst, ObjectPath) else (pafs.LocalFileSystem(), str(dst))
        if not isinstance(dst, ObjectPath):
            os.makedirs(os.path.dirname(d_in), exist_ok=True)
        try:
            pafs.copy_files(s_in, d_in, source_filesystem=s_fs, destination_filesystem=d_fs)
        except OSError as exc:
            raise explain(exc, str(dst)) from None
    else:
        os.makedirs(os.path.dirname(os.fspath(dst)) or ".", exist_ok=True)
        shutil.copyfile(src, dst)


def tree_bytes(path) -> int:
    """Bytes of a file or object, or of everything under a folder or prefix."""
    if isinstance(path, ObjectPath):
        info = path._info()
        if info.type == pafs.FileType.File:
            return info.size or 0
        return sum(i.size or 0 for i in _files_under(path.kind, path.fs, path.inner))
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size
