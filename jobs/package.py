"""Thresher as a runtime wheel for Ray Jobs (`runtime_env={"py_modules": [wheel]}`).

Ray installs a py_modules wheel with `pip install WHEEL --target DIR`, dependencies included.
The cluster already provides Thresher's dependencies (torch, Ray itself...), and letting pip
resolve them there would download gigabytes, so the shipped wheel is Thresher's own wheel with
its `Requires-Dist` lines removed: the same code, no dependency resolution on the workers.
"""

from __future__ import annotations

import base64
import hashlib
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


def build_runtime_wheel(out_dir: str | Path, source: Path | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = source or _source_root()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                               "--quiet", "-w", tmp, str(src)], capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"building the thresher wheel failed:\n{proc.stderr[-2000:]}")
        wheel = next(Path(tmp).glob("thresher-*.whl"))
        target = out / wheel.name
        _strip_requirements(wheel, target)
    return target


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _strip_requirements(src: Path, dst: Path) -> None:
    """Copy a wheel without its Requires-Dist lines, keeping RECORD's hash of METADATA right."""
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        meta = b"".join(ln for ln in zin.read(metadata).splitlines(keepends=True)
                        if not ln.startswith(b"Requires-Dist:"))
        lines = []
        for ln in zin.read(record).decode().splitlines():
            if ln.split(",", 1)[0] == metadata:
                ln = f"{metadata},{_record_hash(meta)},{len(meta)}"
            lines.append(ln)
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                data = meta if info.filename == metadata else (
                    ("\n".join(lines) + "\n").encode() if info.filename == record else zin.read(info.filename))
                zout.writestr(info, data)
