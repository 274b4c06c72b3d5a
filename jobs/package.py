"""Thresher as a runtime wheel for Ray Jobs (`runtime_env={"py_modules": [wheel]}`).

Ray installs a py_modules wheel with `pip install WHEEL --target DIR`, dependencies included.
The cluster already provides Thresher's dependencies (torch, Ray itself...), and letting pip
resolve them there would download gigabytes, so the shipped wheel is Thresher's own wheel with
its `Requires-Dist` lines removed: the same code, no dependency resolution on the workers.

Ray takes a wheel's file name as its content address and reuses whatever it installed under that
name before. So the shipped wheel's version carries a hash of its code (`0.1.0+h1a2b3c4d5e6f`):
a cluster that ran an older checkout never runs it again for a newer one.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _source_root() -> Path:
    if (ROOT / "pyproject.toml").exists():
        return ROOT
    raise FileNotFoundError("thresher is not installed from a source checkout: build its wheel there "
                            "(pip wheel --no-deps .) and pass it with --wheel")


# What the wheel is built from (pyproject.toml's package-dir folders and the files it names).
SOURCES = ("pyproject.toml", "README.md", "pipeline", "stages", "scorers", "jobs", "configs", "tests/data/demo")


def build_runtime_wheel(out_dir: str | Path, source: Path | None = None) -> Path:
    """Built from a fresh copy of the sources: setuptools reuses a checkout's build/ folder, which
    still holds modules deleted since, and would ship them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = source or _source_root()
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "src"
        for name in SOURCES:
            if (src / name).is_dir():
                shutil.copytree(src / name, clean / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                clean.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / name, clean / name)
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                               "--quiet", "-w", tmp, str(clean)], capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"building the thresher wheel failed:\n{proc.stderr[-2000:]}")
        wheel = next(Path(tmp).glob("thresher-*.whl"))
        target = _runtime_copy(wheel, out)
    return target


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _runtime_copy(src: Path, out: Path) -> Path:
    """A copy of a wheel without its Requires-Dist lines, versioned by its code's hash, with
    RECORD's hashes kept right."""
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        old_info = metadata.split("/")[0]
        name, version = old_info[: -len(".dist-info")].split("-", 1)
        code = hashlib.sha256()
        for n in sorted(names):
            if not n.startswith(old_info + "/"):
                code.update(n.encode() + b"\0" + zin.read(n))
        new_version = f"{version.split('+')[0]}+h{code.hexdigest()[:12]}"
        new_info = f"{name}-{new_version}.dist-info"
        meta = b"".join(
            (f"Version: {new_version}\n".encode() if ln.startswith(b"Version:") else ln)
            for ln in zin.read(metadata).splitlines(keepends=True) if not ln.startswith(b"Requires-Dist:"))
        rename = lambda n: new_info + n[len(old_info):] if n.startswith(old_info + "/") else n  # noqa: E731
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        lines = []
        for ln in zin.read(record).decode().splitlines():
            path = ln.split(",", 1)[0]
            if path == metadata:
                ln = f"{rename(metadata)},{_record_hash(meta)},{len(meta)}"
            elif path.startswith(old_info + "/"):
                ln = rename(path) + ln[len(path):]
            lines.append(ln)
        dst = out / src.name.replace(f"-{version}-", f"-{new_version}-", 1)
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                data = meta if info.filename == metadata else (
                    ("\n".join(lines) + "\n").encode() if info.filename == record else zin.read(info.filename))
                info.filename = rename(info.filename)
                zout.writestr(info, data)
    return dst
