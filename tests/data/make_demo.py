"""Build the bundled demo corpus from real text in Debian packages (see tests/data/demo/SOURCES.md).

    apt-get install -y --no-install-recommends bible-kjv fortunes python3.11-doc
    .venv/bin/python tests/data/make_demo.py

Writes tests/data/demo/{scripture,python_docs,fortunes,mirror}.jsonl.gz. `mirror` holds copies of
a seeded random 4% of the other documents, as a scraped mirror would: half differ from the
original only in case and spacing (exact duplicates after normalisation), half have a few
words changed, deleted or inserted (near duplicates). Deterministic for a fixed seed.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import subprocess
from pathlib import Path

OUT = Path(__file__).parent / "demo"
PY_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
FORTUNES = Path("/usr/share/games/fortunes")
SEED = 1234


def scripture() -> list[dict]:
    text = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], capture_output=True, text=True, check=True).stdout
    chapters: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$", line)
        if m:
            chapters.setdefault(f"{m[1]} {m[2]}", []).append(m[4])
        elif chapters and line.strip():
            chapters[next(reversed(chapters))][-1] += " " + line.strip()
    return [{"doc_id": f"kjv/{ref}", "text": " ".join(verses), "domain": "scripture"}
            for ref, verses in chapters.items()]


def python_docs(max_bytes: int = 2_500_000) -> list[dict]:
    docs, total = [], 0
    heading = re.compile(r"\n([^\n]+)\n([=\-~^*#])\2{3,}\n")
    for path in sorted(PY_DOCS.glob("**/*.rst.txt")):
        if "whatsnew" in path.parts or "c-api" in path.parts:
            continue
        body = path.read_text(encoding="utf-8", errors="replace")
        starts = [0] + [m.start() for m in heading.finditer(body)] + [len(body)]
        for k, (a, b) in enumerate(zip(starts, starts[1:])):
            section = body[a:b].strip()
            if len(section) < 200:
                continue
            docs.append({"doc_id": f"pydoc/{path.relative_to(PY_DOCS)}#{k}", "text": section,
                         "domain": "python-docs"})
            total += len(section)
            if total > max_bytes:
                return docs
    return docs


def fortunes() -> list[dict]:
    docs = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or path.is_dir() or path.is_symlink():
            continue
        entries = path.read_text(encoding="utf-8", errors="replace").split("\n%\n")
        docs.extend({"doc_id": f"fortune/{path.name}/{i}", "text": e.strip(), "domain": "fortunes"}
                    for i, e in enumerate(entries) if e.strip())
    return docs


def _respace(text: str, rng: random.Random) -> str:
    text = text.upper() if rng.random() < 0.3 else text.lower()
    return re.sub(r" ", lambda _: "  " if rng.random() < 0.05 else " ", text)


def _edit_words(text: str, rng: random.Random, rate: float) -> str:
    words = text.split(" ")
    out = []
    for w in words:
        r = rng.random()
        if r < rate / 3:
            continue  # delete
        if r < 2 * rate / 3:
            out.append(rng.choice(words))  # substitute
        else:
            out.append(w)
        if rng.random() < rate / 3:
            out.append(rng.choice(words))  # insert
    return " ".join(out)


def mirror(originals: list[dict], rng: random.Random, fraction: float = 0.04) -> list[dict]:
    picks = [d for d in originals if len(d["text"].split()) >= 50 and rng.random() < fraction]
    out = []
    for i, d in enumerate(picks):
        if i % 2 == 0:
            text, kind = _respace(d["text"], rng), "respaced"
        else:
            text, kind = _edit_words(d["text"], rng, rate=rng.uniform(0.01, 0.06)), "edited"
        out.append({"doc_id": f"mirror/{i}/{kind}/{d['doc_id']}", "text": text, "domain": d["domain"]})
    return out


def write(name: str, docs: list[dict]) -> None:
    with gzip.GzipFile(OUT / f"{name}.jsonl.gz", "wb", mtime=0) as fh:
        for d in docs:
            fh.write((json.dumps(d, ensure_ascii=False) + "\n").encode("utf-8"))
    print(f"{name}: {len(docs)} docs, {sum(len(d['text']) for d in docs) / 1e6:.2f} MB of text")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    sets = {"scripture": scripture(), "python_docs": python_docs(), "fortunes": fortunes()}
    for name, docs in sets.items():
        write(name, docs)
    write("mirror", mirror([d for docs in sets.values() for d in docs], rng))


if __name__ == "__main__":
    main()
