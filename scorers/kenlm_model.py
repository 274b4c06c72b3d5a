"""KenLM: CCNet-style normalisation, training with KenLM's own lmplz, and document perplexity.

Normalisation follows CCNet: lowercase, accents stripped, digits -> 0, unicode punctuation ->
ASCII, non-printing characters removed; then punctuation is split from words so the model sees
space-separated tokens. It runs as Arrow compute kernels on a whole batch; CCNet's per-character
Python (`reference_normalize`) is the spec the tests hold it to. A document's perplexity is
over its lines (paragraphs): 10 ** (-sum of log10 p / (tokens + one end-of-line per line)),
exactly kenlm.Model.perplexity for a one-line document.
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
import pyarrow as pa
import pyarrow.compute as pc

from thresher.scorers.hashing import filled_array

PUNCT = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "１": '"',
    "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?", "！": "!",
    "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~", "’": "'", "…": "...",
    "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%", "►": "-", "‘": "'", "‚": ",",
}
_ANY_PUNCT = "[" + "".join(PUNCT) + "]"
_NON_PRINTING = r"[\x{0}-\x{8}\x{b}-\x{1f}\x{7f}-\x{9f}]+"  # code points 0-8, 11-31, 127-159
_WS = r"\t\n\p{Z}"  # the whitespace left once non-printing characters are gone (Python's isspace)


def normalize(texts: pa.Array | pa.ChunkedArray | list) -> pa.Array:
    """CCNet normalisation of every text (null -> ""): its lines stripped, empty ones dropped."""
    t = pc.utf8_normalize(pc.utf8_lower(pc.utf8_trim_whitespace(filled_array(texts))), "NFD")
    t = pc.replace_substring_regex(t, r"\p{Mn}+", "")  # accents: combining marks after NFD
    has_punct = pc.match_substring_regex(t, _ANY_PUNCT)
    if pc.any(has_punct).as_py():  # few rows have any: map them only
        sub = t.filter(has_punct)
        for k, v in PUNCT.items():
            sub = pc.replace_substring(sub, k, v)
        t = pc.replace_with_mask(t, has_punct, sub)
    t = pc.replace_substring_regex(t, r"\p{Nd}", "0")
    t = pc.replace_substring_regex(t, _NON_PRINTING, "")
    t = pc.replace_substring_regex(t, r"([^\p{L}\p{N}_" + _WS + "])", r" \1 ")  # punctuation as tokens
    t = pc.replace_substring_regex(t, r"\t[ \t]*| [ \t]+", " ")
    t = pc.replace_substring_regex(t, "[" + _WS + "]*\n[" + _WS + "]*", "\n")  # strip lines, drop empty ones
    return pc.utf8_trim_whitespace(t)


def ccnet_normalize(text: str) -> str:
    return normalize([text])[0].as_py()


def reference_normalize(text: str) -> str:
    """The same normalisation as CCNet writes it, per character in Python: the spec `normalize`
    is tested against, and the peer bench/kenlm_score.py measures it against."""
    text = text.strip().lower()
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = re.sub("|".join(map(re.escape, PUNCT)), lambda m: PUNCT[m.group(0)], text)
    text = re.sub(r"\d", "0", text)
    text = re.sub("[" + "".join(map(chr, [*range(0, 9), *range(11, 32), *range(127, 160)])) + "]", "", text)
    text = re.sub(r"([^\w\s])", r" \1 ", text)
    return "\n".join(ln for ln in (re.sub(r"[ \t]+", " ", ln).strip() for ln in text.split("\n")) if ln)


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
        for batch in _batches(texts, 10_000):
            for norm in normalize(batch).to_pylist():
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


def _batches(texts: Iterable[str], size: int):
    batch = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def document_perplexity(model, texts: pa.Array | pa.ChunkedArray | list) -> np.ndarray:
    """Perplexity of each document under a kenlm.Model (NaN for a document with no tokens). Lines
    are scored one kenlm call each (its API takes one sentence); everything else is on arrays."""
    lines = pc.split_pattern(normalize(texts), "\n")
    doc = pc.list_parent_indices(lines).to_numpy()
    flat = pc.list_flatten(lines)
    real = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    doc, flat = doc[real], flat.filter(pa.array(real))
    score = model.score
    logp = np.fromiter((score(line, bos=True, eos=True) for line in flat.to_pylist()), np.float64, len(flat))
    tokens = pc.list_value_length(pc.utf8_split_whitespace(flat)).to_numpy(zero_copy_only=False) + 1
    n = len(lines)
    logp, tokens = np.bincount(doc, logp, minlength=n), np.bincount(doc, tokens, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tokens > 0, 10.0 ** (-logp / np.maximum(tokens, 1)), np.nan)
