"""Shared helpers for the benchmarks: machine description, corpus, JSON results."""

from __future__ import annotations

import gzip
import json
import os
import platform
import re
import subprocess
from pathlib import Path

from thresher.pipeline.core.cache import use_numba_cache

use_numba_cache()  # as every Thresher entry point does, before a kernel compiles

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEMO = ROOT / "tests" / "data" / "demo"


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version()}


def demo_texts(names=("python_docs", "scripture", "fortunes")) -> list[str]:
    out = []
    for name in names:
        with gzip.open(DEMO / f"{name}.jsonl.gz", "rt", encoding="utf-8") as fh:
            out += [json.loads(line)["text"] for line in fh]
    return out


SOURCES = ("scripture", "python_docs", "fortunes")


def sentence_pools() -> dict[str, list[str]]:
    """Each bundled source's sentences (4 words or more): documents drawn from them are new text
    in the source's own words."""
    out = {}
    for name in SOURCES:
        out[name] = [s for t in demo_texts((name,)) for s in re.split(r"(?<=[.!?])\s+", t) if len(s.split()) >= 4]
    return out


def chunk_docs(texts: list[str], size: int = 2048, count: int = 5000) -> list[str]:
    """Cut real text into ~`size`-character documents at word boundaries."""
    joined = " ".join(texts)
    docs, start = [], 0
    while len(docs) < count and start < len(joined):
        end = joined.rfind(" ", start, start + size)
        end = start + size if end <= start else end
        docs.append(joined[start:end])
        start = end + 1
    while len(docs) < count:  # corpus exhausted: repeat with a marker so docs stay distinct
        docs.append(f"copy {len(docs)} " + docs[len(docs) % max(len(docs), 1)])
    return docs


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path
