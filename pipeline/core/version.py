"""Thresher's release, and the code version that keys every checkpoint."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

# The code that decides what a checkpoint holds; the commands (pipeline/commands) decide nothing
# a checkpoint stores, so changing them keeps every work dir valid.
KEYED_PACKAGES = ("thresher.pipeline.core", "thresher.pipeline.toolkit", "thresher.pipeline.engine",
                  "thresher.scorers", "thresher.stages")


def version() -> str:
    try:
        return metadata.version("thresher")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@lru_cache(maxsize=1)
def code_version() -> str:
    """The release plus a hash of the sources of KEYED_PACKAGES: part of every work-dir key, so
    that changed code never reuses what older code computed. (The sources are found, not
    imported: the engine imports no stage.)"""
    h = hashlib.sha256()
    for package in KEYED_PACKAGES:
        for folder in find_spec(package).submodule_search_locations:
            for f in sorted(Path(folder).rglob("*.py")):
                h.update(f"{package}.{f.relative_to(folder).as_posix()}".encode())
                h.update(f.read_bytes())
    return f"{version().split('+')[0]}+{h.hexdigest()[:12]}"
