"""KenLM: CCNet-style normalisation, training with KenLM's own lmplz, and document perplexity.

Normalisation follows CCNet: lowercase, accents stripped, digits -> 0, unicode punctuation ->
ASCII, non-printing characters removed; then punctuation is split from words so the model sees
space-separated tokens. A document's perplexity is over its lines (paragraphs):
10 ** (-sum of log10 p / (tokens + one end-of-line per line)), exactly kenlm.Model.perplexity
for a one-line document.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import Iterable

import numpy as np

_PUNCT = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "１": '"',
    "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?", "！": "!",
    "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~", "’": "'", "…": "...",
    "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%", "►": "-", "‘": "'", "‚": ",",
}
_PUNCT_RE = re.compile("|".join(map(re.escape, _PUNCT)))
_NON_PRINTING = re.compile("[" + "".join(map(chr, list(range(0, 9)) + list(range(11, 32)) + list(range(127, 160)))) + "]")
_DIGITS = re.compile(r"\d")
_SPLIT = re.compile(r"([^\w\s])")
_SPACES = re.compile(r"[ \t]+")


def ccnet_normalize(text: str) -> str:
    text = text.strip().lower()
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = _PUNCT_RE.sub(lambda m: _PUNCT[m.group(0)], text)
    text = _DIGITS.sub("0", text)
    text = _NON_PRINTING.sub("", text)
    text = _SPLIT.sub(r" \1 ", text)
    return "\n".join(line for line in (_SPACES.sub(" ", ln).strip() for ln in text.split("\n")) if line)


def _tool(name: str) -> str:
    for candidate in (Path(sys.executable).parent / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise FileNotFoundError(f"KenLM's {name} is not installed; run `make setup` (tools/build_kenlm.sh builds it "
                            "from the kenlm sources) or put lmplz and build_binary on PATH")


def train_kenlm(texts: Iterable[str], out_prefix: str | Path, order: int = 5, memory: str = "20%") -> tuple[Path, Path]:
    """Modified Kneser-Ney with lmplz on the normalised texts; writes PREFIX.arpa and PREFIX.bin."""
    out = Path(out_prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    arpa, binary = out.with_suffix(".arpa"), out.with_suffix(".bin")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        lines = 0
        for t in texts:
            norm = ccnet_normalize(t or "")
            if norm:
                fh.write(norm + "\n")
                lines += norm.count("\n") + 1
        corpus = fh.name
    try:
        if lines == 0:
            raise ValueError("no text to train a KenLM model on")
        with open(corpus, "rb") as src, open(arpa, "wb") as dst:
            proc = subprocess.run([_tool("lmplz"), "-o", str(order), "-S", memory, "--discount_fallback"],
                                  stdin=src, stdout=dst, stderr=subprocess.PIPE)
        if proc.returncode:
            raise RuntimeError(f"lmplz failed: {proc.stderr.decode(errors='replace')[-1500:]}")
        proc = subprocess.run([_tool("build_binary"), str(arpa), str(binary)], capture_output=True)
        if proc.returncode:
            raise RuntimeError(f"build_binary failed: {proc.stderr.decode(errors='replace')[-1500:]}")
    finally:
        Path(corpus).unlink(missing_ok=True)
    return arpa, binary


def document_perplexity(model, texts: list[str]) -> np.ndarray:
    """Perplexity of each document under a kenlm.Model (NaN for a document with no tokens)."""
    out = np.full(len(texts), np.nan)
    for i, t in enumerate(texts):
        logp, tokens = 0.0, 0
        for line in ccnet_normalize(t or "").split("\n"):
            if line:
                logp += model.score(line, bos=True, eos=True)
                tokens += len(line.split()) + 1
        if tokens:
            out[i] = 10.0 ** (-logp / tokens)
    return out
