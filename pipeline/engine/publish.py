"""Crash-safe output: a run publishes a complete new output in one atomic step.

    <out>/.thresher/versions/<version>/   one complete output (data/, rejected/, manifest.json, ...)
    <out>/.thresher/current               symlink to the published version, replaced by rename(2)
    <out>/data -> .thresher/current/data  (and rejected, manifest.json, mixture.json, ...)

A new output is written into a fresh version folder beside the published one; nothing the
readers see changes until `current` is swapped, which is a single rename. At every instant the
top-level names therefore resolve either all to the complete old output or all to the complete
new one: a crash or a full disk while writing leaves the old output as it was, and the next run
clears the unfinished version and writes again. An output written by an older Thresher (real
`data/` and `manifest.json`) is moved into a version of its own on the first publish.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from thresher.pipeline.core.files import OWNED

CURRENT = "current"
MANIFEST = "manifest.json"


class OutputDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta = self.path / OWNED
        self.versions = self.meta / "versions"
        self.current = self.meta / CURRENT

    def is_ours(self) -> bool:
        """Empty, absent, or written by Thresher (now, or a legacy output with a manifest)."""
        p = self.path
        return not p.exists() or not any(p.iterdir()) or self.meta.is_dir() or (p / MANIFEST).is_file()

    def published(self) -> Path | None:
        """The folder of the published version, if there is one."""
        return self.current.resolve() if self.current.is_symlink() and self.current.exists() else None

    def new_version(self, tag: str) -> Path:
        """A fresh, empty version folder; versions left by a run that died before publishing go."""
        self.versions.mkdir(parents=True, exist_ok=True)
        self._adopt_legacy()
        self.clear_unpublished()
        folder = self.versions / f"{tag}-{time.time_ns()}"
        folder.mkdir()
        return folder

    def publish(self, version: Path) -> None:
        """Make `version` the output: links for its top-level names, then one atomic swap."""
        for entry in version.iterdir():
            link = self.path / entry.name
            if not link.is_symlink():  # a new name: dangling (absent) until the swap
                os.symlink(Path(OWNED) / CURRENT / entry.name, link)
        tmp = self.meta / f".{CURRENT}-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(Path("versions") / version.name, tmp)
        os.replace(tmp, self.current)
        _fsync_dir(self.meta)
        # Names the new output lacks now dangle; remove them, and the old versions.
        for link in self.path.iterdir():
            if link.is_symlink() and not link.exists():
                link.unlink()
        self.clear_unpublished()

    def clear_unpublished(self) -> None:
        keep = self.published()
        for folder in self.versions.iterdir() if self.versions.exists() else []:
            if folder != keep:
                shutil.rmtree(folder, ignore_errors=True)

    def _adopt_legacy(self) -> None:
        """Move a pre-versioning output (real files at the top level) into a version of its own."""
        names = ("data", "rejected", MANIFEST)
        if not any((self.path / n).exists() and not (self.path / n).is_symlink() for n in names):
            return
        legacy = self.versions / "legacy"
        legacy.mkdir(parents=True, exist_ok=True)
        for entry in list(self.path.iterdir()):
            if entry.name != OWNED and not entry.is_symlink() and (entry.name in names or entry.suffix == ".json"):
                os.replace(entry, legacy / entry.name)
        self.publish(legacy)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
