"""Thresher's per-machine cache ($THRESHER_CACHE, default ~/.cache/thresher): compiled kernels,
dequantised models, local copies of remote inputs.

numba keys a cached kernel by the timestamp of its own file only, so a kernel that inlines a
function of another module (minhash's signature pass inlines hashing's XXH64) would keep running
the old code after that module changed. `use_numba_cache()` therefore points numba at a folder
named by the hash of every scorer's source. Entry points call it (the CLI, the runner, each Ray
worker) before any kernel compiles; a NUMBA_CACHE_DIR set by the user is left alone.
"""

from __future__ import annotations

import hashlib
import os
import sys
from importlib.util import find_spec
from pathlib import Path


def cache_root() -> str:
    return os.environ.get("THRESHER_CACHE") or str(Path.home() / ".cache" / "thresher")


def scorer_sources() -> Path:
    """The scorers' folder, found without importing them."""
    return Path(find_spec("thresher.scorers").submodule_search_locations[0])


def numba_cache_dir(sources: Path | None = None) -> str:
    """The numba cache folder for these scorer sources: a new one whenever any of them changes."""
    digest = hashlib.sha256()
    for path in sorted((sources or scorer_sources()).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return str(Path(cache_root()) / "numba" / digest.hexdigest()[:16])


def use_numba_cache() -> str:
    """Sets NUMBA_CACHE_DIR (unless the user set it) for this process and the workers it starts
    (they inherit the environment); numba reads it at import, so when numba is loaded already its
    config is updated too. Returns the folder."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        os.environ["NUMBA_CACHE_DIR"] = numba_cache_dir()
    if "numba" in sys.modules:
        sys.modules["numba"].config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
    return os.environ["NUMBA_CACHE_DIR"]
