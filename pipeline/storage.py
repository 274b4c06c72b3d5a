"""One filesystem layer for every path Thresher reads: local paths, file://, s3:// and gs:// URIs.

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

import pyarrow.fs as pafs

REMOTE_SCHEMES = ("s3", "gs", "gcs")
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 15.0
ATTEMPTS = 2


class StorageAccessError(OSError):
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
        kwargs = dict(connect_timeout=CONNECT_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S,
                      retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=ATTEMPTS))
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


def split(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path within it) for a local path or URI."""
    kind = scheme(path)
    if kind == "file":
        local = path[len("file://"):] if str(path).startswith("file://") else str(path)
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))
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
    try:
        infos = fs.get_file_info(pafs.FileSelector(inner.rstrip("/"), recursive=True))
    except OSError as exc:
        raise explain(exc, path) from None
    base = len(inner.rstrip("/")) + 1
    return sorted((i.path[base:], i.size or 0, i.mtime_ns or 0) for i in infos if i.type == pafs.FileType.File)


def cache_root() -> str:
    return os.environ.get("THRESHER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "thresher")


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


def publish_tree(local: str, target: str) -> list[str]:
    """Uploads the finished output in `local` to the prefix `target`, committing without rename:
    the previous manifest goes first (readers then see no complete output rather than a mix), every
    file but the manifest is uploaded, objects of an earlier output that the new one lacks are
    removed, and the manifest is written last. A prefix that holds objects but no marker of a
    Thresher output is refused. Returns the URIs written."""
    fs, root = split(target)
    root = root.rstrip("/")
    kind = scheme(target)
    try:
        existing = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise explain(exc, target) from None
    names = {i.path[len(root) + 1:] for i in existing if i.type == pafs.FileType.File}
    if names and _OWNED_MARKER not in names:
        raise StorageAccessError(f"{target}: holds objects but no Thresher output; choose an empty or new prefix")
    files = sorted(os.path.relpath(os.path.join(d, f), local) for d, _, names_ in os.walk(local, followlinks=True)
                   for f in names_)
    written = []
    try:
        if OUTPUT_MARKER in names:
            fs.delete_file(f"{root}/{OUTPUT_MARKER}")
        with fs.open_output_stream(f"{root}/{_OWNED_MARKER}") as fh:
            fh.write(b"written by thresher\n")
        for rel in (f for f in files if f != OUTPUT_MARKER):
            pafs.copy_files(os.path.join(local, rel), f"{root}/{rel}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
            written.append(uri(kind, f"{root}/{rel}"))
        for stale in sorted(names - set(files) - {_OWNED_MARKER}):
            fs.delete_file(f"{root}/{stale}")
        if OUTPUT_MARKER in files:
            pafs.copy_files(os.path.join(local, OUTPUT_MARKER), f"{root}/{OUTPUT_MARKER}",
                            source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
            written.append(uri(kind, f"{root}/{OUTPUT_MARKER}"))
    except OSError as exc:
        raise explain(exc, target) from None
    return written
