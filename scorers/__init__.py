"""Scorers: pure functions and small models on batches (no pipeline, no stages).

numba keys a cached kernel by the timestamp of its own file only, so a kernel that inlines a
function of another module (minhash's signature pass inlines hashing's XXH64) would keep running
the old code after that module changed. The kernels are therefore cached in a folder named by the
hash of every scorer's source, under $THRESHER_CACHE (default ~/.cache/thresher); a NUMBA_CACHE_DIR
set by the user is left alone.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


def cache_root() -> str:
    """Thresher's per-machine cache ($THRESHER_CACHE, default ~/.cache/thresher): compiled kernels,
    dequantised models, local copies of remote inputs."""
    return os.environ.get("THRESHER_CACHE") or str(Path.home() / ".cache" / "thresher")


def numba_cache_dir(sources: Path = Path(__file__).parent) -> str:
    """The numba cache folder for these scorer sources: a new one whenever any of them changes."""
    digest = hashlib.sha256()
    for path in sorted(sources.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return str(Path(cache_root()) / "numba" / digest.hexdigest()[:16])


if "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = numba_cache_dir()  # read by numba at import; Ray workers inherit it
    if "numba" in sys.modules:  # imported before Thresher: its config was read already
        sys.modules["numba"].config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
