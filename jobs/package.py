"""Thresher as a runtime wheel for Ray Jobs (`runtime_env={"py_modules": [wheel]}`).

Ray installs a py_modules wheel with `pip install WHEEL --target DIR`, dependencies included.
The cluster already provides Thresher's dependencies (torch, Ray itself...), and letting pip
resolve them there would download gigabytes, so the shipped wheel is Thresher's own wheel with
its `Requires-Dist` lines removed: the same code, no dependency resolution on the workers.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
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
        unpacked = Path(tmp) / "unpacked"
        subprocess.run([sys.executable, "-m", "wheel", "unpack", "-d", str(unpacked), str(wheel)], check=True,
                       capture_output=True)
        root = next(unpacked.iterdir())
        metadata = next(root.glob("*.dist-info")) / "METADATA"
        lines = metadata.read_text().splitlines(keepends=True)
        metadata.write_text("".join(ln for ln in lines if not ln.startswith("Requires-Dist:")))
        subprocess.run([sys.executable, "-m", "wheel", "pack", "-d", str(out), str(root)], check=True,
                       capture_output=True)
    return next(out.glob("thresher-*.whl"))
